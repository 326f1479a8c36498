"""The local engine: the segment log in one data directory, behind the async engine interface.

Theory of operation
-------------------
``LogManager`` and ``PartitionLog`` stay synchronous and deterministic (clock injected); this
module is the only place that decides which of their calls may run on the event loop and
which must not:

- on the loop: appends (one ``write`` into the page cache), reads that the page cache can
  answer (``read(nowait=True)``), offsets and metadata lookups;
- in a worker thread: every fsync (``GroupFlusher``: per partition at most one running and
  one queued, so concurrent producers share fsyncs), reads of cold data (``PageCacheMiss``),
  lookups by time (they walk indexes and decode a batch), topic creation and deletion
  (mkdir, rename, fsync, rmtree), checkpoints, retention and compaction.

Durability belongs here: ``append`` returns once the write is in the OS and, when the
topic's ``flush.messages``/``flush.ms`` ask for it (or a segment rolled), after a
group-committed fsync.  A partition with a ``flush.ms`` joins the *dirty set*, which a timer
task flushes when due; while the set is empty the task sleeps on an event instead of waking
every ``FLUSH_CHECK_INTERVAL_S`` (with the default ``flush.ms`` no partition ever joins, and an
idle or busy broker has no timer firing 20 times a second for nothing).  A checkpoint task
persists recovery points every few seconds, and the maintenance task runs retention and the
cleaner (``LogMaintenance``).

Internal state (``StateStore``) lives in ``DATA/internal/<name>/0/``: one compacted
``PartitionLog`` per state log, invisible to Metadata and Fetch, cleaned by the same
maintenance task.

Internal state (``StateStore``) lives in ``DATA/internal/<name>/0/``; a log opened as
*public* (``__consumer_offsets``) is also readable as an internal topic of one partition —
Metadata shows it, Fetch reads it — but only its owner writes to it.

Fetch responses are not read into memory: ``fetch`` returns ``FileRecords`` (file slices
holding a lease on their segments) which the Kafka door sends chunk by chunk as its socket
drains; a small set the page cache holds is copied into the response at once instead.

Tiered storage (``--tiered-storage``, ``tiered/storage.py``): a ``TieredStorage`` runs its own
background task (uploads of closed segments, deletions of remote objects); a read of an
offset only the store holds (``OffsetNotLocal`` from the log) is answered by it — Fetch as
``CachedRecords`` streamed from its chunk cache like ``FileRecords``, the others as bytes.

Data-landed notifications (``DataWaiters``) fire on every append, user topic or not.  The
open-files limit is raised when the engine is built and watched as partitions are added
(``fd_limit.py``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bayou.config import LONG_MAX, TopicConfig
from bayou.errors import InvalidConfig, InvalidTopic, KafkaError, KafkaStorageError
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.broker_configs import DynamicBrokerConfigs
from bayou.storage.engine import (
    AbortedTxn,
    AppendResult,
    Buffer,
    MaintenanceReport,
    PageCacheMiss,
    PartitionKey,
    StateEntry,
    decode_state_entries,
)
from bayou.storage.fd_limit import OpenFilesWatch, raise_open_files_limit
from bayou.storage.file_records import FileRecords
from bayou.storage.flusher import GroupFlusher
from bayou.storage.log import PartitionLog
from bayou.storage.maintenance import LogMaintenance, MaintenanceSettings
from bayou.storage.manager import LogManager
from bayou.storage.metadata import TopicMeta
from bayou.storage.pacer import Activity
from bayou.storage.producer_state import ProducerEntry
from bayou.storage.tiered.cache import CachedRecords
from bayou.storage.tiered.remote_segments import OffsetNotLocal
from bayou.storage.tiered.storage import TieredSettings, TieredStorage
from bayou.storage.waiters import DataWaiters

log = logging.getLogger(__name__)

INLINE_RECORDS = 16 * 1024  # smaller fetched sets are copied into the response frame
FLUSH_CHECK_INTERVAL_S = 0.05
CHECKPOINT_INTERVAL_S = 5.0
_STATE_READ_CHUNK = 4 * 1024 * 1024


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalPartition:
    """A ``Partition`` over one ``PartitionLog``."""

    __slots__ = ("_engine", "internal", "log")

    def __init__(self, engine: LocalEngine, log_: PartitionLog, *, internal: bool) -> None:
        self._engine = engine
        self.log = log_
        self.internal = internal  # a public state log: readable, written only by its owner

    def __repr__(self) -> str:
        return f"LocalPartition({self.log!r})"

    @property
    def topic(self) -> str:
        return self.log.topic

    @property
    def index(self) -> int:
        return self.log.index

    @property
    def config(self) -> TopicConfig:
        return self.log.config

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def size_bytes(self) -> int:
        return self.log.size_bytes

    @property
    def segment_count(self) -> int:
        return len(self.log.segments)

    @property
    def last_stable_offset(self) -> int:
        return self.log.last_stable_offset

    async def write_marker(
        self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int
    ) -> int:
        engine = self._engine
        log_ = self.log
        result = log_.write_marker(producer_id, producer_epoch, commit, coordinator_epoch)
        engine.appended(log_)
        if log_.needs_flush(engine.clock_ms()):
            await engine.flusher.flush(log_)
        return result.base_offset

    async def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        return self.log.aborted_transactions(start, end)  # in memory: loaded at open

    def _writable(self) -> PartitionLog:
        if self.internal:
            raise InvalidTopic(f"Cannot write to internal topic {self.log.topic}")
        return self.log

    async def append(self, records: Buffer) -> AppendResult:
        engine = self._engine
        result = engine.append_now(self._writable(), records)
        if self.log.needs_flush(engine.clock_ms()):
            await engine.flusher.flush(self.log)
        return result

    def _tiered(self) -> TieredStorage:
        tiered = self._engine.tiered
        if tiered is None:
            raise KafkaStorageError(
                f"{self.log!r}: the offsets below {self.log.local_start_offset} are in tiered "
                "storage, which this broker is not configured for (--tiered-storage)"
            )
        return tiered

    async def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> Buffer:
        log_ = self.log
        try:
            try:
                return log_.read(offset, max_bytes, nowait=True, max_offset=max_offset)
            except PageCacheMiss:
                return await asyncio.to_thread(
                    lambda: log_.read(offset, max_bytes, max_offset=max_offset)
                )
        except OffsetNotLocal:  # only tiered storage has it
            records = await self._tiered().read(log_, offset, max_bytes, max_offset=max_offset)
            try:
                return await asyncio.to_thread(records.read_all)
            finally:
                records.close()

    async def fetch(
        self, offset: int, max_bytes: int, *, min_one: bool, max_offset: int | None = None
    ) -> Buffer | FileRecords | CachedRecords:
        """Whole batches left in the log files (``PartitionLog.read_slices``), sent as the
        socket drains; a set smaller than ``INLINE_RECORDS`` that the page cache holds is
        read now instead (a copy into the frame is cheaper than a piece of its own).  An
        offset only tiered storage holds is served from its cache files the same way."""
        log_ = self.log
        records: FileRecords | CachedRecords
        try:
            try:
                records = log_.read_slices(
                    offset, max_bytes, min_one=min_one, nowait=True, max_offset=max_offset
                )
            except PageCacheMiss:
                records = await asyncio.to_thread(
                    lambda: log_.read_slices(
                        offset, max_bytes, min_one=min_one, max_offset=max_offset
                    )
                )
        except OffsetNotLocal:
            records = await self._tiered().read(
                log_, offset, max_bytes, min_one=min_one, max_offset=max_offset
            )
        if len(records) < INLINE_RECORDS:
            try:
                data = records.read_all(nowait=True)
            except PageCacheMiss:
                return records
            records.close()
            return data
        return records

    async def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        tiered = self._engine.tiered
        if tiered is not None and self.log.remote.entries:
            return await tiered.offset_for_timestamp(self.log, timestamp_ms)
        return await asyncio.to_thread(self.log.offset_for_timestamp, timestamp_ms)

    async def max_timestamp(self) -> tuple[int, int] | None:
        tiered = self._engine.tiered
        if tiered is not None and self.log.remote.entries:
            return await tiered.max_timestamp(self.log)
        return await asyncio.to_thread(self.log.max_timestamp)

    def producers(self) -> Mapping[int, ProducerEntry]:
        return self.log.producer_state.producers

    async def delete_records(self, offset: int) -> int:
        start = self._writable().delete_records(offset)
        await asyncio.to_thread(self.log.delete_old_segments)  # persists the new start
        return start


class LocalStateLog:
    """A ``StateLog`` on one compacted internal ``PartitionLog``."""

    def __init__(self, engine: LocalEngine, name: str, log_: PartitionLog) -> None:
        self._engine = engine
        self._name = name
        self.log = log_

    @property
    def name(self) -> str:
        return self._name

    async def read_all(self) -> list[StateEntry]:
        return await asyncio.to_thread(read_state_entries, self.log)

    @property
    def partition(self) -> LocalPartition:
        return LocalPartition(self._engine, self.log, internal=True)

    async def sync(self) -> None:
        return None  # nothing else writes it

    async def put(self, entries: Sequence[StateEntry], *, durable: bool = False) -> int:
        if not entries:
            return -1
        engine = self._engine
        now = engine.clock_ms()
        batch = build_batch([Record(now, e.key, e.value, list(e.headers)) for e in entries])
        result = engine.append_now(self.log, batch)
        if durable or self.log.needs_flush(now):
            await engine.flusher.flush(self.log)
        return result.last_offset

    async def close(self) -> None:
        await self._engine.close_state_log(self)


def read_state_entries(log_: PartitionLog) -> list[StateEntry]:
    """Every keyed record of an internal log, in offset order (blocking)."""
    out: list[StateEntry] = []
    offset = log_.log_start_offset
    end = log_.log_end_offset
    while offset < end:
        chunk = log_.read(offset, _STATE_READ_CHUNK)
        if not chunk:
            break
        offset = decode_state_entries(chunk, offset, out)
    return out


class LocalStateStore:
    def __init__(self, engine: LocalEngine) -> None:
        self._engine = engine

    async def open_log(self, name: str, *, public: bool = False) -> LocalStateLog:
        return await self._engine.open_state_log(name, public=public)


class LocalEngine:
    """The ``LogEngine`` of one data directory (see the module docstring)."""

    kind = "local"

    def __init__(
        self,
        data_dir: Path,
        topic_defaults: Mapping[str, Any],
        *,
        internal_config: TopicConfig,
        maintenance: MaintenanceSettings,
        clock_ms: Callable[[], int] = wall_clock_ms,
        tiered: TieredSettings | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.location = str(self.data_dir.resolve())
        self.clock_ms = clock_ms
        self.logs = LogManager(self.data_dir, topic_defaults, clock_ms)
        self.flusher = GroupFlusher()
        self.waiters = DataWaiters()
        self.internal_config = internal_config
        self.activity = Activity()  # appends, which the cleaner yields to (pacer.py)
        self.maintenance = LogMaintenance(self.logs, maintenance, clock_ms, self.activity)
        self.tiered = (
            TieredStorage(tiered, self.logs, self.data_dir, on_uploaded=self.maintenance.wake)
            if tiered is not None
            else None
        )
        self._state = LocalStateStore(self)
        self._state_logs: dict[str, LocalStateLog] = {}
        self._handles: dict[PartitionKey, LocalPartition] = {}
        self._dirty: set[PartitionLog] = set()
        self._dirty_wake = asyncio.Event()  # set when the dirty set gains a member
        self.flush_checks = 0  # rounds of the flush.ms timer so far
        self._tasks: list[asyncio.Task[None]] = []
        self._open_files = OpenFilesWatch(raise_open_files_limit())

    # ------------------------------------------------------------------ lifecycle

    @property
    def cluster_id(self) -> str:
        return self.logs.cluster_id

    def observe_fsync(self, hook: Callable[[float], None]) -> None:
        """Tell ``hook`` the duration of every fsync from now on (the broker's metrics)."""
        self.flusher.observe = hook

    def storage_usage(self) -> tuple[int, int]:
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:
            return -1, -1
        return usage.total, usage.free

    @property
    def defaults(self) -> Mapping[str, Any]:
        return self.logs.defaults

    @property
    def static_defaults(self) -> Mapping[str, Any]:
        return self.logs.static_defaults

    @property
    def dynamic(self) -> DynamicBrokerConfigs:
        return self.logs.dynamic

    @property
    def state(self) -> LocalStateStore:
        return self._state

    async def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.logs.open)
        if self.tiered is not None:
            await self.tiered.open()
        self._open_files.check(self.logs.partition_count())

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flush_due_partitions()),
            asyncio.create_task(self._checkpoint_periodically()),
            asyncio.create_task(self.maintenance.run()),
        ]
        if self.tiered is not None:
            self._tasks.append(asyncio.create_task(self.tiered.run()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.tiered is not None:
            await self.tiered.close()
        self.wake_all()
        await self.flusher.drain()
        for state_log in list(self._state_logs.values()):
            await self.close_state_log(state_log)
        await asyncio.to_thread(self.logs.close)
        self._handles.clear()

    # ------------------------------------------------------------------ topics

    def topics(self) -> Mapping[str, TopicMeta]:
        return self.logs.topics()

    def internal_topics(self) -> Mapping[str, TopicMeta]:
        return self.logs.internal_topics()

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMeta | None:
        return self.logs.topic_by_id(topic_id)

    def topic_config(self, name: str) -> TopicConfig:
        return self.logs.topic_config(name)

    def resolve_config(self, overrides: Mapping[str, Any]) -> TopicConfig:
        return self.logs.resolve_config(overrides)

    async def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> TopicMeta:
        self._check_tiering(configs)
        if validate_only:  # no files touched: answer on the loop
            return self.logs.create_topic(name, partitions, configs, validate_only=True)
        return await asyncio.to_thread(self.logs.create_topic, name, partitions, configs)

    def _check_tiering(self, configs: Mapping[str, Any]) -> None:
        """``remote.storage.enable`` needs ``--tiered-storage`` (as Kafka's needs
        ``remote.log.storage.system.enable``)."""
        if self.tiered is None and str(configs.get("remote.storage.enable", "")).lower() == "true":
            raise InvalidConfig(
                "Invalid value true for configuration remote.storage.enable: tiered storage "
                "is not enabled on this broker (bayou serve --tiered-storage)"
            )

    async def delete_topic(self, name: str) -> None:
        meta = self.logs.topics().get(name)
        if meta is not None and self.tiered is not None:
            # before the data goes: a crash between leaves objects that a retry deletes
            await self.tiered.topic_deleted(meta)
        detached = await asyncio.to_thread(self.logs.detach_topic, name)
        if meta is not None:
            for p in range(meta.partitions):
                self._handles.pop((name, p), None)
                self.waiters.notify(name, p)
        await asyncio.to_thread(shutil.rmtree, detached, True)

    async def create_partitions(
        self, name: str, total: int, *, validate_only: bool = False
    ) -> None:
        if validate_only:
            self.logs.create_partitions(name, total, validate_only=True)
            return
        await asyncio.to_thread(self.logs.create_partitions, name, total)

    async def alter_topic_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicMeta:
        self._check_tiering(configs)
        if validate_only:
            return self.logs.alter_topic_configs(name, configs, validate_only=True)
        return await asyncio.to_thread(self.logs.alter_topic_configs, name, configs)

    async def alter_broker_configs(
        self,
        scope: str,
        configs: Mapping[str, Any],
        *,
        validate_only: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._check_tiering(configs)
        if validate_only:
            self.logs.alter_broker_configs(scope, configs, validate_only=True, options=options)
            return
        await asyncio.to_thread(
            lambda: self.logs.alter_broker_configs(scope, configs, options=options)
        )

    # ------------------------------------------------------------------ data

    def partition(self, topic: str, index: int) -> LocalPartition:
        key = (topic, index)
        handle = self._handles.get(key)
        log_ = self.logs.partition(topic, index)  # raises UnknownTopicOrPartition
        if handle is None or handle.log is not log_:
            internal = topic in self.logs.internal_topics()
            handle = self._handles[key] = LocalPartition(self, log_, internal=internal)
        return handle

    def append_now(
        self, log_: PartitionLog, records: Buffer, *, owned: bool = False
    ) -> AppendResult:
        """Append on the loop (the bytes reach the OS), wake readers, note flush.ms;
        ``owned`` buffers are patched in place (``Engine.append_many``)."""
        result = log_.append(records, owned=owned)
        self.appended(log_)
        return result

    def appended(self, log_: PartitionLog) -> None:
        """Data landed in ``log_``: wake its readers; the flush.ms timer watches it."""
        self.activity.count += 1
        self.waiters.notify(log_.topic, log_.index)
        if log_.config.flush_ms < LONG_MAX:
            if not self._dirty:
                self._dirty_wake.set()
            self._dirty.add(log_)

    async def append_many(
        self, writes: Sequence[tuple[str, int, Buffer]], *, owned: bool = False
    ) -> list[AppendResult | KafkaError]:
        results: list[AppendResult | KafkaError] = []
        to_flush: set[PartitionLog] = set()
        now = self.clock_ms()
        for topic, index, records in writes:
            try:
                log_ = self.partition(topic, index)._writable()
                results.append(self.append_now(log_, records, owned=owned))
            except KafkaError as exc:
                results.append(exc)
                continue
            if log_.needs_flush(now):
                to_flush.add(log_)
        if to_flush:
            outcome = await asyncio.gather(
                *(self.flusher.flush(log_) for log_ in to_flush), return_exceptions=True
            )
            failed = {
                (log_.topic, log_.index): exc
                for log_, exc in zip(to_flush, outcome, strict=True)
                if isinstance(exc, BaseException)
            }
            if failed:
                for i, (topic, index, _records) in enumerate(writes):
                    error = failed.get((topic, index))
                    if error is not None:
                        results[i] = (
                            error
                            if isinstance(error, KafkaError)
                            else KafkaError(f"fsync failed: {error}")
                        )
        return results

    async def wait_for_data(self, keys: Iterable[PartitionKey], timeout_s: float) -> bool:
        return await self.waiters.wait_any(keys, timeout_s)

    def wake_all(self) -> None:
        self.waiters.wake_all()

    async def allocate_producer_id(self) -> int:
        return self.logs.allocate_producer_id()

    async def maintain(self, now_ms: int | None = None) -> list[MaintenanceReport]:
        return await self.maintenance.round(now_ms)

    # ------------------------------------------------------------------ internal state

    async def open_state_log(self, name: str, *, public: bool = False) -> LocalStateLog:
        existing = self._state_logs.get(name)
        if existing is not None:
            return existing
        directory = self.data_dir / "internal" / name / "0"
        log_ = await asyncio.to_thread(
            PartitionLog, name, 0, directory, self.internal_config, self.clock_ms
        )
        state_log = self._state_logs[name] = LocalStateLog(self, name, log_)
        self.maintenance.register(log_)  # compacted by the cleaner
        if public:
            self.logs.register_internal(log_)  # Metadata shows it, Fetch reads it
        return state_log

    async def close_state_log(self, state_log: LocalStateLog) -> None:
        if self._state_logs.get(state_log.name) is not state_log:
            return
        del self._state_logs[state_log.name]
        self.maintenance.unregister(state_log.log)
        self.logs.unregister_internal(state_log.name)
        self._handles.pop((state_log.name, 0), None)
        self._dirty.discard(state_log.log)
        await self.flusher.drain()
        await asyncio.to_thread(state_log.log.close)

    # ------------------------------------------------------------------ background

    async def _flush_due_partitions(self) -> None:
        """Honour ``flush.ms``: fsync partitions whose unflushed data is old enough."""
        dirty = self._dirty
        while True:
            if not dirty:
                self._dirty_wake.clear()
                await self._dirty_wake.wait()
            await asyncio.sleep(FLUSH_CHECK_INTERVAL_S)
            self.flush_checks += 1
            now = self.clock_ms()
            for partition in list(dirty):
                if partition.log_end_offset <= partition.recovery_point:
                    dirty.discard(partition)  # already flushed (by a produce): nothing to do
                elif partition.needs_flush(now):
                    dirty.discard(partition)
                    try:
                        await self.flusher.flush(partition)
                    except Exception:
                        log.exception(
                            "periodic flush of %s-%d failed", partition.topic, partition.index
                        )

    async def _checkpoint_periodically(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            internal = [s.log for s in self._state_logs.values()]
            try:
                await asyncio.to_thread(self._checkpoint, internal)
            except Exception:
                log.exception("checkpoint failed")
            self._open_files.check(self.logs.partition_count())

    def _checkpoint(self, internal: list[PartitionLog]) -> None:
        self.logs.checkpoint()
        for log_ in internal:
            log_.checkpoint()
