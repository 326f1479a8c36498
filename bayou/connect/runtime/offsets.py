"""Source positions: the compacted topic ``_bayou_connect_offsets``.

Key: the JSON ``["<connector>", {"task": N}]`` (Kafka Connect keys its offsets by connector
name and source partition; a Bayou source task's position covers everything it reads).
Value: the JSON position of the last record written, in the same transaction as the records
(``source.py``).  One partition, read to its end (``read_committed``) when a task starts.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bayou.connect.api import ConnectError, JsonValue

OFFSETS_TOPIC = "_bayou_connect_offsets"


def offset_key(connector: str, task_id: int) -> bytes:
    return json.dumps([connector, {"task": task_id}], separators=(",", ":")).encode()


def ensure_compacted_topic(client_config: dict[str, Any], topic: str, timeout_s: float) -> None:
    admin = AdminClient(client_config)
    meta = admin.list_topics(timeout=timeout_s)
    if topic in meta.topics and not meta.topics[topic].error:
        return
    new = NewTopic(topic, 1, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([new]).values():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def read_positions(client_config: dict[str, Any], timeout_s: float = 30.0) -> dict[bytes, Any]:
    """Every stored position (key → decoded JSON value), the latest per key."""
    ensure_compacted_topic(client_config, OFFSETS_TOPIC, timeout_s)
    consumer = Consumer(
        {
            **client_config,
            "group.id": f"_bayou-connect-offsets-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    positions: dict[bytes, Any] = {}
    try:
        tp = TopicPartition(OFFSETS_TOPIC, 0)
        low, high = consumer.get_watermark_offsets(tp, timeout_s)
        if high <= low:
            return positions
        consumer.assign([TopicPartition(OFFSETS_TOPIC, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise ConnectError(f"reading {OFFSETS_TOPIC} took longer than {timeout_s:g} s")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return positions
                    continue
                key = msg.key()
                if key is None:
                    continue
                value = msg.value()
                if value is None:
                    positions.pop(key, None)
                else:
                    positions[key] = json.loads(value)
    finally:
        consumer.close()


def read_position(
    client_config: dict[str, Any], connector: str, task_id: int, timeout_s: float = 30.0
) -> JsonValue | None:
    return read_positions(client_config, timeout_s).get(offset_key(connector, task_id))
