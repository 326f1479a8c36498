"""``bayou serve``: run the broker.

Each option maps one-to-one onto a ``BrokerConfig`` field.  Options left off the command line
are passed to ``BrokerConfig.load`` as ``None`` so the TOML file and ``BAYOU_*`` environment
variables still apply (defaults, then TOML, then environment, then flags).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import click

from bayou.cli._common import CliError, UsageProblem, parse_pairs
from bayou.config import BrokerConfig
from bayou.errors import InvalidConfig

_PORT = click.IntRange(0, 65535)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="TOML file of options (same names as the flags, with "
              "underscores; topic defaults under [topic_defaults]).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Directory holding the logs and metadata. Default ./data.")
@click.option("--host", metavar="ADDRESS", help="Address the listeners bind to. Default 127.0.0.1.")
@click.option("--kafka-port", type=_PORT, help="Kafka protocol port. Default 9092.")
@click.option("--http-port", type=_PORT, help="HTTP port. Default 8080.")
@click.option("--mqtt-port", type=_PORT, help="MQTT gateway port. Default 1883.")
@click.option("--amqp-port", type=_PORT, help="AMQP gateway port. Default 5672.")
@click.option("--advertised-host", metavar="HOST",
              help="Host name clients are told to connect to. Default: the --host value.")
@click.option("--node-id", type=click.IntRange(min=0), help="This broker's node id. Default 0.")
@click.option("--auto-create-topics/--no-auto-create-topics", "auto_create_topics_enable",
              default=None, help="Create a topic when a client first asks for it. Default on.")
@click.option("--num-partitions", type=click.IntRange(min=1),
              help="Partitions of auto-created topics. Default 1.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                               case_sensitive=False),
              help="Broker log verbosity. Default INFO.")
@click.option("--http-cors-origin", "http_cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN (scheme://host[:port], or * for any) use the "
                   "HTTP API and open its streams from a browser. Repeatable. Default: none.")
@click.option("--topic-default", "topic_defaults", multiple=True, metavar="NAME=VALUE",
              help="Default for a topic config, by its Kafka name (e.g. retention.ms=86400000). "
                   "Repeatable.")
def serve(config_path: Path | None, topic_defaults: tuple[str, ...], **options: Any) -> None:
    """Run a Bayou broker until interrupted (SIGINT or SIGTERM).

    Options are read from built-in defaults, then the --config TOML file, then BAYOU_<OPTION>
    environment variables (e.g. BAYOU_KAFKA_PORT, BAYOU_TOPIC_DEFAULT_RETENTION_MS), then
    these flags; later sources win.
    """
    if options.get("log_level") is not None:
        options["log_level"] = options["log_level"].upper()
    flags: dict[str, Any] = dict(options)
    flags["http_cors_origins"] = options["http_cors_origins"] or None  # unset: TOML/env apply
    flags["topic_defaults"] = dict(parse_pairs(topic_defaults, "--topic-default"))
    config = load_config(config_path, flags)
    try:
        from bayou.broker.server import run
    except ImportError as exc:
        raise CliError(f"The broker cannot start: {exc}") from None
    run(config)


def load_config(config_path: Path | None, flags: dict[str, Any]) -> BrokerConfig:
    """``BrokerConfig.load`` with every failure turned into a one-sentence usage error."""
    try:
        return BrokerConfig.load(config_path, os.environ, flags)
    except InvalidConfig as exc:
        raise UsageProblem(f"Invalid configuration: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageProblem(f"The config file {config_path} is not valid TOML: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageProblem(f"Cannot read the config file {config_path}: {reason}") from None
