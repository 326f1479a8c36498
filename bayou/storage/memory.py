"""The memory engine: every topic and state log in this process's memory (``memory://``).

Theory of operation
-------------------
What NATS's memory store is to its file store: the same contract (``tests/contract/`` runs
every engine test on both), nothing durable — for tests, benchmarks and throw-away brokers.

A partition is a list of *segments*, each a list of stored batches with their base offsets,
last offsets and max timestamps side by side (``bisect`` finds the batch holding an offset).
Segments roll on ``segment.bytes`` and ``segment.ms`` exactly as on disk, because retention
(time and size) deletes whole segments and compaction never touches the active one: the
observable behaviour is the local engine's.  Appends use the engine-neutral checks and
offset assignment (``append.py``) and the same idempotent-producer state; compaction makes
the same per-record decisions (``cleaner.CompactionPass``) over every closed segment.

Everything runs on the event loop: there is no I/O to wait for.  ``append`` is durable as
soon as it returns (as durable as this process).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bayou.config import (
    INT_MAX,
    TopicConfig,
    internal_log_config,
)
from bayou.errors import (
    BayouError,
    ErrorCode,
    InvalidProducerEpoch,
    InvalidTopic,
    KafkaError,
    OffsetOutOfRange,
    UnknownTopicOrPartition,
)
from bayou.protocol.kafka.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchHeader,
    Record,
    build_batch,
    build_control_batch,
    iter_records,
    parse_header,
)
from bayou.storage.append import assign_offsets, check_payload
from bayou.storage.catalog import TopicCatalog
from bayou.storage.cleaner import AbortedRanges, CleanStats, CompactionPass
from bayou.storage.cleaner_state import CleanerState
from bayou.storage.engine import (
    AbortedTxn,
    AppendResult,
    Buffer,
    MaintenanceReport,
    PartitionKey,
    StateEntry,
)
from bayou.storage.maintenance import summary
from bayou.storage.metadata import TopicMeta, new_cluster_id
from bayou.storage.producer_state import ProducerEntry, ProducerStateManager
from bayou.storage.retention import (
    deletable_segments,
    delete_records_target,
)
from bayou.storage.txn_index import collect_aborted
from bayou.storage.waiters import DataWaiters


class MemorySegment:
    """Batches with consecutive offsets from ``base_offset``; see the module docstring."""

    __slots__ = (
        "aborted",
        "base_offset",
        "bases",
        "batches",
        "created_ms",
        "lasts",
        "max_timestamp",
        "max_ts",
        "next_offset",
        "size",
    )

    def __init__(self, base_offset: int, created_ms: int) -> None:
        self.base_offset = base_offset
        self.created_ms = created_ms
        self.batches: list[bytes] = []
        self.bases: list[int] = []
        self.lasts: list[int] = []
        self.max_ts: list[int] = []
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.aborted: list[AbortedTxn] = []  # the aborted-transaction index

    def add(self, batch: bytes, base: int, last: int, max_ts: int) -> None:
        self.batches.append(batch)
        self.bases.append(base)
        self.lasts.append(last)
        self.max_ts.append(max_ts)
        self.size += len(batch)
        self.next_offset = last + 1
        self.max_timestamp = max(self.max_timestamp, max_ts)

    @property
    def empty(self) -> bool:
        return not self.batches

    def largest_timestamp(self) -> int:
        """Its max timestamp, else (no valid timestamp) when it was created."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.created_ms


class MemoryPartition:
    """A ``Partition`` held in memory."""

    def __init__(
        self,
        engine: MemoryEngine,
        topic: str,
        index: int,
        config: TopicConfig,
        *,
        internal: bool = False,
    ) -> None:
        self._engine = engine
        self.internal = internal  # a state log: readable as a topic, written by its owner
        self._topic = topic
        self._index = index
        self.config = config
        now = engine.clock_ms()
        self.segments = [MemorySegment(0, now)]
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.size_bytes = 0
        self.producer_state = ProducerStateManager()
        self.cleaner_state = CleanerState()
        self.closed = False

    def __repr__(self) -> str:
        return f"MemoryPartition({self._topic}-{self._index})"

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def last_stable_offset(self) -> int:
        unstable = self.producer_state.first_unstable_offset()
        lso = self.log_end_offset if unstable is None else unstable
        return max(lso, self.log_start_offset)

    async def write_marker(
        self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int
    ) -> int:
        if self.closed:
            raise UnknownTopicOrPartition(f"{self._topic}-{self._index} was deleted")
        entry = self.producer_state.producers.get(producer_id)
        if entry is not None and producer_epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"marker for producer {producer_id} epoch {producer_epoch}, older than "
                f"{entry.epoch}"
            )
        if entry is not None and coordinator_epoch < entry.coordinator_epoch:
            raise KafkaError(
                f"marker from coordinator epoch {coordinator_epoch}, older than "
                f"{entry.coordinator_epoch}",
                ErrorCode.TRANSACTION_COORDINATOR_FENCED,
            )
        batch = bytearray(
            build_control_batch(
                commit,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                timestamp=self._engine.clock_ms(),
                coordinator_epoch=coordinator_epoch,
            )
        )
        marker = CONTROL_COMMIT if commit else CONTROL_ABORT
        return self._store(batch, [parse_header(batch)], marker, coordinator_epoch).base_offset

    async def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        segs = self.segments
        first = max(bisect_right(segs, start, key=lambda s: s.base_offset) - 1, 0)
        return collect_aborted((seg.aborted for seg in segs[first:]), start, end)

    @property
    def index(self) -> int:
        return self._index

    @property
    def segment_count(self) -> int:
        return len(self.segments)

    # ------------------------------------------------------------------ append

    async def append(self, records: Buffer) -> AppendResult:
        return self.append_now(records)

    def append_now(self, records: Buffer) -> AppendResult:
        if self.internal:
            raise InvalidTopic(f"Cannot write to internal topic {self._topic}")
        return self.store(records)

    def store(self, records: Buffer) -> AppendResult:
        """Append (the owner's path: state logs write here)."""
        if self.closed:
            raise UnknownTopicOrPartition(f"{self._topic}-{self._index} was deleted")
        buf, headers = check_payload(records, self.config, self._topic, self._index)
        duplicate = self.producer_state.check(headers)
        if duplicate is not None:
            return AppendResult(
                duplicate.base_offset,
                duplicate.last_offset,
                duplicate.append_time_ms,
                self.log_start_offset,
                duplicate.last_offset - duplicate.base_offset + 1,
            )
        return self._store(buf, headers)

    def _store(
        self,
        buf: bytearray,
        headers: list[BatchHeader],
        marker: int | None = None,
        coordinator_epoch: int = -1,
    ) -> AppendResult:
        now = self._engine.clock_ms()
        append_time = now if self.config.log_append_time and marker is None else -1
        first = self.log_end_offset
        spans = assign_offsets(buf, headers, first, append_time)
        segment = self._maybe_roll(len(buf), spans[-1][1], now)
        data = bytes(buf)
        self.log_end_offset = spans[-1][1] + 1
        self.size_bytes += len(buf)
        pos = 0
        for h, (base, last, max_ts, size) in zip(headers, spans, strict=True):
            segment.add(data[pos : pos + size], base, last, max_ts)
            done = self.producer_state.update(
                h, base, last, append_time, marker=marker, coordinator_epoch=coordinator_epoch
            )
            if done is not None and done.aborted:
                segment.aborted.append(
                    AbortedTxn(
                        done.producer_id,
                        done.first_offset,
                        done.last_offset,
                        self.last_stable_offset,
                    )
                )
            pos += size
        self._engine.waiters.notify(self._topic, self._index)
        return AppendResult(
            first,
            self.log_end_offset - 1,
            append_time,
            self.log_start_offset,
            self.log_end_offset - first,
        )

    def _maybe_roll(self, incoming: int, last_offset: int, now: int) -> MemorySegment:
        seg = self.segments[-1]
        if seg.empty:
            return seg
        config = self.config
        if (
            seg.size + incoming > config.segment_bytes
            or now - seg.created_ms >= config.roll_ms
            or last_offset - seg.base_offset > INT_MAX
        ):
            seg = MemorySegment(self.log_end_offset, now)
            self.segments.append(seg)
        return seg

    # ------------------------------------------------------------------ read

    async def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> Buffer:
        return self.read_now(offset, max_bytes, max_offset=max_offset)

    async def fetch(
        self, offset: int, max_bytes: int, *, min_one: bool, max_offset: int | None = None
    ) -> Buffer:
        data = self.read_now(offset, max_bytes, max_offset=max_offset)
        if not min_one and len(data) > max_bytes:
            return b""
        return data

    def read_now(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> Buffer:
        end = self.log_end_offset
        if offset == end:
            return b""
        if offset < self.log_start_offset or offset > end:
            raise OffsetOutOfRange(
                f"offset {offset} is outside [{self.log_start_offset}, {end}] "
                f"of {self._topic}-{self._index}"
            )
        stop = end if max_offset is None else min(end, max_offset)
        chunks: list[bytes] = []
        total = 0
        segs = self.segments
        first_seg = max(bisect_right(segs, offset, key=lambda s: s.base_offset) - 1, 0)
        for seg in segs[first_seg:]:
            for i in range(bisect_left(seg.lasts, offset), len(seg.batches)):
                batch = seg.batches[i]
                if seg.bases[i] >= stop or (chunks and total + len(batch) > max_bytes):
                    return b"".join(chunks)
                chunks.append(batch)
                total += len(batch)
            if total >= max_bytes:
                break
        return b"".join(chunks)

    def _batches_from(self, offset: int) -> Iterable[tuple[MemorySegment, int]]:
        for seg in self.segments:
            if seg.next_offset <= offset:
                continue
            for i in range(bisect_left(seg.lasts, offset), len(seg.batches)):
                yield seg, i

    async def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        start = self.log_start_offset
        for seg in self.segments:
            if seg.max_timestamp < timestamp_ms:
                continue
            for i, batch in enumerate(seg.batches):
                if seg.max_ts[i] < timestamp_ms or seg.lasts[i] < start:
                    continue
                try:
                    for rec in iter_records(batch):
                        if rec.timestamp >= timestamp_ms and rec.offset >= start:
                            return rec.offset, rec.timestamp
                except BayouError:
                    return max(seg.bases[i], start), seg.max_ts[i]
        return None

    async def max_timestamp(self) -> tuple[int, int] | None:
        best: tuple[int, int] | None = None  # (timestamp, offset)
        start = self.log_start_offset
        for seg, i in self._batches_from(start):
            ts = seg.max_ts[i]
            if ts >= 0 and (best is None or ts > best[0]):
                for rec in iter_records(seg.batches[i]):
                    if rec.timestamp == ts and rec.offset >= start:
                        best = (ts, rec.offset)
                        break
        return None if best is None else (best[1], best[0])

    # ------------------------------------------------------------------ retention

    def producers(self) -> Mapping[int, ProducerEntry]:
        return self.producer_state.producers

    async def delete_records(self, offset: int) -> int:
        if self.internal:
            raise InvalidTopic(f"Cannot delete records of internal topic {self._topic}")
        target = delete_records_target(
            self._topic, self._index, self.config, self.log_end_offset, offset
        )
        self.log_start_offset = max(self.log_start_offset, target)
        self.delete_old_segments(self._engine.clock_ms())
        return self.log_start_offset

    def delete_old_segments(self, now: int) -> int:
        count = deletable_segments(
            self.segments, self.log_start_offset, self.size_bytes, self.config, now
        )
        if not count:
            return 0
        if count == len(self.segments):
            self.segments.append(MemorySegment(self.log_end_offset, now))
        doomed, self.segments = self.segments[:count], self.segments[count:]
        self.size_bytes -= sum(s.size for s in doomed)
        self.log_start_offset = max(self.log_start_offset, self.segments[0].base_offset)
        return count

    # ------------------------------------------------------------------ compaction

    def clean(self, now: int) -> CleanStats | None:
        """Compact every closed segment older than ``min.compaction.lag.ms`` into one."""
        config = self.config
        if not config.compact:
            return None
        lag = config.min_compaction_lag_ms
        stable = self.last_stable_offset
        closed: list[MemorySegment] = []
        for seg in self.segments[:-1]:
            if (lag > 0 and seg.max_timestamp > now - lag) or seg.next_offset > stable:
                break  # too young, or holding an open transaction's data
            closed.append(seg)
        state = self.cleaner_state
        if not closed:
            return None
        map_end = closed[-1].next_offset
        due_tombstones = (
            state.tombstone_since_ms >= 0
            and state.tombstone_since_ms + config.delete_retention_ms <= now
        )
        if map_end <= state.clean_offset and not due_tombstones:
            return None
        stats = CleanStats(map_end=map_end, segments_in=len(closed), segments_out=1)
        offset_map: dict[bytes, int] = {}
        aborted = AbortedRanges(t for seg in self.segments for t in seg.aborted)
        for seg in closed:
            for batch in seg.batches:
                header = parse_header(batch)
                if header.is_control or aborted.covers(header):
                    continue
                for rec in iter_records(batch):
                    if rec.key is not None:
                        offset_map[hashlib.blake2b(rec.key, digest_size=16).digest()] = rec.offset
        decisions = CompactionPass(
            now,
            offset_map,
            map_end,
            stats,
            delete_retention_ms=config.delete_retention_ms,
            prior=state,
            producer_state=self.producer_state.snapshot(),
            aborted=aborted,
        )
        out = MemorySegment(closed[0].base_offset, now)
        out.aborted = [t for seg in closed for t in seg.aborted]
        for seg in closed:
            stats.bytes_read += seg.size
            for i, batch in enumerate(seg.batches):
                kept = decisions.filter_batch(
                    parse_header(batch), memoryview(batch), seg.lasts[i] + 1 == map_end
                )
                if kept is not None:
                    max_ts = int.from_bytes(kept[35:43], "big", signed=True)
                    out.add(kept, seg.bases[i], seg.lasts[i], max_ts)
        stats.bytes_written = out.size
        self.segments = [out, *self.segments[len(closed) :]]
        self.size_bytes += out.size - stats.bytes_read
        state.add_pass(map_end, now, self.log_start_offset)
        state.tombstone_since_ms = decisions.tombstone_since
        return stats


class MemoryStateLog:
    """A ``StateLog`` on a compacted in-memory partition (as the local engine's)."""

    def __init__(self, engine: MemoryEngine, name: str, partition: MemoryPartition) -> None:
        self._engine = engine
        self._name = name
        self.partition = partition

    @property
    def name(self) -> str:
        return self._name

    async def read_all(self) -> list[StateEntry]:
        out: list[StateEntry] = []
        for seg in self.partition.segments:
            for batch in seg.batches:
                if parse_header(batch).is_control:
                    continue
                for rec in iter_records(batch):
                    if rec.key is not None and rec.offset >= self.partition.log_start_offset:
                        out.append(StateEntry(rec.key, rec.value, tuple(rec.headers)))
        return out

    async def sync(self) -> None:
        return None  # nothing else writes it

    async def put(self, entries: Sequence[StateEntry], *, durable: bool = False) -> int:
        if not entries:
            return -1
        now = self._engine.clock_ms()
        return self.partition.store(
            build_batch([Record(now, e.key, e.value, list(e.headers)) for e in entries])
        ).last_offset

    async def close(self) -> None:
        return None


class MemoryStateStore:
    def __init__(self, engine: MemoryEngine) -> None:
        self._engine = engine

    async def open_log(self, name: str, *, public: bool = False) -> MemoryStateLog:
        return self._engine.open_state_log(name, public=public)


def _wall_clock_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


class MemoryEngine(TopicCatalog):
    """The ``LogEngine`` of one process's memory (see the module docstring)."""

    kind = "memory"

    def __init__(
        self,
        topic_defaults: Mapping[str, Any] | None = None,
        *,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        maintenance_interval_ms: int = 5 * 60 * 1000,
        location: str = "memory://",
        internal_config: TopicConfig | None = None,
    ) -> None:
        self.location = location
        self.clock_ms = clock_ms
        self._init_catalog(topic_defaults)
        self._partitions: dict[PartitionKey, MemoryPartition] = {}
        self._producer_ids = itertools.count()
        self._cluster_id = new_cluster_id()
        self._state = MemoryStateStore(self)
        self._internal_config = internal_config or internal_log_config()
        self._state_logs: dict[str, MemoryStateLog] = {}
        self.waiters = DataWaiters()
        self._interval_s = max(maintenance_interval_ms, 1) / 1000
        self._task: asyncio.Task[None] | None = None

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    def storage_usage(self) -> tuple[int, int]:
        return -1, -1

    @property
    def state(self) -> MemoryStateStore:
        return self._state

    async def open(self) -> None:
        return None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._maintain_periodically())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.wake_all()

    async def _maintain_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.maintain()

    # ------------------------------------------------------------------ topics

    def _register(self, meta: TopicMeta) -> None:
        self._topics = {**self._topics, meta.name: meta}
        self._by_id = {**self._by_id, meta.topic_id: meta}

    async def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> TopicMeta:
        meta, config = self._new_topic(name, partitions, configs)
        if validate_only:
            return meta
        for p in range(partitions):
            self._partitions[(name, p)] = MemoryPartition(self, name, p, config)
        self._register(meta)
        return meta

    async def delete_topic(self, name: str) -> None:
        meta = self._known(name)
        self._topics = {k: v for k, v in self._topics.items() if k != name}
        self._by_id = {k: v for k, v in self._by_id.items() if k != meta.topic_id}
        for p in range(meta.partitions):
            partition = self._partitions.pop((name, p), None)
            if partition is not None:
                partition.closed = True
            self.waiters.notify(name, p)

    async def create_partitions(
        self, name: str, total: int, *, validate_only: bool = False
    ) -> None:
        meta = self._known(name)
        grown = self._grown_topic(name, total)
        if validate_only:
            return
        config = self.resolve_config(meta.configs)
        for p in range(meta.partitions, total):
            self._partitions[(name, p)] = MemoryPartition(self, name, p, config)
        self._register(grown)

    async def alter_topic_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicMeta:
        new, config = self._altered_topic(name, configs)
        if validate_only:
            return new
        self._register(new)
        for p in range(new.partitions):
            self._partitions[(name, p)].config = config
        return new

    async def alter_broker_configs(
        self,
        scope: str,
        configs: Mapping[str, Any],
        *,
        validate_only: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        dynamic = self._dynamic.altered(
            scope, configs, options, self._static, [m.configs for m in self._topics.values()]
        )
        merged = dynamic.defaults(self._static)
        if validate_only:
            return
        self._dynamic = dynamic
        for (topic, _p), partition in self._partitions.items():
            partition.config = TopicConfig.resolve(merged, self._topics[topic].configs)

    # ------------------------------------------------------------------ data

    def partition(self, topic: str, index: int) -> MemoryPartition:
        partition = self._partitions.get((topic, index))
        if partition is None and index == 0 and topic in self._internal:
            partition = self._state_logs[topic].partition
        if partition is None:
            raise UnknownTopicOrPartition(f"unknown topic partition {topic}-{index}")
        return partition

    async def append_many(
        self, writes: Sequence[tuple[str, int, Buffer]], *, owned: bool = False
    ) -> list[AppendResult | KafkaError]:
        results: list[AppendResult | KafkaError] = []
        for topic, index, records in writes:
            try:
                results.append(self.partition(topic, index).append_now(records))
            except KafkaError as exc:
                results.append(exc)
        return results

    async def wait_for_data(self, keys: Iterable[PartitionKey], timeout_s: float) -> bool:
        return await self.waiters.wait_any(keys, timeout_s)

    def wake_all(self) -> None:
        self.waiters.wake_all()

    async def allocate_producer_id(self) -> int:
        return next(self._producer_ids)

    def open_state_log(self, name: str, *, public: bool) -> MemoryStateLog:
        state_log = self._state_logs.get(name)
        if state_log is None:
            partition = MemoryPartition(self, name, 0, self._internal_config, internal=True)
            state_log = self._state_logs[name] = MemoryStateLog(self, name, partition)
        if public and name not in self._topics:
            topic_id = uuid.uuid5(uuid.NAMESPACE_URL, f"bayou:{self._cluster_id}:{name}")
            self._internal = {**self._internal, name: TopicMeta(name, topic_id, 1, {})}
        return state_log

    async def maintain(self, now_ms: int | None = None) -> list[MaintenanceReport]:
        now = self.clock_ms() if now_ms is None else now_ms
        report: list[MaintenanceReport] = []
        state = [s.partition for s in self._state_logs.values()]
        for partition in [*self._partitions.values(), *state]:
            deleted = partition.delete_old_segments(now)
            stats = partition.clean(now)
            if deleted or stats is not None:
                report.append(
                    MaintenanceReport(
                        partition.topic,
                        partition.index,
                        deleted,
                        partition.log_start_offset,
                        summary(stats) if stats is not None else None,
                    )
                )
        return report
