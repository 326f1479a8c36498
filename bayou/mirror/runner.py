"""The mirror's copy loop: source partitions read in order, each record produced to the same
partition of the same topic in the target, offsets checked on every acknowledgement.

Theory of operation
-------------------
One source consumer (assigned partitions, never a group member: the mirror's position is
not a source commit) and one idempotent target producer (acks=all, so retries never
duplicate and a partition's records land in order).  Every record is produced with its
key, value (a tombstone stays a tombstone), headers in order and source timestamp.

A topic is *mirror-only* when the mirror created it in the target (``state.py`` records
that before creating it); then only the mirror writes it, and each record's target offset
is known before it is produced: the next one.  The mirror stores an offset sync before
producing a record that breaks the line of the last one (``offset_syncs.py``: a gap in the
source offsets) and checks that every acknowledged record landed exactly where expected —
a record elsewhere means someone else wrote to the topic, and the mirror stops rather than
silently shift offsets.  So a gap-free source partition is copied offset for offset, and
the target's log end offset and the syncs say, after any crash, which source offset comes
next (``OffsetMap.resume``): no loss, no duplicate.

A topic that already existed in the target is *shared*: other producers may write it, so
target offsets are only learnt from acknowledgements, a sync is stored whenever one breaks
the line (MirrorMaker 2's offset syncs, but exact), and progress (``progress:`` records,
the next source offset whose predecessors are all acknowledged) is stored every interval:
after a crash the copy restarts there, at least once.

Every ``interval`` seconds the mirror lists the source topics, creates or grows target
topics and aligns their configs (``topics.py``), carries consumer groups' committed offsets
over (``groups.py``), stores shared topics' progress and logs its lag.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bayou.cli._common import Connection
from bayou.mirror import groups as group_sync
from bayou.mirror import topics as t
from bayou.mirror.offset_syncs import OffsetMap, Sync
from bayou.mirror.state import (
    STATE_CONFIG,
    MirrorState,
    load,
    progress_record,
    state_topic,
    sync_record,
    topic_record,
)

log = logging.getLogger("bayou.mirror")

CONSUME_BATCH = 2000
FLUSH_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_MS = 300_000


class MirrorFailed(Exception):
    """The copy cannot go on without breaking its guarantees; the sentence says why."""


@dataclass
class MirrorOptions:
    name: str
    topics: t.Selection
    groups: t.Selection
    interval_s: float = 5.0
    isolation: str = "read_committed"


@dataclass
class PartitionLag:
    topic: str
    partition: int
    records: int
    seconds: float


@dataclass
class PartitionCopy:
    """Where the copy of one partition stands."""

    topic: str
    partition: int
    mirror_only: bool
    offsets: OffsetMap
    next_source: int  # the next source offset the consumer should hand over
    next_target: int  # mirror-only: where the next produced record lands
    acked_source: int  # every source offset below this is acknowledged by the target
    acked_target: int  # the target offset after the last acknowledged record (-1: unknown)
    inflight: deque[tuple[int, int, int]] = field(default_factory=deque)
    progress_written: int = -1


class Mirror:
    """Copies the selected topics of ``source`` into ``target`` until ``stopping()``."""

    def __init__(self, source: Connection, target: Connection, options: MirrorOptions) -> None:
        self.source = source
        self.target = target
        self.options = options
        self.state_topic = state_topic(options.name)
        self.group_id = f"bayou-mirror.{options.name}"
        self.parts: dict[tuple[str, int], PartitionCopy] = {}
        self.state = MirrorState()
        #: the lag as last measured (every --interval), for ``/metrics`` (``metrics.py``)
        self.last_lag: list[PartitionLag] = []
        self.fatal: str | None = None
        self._warned: set[str] = set()
        self._stopping: Callable[[], bool] = lambda: False
        self.source_admin: Any = None
        self.target_admin: Any = None
        self.consumer: Any = None
        self.target_reader: Any = None
        self.producer: Any = None

    # ------------------------------------------------------------------ lifecycle

    def run(self, stopping: Callable[[], bool]) -> None:
        self._stopping = stopping
        self._open()
        try:
            next_refresh = 0.0
            while not stopping():
                self._check()
                if time.monotonic() >= next_refresh:
                    self._refresh()
                    next_refresh = time.monotonic() + self.options.interval_s
                for message in self.consumer.consume(num_messages=CONSUME_BATCH, timeout=0.2):
                    self._copy(message)
                self.producer.poll(0)
            self._check()
        finally:
            self._close()

    def _open(self) -> None:
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient

        self.source.probe()
        self.target.probe()
        self.source_admin = AdminClient(self.source.client_config())
        self.target_admin = AdminClient(self.target.client_config())
        timeout = self.target.timeout
        t.create_topic(self.target_admin, self.state_topic, 1, STATE_CONFIG, timeout)
        self.target_reader = Consumer(
            self.target.client_config(
                **{
                    "group.id": self.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
        )
        self.state = load(self.target_reader, self.state_topic, timeout, self._warn)
        self.producer = Producer(
            self.target.client_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.timeout.ms": DELIVERY_TIMEOUT_MS,
                }
            )
        )
        self.consumer = Consumer(
            self.source.client_config(
                **{
                    "group.id": self.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": self.options.isolation,
                }
            )
        )

    def _close(self) -> None:
        try:
            if self.producer is not None and self.fatal is None:
                self._write_progress()
                self.producer.flush(FLUSH_TIMEOUT_S)
        finally:
            for client in (self.consumer, self.target_reader):
                if client is not None:
                    client.close()

    def _check(self) -> None:
        if self.fatal is not None:
            raise MirrorFailed(self.fatal)

    def _warn(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            log.warning("%s", text)

    # ------------------------------------------------------------------ the copy

    def _copy(self, message: Any) -> None:
        from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError

        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                self._warn(f"reading the source: {error.str()}")
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        part = self.parts.get((topic, partition))
        if part is None:
            return
        if offset < part.next_source:
            self._warn(
                f"{topic}-{partition}: the source handed over offset {offset} below "
                f"{part.next_source} (was the topic deleted and created again?); skipped"
            )
            return
        kind, timestamp = message.timestamp()
        if kind == TIMESTAMP_NOT_AVAILABLE:
            timestamp = 0
        if part.mirror_only:
            target = part.next_target
            if part.offsets.needs_sync(offset, target):
                sync = Sync(offset, target)
                self._put(*sync_record(topic, partition, sync))
                self._flush()  # the sync is stored before the record that needs it
                part.offsets.add(sync)
                log.info(
                    "%s-%d: source offset %d follows a gap: from here target offset = "
                    "source offset %+d",
                    topic,
                    partition,
                    offset,
                    target - offset,
                )
            part.inflight.append((target, offset, timestamp))
            part.next_target = target + 1
        else:
            part.inflight.append((-1, offset, timestamp))
        self._produce(
            topic,
            partition,
            message.key(),
            message.value(),
            timestamp,
            message.headers(),
        )
        part.next_source = offset + 1

    def _produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: int,
        headers: Any,
    ) -> None:
        from confluent_kafka import KafkaError, KafkaException

        unknown_since: float | None = None
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=partition,
                    timestamp=timestamp,
                    headers=headers,
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                self.producer.poll(0.1)  # the queue drains as the target acknowledges
                self._check()
            except KafkaException as exc:
                # A partition added moments ago: the producer's metadata must learn it.
                if exc.args[0].code() != KafkaError._UNKNOWN_PARTITION:
                    raise
                now = time.monotonic()
                unknown_since = unknown_since or now
                if now - unknown_since > self.target.timeout * 3:
                    raise MirrorFailed(
                        f"{topic}-{partition} stays unknown to the target's producer"
                    ) from None
                self.producer.list_topics(topic, timeout=self.target.timeout)
                self.producer.poll(0.1)

    def _put(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(
                    self.state_topic, value=value, key=key, partition=0, on_delivery=self._stored
                )
                return
            except BufferError:
                self.producer.poll(0.1)
                self._check()

    def _flush(self) -> None:
        if self.producer.flush(FLUSH_TIMEOUT_S) > 0:
            raise MirrorFailed(
                f"the target at {self.target.bootstrap} did not acknowledge within "
                f"{FLUSH_TIMEOUT_S:g} seconds"
            )
        self._check()

    def _stored(self, error: Any, message: Any) -> None:
        if error is not None and self.fatal is None:
            self.fatal = f"storing the mirror's state in {self.state_topic} failed: {error.str()}"

    def _delivered(self, error: Any, message: Any) -> None:
        topic, partition = message.topic(), message.partition()
        part = self.parts[(topic, partition)]
        expected, source, _timestamp = part.inflight.popleft()
        if self.fatal is not None:
            return
        if error is not None:
            self.fatal = (
                f"copying {topic}-{partition} offset {source} to the target failed: {error.str()}"
            )
            return
        offset = message.offset()
        if part.mirror_only and offset != expected:
            self.fatal = (
                f"{topic}-{partition}: source offset {source} landed at target offset {offset}, "
                f"not {expected}: something else writes to this mirror-only topic in the target"
            )
            return
        if not part.mirror_only and part.offsets.needs_sync(source, offset):
            sync = Sync(source, offset)
            self._put(*sync_record(topic, partition, sync))
            part.offsets.add(sync)
        part.acked_source = source + 1
        part.acked_target = offset + 1

    # ------------------------------------------------------------------ every interval

    def _refresh(self) -> None:
        from confluent_kafka import KafkaException

        timeout = self.source.timeout
        try:
            counts = t.partition_counts(self.source_admin, timeout)
            present = t.partition_counts(self.target_admin, self.target.timeout)
            for topic in sorted(counts):
                if t.is_internal_topic(topic) or not self.options.topics(topic):
                    continue
                self._mirror_topic(topic, counts[topic], present.get(topic))
            self._write_progress()
            self._sync_groups()
        except (KafkaException, TimeoutError) as exc:
            log.warning("mirror refresh failed (retried in %g s): %s", self.options.interval_s, exc)
        self._log_lag()

    def _mirror_topic(self, topic: str, count: int, target_count: int | None) -> None:
        timeout = self.target.timeout
        configs = t.copied_configs(t.set_configs(self.source_admin, topic, self.source.timeout))
        if topic not in self.state.mirror_only:
            mirror_only = target_count is None
            self._put(*topic_record(topic, mirror_only))
            self._flush()
            self.state.mirror_only[topic] = mirror_only
        mirror_only = self.state.mirror_only[topic]
        if target_count is None:
            t.create_topic(self.target_admin, topic, count, configs, timeout)
            log.info(
                "mirroring %s: created in the target with %d partitions%s",
                topic,
                count,
                "" if mirror_only else " (shared: offsets translated)",
            )
        else:
            if count > target_count:
                t.grow_partitions(self.target_admin, topic, count, timeout)
                log.info(
                    "%s: grown from %d to %d partitions in the target", topic, target_count, count
                )
            present = t.set_configs(self.target_admin, topic, timeout)
            changed = t.align_configs(
                self.target_admin, topic, configs, present, mirror_only, timeout
            )
            if changed:
                log.info("%s: configs copied to the target: %s", topic, ", ".join(changed))
            if (topic, 0) not in self.parts and not mirror_only:
                log.info(
                    "mirroring %s into the existing target topic (shared: offsets translated)",
                    topic,
                )
        for partition in range(count):
            if (topic, partition) not in self.parts:
                self._start_partition(topic, partition, mirror_only)

    def _start_partition(self, topic: str, partition: int, mirror_only: bool) -> None:
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        offsets = self.state.offset_map(topic, partition)
        if mirror_only:
            try:
                end = t.end_offset(self.target_admin, topic, partition, self.target.timeout)
            except KafkaException as exc:  # a partition just created may not be led yet
                log.debug("%s-%d: not ready in the target yet (%s)", topic, partition, exc)
                return
            start = offsets.resume(end)
            part = PartitionCopy(topic, partition, True, offsets, start, end, start, end)
        else:
            start = self.state.progress.get((topic, partition), OFFSET_BEGINNING)
            first = max(start, 0)
            part = PartitionCopy(topic, partition, False, offsets, first, -1, first, -1)
            part.progress_written = start
        self.parts[(topic, partition)] = part
        self.consumer.incremental_assign([TopicPartition(topic, partition, start)])

    def _write_progress(self) -> None:
        for part in self.parts.values():
            if not part.mirror_only and part.acked_source != part.progress_written:
                self._put(*progress_record(part.topic, part.partition, part.acked_source))
                part.progress_written = part.acked_source

    def _translate(self, topic: str, partition: int, offset: int) -> int | None:
        part = self.parts.get((topic, partition))
        if part is None or part.acked_target < 0:
            return None
        return part.offsets.translate(offset, part.acked_target)

    def _sync_groups(self) -> None:
        timeout = self.source.timeout
        for name in group_sync.source_groups(
            self.source_admin, self.options.groups, self.group_id, timeout
        ):
            moved = group_sync.sync_group(
                self.source_admin, self.target_admin, name, self._translate, timeout
            )
            if moved is None:
                self._warn(f"group {name} has members in the target: its offsets are left alone")
            elif moved:
                log.info(
                    "group %s: offsets committed in the target: %s",
                    name,
                    ", ".join(f"{tp[0]}-{tp[1]}@{o}" for tp, o in sorted(moved.items())),
                )

    # ------------------------------------------------------------------ lag

    def lag(self) -> list[PartitionLag]:
        """Records and seconds behind, per partition: records in the source not yet
        acknowledged by the target, and the age of the oldest record read but not yet
        acknowledged (0 when none is)."""
        from confluent_kafka import TopicPartition

        if not self.parts:
            return []
        keys = sorted(self.parts)
        positions = self.consumer.position([TopicPartition(tp, p) for tp, p in keys])
        now_ms = time.time() * 1000
        out = []
        for (topic, partition), position in zip(keys, positions, strict=True):
            part = self.parts[(topic, partition)]
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            fetched = position.offset if position.offset >= 0 else part.next_source
            records = max(0, high - fetched) if high >= 0 else 0
            records += len(part.inflight)
            seconds = 0.0
            if part.inflight:
                seconds = max(0.0, (now_ms - part.inflight[0][2]) / 1000)
            out.append(PartitionLag(topic, partition, records, seconds))
        return out

    def _log_lag(self) -> None:
        lags = self.last_lag = self.lag()
        if not lags:
            return
        records = sum(lag.records for lag in lags)
        worst = max(lags, key=lambda lag: (lag.seconds, lag.records))
        log.info(
            "mirror lag: %d records behind over %d partitions; oldest unacknowledged record "
            "%.1f s old (%s-%d)",
            records,
            len(lags),
            worst.seconds,
            worst.topic,
            worst.partition,
        )
