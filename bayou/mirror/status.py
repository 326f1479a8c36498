"""The lag of a mirror, computed from the two clusters alone (the mirror need not run).

Per mirrored partition: the source's end offset, the source offset the copy has reached
(a mirror-only partition: its target end offset mapped back through the syncs; a shared
one: its stored progress), the records between them and how old the first of those is
(the source record at the reached offset, read with one fetch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bayou.cli._common import Connection
from bayou.mirror.state import MirrorState, load, state_topic


@dataclass
class PartitionStatus:
    topic: str
    partition: int
    mode: str  # "same offsets", "shifted" (syncs after gaps) or "shared"
    source_end: int
    copied_to: int
    records_behind: int
    seconds_behind: float

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "mode": self.mode,
            "source_end": self.source_end,
            "copied_to": self.copied_to,
            "records_behind": self.records_behind,
            "seconds_behind": round(self.seconds_behind, 3),
        }


def _mode(state: MirrorState, topic: str, partition: int) -> str:
    if not state.mirror_only[topic]:
        return "shared"
    syncs = state.offset_map(topic, partition).syncs
    return "same offsets" if all(s.source == s.target for s in syncs) else "shifted"


def _age_at(consumer: Any, topic: str, partition: int, offset: int, timeout: float) -> float:
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1, timeout=0.5):
                if message.error() is None:
                    stamp: int = message.timestamp()[1]
                    return max(0.0, time.time() - stamp / 1000)
        return -1.0
    finally:
        consumer.unassign()


def mirror_status(source: Connection, target: Connection, name: str) -> list[PartitionStatus]:
    from confluent_kafka import Consumer, TopicPartition

    source.probe()
    target.probe()
    settings = {"group.id": f"bayou-mirror.{name}", "enable.auto.commit": False}
    reader = Consumer(target.client_config(**settings))
    src = Consumer(source.client_config(**settings, **{"isolation.level": "read_committed"}))
    try:
        state = load(reader, state_topic(name), target.timeout, lambda _text: None)
        metadata = src.list_topics(timeout=source.timeout)
        out = []
        for topic in sorted(state.mirror_only):
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in sorted(meta.partitions):
                tp = TopicPartition(topic, partition)
                low, high = src.get_watermark_offsets(tp, timeout=source.timeout)
                if state.mirror_only[topic]:
                    _tlow, end = reader.get_watermark_offsets(tp, timeout=target.timeout)
                    copied = state.offset_map(topic, partition).resume(end)
                else:
                    copied = state.progress.get((topic, partition), low)
                copied = max(copied, low)
                behind = max(0, high - copied)
                age = _age_at(src, topic, partition, copied, source.timeout) if behind else 0.0
                out.append(
                    PartitionStatus(
                        topic,
                        partition,
                        _mode(state, topic, partition),
                        high,
                        copied,
                        behind,
                        age,
                    )
                )
        return out
    finally:
        reader.close()
        src.close()
