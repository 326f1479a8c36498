"""Produce: records of one HTTP request become one record batch per partition.

Every record is converted and placed before anything is written (bad base64, a partition that
does not exist, a batch over the topic's ``max.message.bytes`` → a 4xx and nothing written).
Then each partition's batch is appended with ``BrokerState.append_now``: a batch is appended
whole or not at all, so a request is all-or-nothing per partition.  If the topic's flush
policy asks for it, the answer waits for one group-committed fsync of every partition written.
A partition whose append fails reports the error on each of its records (``error_code`` 1 or
2, as REST Proxy does), the others report their offsets.
"""

from __future__ import annotations

import time
from typing import Any

from bayou.config import TOPIC_CONFIGS
from bayou.core.partitioner import Partitioner
from bayou.errors import InvalidTopic, KafkaError, UnknownTopicOrPartition
from bayou.gateways.http import errors
from bayou.gateways.http.payloads import Format, ProduceRecord, encode_field, encode_headers
from bayou.gateways.legacy_state import LegacyState as BrokerState
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage import PartitionLog, TopicMeta


def topic_meta(state: BrokerState, topic: str, *, create: bool = False) -> TopicMeta:
    try:
        return state.topic_or_autocreate(topic, allow_create=create)
    except InvalidTopic as exc:
        if create:  # the route checked the name's form: it collides ('a.b' with 'a_b')
            raise errors.RestError(409, 409, exc.message) from None
        raise errors.from_kafka(exc, topic=topic) from None
    except KafkaError as exc:
        raise errors.from_kafka(exc, topic=topic) from None


async def produce(
    state: BrokerState,
    partitioner: Partitioner,
    topic: str,
    fmt: Format,
    records: list[ProduceRecord],
    partition: int | None = None,
) -> list[dict[str, Any]]:
    meta = topic_meta(state, topic, create=True)
    now = time.time_ns() // 1_000_000
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
    limit = state.logs.topic_config(topic).max_message_bytes
    batches = {p: build_batch(recs) for p, recs in by_partition.items()}
    for p, batch in batches.items():
        if len(batch) > limit:
            raise errors.RestError(413, 413, f"The records for partition {p} make a batch of "
                                   f"{len(batch)} bytes, over the topic's max.message.bytes "
                                   f"({limit}); nothing was written.")
    base: dict[int, int] = {}
    failed: dict[int, KafkaError] = {}
    to_flush: list[PartitionLog] = []
    for p, batch in batches.items():
        try:
            result, flush = state.append_now(topic, p, batch)
        except UnknownTopicOrPartition:
            raise errors.partition_not_found(topic, p) from None
        except KafkaError as exc:
            failed[p] = exc
            continue
        base[p] = result.base_offset
        if flush is not None:
            to_flush.append(flush)
    if to_flush:
        try:
            await state.make_durable(to_flush)
        except KafkaError as exc:
            for log_ in to_flush:
                failed[log_.index] = exc
    out: list[dict[str, Any]] = []
    for p, index in placed:
        error = failed.get(p)
        if error is None:
            out.append({"partition": p, "offset": base[p] + index, "error_code": None,
                        "error": None})
        else:
            out.append({"partition": p, "offset": None,
                        "error_code": errors.record_error_code(error), "error": error.message})
    return out


def partition_info(state: BrokerState, index: int) -> dict[str, Any]:
    node = state.node_id
    return {"partition": index, "leader": node,
            "replicas": [{"broker": node, "leader": True, "in_sync": True}]}


def topic_info(state: BrokerState, topic: str) -> dict[str, Any]:
    meta = topic_meta(state, topic)
    config = state.logs.topic_config(topic)
    configs = {name: definition.render(config[name]) for name, definition in
               TOPIC_CONFIGS.items()}
    return {"name": topic, "configs": configs,
            "partitions": [partition_info(state, i) for i in range(meta.partitions)]}
