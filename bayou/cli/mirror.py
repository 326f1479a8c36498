"""``bayou mirror run|status``: copy topics, configs and group offsets from a source cluster
to a target cluster, continuously (MirrorMaker 2's job); ``status`` prints its lag.

Both clusters are any Kafka-compatible brokers, each with the security options of the
other commands under a ``--source-``/``--target-`` prefix (passwords from
``$BAYOU_SOURCE_SASL_PASSWORD`` and ``$BAYOU_TARGET_SASL_PASSWORD``).  ``bayou``'s own
``--timeout`` and ``--verbose`` (given before ``mirror``) apply to both.
The design: ``docs/design/mirror.md``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from confluent_kafka import KafkaException

from bayou.cli._common import (
    DEFAULT_TIMEOUT_S,
    CliError,
    Connection,
    UsageProblem,
    bootstrap_addresses,
)

F = TypeVar("F", bound=Callable[..., Any])
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def _side_options(side: str) -> Callable[[F], F]:
    upper = side.upper()

    def decorate(f: F) -> F:
        f = click.option(
            f"--{side}-tls-ca",
            metavar="FILE",
            help=f"Connect to the {side} over TLS, trusting certificates signed by this CA.",
        )(f)
        f = click.option(
            f"--{side}-sasl-mechanism",
            type=click.Choice(["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]),
            default="SCRAM-SHA-512",
            show_default=True,
            help=f"SASL mechanism of --{side}-sasl-user.",
        )(f)
        f = click.option(
            f"--{side}-sasl-user",
            metavar="NAME",
            help=f"Log in to the {side} as NAME (SASL); password from "
            f"$BAYOU_{upper}_SASL_PASSWORD.",
        )(f)
        f = click.option(
            f"--{side}",
            f"{side}_bootstrap",
            metavar="HOST:PORT",
            required=True,
            envvar=f"BAYOU_MIRROR_{upper}",
            help=f"The {side} cluster's bootstrap address(es), comma-separated.",
        )(f)
        return f

    return decorate


def _connection(side: str, params: dict[str, Any]) -> Connection:
    meta = click.get_current_context().meta
    bootstrap = params[f"{side}_bootstrap"]
    bootstrap_addresses(bootstrap)
    user = params[f"{side}_sasl_user"]
    return Connection(
        bootstrap=bootstrap,
        timeout=float(meta.get("bayou.cli.timeout", DEFAULT_TIMEOUT_S)),
        verbose=bool(meta.get("bayou.cli.verbose", False)),
        sasl_user=user,
        sasl_password=os.environ.get(f"BAYOU_{side.upper()}_SASL_PASSWORD") if user else None,
        sasl_mechanism=params[f"{side}_sasl_mechanism"],
        tls_ca=params[f"{side}_tls_ca"],
    )


def _patterns(values: tuple[str, ...], option: str) -> list[re.Pattern[str]]:
    out = []
    for value in values:
        try:
            out.append(re.compile(value))
        except re.error as exc:
            raise UsageProblem(f"{option} '{value}' is not a regular expression ({exc})") from None
    return out


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageProblem(
            f"Mirror name '{name}' must be 1 to 200 ASCII letters, digits, '.', '_' or '-'."
        )
    return name


_name_option = click.option(
    "--name",
    default="default",
    show_default=True,
    help="The mirror's name: its state lives in the target topic __bayou-mirror.NAME.",
)


@click.group()
def mirror() -> None:
    """Copy topics, configs and consumer-group offsets from one cluster to another."""


@mirror.command()
@_side_options("source")
@_side_options("target")
@_name_option
@click.option(
    "--topics",
    "topics",
    multiple=True,
    metavar="REGEX",
    help="Mirror the topics whose whole name matches (repeatable; default: every topic). "
    "Internal topics (__*, *.internal, mm2-*) never are.",
)
@click.option("--exclude-topics", multiple=True, metavar="REGEX", help="Leave these out.")
@click.option(
    "--groups",
    multiple=True,
    metavar="REGEX",
    help="Carry these consumer groups' offsets over (repeatable; default: every group).",
)
@click.option("--exclude-groups", multiple=True, metavar="REGEX", help="Leave these out.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often topics, configs, partitions and group offsets are synced and the lag logged.",
)
@click.option(
    "--isolation",
    type=click.Choice(["read_committed", "read_uncommitted"]),
    default="read_committed",
    show_default=True,
    help="Copy only committed transactions' records, or aborted ones too.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    metavar="PORT",
    help="Serve the mirror's lag in Prometheus format at http://HOST:PORT/metrics "
    "(bayou_mirror_lag_records, bayou_mirror_lag_seconds).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Address the --metrics-port listener binds to.",
)
def run(**params: Any) -> None:
    """Copy continuously until SIGINT or SIGTERM; the lag is logged every --interval."""
    from bayou.mirror.runner import Mirror, MirrorFailed, MirrorOptions
    from bayou.mirror.topics import Selection

    options = MirrorOptions(
        name=_check_name(params["name"]),
        topics=Selection(
            _patterns(params["topics"] or (".*",), "--topics"),
            _patterns(params["exclude_topics"], "--exclude-topics"),
        ),
        groups=Selection(
            _patterns(params["groups"] or (".*",), "--groups"),
            _patterns(params["exclude_groups"], "--exclude-groups"),
        ),
        interval_s=params["interval"],
        isolation=params["isolation"],
    )
    source, target = _connection("source", params), _connection("target", params)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    stop: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    mirror = Mirror(source, target, options)
    if params["metrics_port"] is not None:
        from bayou.mirror.metrics import serve_metrics

        serve_metrics(mirror, params["metrics_host"], params["metrics_port"])
    try:
        mirror.run(lambda: bool(stop))
    except MirrorFailed as exc:
        raise CliError(f"The mirror stopped: {exc}") from None
    except KafkaException as exc:
        raise CliError(f"The mirror stopped: {exc}") from None


@mirror.command()
@_side_options("source")
@_side_options("target")
@_name_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def status(fmt: str, **params: Any) -> None:
    """Per mirrored partition: how it maps (same offsets, shifted after gaps, or shared),
    the source end offset, where the copy stands and the records and seconds behind."""
    from bayou.mirror.status import mirror_status

    source, target = _connection("source", params), _connection("target", params)
    rows = mirror_status(source, target, _check_name(params["name"]))
    if fmt == "json":
        click.echo(json.dumps([row.as_json() for row in rows]))
        return
    if not rows:
        click.echo("Nothing mirrored yet.", err=True)
        return
    width = max(len(f"{r.topic}-{r.partition}") for r in rows)
    click.echo(
        f"{'PARTITION':<{width}}  {'MODE':<12}  {'SOURCE END':>10}  {'COPIED TO':>10}  "
        f"{'RECORDS BEHIND':>14}  SECONDS BEHIND"
    )
    for r in rows:
        seconds = f"{r.seconds_behind:.1f}" if r.seconds_behind >= 0 else "?"
        click.echo(
            f"{f'{r.topic}-{r.partition}':<{width}}  {r.mode:<12}  {r.source_end:>10}  "
            f"{r.copied_to:>10}  {r.records_behind:>14}  {seconds}"
        )
