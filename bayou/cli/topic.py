"""``bayou topic create|list|describe|alter|trim|delete``: topic administration over the Kafka
protocol."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from typing import Any

import click
from confluent_kafka import KafkaException, TopicCollection, TopicPartition

from bayou.cli._common import (
    CliError,
    Connection,
    UsageProblem,
    check_topic_name,
    connection_options,
    epoch_ms,
    get_connection,
    iso_time,
    parse_pairs,
    plural,
)
from bayou.cli.log_dirs import partition_sizes


def _result(conn: Connection, future: Any, action: str, topic: str | None) -> Any:
    """Wait (bounded) for one admin future, turning failures into sentences."""
    try:
        return future.result(timeout=conn.timeout + 5)
    except concurrent.futures.TimeoutError:
        raise conn.no_answer() from None
    except KafkaException as exc:
        raise conn.failure(exc, action, topic) from None


def _metadata(conn: Connection, admin: Any) -> Any:
    try:
        return admin.list_topics(timeout=conn.timeout)
    except KafkaException as exc:
        raise conn.failure(exc, "list topics") from None


@click.group()
def topic() -> None:
    """Create, list, describe, alter, trim and delete topics."""


@topic.command()
@click.argument("name")
@click.option(
    "--partitions",
    "-p",
    type=click.IntRange(min=1),
    metavar="N",
    help="Number of partitions. Default: the broker's --num-partitions.",
)
@click.option(
    "--config",
    "-c",
    "configs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Topic config by its Kafka name, e.g. retention.ms=86400000. Repeatable.",
)
@connection_options()
def create(name: str, partitions: int | None, configs: tuple[str, ...]) -> None:
    """Create topic NAME (replication factor 1)."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    check_topic_name(name)
    settings = dict(parse_pairs(configs, "--config"))
    conn = get_connection()
    admin = conn.admin()
    new = NewTopic(name, num_partitions=partitions or -1, replication_factor=1, config=settings)
    futures = admin.create_topics(
        [new], request_timeout=conn.timeout, operation_timeout=conn.timeout
    )
    _result(conn, futures[name], f"create topic '{name}'", name)
    count = f" with {plural(partitions, 'partition')}" if partitions else ""
    click.echo(f"Created topic '{name}'{count}.")


@topic.command(name="list")
@click.option(
    "--all",
    "-a",
    "show_all",
    is_flag=True,
    help="Also list internal topics (names starting with '__').",
)
@connection_options()
def list_topics(show_all: bool) -> None:
    """List topic names, one per line, sorted."""
    conn = get_connection()
    metadata = _metadata(conn, conn.admin())
    for name in sorted(metadata.topics):
        if show_all or not name.startswith("__"):
            click.echo(name)


@topic.command()
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
    """Describe topic NAME: its id, partitions with their earliest and latest offsets and
    their size on disk, and its configs."""
    check_topic_name(name)
    conn = get_connection()
    admin = conn.admin()
    info = describe_topic(conn, admin, name)
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"Topic:      {info['name']}")
    click.echo(f"Topic ID:   {info['topic_id']}")
    click.echo(f"Partitions: {len(info['partitions'])}")
    click.echo(
        f"  {'PARTITION':>9}  {'LEADER':>6}  {'EARLIEST':>12}  {'LATEST':>12}  "
        f"{'MESSAGES':>12}  {'BYTES':>12}"
    )
    for p in info["partitions"]:
        size = "?" if p["size_bytes"] is None else p["size_bytes"]
        click.echo(
            f"  {p['partition']:>9}  {p['leader']:>6}  {p['earliest_offset']:>12}  "
            f"{p['latest_offset']:>12}  {p['latest_offset'] - p['earliest_offset']:>12}  "
            f"{size:>12}"
        )
    click.echo("Configs:")
    for key, entry in sorted(info["configs"].items()):
        origin = "" if entry["is_default"] else f"  ({entry['source']})"
        click.echo(f"  {key} = {entry['value']}{origin}")


def describe_topic(conn: Connection, admin: Any, name: str) -> dict[str, Any]:
    """Everything ``topic describe`` shows, as plain data."""
    # confluent-kafka re-exports these without `as`, which strict mypy does not count.
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        ConfigResource,
        OffsetSpec,
        ResourceType,
    )

    action = f"describe topic '{name}'"
    futures = admin.describe_topics(TopicCollection([name]), request_timeout=conn.timeout)
    description = _result(conn, futures[name], action, name)
    partitions = sorted(description.partitions, key=lambda p: p.id)
    offsets: dict[str, dict[int, int]] = {}
    earliest = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    specs = (("earliest", earliest), ("latest", latest))
    for label, spec in specs:
        request = {TopicPartition(name, p.id): spec for p in partitions}
        found = admin.list_offsets(request, request_timeout=conn.timeout) if request else {}
        offsets[label] = {
            tp.partition: _result(conn, f, action, name).offset for tp, f in found.items()
        }
    sizes: dict[int, int] = {}
    by_leader: dict[tuple[str, int], list[int]] = {}
    for p in partitions:
        if p.leader is not None:
            by_leader.setdefault((p.leader.host, p.leader.port), []).append(p.id)
    for (host, port), ids in by_leader.items():
        sizes.update(partition_sizes(host, port, name, ids, conn.timeout))
    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = _result(
        conn,
        admin.describe_configs([resource], request_timeout=conn.timeout)[resource],
        action,
        name,
    )
    return {
        "name": description.name,
        "topic_id": kafka_uuid(description.topic_id),
        "partitions": [
            {
                "partition": p.id,
                "leader": p.leader.id if p.leader is not None else -1,
                "replicas": [r.id for r in p.replicas],
                "isr": [r.id for r in p.isr],
                "earliest_offset": offsets["earliest"].get(p.id, -1),
                "latest_offset": offsets["latest"].get(p.id, -1),
                "size_bytes": sizes.get(p.id),
            }
            for p in partitions
        ],
        "configs": {
            key: {
                "value": entry.value,
                "is_default": bool(entry.is_default),
                "source": _source_name(entry.source),
            }
            for key, entry in entries.items()
        },
    }


def kafka_uuid(uuid: Any) -> str:
    """A topic id the way Kafka's tools print it (URL-safe base64 of the 16 bytes)."""
    if uuid is None:
        return ""
    msb = uuid.get_most_significant_bits() & (2**64 - 1)
    lsb = uuid.get_least_significant_bits() & (2**64 - 1)
    raw = msb.to_bytes(8, "big") + lsb.to_bytes(8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _source_name(source: Any) -> str:
    from confluent_kafka.admin import ConfigSource  # type: ignore[attr-defined]

    try:
        return str(ConfigSource(source).name).lower()
    except ValueError:
        return str(source)


@topic.command()
@click.argument("name")
@connection_options()
def delete(name: str) -> None:
    """Delete topic NAME and all its messages."""
    check_topic_name(name)
    conn = get_connection()
    admin = conn.admin()
    if name not in _metadata(conn, admin).topics:
        raise CliError(f"Topic '{name}' does not exist.")
    futures = admin.delete_topics(
        [name], request_timeout=conn.timeout, operation_timeout=conn.timeout
    )
    _result(conn, futures[name], f"delete topic '{name}'", name)
    click.echo(f"Deleted topic '{name}'.")


@topic.command()
@click.argument("name")
@click.option(
    "--config",
    "-c",
    "configs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a topic config by its Kafka name, e.g. retention.ms=3600000. Repeatable.",
)
@click.option(
    "--delete-config",
    "-d",
    "deletes",
    multiple=True,
    metavar="NAME",
    help="Remove the topic's own value of a config (back to the default). Repeatable.",
)
@connection_options()
def alter(name: str, configs: tuple[str, ...], deletes: tuple[str, ...]) -> None:
    """Change configs of topic NAME; they apply at once, without a restart.

    Every value is checked by the broker; if one is invalid nothing changes.
    """
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    check_topic_name(name)
    settings = parse_pairs(configs, "--config")
    if not settings and not deletes:
        raise UsageProblem("Give at least one --config NAME=VALUE or --delete-config NAME.")
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in settings]
    entries += [
        ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in deletes
    ]
    conn = get_connection()
    admin = conn.admin()
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
    futures = admin.incremental_alter_configs([resource], request_timeout=conn.timeout)
    _result(conn, futures[resource], f"alter topic '{name}'", name)
    changed = [f"{k}={v}" for k, v in settings] + [f"{k} (default)" for k in deletes]
    click.echo(f"Altered topic '{name}': {', '.join(changed)}.")


def _parse_time(text: str) -> int:
    """An ISO-8601 time (without a zone: UTC) as epoch milliseconds."""
    when = iso_time(text)
    if when is None:
        raise UsageProblem(f"--before expects an ISO time like 2024-05-01T12:00:00Z, got '{text}'.")
    return epoch_ms(when)


@topic.command()
@click.argument("name")
@click.option(
    "--before",
    metavar="ISO-TIME",
    help="Delete every record older than this time (e.g. 2024-05-01T12:00:00Z; "
    "without a zone, UTC).",
)
@click.option(
    "--offset", type=click.IntRange(min=0), metavar="N", help="Delete every record below offset N."
)
@click.option(
    "--partition",
    "-p",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    metavar="P",
    help="Only this partition (repeatable). Default: all.",
)
@connection_options()
def trim(name: str, before: str | None, offset: int | None, partitions: tuple[int, ...]) -> None:
    """Delete the oldest records of topic NAME (moves each partition's earliest offset).

    Exactly one of --before and --offset.  Whole segments below the new earliest offset are
    removed from disk at once.
    """
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

    check_topic_name(name)
    if (before is None) == (offset is None):
        raise UsageProblem("Give exactly one of --before ISO-TIME and --offset N.")
    conn = get_connection()
    admin = conn.admin()
    action = f"trim topic '{name}'"
    metadata = _metadata(conn, admin)
    if name not in metadata.topics:
        raise CliError(f"Topic '{name}' does not exist.")
    chosen = sorted(partitions) or sorted(metadata.topics[name].partitions)
    targets: dict[int, int] = {p: offset if offset is not None else -1 for p in chosen}
    if before is not None:
        ts = _parse_time(before)
        spec = OffsetSpec.for_timestamp(ts)
        found = admin.list_offsets(
            {TopicPartition(name, p): spec for p in chosen}, request_timeout=conn.timeout
        )
        for tp, future in found.items():
            at = _result(conn, future, action, name).offset
            targets[tp.partition] = at  # -1: nothing that new, so everything goes
    else:  # an offset past a partition's end trims that partition to its end
        latest = admin.list_offsets(
            {TopicPartition(name, p): OffsetSpec.latest() for p in chosen},  # type: ignore[no-untyped-call]
            request_timeout=conn.timeout,
        )
        for tp, future in latest.items():
            end = _result(conn, future, action, name).offset
            targets[tp.partition] = min(targets[tp.partition], end)
    request = [TopicPartition(name, p, o) for p, o in targets.items()]
    futures = admin.delete_records(request, request_timeout=conn.timeout)
    for tp, future in sorted(futures.items(), key=lambda item: item[0].partition):
        low = _result(conn, future, action, name).low_watermark
        click.echo(f"Partition {tp.partition}: earliest offset is now {low}.")
