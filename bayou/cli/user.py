"""``bayou user add/remove/list``: the SCRAM users every door logs in with.

With ``--data-dir`` the command changes a stopped broker's data directory, with ``--storage
URL`` a cluster's shared engine (``offline.py``: how the first administrator is made before
the first secured start); otherwise it asks the
broker at ``-b`` with Kafka's AlterUserScramCredentials / DescribeUserScramCredentials, as
``kafka-configs --entity-type users`` does, logging in with ``--sasl-user`` and
``$BAYOU_SASL_PASSWORD`` when the broker requires it.  The password is read from standard
input (one trailing newline dropped), never from the command line.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click
from confluent_kafka import KafkaException

from bayou.cli._common import (
    CliError,
    UsageProblem,
    connection_options,
    get_connection,
    plural,
)
from bayou.cli.offline import Offline, offline_options, run_offline
from bayou.core.security import Security
from bayou.core.security.scram import MECHANISMS, MIN_ITERATIONS, make_credential

MECHANISM_NAMES = tuple(MECHANISMS)


def read_password() -> bytes:
    text = sys.stdin.buffer.read()
    text = text[:-1] if text.endswith(b"\n") else text
    if not text:
        raise UsageProblem("The password read from standard input is empty.")
    return text


@click.group()
def user() -> None:
    """Users (SCRAM credentials) for every door: Kafka SASL, HTTP, MQTT, AMQP."""


@user.command(name="add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from stdin.")
@click.option(
    "--mechanism",
    type=click.Choice(MECHANISM_NAMES),
    default="SCRAM-SHA-512",
    show_default=True,
    help="SCRAM mechanism of the credential.",
)
@click.option(
    "--iterations", type=click.IntRange(4096, 16384), default=MIN_ITERATIONS, show_default=True
)
@offline_options
@connection_options()
def add(
    name: str,
    password_stdin: bool,
    mechanism: str,
    iterations: int,
    data_dir: Path | None,
    storage: str | None,
) -> None:
    """Add user NAME, or set its password for the mechanism."""
    password = read_password()
    offline = Offline.of(data_dir, storage)
    if offline is not None:

        async def job(security: Security) -> None:
            cred = make_credential(MECHANISMS[mechanism], password, iterations)
            await security.users.upsert(name, cred)

        run_offline(offline, job)
    else:
        client: Any = importlib.import_module("confluent_kafka.admin")
        conn = get_connection()
        admin = conn.admin()
        mech = client.ScramMechanism[mechanism.replace("-", "_")]
        info = client.ScramCredentialInfo(mech, iterations)
        upsert = client.UserScramCredentialUpsertion(name, info, password)
        _result(conn, admin.alter_user_scram_credentials([upsert]), f"add user {name!r}")
    click.echo(f"User {name} has a {mechanism} credential.")


@user.command(name="remove")
@click.argument("name")
@click.option("--mechanism", type=click.Choice(MECHANISM_NAMES), help="Only this mechanism.")
@offline_options
@connection_options()
def remove(name: str, mechanism: str | None, data_dir: Path | None, storage: str | None) -> None:
    """Remove user NAME (all its credentials, or one mechanism's)."""
    offline = Offline.of(data_dir, storage)
    if offline is not None:

        async def job(security: Security) -> bool:
            mech = MECHANISMS[mechanism] if mechanism else None
            return await security.users.delete(name, mech)

        if not run_offline(offline, job):
            raise CliError(f"There is no user {name!r}")
    else:
        client = importlib.import_module("confluent_kafka.admin")  # no stubs
        conn = get_connection()
        admin = conn.admin()
        mechanisms = [mechanism] if mechanism else _remote_mechanisms(conn, admin, name)
        deletions = [
            client.UserScramCredentialDeletion(name, client.ScramMechanism[m.replace("-", "_")])
            for m in mechanisms
        ]
        _result(conn, admin.alter_user_scram_credentials(deletions), f"remove user {name!r}")
    click.echo(f"User {name} removed.")


@user.command(name="list")
@offline_options
@connection_options()
def list_users(data_dir: Path | None, storage: str | None) -> None:
    """List users and their mechanisms."""
    rows: list[tuple[str, list[str]]]
    offline = Offline.of(data_dir, storage)
    if offline is not None:

        async def job(security: Security) -> list[tuple[str, list[str]]]:
            users = security.users
            return [(n, sorted(users.credentials(n))) for n in users.names()]

        rows = run_offline(offline, job)
    else:
        conn = get_connection()
        admin = conn.admin()
        described = _describe(conn, admin, None)
        rows = sorted(described.items())
    for name, mechanisms in rows:
        click.echo(f"{name}\t{','.join(mechanisms)}")
    click.echo(plural(len(rows), "user"), err=True)


def _describe(conn: Any, admin: Any, users: list[str] | None) -> dict[str, list[str]]:
    future = admin.describe_user_scram_credentials(users)
    try:
        results = future.result(timeout=conn.timeout + 5)
    except KafkaException as exc:
        raise conn.failure(exc, "list users") from None
    out: dict[str, list[str]] = {}
    for name, desc in results.items():
        out[name] = sorted(
            info.mechanism.name.replace("_", "-") for info in desc.scram_credential_infos
        )
    return out


def _remote_mechanisms(conn: Any, admin: Any, name: str) -> list[str]:
    try:
        found = admin.describe_user_scram_credentials([name])
        desc = found[name].result(timeout=conn.timeout + 5)
    except KafkaException:
        raise CliError(f"There is no user {name!r}") from None
    return [info.mechanism.name.replace("_", "-") for info in desc.scram_credential_infos]


def _result(conn: Any, futures: dict[str, Any], action: str) -> None:
    for future in futures.values():
        try:
            future.result(timeout=conn.timeout + 5)
        except KafkaException as exc:
            raise conn.failure(exc, action) from None
