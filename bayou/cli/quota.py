"""``bayou quota set/remove/list``: client quotas, as ``kafka-configs --entity-type users /
clients / ips`` manages them.

An entity is ``--user NAME``, ``--client-id ID`` (either or both) or ``--ip ADDRESS``;
``<default>`` as the name is that type's default entity.  Keys are Kafka's:
``producer_byte_rate``, ``consumer_byte_rate``, ``request_percentage``,
``controller_mutation_rate`` (users, client ids) and ``connection_creation_rate`` (ips).
With ``--data-dir`` the command changes a stopped broker's data directory, with
``--storage URL`` a cluster's shared engine (``offline.py``); otherwise it asks the broker
at ``-b`` with AlterClientQuotas / DescribeClientQuotas over one socket (``raw.py``:
confluent-kafka's admin client has no quota calls), over TLS and with a SASL login when
``--tls-ca`` and ``--sasl-user`` say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from bayou.cli._common import (
    CliError,
    Connection,
    UsageProblem,
    bootstrap_addresses,
    connection_options,
    get_connection,
    parse_pairs,
)
from bayou.cli.offline import Offline, offline_options, run_offline_quotas
from bayou.cli.raw import call
from bayou.core.quotas import CLIENT_ID, IP, USER, DescribeFilter, QuotaStore
from bayou.core.quotas.entities import entity_text
from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m

DEFAULT = "<default>"
DESCRIBE_CLIENT_QUOTAS, ALTER_CLIENT_QUOTAS = 48, 49
EXACT, DEFAULT_MATCH = 0, 1

Pairs = list[tuple[str, str | None]]


def _entity_options(f: Any) -> Any:
    for name, kind in (("--ip", "address"), ("--client-id", "client id"), ("--user", "user")):
        f = click.option(
            name, metavar="NAME", help=f"The {kind} ({DEFAULT}: the default {kind} entity)."
        )(f)
    return f


def _pairs(user: str | None, client_id: str | None, ip: str | None) -> Pairs:
    pairs: Pairs = []
    for kind, name in ((USER, user), (CLIENT_ID, client_id), (IP, ip)):
        if name is not None:
            pairs.append((kind, None if name == DEFAULT else name))
    return pairs


@click.group()
def quota() -> None:
    """Client quotas: byte rates and request time per user and client id, connection
    rates per address."""


@quota.command(name="set")
@_entity_options
@click.argument("values", nargs=-1, required=True, metavar="KEY=VALUE...")
@offline_options
@connection_options()
def set_quota(
    user: str | None,
    client_id: str | None,
    ip: str | None,
    values: tuple[str, ...],
    data_dir: Path | None,
    storage: str | None,
) -> None:
    """Set quotas on an entity, e.g. ``--user alice producer_byte_rate=1048576``."""
    ops: list[tuple[str, float | None]] = []
    for key, text in parse_pairs(values, "set"):
        try:
            ops.append((key, float(text)))
        except ValueError:
            raise UsageProblem(f"The value of {key} must be a number, got '{text}'.") from None
    pairs = _pairs(user, client_id, ip)
    _alter(pairs, ops, Offline.of(data_dir, storage))
    click.echo(f"Quotas of {_text(pairs)} set.")


@quota.command(name="remove")
@_entity_options
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@offline_options
@connection_options()
def remove_quota(
    user: str | None,
    client_id: str | None,
    ip: str | None,
    keys: tuple[str, ...],
    data_dir: Path | None,
    storage: str | None,
) -> None:
    """Remove quotas (by key) from an entity."""
    pairs = _pairs(user, client_id, ip)
    _alter(pairs, [(k, None) for k in keys], Offline.of(data_dir, storage))
    click.echo(f"Quotas of {_text(pairs)} removed.")


@quota.command(name="list")
@_entity_options
@offline_options
@connection_options()
def list_quotas(
    user: str | None,
    client_id: str | None,
    ip: str | None,
    data_dir: Path | None,
    storage: str | None,
) -> None:
    """List quotas: all, or those of entities with the names given."""
    components = [
        (kind, DEFAULT_MATCH if name is None else EXACT, name)
        for kind, name in _pairs(user, client_id, ip)
    ]
    rows: list[tuple[Pairs, dict[str, float]]]
    offline = Offline.of(data_dir, storage)
    if offline is not None:
        flt = DescribeFilter.parse(components, strict=False)

        async def job(store: QuotaStore) -> list[tuple[Pairs, dict[str, float]]]:
            return [(list(e), v) for e, v in store.describe(flt)]

        rows = run_offline_quotas(offline, job)
    else:
        rows = _describe_remote(get_connection(), components)
    for pairs, found in rows:
        text = " ".join(f"{k}={_number(v)}" for k, v in sorted(found.items()))
        click.echo(f"{_text(pairs)}\t{text}")
    click.echo("1 entity" if len(rows) == 1 else f"{len(rows)} entities", err=True)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _text(pairs: Pairs) -> str:
    return entity_text(tuple(pairs)) if pairs else "(no entity)"


def _alter(pairs: Pairs, ops: Sequence[tuple[str, float | None]], offline: Offline | None) -> None:
    if offline is not None:

        async def job(store: QuotaStore) -> Any:
            return (await store.alter([(pairs, ops)]))[0]

        error = run_offline_quotas(offline, job)
        if error is not None:
            raise CliError(f"Could not change the quotas: {error.message}")
        return
    conn = get_connection()
    request = m.AlterClientQuotasRequest(
        entries=[
            m.AlterClientQuotasRequest.EntryData(
                entity=[
                    m.AlterClientQuotasRequest.EntityData(entity_type=t, entity_name=n)
                    for t, n in pairs
                ],
                ops=[
                    m.AlterClientQuotasRequest.OpData(
                        key=k, value=0.0 if v is None else v, remove=v is None
                    )
                    for k, v in ops
                ],
            )
        ],
        validate_only=False,
    )
    answer = _call(conn, ALTER_CLIENT_QUOTAS, 1, request, "change the quotas")
    entry = answer.entries[0]
    if entry.error_code != ErrorCode.NONE:
        name = ErrorCode(entry.error_code).name
        raise CliError(f"Could not change the quotas: {name}: {entry.error_message or ''}")


def _describe_remote(
    conn: Connection, components: list[tuple[str, int, str | None]]
) -> list[tuple[Pairs, dict[str, float]]]:
    request = m.DescribeClientQuotasRequest(
        components=[
            m.DescribeClientQuotasRequest.ComponentData(entity_type=t, match_type=mt, match=mm)
            for t, mt, mm in components
        ],
        strict=False,
    )
    answer = _call(conn, DESCRIBE_CLIENT_QUOTAS, 1, request, "list the quotas")
    if answer.error_code != ErrorCode.NONE:
        name = ErrorCode(answer.error_code).name
        raise CliError(f"Could not list the quotas: {name}: {answer.error_message or ''}")
    return [
        (
            [(e.entity_type, e.entity_name) for e in entry.entity],
            {v.key: v.value for v in entry.values},
        )
        for entry in answer.entries or []
    ]


def _call(conn: Connection, api_key: int, version: int, request: Any, action: str) -> Any:
    conn.probe()
    host, port = bootstrap_addresses(conn.bootstrap)[0]
    try:
        return call(host, port, api_key, version, request, conn.timeout, conn.raw_security())
    except TimeoutError:
        raise conn.no_answer() from None
    except (OSError, ValueError) as exc:
        raise CliError(f"Could not {action}: {exc}") from None
