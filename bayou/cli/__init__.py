"""The ``bayou`` command line: ``serve`` runs a broker; the other commands are Kafka clients.

Exit codes: 0 success, 1 the operation failed, 2 a usage or configuration error.  See
``docs/cli.md``.
"""

from __future__ import annotations

import importlib.metadata

import click

from bayou.cli._common import connection_options
from bayou.cli.acl import acl
from bayou.cli.connect import connect
from bayou.cli.consume import consume
from bayou.cli.group import group
from bayou.cli.mirror import mirror
from bayou.cli.produce import produce
from bayou.cli.quota import quota
from bayou.cli.serve import serve
from bayou.cli.sql import sql
from bayou.cli.streams import streams
from bayou.cli.topic import topic
from bayou.cli.txn import txn
from bayou.cli.user import user


def _version() -> str:
    try:
        return importlib.metadata.version("bayou")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(_version(), prog_name="bayou")
@connection_options(root=True)
def cli() -> None:
    """Bayou, an event streaming platform that speaks the Kafka protocol.

    `bayou serve` runs a broker. `topic`, `produce`, `consume`, `group`, `txn`, `user`, `acl` and
    `quota` talk to a running broker at --bootstrap (default $BAYOU_BOOTSTRAP or 127.0.0.1:9092);
    `sql` and `streams` run SQL views and stream apps; `mirror` copies topics and group offsets
    from one cluster to another; `connect` runs connectors (files, lakes, databases, URLs).
    """


cli.add_command(serve)
cli.add_command(topic)
cli.add_command(produce)
cli.add_command(consume)
cli.add_command(group)
cli.add_command(txn)
cli.add_command(user)
cli.add_command(acl)
cli.add_command(quota)
cli.add_command(streams)
cli.add_command(sql)
cli.add_command(mirror)
cli.add_command(connect)


def main() -> None:
    """Console-script entry point (``bayou``, ``python -m bayou``)."""
    cli(prog_name="bayou")


__all__ = ["cli", "main"]
