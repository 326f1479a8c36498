"""``bayou txn list|describe``: transactions, as the transaction coordinator sees them.

confluent-kafka's admin client has no ListTransactions/DescribeTransactions, so these speak
the requests with Bayou's own codec (``raw.py``): FindCoordinator (key type 1) names the
coordinator of a transactional id — Bayou's is the broker itself, Kafka's may be another —
then ListTransactions v1 and DescribeTransactions v0 go to it.  States are Kafka's names
(Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import click

from bayou.cli._common import (
    CliError,
    Connection,
    bootstrap_addresses,
    connection_options,
    get_connection,
)
from bayou.cli.raw import call
from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m

FIND_COORDINATOR, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 10, 65, 66
TRANSACTION_KEY = 1


def _call(
    conn: Connection,
    address: tuple[str, int],
    api_key: int,
    version: int,
    request: Any,
    action: str,
) -> Any:
    try:
        return call(
            address[0], address[1], api_key, version, request, conn.timeout, conn.raw_security()
        )
    except TimeoutError:
        raise conn.no_answer() from None
    except (OSError, ValueError) as exc:
        raise CliError(f"Could not {action}: {exc}") from None


def _bootstrap(conn: Connection) -> tuple[str, int]:
    conn.probe()
    return bootstrap_addresses(conn.bootstrap)[0]


def _coordinator(conn: Connection, tid: str) -> tuple[str, int]:
    found = _call(
        conn,
        _bootstrap(conn),
        FIND_COORDINATOR,
        3,
        m.FindCoordinatorRequest(key=tid, key_type=TRANSACTION_KEY),
        "find the transaction coordinator",
    )
    if found.error_code != ErrorCode.NONE:
        raise CliError(
            f"Could not find the coordinator of transactional id '{tid}': "
            f"{ErrorCode(found.error_code).name}"
        )
    return found.host, found.port


def _describe(conn: Connection, address: tuple[str, int], ids: list[str]) -> list[Any]:
    answer = _call(
        conn,
        address,
        DESCRIBE_TRANSACTIONS,
        0,
        m.DescribeTransactionsRequest(transactional_ids=ids),
        "describe transactions",
    )
    return list(answer.transaction_states)


def _partitions(state: Any) -> str:
    names = [f"{t.topic}-{p}" for t in state.topics for p in sorted(t.partitions)]
    return ",".join(names) if names else "-"


@click.group()
def txn() -> None:
    """List and describe transactions (transactional producers)."""


@txn.command(name="list")
@connection_options()
def list_txns() -> None:
    """List transactional ids, one per line: id, state, and the partitions of the current
    transaction ('-' when none)."""
    conn = get_connection()
    address = _bootstrap(conn)
    listed = _call(
        conn, address, LIST_TRANSACTIONS, 1, m.ListTransactionsRequest(), "list transactions"
    )
    if listed.error_code != ErrorCode.NONE:
        raise CliError(f"Could not list transactions: {ErrorCode(listed.error_code).name}")
    ids = sorted(t.transactional_id for t in listed.transaction_states)
    if not ids:
        click.echo("No transactions.", err=True)
        return
    states = {s.transactional_id: s for s in _describe(conn, address, ids)}
    width = max(len(i) for i in ids)
    for tid in ids:
        s = states.get(tid)
        if s is None or s.error_code != ErrorCode.NONE:
            continue  # expired between the two requests
        click.echo(f"{tid:<{width}}  {s.transaction_state:<14}  {_partitions(s)}")


def _age(start_ms: int) -> str:
    if start_ms < 0:
        return "-"
    when = dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.UTC)
    seconds = max(time.time() - start_ms / 1000, 0.0)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{seconds:.1f} s (started {stamp})"


@txn.command()
@click.argument("transactional_id")
@connection_options()
def describe(transactional_id: str) -> None:
    """Show a transactional id: state, producer id and epoch, timeout, the current
    transaction's age and partitions."""
    conn = get_connection()
    address = _coordinator(conn, transactional_id)
    [s] = _describe(conn, address, [transactional_id])
    if s.error_code == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND:
        raise CliError(f"Transactional id '{transactional_id}' does not exist")
    if s.error_code != ErrorCode.NONE:
        raise CliError(
            f"Could not describe transactional id '{transactional_id}': "
            f"{ErrorCode(s.error_code).name}"
        )
    rows = [
        ("transactional id", transactional_id),
        ("state", s.transaction_state),
        ("producer id", f"{s.producer_id} (epoch {s.producer_epoch})"),
        ("timeout", f"{s.transaction_timeout_ms} ms"),
        ("age", _age(s.transaction_start_time_ms)),
        ("partitions", _partitions(s).replace(",", ", ")),
    ]
    for name, value in rows:
        click.echo(f"{name:<17} {value}")
