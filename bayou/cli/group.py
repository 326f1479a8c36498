"""``bayou group list|describe|reset-offsets|delete``: consumer groups over the Kafka protocol.

Share groups (KIP-932) are listed and described too (``share_groups.py``): their type,
members, partitions, start offsets, lag and records in flight.

``reset-offsets`` works as ``kafka-consumer-groups --reset-offsets`` does: without
``--execute`` it only prints the plan (a dry run); it is refused while the group has members,
since their commits would overwrite the reset.
"""

from __future__ import annotations

import concurrent.futures
import json
from typing import Any

import click
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from bayou.cli import share_groups
from bayou.cli._common import (
    CliError,
    Connection,
    UsageProblem,
    check_topic_name,
    connection_options,
    epoch_ms,
    get_connection,
    iso_time,
    plural,
)

ACTIVE_STATES = {"preparingrebalance", "completingrebalance", "stable", "assigning", "reconciling"}


def _wait(conn: Connection, future: Any, action: str) -> Any:
    try:
        return future.result(timeout=conn.timeout + 5)
    except concurrent.futures.TimeoutError:
        raise conn.no_answer() from None
    except KafkaException as exc:
        raise conn.failure(exc, action) from None


def _state_name(state: Any) -> str:
    name = getattr(state, "name", str(state))
    return {
        "PREPARING_REBALANCING": "PreparingRebalance",
        "COMPLETING_REBALANCING": "CompletingRebalance",
    }.get(name, name.replace("_", " ").title().replace(" ", ""))


def _type_name(kind: Any) -> str:
    return str(getattr(kind, "name", kind)).lower()


@click.group()
def group() -> None:
    """List, describe, reset the offsets of, and delete consumer groups."""


@group.command(name="list")
@connection_options()
def list_groups() -> None:
    """List groups, one per line: name, state, type and lag (messages not yet consumed:
    log end offset minus committed offset, summed over the partitions the group committed;
    '-' when it committed none; for a share group, the records not yet acknowledged)."""
    conn = get_connection()
    admin = conn.admin()
    listed = _wait(conn, admin.list_consumer_groups(request_timeout=conn.timeout), "list groups")
    shared = dict(share_groups.list_share_groups(conn))
    rows = sorted((g for g in listed.valid if g.group_id not in shared), key=lambda g: g.group_id)
    if not rows and not shared:
        click.echo("No groups.", err=True)
        return
    committed = {g.group_id: _committed(conn, admin, g.group_id) for g in rows}
    ends = _log_ends(conn, admin, {tp for offsets in committed.values() for tp in offsets})
    lines = []
    for g in rows:
        offsets = committed[g.group_id]
        known = [max(ends[tp] - offset, 0) for tp, offset in offsets.items() if tp in ends]
        lag = str(sum(known)) if known else "-"
        kind = _type_name(getattr(g, "type", "classic"))
        lines.append((g.group_id, _state_name(g.state), kind, lag))
    for name, state in shared.items():
        lags = [lag for _start, lag in share_groups.offsets(conn, name).values() if lag >= 0]
        lines.append((name, state, share_groups.SHARE, str(sum(lags)) if lags else "-"))
    width = max(len(line[0]) for line in lines)
    for name, state, kind, lag in sorted(lines):
        click.echo(f"{name:<{width}}  {state:<20}  {kind:<8}  {lag}")


def _log_ends(
    conn: Connection, admin: Any, partitions: set[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The log end offset of each partition, in one ListOffsets round (partitions of topics
    that are gone are left out)."""
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

    if not partitions:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(t, p): OffsetSpec.latest() for t, p in sorted(partitions)},  # type: ignore[no-untyped-call]
        request_timeout=conn.timeout,
    )
    ends: dict[tuple[str, int], int] = {}
    for tp, future in futures.items():
        try:
            ends[(tp.topic, tp.partition)] = future.result(timeout=conn.timeout + 5).offset
        except concurrent.futures.TimeoutError:
            raise conn.no_answer() from None
        except KafkaException:
            continue
    return ends


def _describe(conn: Connection, admin: Any, name: str) -> Any:
    futures = admin.describe_consumer_groups([name], request_timeout=conn.timeout)
    return _wait(conn, futures[name], f"describe group '{name}'")


def _committed(conn: Connection, admin: Any, name: str) -> dict[tuple[str, int], int]:
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(name)], request_timeout=conn.timeout
    )
    result = _wait(conn, futures[name], f"list the offsets of group '{name}'")
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def _consumer(conn: Connection) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        conn.client_config(**{"group.id": "bayou-cli-watermarks", "enable.auto.commit": False})
    )


def _exists(description: Any, committed: dict[tuple[str, int], int]) -> bool:
    return bool(committed or description.members) or _state_name(description.state) not in (
        "Dead",
        "Unknown",
    )


@group.command()
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Human-readable text, or one JSON object.",
)
@connection_options()
def describe(name: str, fmt: str) -> None:
    """Describe group NAME: state, members and their partitions, and per partition the
    committed offset, the log end offset and the lag (for a share group: the start offset,
    the records in flight and the lag)."""
    conn = get_connection()
    shared = share_groups.describe_share_group(conn, name)
    if shared is not None:
        _show_share_group(shared, fmt)
        return
    admin = conn.admin()
    description = _describe(conn, admin, name)
    committed = _committed(conn, admin, name)
    if not _exists(description, committed):
        raise CliError(f"Group '{name}' does not exist.")
    owner: dict[tuple[str, int], str] = {}
    members = []
    for mem in description.members:
        parts = sorted(
            (tp.topic, tp.partition)
            for tp in (mem.assignment.topic_partitions if mem.assignment else [])
        )
        for tp in parts:
            owner[tp] = mem.member_id
        members.append(
            {
                "member_id": mem.member_id,
                "client_id": mem.client_id,
                "host": mem.host,
                "instance_id": mem.group_instance_id,
                "partitions": [f"{t}-{p}" for t, p in parts],
            }
        )
    rows = []
    consumer = _consumer(conn)
    try:
        for topic, partition in sorted(set(committed) | set(owner)):
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=conn.timeout
                )
            except KafkaException:
                high = -1
            offset = committed.get((topic, partition))
            rows.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "committed": offset,
                    "log_end": high,
                    "lag": None if offset is None or high < 0 else max(high - offset, 0),
                    "member": owner.get((topic, partition)),
                }
            )
    finally:
        consumer.close()
    info = {
        "group": name,
        "state": _state_name(description.state),
        "type": _type_name(getattr(description, "type", "classic")),
        "assignor": description.partition_assignor,
        "members": members,
        "partitions": rows,
    }
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"Group:    {name}")
    click.echo(f"State:    {info['state']}")
    click.echo(f"Type:     {info['type']}")
    click.echo(f"Assignor: {info['assignor'] or '-'}")
    click.echo(f"Members:  {len(members)}")
    for mem in members:
        instance = f" instance={mem['instance_id']}" if mem["instance_id"] else ""
        click.echo(
            f"  {mem['member_id']}  client={mem['client_id']} host={mem['host']}"
            f"{instance}  partitions={','.join(mem['partitions']) or '-'}"
        )
    click.echo(
        f"  {'TOPIC':<24} {'PARTITION':>9} {'COMMITTED':>12} {'LOG-END':>12} {'LAG':>10}  MEMBER"
    )
    for r in rows:
        committed_s = "-" if r["committed"] is None else str(r["committed"])
        lag_s = "-" if r["lag"] is None else str(r["lag"])
        click.echo(
            f"  {r['topic']:<24} {r['partition']:>9} {committed_s:>12} "
            f"{r['log_end']:>12} {lag_s:>10}  {r['member'] or '-'}"
        )


def _show_share_group(view: share_groups.ShareGroupView, fmt: str) -> None:
    info = {
        "group": view.group_id,
        "state": view.state,
        "type": share_groups.SHARE,
        "assignor": view.assignor,
        "members": view.members,
        "partitions": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "start_offset": p.start_offset,
                "in_flight": p.in_flight,
                "lag": p.lag,
                "members": p.members,
            }
            for p in view.partitions
        ],
    }
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"Group:    {view.group_id}")
    click.echo(f"State:    {view.state}")
    click.echo(f"Type:     {share_groups.SHARE}")
    click.echo(f"Assignor: {view.assignor}")
    click.echo(f"Members:  {len(view.members)}")
    for mem in view.members:
        click.echo(
            f"  {mem['member_id']}  client={mem['client_id']} host={mem['host']}"
            f"  partitions={','.join(mem['partitions']) or '-'}"
        )
    click.echo(
        f"  {'TOPIC':<24} {'PARTITION':>9} {'START-OFFSET':>12} {'IN-FLIGHT':>10} {'LAG':>10}"
        "  MEMBERS"
    )
    for p in view.partitions:
        flying = "-" if p.in_flight is None else str(p.in_flight)
        click.echo(
            f"  {p.topic:<24} {p.partition:>9} {p.start_offset:>12} {flying:>10} "
            f"{p.lag:>10}  {len(p.members)}"
        )


def _parse_datetime(text: str) -> int:
    """Without a zone: UTC, as in every command (kafka-consumer-groups takes local time)."""
    when = iso_time(text)
    if when is None:
        raise UsageProblem(f"--to-datetime expects an ISO 8601 time, got '{text}'.")
    return epoch_ms(when)


@group.command(name="reset-offsets")
@click.argument("name")
@click.option(
    "--topic",
    "topic_name",
    required=True,
    metavar="TOPIC",
    help="Topic whose partitions are reset (all of its partitions).",
)
@click.option("--to-earliest", is_flag=True, help="The earliest offset of each partition.")
@click.option("--to-latest", is_flag=True, help="The log end offset of each partition.")
@click.option(
    "--to-datetime",
    metavar="ISO",
    help="The first offset at or after this time (e.g. 2024-05-01T12:00:00Z; without a zone, UTC).",
)
@click.option(
    "--shift-by",
    type=int,
    metavar="N",
    help="The committed offset plus N (negative goes back), kept within the partition's offsets.",
)
@click.option(
    "--to-offset", type=int, metavar="N", help="Offset N, kept within the partition's offsets."
)
@click.option("--execute", is_flag=True, help="Apply the plan (without it: a dry run).")
@connection_options()
def reset_offsets(
    name: str,
    topic_name: str,
    to_earliest: bool,
    to_latest: bool,
    to_datetime: str | None,
    shift_by: int | None,
    to_offset: int | None,
    execute: bool,
) -> None:
    """Reset group NAME's committed offsets for --topic: prints the plan, applies it with
    --execute. Refused while the group has members."""
    chosen = [
        to_earliest,
        to_latest,
        to_datetime is not None,
        shift_by is not None,
        to_offset is not None,
    ]
    if sum(chosen) != 1:
        raise UsageProblem(
            "Give exactly one of --to-earliest, --to-latest, --to-datetime, "
            "--shift-by, --to-offset."
        )
    check_topic_name(topic_name)
    timestamp = _parse_datetime(to_datetime) if to_datetime is not None else None
    conn = get_connection()
    admin = conn.admin()
    description = _describe(conn, admin, name)
    state = _state_name(description.state)
    if description.members or state.lower() in ACTIVE_STATES:
        raise CliError(
            f"Group '{name}' has {plural(len(description.members), 'member')} "
            f"(state {state}): stop its consumers before resetting its offsets."
        )
    metadata = admin.list_topics(topic=topic_name, timeout=conn.timeout)
    meta = metadata.topics.get(topic_name)
    if meta is None or meta.error is not None or not meta.partitions:
        raise CliError(f"Topic '{topic_name}' does not exist.")
    committed = _committed(conn, admin, name)
    plan: list[tuple[int, int | None, int]] = []
    consumer = _consumer(conn)
    try:
        by_time: dict[int, int] = {}
        if timestamp is not None:
            found = consumer.offsets_for_times(
                [TopicPartition(topic_name, p, timestamp) for p in sorted(meta.partitions)],
                timeout=conn.timeout,
            )
            by_time = {tp.partition: tp.offset for tp in found}
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic_name, p), timeout=conn.timeout
            )
            current = committed.get((topic_name, p))
            if to_earliest:
                new = low
            elif to_latest:
                new = high
            elif timestamp is not None:
                found_offset = by_time.get(p, -1)
                new = found_offset if found_offset >= 0 else high
            elif shift_by is not None:
                new = (current if current is not None else high) + shift_by
            else:
                assert to_offset is not None
                new = to_offset
            plan.append((p, current, min(max(new, low), high)))
    except KafkaException as exc:
        raise conn.failure(exc, f"plan the reset of group '{name}'", topic_name) from None
    finally:
        consumer.close()
    click.echo(f"  {'TOPIC':<24} {'PARTITION':>9} {'CURRENT':>12} {'NEW':>12}")
    for p, current, new in plan:
        click.echo(f"  {topic_name:<24} {p:>9} {'-' if current is None else current:>12} {new:>12}")
    if not execute:
        click.echo("Dry run: nothing changed. Add --execute to apply this plan.")
        return
    request = ConsumerGroupTopicPartitions(
        name, [TopicPartition(topic_name, p, new) for p, _cur, new in plan]
    )
    futures = admin.alter_consumer_group_offsets([request], request_timeout=conn.timeout)
    result = _wait(conn, futures[name], f"reset the offsets of group '{name}'")
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise CliError(
            f"Could not reset {plural(len(failed), 'partition')} of group "
            f"'{name}': {failed[0].error}"
        )
    click.echo(f"Reset {plural(len(plan), 'partition')} of group '{name}'.")


@group.command()
@click.argument("name")
@connection_options()
def delete(name: str) -> None:
    """Delete group NAME and its committed offsets (it must have no members)."""
    conn = get_connection()
    admin = conn.admin()
    futures = admin.delete_consumer_groups([name], request_timeout=conn.timeout)
    try:
        futures[name].result(timeout=conn.timeout + 5)
    except concurrent.futures.TimeoutError:
        raise conn.no_answer() from None
    except KafkaException as exc:
        from confluent_kafka import KafkaError

        err = exc.args[0] if exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        if code == KafkaError.GROUP_ID_NOT_FOUND:
            raise CliError(f"Group '{name}' does not exist.") from None
        if code == KafkaError.NON_EMPTY_GROUP:
            raise CliError(f"Group '{name}' still has members: stop its consumers first.") from None
        raise conn.failure(exc, f"delete group '{name}'") from None
    click.echo(f"Deleted group '{name}'.")
