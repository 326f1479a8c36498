"""Produce: records of one HTTP request become one record batch per partition.

Every record is converted and placed before anything is written (bad base64, a partition that
does not exist, a batch over the topic's ``max.message.bytes`` → a 4xx and nothing written).
Then the batches go to ``Core.append_many`` in one call: each partition's batch is appended
whole or not at all, so a request is all-or-nothing per partition, and the answer comes once
every partition is as durable as its topic's flush policy asks (the engine runs their fsyncs
together).  A partition whose append fails reports the error on each of its records
(``error_code`` 1 or 2, as REST Proxy does), the others report their offsets.
"""

from __future__ import annotations

from typing import Any

from bayou.config import TOPIC_CONFIGS
from bayou.core import Core
from bayou.core.partitioner import Partitioner
from bayou.core.types import Buffer, TopicMeta
from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.http import errors
from bayou.gateways.http.payloads import Format, ProduceRecord, encode_field, encode_headers
from bayou.protocol.kafka.records import Record, build_batch

# What auto-creating a well-formed name can run into: the broker keeps the name for itself
# (internal, reserved) or it collides with another ('a.b' with 'a_b') — a conflict.
_CONFLICTS = (ErrorCode.INVALID_TOPIC_EXCEPTION, ErrorCode.TOPIC_ALREADY_EXISTS)


async def topic_meta(core: Core, topic: str, *, create: bool = False) -> TopicMeta:
    """The topic (auto-created when ``create`` and the broker allows it); a REST error
    otherwise."""
    try:
        return await core.topic(topic, create=create)
    except KafkaError as exc:
        if create and exc.code in _CONFLICTS:  # the route checked the name's form
            raise errors.RestError(409, 409, exc.message) from None
        raise errors.from_kafka(exc, topic=topic) from None


async def produce(
    core: Core,
    partitioner: Partitioner,
    topic: str,
    fmt: Format,
    records: list[ProduceRecord],
    partition: int | None = None,
) -> list[dict[str, Any]]:
    meta = await topic_meta(core, topic, create=True)
    now = core.clock_ms()
    placed: list[tuple[int, int]] = []  # (partition, index within its batch) per record
    by_partition: dict[int, list[Record]] = {}
    for i, rec in enumerate(records):
        key = encode_field(fmt, rec.key, i, "key")
        value = encode_field(fmt, rec.value, i, "value")
        headers = encode_headers(rec.headers, i)
        target = partition if partition is not None else rec.partition
        if target is None:
            target = partitioner.partition(topic, key, meta.partitions)
        elif target >= meta.partitions:
            raise errors.partition_not_found(topic, target)
        pending = by_partition.setdefault(target, [])
        placed.append((target, len(pending)))
        pending.append(Record(now, key, value, headers))
    limit = core.topic_config(topic).max_message_bytes
    writes: list[tuple[str, int, Buffer]] = []
    for p, recs in by_partition.items():
        batch = build_batch(recs)
        if len(batch) > limit:
            raise errors.RestError(
                413,
                413,
                f"The records for partition {p} make a batch of "
                f"{len(batch)} bytes, over the topic's max.message.bytes "
                f"({limit}); nothing was written.",
            )
        writes.append((topic, p, batch))
    results = await core.append_many(writes)
    core.metrics.door("http").appended(writes, results)
    base: dict[int, int] = {}
    failed: dict[int, KafkaError] = {}
    for (_topic, p, _batch), result in zip(writes, results, strict=True):
        if isinstance(result, KafkaError):
            if result.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:  # deleted meanwhile
                raise errors.partition_not_found(topic, p)
            failed[p] = result
        else:
            base[p] = result.base_offset
    out: list[dict[str, Any]] = []
    for p, index in placed:
        error = failed.get(p)
        if error is None:
            out.append(
                {"partition": p, "offset": base[p] + index, "error_code": None, "error": None}
            )
        else:
            out.append(
                {
                    "partition": p,
                    "offset": None,
                    "error_code": errors.record_error_code(error),
                    "error": error.message,
                }
            )
    return out


def partition_info(core: Core, topic: str, index: int) -> dict[str, Any]:
    """The partition's leader and replicas as Kafka's Metadata says them (every live broker
    is a replica: the engine holds the data)."""
    leader = core.cluster.leadership(topic, index).leader
    live = [b.node_id for b in core.cluster.brokers()]
    return {
        "partition": index,
        "leader": leader,
        "replicas": [
            {"broker": node, "leader": node == leader, "in_sync": leader >= 0}
            for node in sorted(live, key=lambda n: n != leader)
        ],
    }


async def topic_info(core: Core, topic: str) -> dict[str, Any]:
    meta = await topic_meta(core, topic)
    config = core.topic_config(topic)
    configs = {name: definition.render(config[name]) for name, definition in TOPIC_CONFIGS.items()}
    return {
        "name": topic,
        "configs": configs,
        "partitions": [partition_info(core, topic, i) for i in range(meta.partitions)],
    }
