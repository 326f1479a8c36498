"""The mirror's own progress, kept in the target cluster: one compacted state topic.

Theory of operation
-------------------
A mirror named NAME keeps ``__bayou-mirror.NAME`` (one partition, ``cleanup.policy=compact``)
in the *target* cluster, so a mirror started anywhere — after a crash, on another machine —
finds where the copy stands in the cluster it writes to.  Records are JSON values under
keys whose separator ``:`` cannot occur in a topic name:

- ``topic:T`` → ``{"mirror_only": bool}``: whether the mirror created T in the target
  (written *before* the topic is created, so a crash in between still finds the topic
  mirror-only), or found it there and shares it with other producers;
- ``sync:T:P:S`` → ``{"source": S, "target": T'}``: an offset sync (``offset_syncs.py``),
  one key per sync so compaction keeps the whole history that group offsets translate by;
- ``progress:T:P`` → ``{"next": N}``: for shared topics only, the next source offset to copy
  (everything before it is acknowledged by the target; at-least-once).  A mirror-only
  topic needs no progress record: its target log end offset and its syncs are the progress.

The state is read whole at start (it is small: a few records per topic and partition, one
per offset gap) and appended to by the running mirror through its producer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bayou.mirror.offset_syncs import OffsetMap, Sync

PREFIX = "__bayou-mirror."
STATE_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}


def state_topic(name: str) -> str:
    return PREFIX + name


@dataclass
class MirrorState:
    """What the state topic says, by topic and partition."""

    mirror_only: dict[str, bool] = field(default_factory=dict)
    maps: dict[tuple[str, int], OffsetMap] = field(default_factory=dict)
    progress: dict[tuple[str, int], int] = field(default_factory=dict)

    def offset_map(self, topic: str, partition: int) -> OffsetMap:
        return self.maps.setdefault((topic, partition), OffsetMap())

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Replay one state record (unknown or malformed ones are skipped)."""
        if value is None:
            return
        try:
            kind, _, rest = key.decode().partition(":")
            body = json.loads(value)
            if kind == "topic":
                self.mirror_only[rest] = bool(body["mirror_only"])
            elif kind == "sync":
                topic, partition, _source = rest.rsplit(":", 2)
                sync = Sync(int(body["source"]), int(body["target"]))
                self.offset_map(topic, int(partition)).add(sync)
            elif kind == "progress":
                topic, partition = rest.rsplit(":", 1)
                self.progress[(topic, int(partition))] = int(body["next"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return


def topic_record(topic: str, mirror_only: bool) -> tuple[bytes, bytes]:
    return f"topic:{topic}".encode(), json.dumps({"mirror_only": mirror_only}).encode()


def sync_record(topic: str, partition: int, sync: Sync) -> tuple[bytes, bytes]:
    key = f"sync:{topic}:{partition}:{sync.source}".encode()
    return key, json.dumps({"source": sync.source, "target": sync.target}).encode()


def progress_record(topic: str, partition: int, next_offset: int) -> tuple[bytes, bytes]:
    return f"progress:{topic}:{partition}".encode(), json.dumps({"next": next_offset}).encode()


def load(consumer: Any, topic: str, timeout: float, on_error: Callable[[str], None]) -> MirrorState:
    """Read the state topic from its start to its end with ``consumer`` (assigned here)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    state = MirrorState()
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
    if high <= low:
        return state
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    deadline = time.monotonic() + max(timeout * 6, 60.0)
    position = low
    try:
        while position < high:
            if time.monotonic() > deadline:
                on_error(f"reading {topic} took too long (at {position} of {high})")
                break
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error():
                    continue
                state.apply(message.key() or b"", message.value())
                position = message.offset() + 1
            if position < high:
                committed = consumer.position([TopicPartition(topic, 0)])[0].offset
                position = max(position, committed)
    finally:
        consumer.unassign()
    return state
