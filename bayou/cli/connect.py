"""``bayou connect run FILE.toml``: run connectors standalone against the broker at
``--bootstrap`` (``docs/design/connect.md``); ``bayou connect plugins``: the connector
classes this installation has."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path

import click

from bayou.cli._common import UsageProblem, connection_options, get_connection


@click.group()
def connect() -> None:
    """Run Connect connectors: pipelines between topics and files, lakes, databases, URLs."""


@connect.command()
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@connection_options()
def run(config_file: Path) -> None:
    """Run the connectors of CONFIG_FILE (TOML, a [connectors.NAME] table each) until
    interrupted; progress is kept in the broker, so a restart continues where it stopped."""
    from bayou.connect.api import ConfigError
    from bayou.connect.runtime.connector import ConnectorRunner, prepare
    from bayou.connect.standalone import load

    conn = get_connection()
    try:
        configs = load(config_file)
        for config in configs:
            prepare(config)
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    logging.basicConfig(
        level=logging.DEBUG if conn.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    conn.probe()
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    runners = [ConnectorRunner(c, conn.client_config(), worker_id) for c in configs]
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_a: done.set())
    for runner in runners:
        runner.start()
    done.wait()
    for runner in runners:
        runner.stop()


@connect.command()
def plugins() -> None:
    """List the connector classes (the names connector.class takes)."""
    from bayou.connect.registry import CONNECTOR_CLASSES, is_sink

    for name in sorted(CONNECTOR_CLASSES):
        click.echo(f"{name}\t{'sink' if is_sink(name) else 'source'}")
