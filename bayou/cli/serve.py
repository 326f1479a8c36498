"""``bayou serve``: run the broker.

Each option is generated from a ``BrokerConfig`` field (``bayou.options.click_options``), one
to one.  Options left off the command line are passed to ``BrokerConfig.load`` as ``None`` so
the TOML file and ``BAYOU_*`` environment variables still apply (defaults, then TOML, then
environment, then flags).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import click

from bayou.broker_config import BrokerConfig
from bayou.cli._common import CliError, UsageProblem, parse_pairs
from bayou.errors import InvalidConfig
from bayou.options import click_options


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="TOML file of options (the flags' names with underscores, "
    "or by section: [http] port = 8081; topic defaults under [topic_defaults]).",
)
@click_options(BrokerConfig)
@click.option(
    "--topic-default",
    "topic_defaults",
    multiple=True,
    metavar="NAME=VALUE",
    help="Default for a topic config, by its Kafka name (e.g. retention.ms=86400000). "
    "Repeatable. [env BAYOU_TOPIC_DEFAULT_<NAME>]",
)
def serve(config_path: Path | None, topic_defaults: tuple[str, ...], **options: Any) -> None:
    """Run a Bayou broker until interrupted (SIGINT or SIGTERM).

    Options are read from built-in defaults, then the --config TOML file, then BAYOU_<OPTION>
    environment variables (e.g. BAYOU_KAFKA_PORT, BAYOU_TOPIC_DEFAULT_RETENTION_MS), then
    these flags; later sources win.
    """
    flags: dict[str, Any] = dict(options)
    flags["topic_defaults"] = dict(parse_pairs(topic_defaults, "--topic-default"))
    config = load_config(config_path, flags)
    try:
        from bayou.app import run
    except ImportError as exc:
        raise CliError(f"The broker cannot start: {exc}") from None
    if config.workers > 1:
        supervise_workers(config)
        return
    run(config)


def supervise_workers(config: BrokerConfig) -> None:
    """``--workers N``: a supervisor of N brokers (``bayou/workers.py``)."""
    from bayou.observability.json_logs import configure_logging
    from bayou.workers import check_workers, supervise

    try:
        check_workers(config)
    except InvalidConfig as exc:
        raise UsageProblem(f"Invalid configuration: {exc}") from None
    configure_logging(config.log_level, config.log_format)
    code = supervise(config)
    if code:
        raise SystemExit(code)


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
