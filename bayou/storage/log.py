"""PartitionLog: one partition's append-only log of segments.

Theory of operation
-------------------
The broker's event loop calls ``append`` and ``read``; worker threads call ``flush``,
``checkpoint`` and the maintenance methods (``delete_old_segments``, the cleaner in
``cleaner.py``).  ``append`` and every change of the segment list run under ``_lock``;
reads take no lock on the data (a segment's ``size`` only grows, its batches never change).
``flush`` fsyncs *duplicated* descriptors outside the lock, so a segment roll or a close on
the loop thread never closes an fd being fsynced.

Segments leave the log (retention, DeleteRecords, compaction swaps) while readers may hold
them.  Readers *pin* the segment list (a counter under ``_readers_lock``, taken for the
duration of one synchronous ``read``); a segment that leaves the list has its files renamed
and unlinked at once — an open fd keeps an unlinked file readable — but its descriptors are
closed only when no reader is pinned (``_retire``).  So a reader never sees a closed or,
worse, reused fd, and never waits for the cleaner: the cleaner takes ``_lock`` only to swap
the list.  One maintenance operation runs at a time per partition (``_maintenance_lock``).
Fetch responses outlive a synchronous read (they are sent as the socket drains): a
``FileRecords`` from ``read_slices`` holds a *lease* on each segment it will read, and a
retired segment is closed only when no reader is pinned and no lease is held.

Append, all or nothing: the payload is copied into one ``bytearray``, validated
(``validate_batches``), checked against ``max.message.bytes`` and the idempotent-producer
state, then offsets are assigned by patching each batch's base offset (LogAppendTime topics
also get their timestamp patched; a CreateTime batch whose header max timestamp is missing or
below its first timestamp gets it computed from its records — never stored wrong), the
active segment is rolled if needed, and the whole payload is written with one ``os.write``.
Only after the write and its index entries succeed do the log end offset and producer state
move; any failure on the way leaves the segment exactly as it was (``LogSegment.append``).

Durability: ``recovery_point`` is the offset below which everything was fsynced by
``flush``; ``checkpoint`` persists it (``recovery.json``) together with the producer state
as it was at that offset (``producer_state.json``), so a restart verifies only the tail of
the log and replays only the batch headers after the snapshot (see ``recovery.py``).

Tiered storage (``tiered/``): ``remote`` is the partition's record of its remote segments
(``remote.json``).  Reads below the first local segment raise ``OffsetNotLocal`` (the engine
reads them from the store), ``upload_candidates`` names the closed, fsynced segments to copy
next, retention judges remote and local segments as one log and ``local.retention.*``
deletes local copies of copied segments (``_delete_old_segments_tiered``).

Single node: the log end offset is also the high watermark and the last stable offset.
``log_start_offset`` is persisted; retention and DeleteRecords move it, and whole segments
below it are deleted — see ``docs/design/log-lifecycle.md``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path

from bayou.config import INT_MAX, TopicConfig
from bayou.errors import (
    BayouError,
    ErrorCode,
    InvalidProducerEpoch,
    KafkaError,
    KafkaStorageError,
    OffsetOutOfRange,
    UnknownTopicOrPartition,
)
from bayou.protocol.kafka.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchHeader,
    build_control_batch,
    iter_records,
    parse_header,
    whole_batches_prefix,
)
from bayou.storage.append import assign_offsets, check_payload
from bayou.storage.engine import AbortedTxn, AppendResult, PageCacheMiss
from bayou.storage.file_records import FileRecords
from bayou.storage.files import fsync_dir
from bayou.storage.producer_state import Snapshot, save_snapshot
from bayou.storage.recovery import (
    DELETED_SUFFIX,
    PRODUCER_STATE_FILE,
    load_partition,
    write_checkpoint,
)
from bayou.storage.retention import deletable_segments, delete_records_target
from bayou.storage.segment import LogSegment
from bayou.storage.tiered.remote_segments import OffsetNotLocal, RemoteSegment, RemoteSegments
from bayou.storage.tiered.retention import tiered_deletions
from bayou.storage.txn_index import collect_aborted


def _base_offset(segment: LogSegment) -> int:
    return segment.base_offset


class PartitionLog:
    """The segmented log of one topic partition (see the module docstring)."""

    def __init__(
        self,
        topic: str,
        index: int,
        directory: Path,
        config: TopicConfig,
        clock_ms: Callable[[], int],
        *,
        clean_shutdown: bool = False,
    ) -> None:
        self.topic = topic
        self.index = index
        self.directory = directory
        self.config = config
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self.remote = RemoteSegments(directory)  # tiered storage: what the store holds
        loaded = load_partition(
            directory, config, clock_ms, clean=clean_shutdown, remote_start=self.remote.start_before
        )
        self.segments: list[LogSegment] = loaded.segments
        self.log_start_offset = loaded.log_start_offset
        self.log_end_offset = self.segments[-1].next_offset
        self.size_bytes = sum(s.size for s in self.segments)
        self.recovery_point = loaded.recovery_point
        self.producer_state = loaded.producer_state
        self.recovered_truncation = loaded.truncated
        self.cleaner_state = loaded.cleaner_state
        self._persisted_start = self.log_start_offset
        self._readers_lock = threading.Lock()
        self._reading = 0
        self._retired: list[LogSegment] = []
        self.maintenance_lock = threading.Lock()
        self.aborting = False  # set by close: a running cleaner pass stops early
        self._flushed_state: tuple[int, Snapshot] = (
            self.log_end_offset,
            self.producer_state.snapshot(),
        )
        self._written_state_offset = -1
        self._written_checkpoint: tuple[int, int] | None = None  # (recovery point, start)
        self._last_flush_ms = clock_ms()
        self._roll_generation = 0
        self._flushed_generation = 0
        self._closed = False
        self._idle_mark = -1  # log end offset at the last release_idle_files
        if self.remote.entries:  # remote copies the local log no longer reaches: not ours
            self.remote.mark_deleting(lambda e: e.next_offset > self.log_end_offset)

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.topic}-{self.index}, "
            f"[{self.log_start_offset}, {self.log_end_offset}))"
        )

    @property
    def active(self) -> LogSegment:
        return self.segments[-1]

    @property
    def local_start_offset(self) -> int:
        """The first offset of the local segments (Kafka's local log start offset): below
        it, down to the log start offset, only tiered storage has the data."""
        return self.segments[0].base_offset

    @property
    def tiered(self) -> bool:
        """Whether tiered storage is (or was) in use: retention then judges the remote
        segments too."""
        return self.config.remote_storage_enable or bool(self.remote.entries)

    def upload_candidates(self) -> list[LogSegment]:
        """The closed segments tiered storage should copy next, in order: after what is
        copied or being copied, wholly fsynced (below the recovery point) and below the
        last stable offset (no open transaction reaches into them)."""
        segments = self.segments
        after = self.remote.upload_end()
        bound = min(self.recovery_point, self.last_stable_offset)
        return [
            seg
            for seg in segments[:-1]
            if not seg.empty
            and seg.next_offset <= bound
            and (after is None or seg.base_offset >= after)
        ]

    # ------------------------------------------------------------------ append

    def append(
        self, records: bytes | bytearray | memoryview, *, owned: bool = False
    ) -> AppendResult:
        """Validate, assign offsets and write a produce payload (all or nothing).  Control
        batches are refused: only the broker writes transaction markers (``write_marker``).
        ``owned``: the caller hands a writable payload over — it is patched in place."""
        config = self.config
        buf, headers = check_payload(records, config, self.topic, self.index, owned=owned)
        with self._lock:
            if self._closed:
                raise KafkaStorageError(f"{self!r} is closed")
            duplicate = self.producer_state.check(headers)
            if duplicate is not None:
                return AppendResult(
                    duplicate.base_offset,
                    duplicate.last_offset,
                    duplicate.append_time_ms,
                    self.log_start_offset,
                    duplicate.last_offset - duplicate.base_offset + 1,
                )
            return self._write(buf, headers)

    def write_marker(
        self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int
    ) -> AppendResult:
        """Append a COMMIT or ABORT marker closing ``producer_id``'s open transaction (the
        transaction coordinator's path); an abort goes into the active segment's
        aborted-transaction index.  A stale producer or coordinator epoch is refused."""
        with self._lock:
            if self._closed:
                raise KafkaStorageError(f"{self!r} is closed")
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
            buf = bytearray(
                build_control_batch(
                    commit,
                    producer_id=producer_id,
                    producer_epoch=producer_epoch,
                    timestamp=self._clock_ms(),
                    coordinator_epoch=coordinator_epoch,
                )
            )
            header = parse_header(buf)
            marker = CONTROL_COMMIT if commit else CONTROL_ABORT
            return self._write(buf, [header], marker=marker, coordinator_epoch=coordinator_epoch)

    def _write(
        self,
        buf: bytearray | memoryview,
        headers: list[BatchHeader],
        *,
        marker: int | None = None,
        coordinator_epoch: int = -1,
    ) -> AppendResult:
        """Assign offsets, roll, write (all or nothing), move the producer state; under
        ``_lock``."""
        config = self.config
        now = self._clock_ms()
        append_time = now if config.log_append_time and marker is None else -1
        batches = assign_offsets(buf, headers, self.log_end_offset, append_time)
        next_offset = batches[-1][1] + 1
        if self.active.failed:
            raise KafkaStorageError(
                f"{self!r} is offline: a failed write could not be undone (a restart recovers it)"
            )
        try:
            segment = self._maybe_roll(len(buf), next_offset - 1, now)
            segment.append(buf, batches, config.index_interval_bytes)  # all or nothing
        except OSError as exc:
            raise KafkaStorageError(f"cannot write {self!r}: {exc}") from exc
        first = self.log_end_offset
        self.log_end_offset = next_offset
        self.size_bytes += len(buf)
        for h, (base, last, _, _) in zip(headers, batches, strict=True):
            done = self.producer_state.update(
                h, base, last, append_time, marker=marker, coordinator_epoch=coordinator_epoch
            )
            if done is not None and done.aborted:
                segment.txn_index.append(
                    AbortedTxn(
                        done.producer_id,
                        done.first_offset,
                        done.last_offset,
                        self.last_stable_offset,
                    )
                )
        return AppendResult(
            first, next_offset - 1, append_time, self.log_start_offset, next_offset - first
        )

    @property
    def last_stable_offset(self) -> int:
        """The first offset of the earliest open transaction, else the log end (never
        below the log start)."""
        unstable = self.producer_state.first_unstable_offset()
        lso = self.log_end_offset if unstable is None else unstable
        return max(lso, self.log_start_offset)

    def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        """The aborted transactions with data in ``[start, end)`` (READ_COMMITTED)."""
        segments = self._pin()
        try:
            first = self._segment_index(segments, start)
            lists = [seg.txn_index.entries() for seg in segments[first:]]
            local_start = segments[0].base_offset
            if start < local_start and self.remote.entries:
                lists = [*self.remote.aborted_lists(start, local_start), *lists]
            return collect_aborted(lists, start, end)
        finally:
            self._unpin()

    def _maybe_roll(self, incoming: int, last_offset: int, now: int) -> LogSegment:
        seg = self.active
        if seg.empty:
            return seg
        config = self.config
        index_entries = int(config["segment.index.bytes"]) // seg.offset_index.entry_size
        if (
            seg.size + incoming > config.segment_bytes
            or now - seg.created_ms >= config.roll_ms
            or last_offset - seg.base_offset > INT_MAX
            or len(seg.offset_index) >= index_entries
        ):
            return self.roll(now)
        return seg

    def roll(self, now: int | None = None) -> LogSegment:
        """Seal the active segment and start a new one at the log end offset."""
        now = self._clock_ms() if now is None else now
        self.active.seal()
        seg = LogSegment(self.directory, self.log_end_offset, now, new=True)
        self.segments = [*self.segments, seg]
        self._roll_generation += 1
        return seg

    # ------------------------------------------------------------------ read

    @staticmethod
    def _segment_index(segments: list[LogSegment], offset: int) -> int:
        return max(bisect_right(segments, offset, key=_base_offset) - 1, 0)

    def read(
        self,
        offset: int,
        max_bytes: int,
        *,
        nowait: bool = False,
        max_offset: int | None = None,
    ) -> bytes | bytearray | memoryview:
        """Whole batches from the one containing ``offset``, up to ``max_bytes``.

        Always at least one whole batch when one exists at or after ``offset`` (KIP-74),
        even if it is larger than ``max_bytes``.  Continues into following segments while
        the budget allows.  ``offset == log_end_offset`` gives ``b""``.  With ``max_offset``
        only batches that start below it (READ_COMMITTED: the last stable offset).

        ``nowait`` (for the event loop) reads only what the page cache holds: fewer batches
        when only part is cached, ``PageCacheMiss`` when not even the first batch is — the
        caller then repeats the read in a worker thread.  Safe to call from any thread.
        """
        log_end = self.log_end_offset
        if offset == log_end:
            return b""
        if offset < self.log_start_offset or offset > log_end:
            raise OffsetOutOfRange(
                f"offset {offset} is outside [{self.log_start_offset}, {log_end}] "
                f"of {self.topic}-{self.index}"
            )
        segments = self._pin()
        try:
            self._check_local(segments, offset)
            bound = self._bound(segments, offset, max_offset, nowait)
            if bound is not None and bound[0] < 0:
                return b""
            return self._read(segments, offset, max_bytes, nowait, bound)
        finally:
            self._unpin()

    def _check_local(self, segments: list[LogSegment], offset: int) -> None:
        if offset < segments[0].base_offset:
            raise OffsetNotLocal(
                f"offset {offset} of {self.topic}-{self.index} is below the local segments "
                f"(from {segments[0].base_offset}): in tiered storage"
            )

    def _bound(
        self, segments: list[LogSegment], offset: int, max_offset: int | None, nowait: bool
    ) -> tuple[int, int] | None:
        """Where reading must stop for ``max_offset``: (segment index, byte position) —
        ``(-1, 0)`` when nothing at ``offset`` starts below it; None: no bound."""
        if max_offset is None or max_offset >= self.log_end_offset:
            return None
        if max_offset <= offset:
            return (-1, 0)
        i = self._segment_index(segments, max_offset)
        found = segments[i].find_batch(max_offset, nowait=nowait)
        if found is None:
            return None
        pos, header = found
        return (i, pos + header.size if header.base_offset < max_offset else pos)

    def _read(
        self,
        segments: list[LogSegment],
        offset: int,
        max_bytes: int,
        nowait: bool,
        bound: tuple[int, int] | None = None,
    ) -> bytes | bytearray | memoryview:
        chunks: list[bytes | bytearray | memoryview] = []
        total = 0
        first = self._segment_index(segments, offset)
        for i, seg in enumerate(segments[first:], first):
            if bound is not None and i > bound[0]:
                break
            seg_end = bound[1] if bound is not None and i == bound[0] else seg.size
            try:
                found = seg.find_batch(offset, nowait=nowait)
            except PageCacheMiss:
                if chunks:
                    break  # what is cached now; the client fetches the rest next time
                raise
            if found is None:
                continue
            pos, head = found
            available = seg_end - pos
            if available <= 0:
                break
            want = min(max_bytes - total, available)
            if total == 0:
                want = max(want, head.size)
            if want <= 0:
                break
            try:
                data = seg.read(pos, want, nowait=nowait)
            except PageCacheMiss:
                if chunks:
                    break
                raise
            cut = whole_batches_prefix(data)
            if cut == 0 and nowait and len(data) < want:
                if chunks:
                    break
                raise PageCacheMiss(f"the batch at {pos} is only partly cached")
            if cut:
                # a view, not a copy: the response encoder copies these bytes once anyway
                chunks.append(memoryview(data)[:cut] if cut < len(data) else data)
                total += cut
            if cut < available or total >= max_bytes:
                break
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def read_slices(
        self,
        offset: int,
        max_bytes: int,
        *,
        min_one: bool = True,
        nowait: bool = False,
        max_offset: int | None = None,
    ) -> FileRecords:
        """The batches ``read`` would return, as file slices to send later (Fetch).

        Only batch headers are read (see ``FileRecords``).  The first whole batch is
        included even beyond ``max_bytes`` when ``min_one`` (KIP-74: the first partition of
        a response with data); without it a first batch larger than ``max_bytes`` gives
        nothing.  ``nowait``: ``PageCacheMiss`` when a header it needs is not cached (the
        caller repeats in a worker thread).  The caller must ``close`` the result.

        Empty batches (what compaction leaves of a group's last batch) do not end a read: a
        set holding only empty batches goes on into the next segments while the budget
        allows, because librdkafka takes a response without a single record for a size
        limit too tight, doubles its fetch size, and after ten such responses fails the
        partition with MSG_SIZE_TOO_LARGE.
        """
        log_end = self.log_end_offset
        if offset == log_end:
            return FileRecords([], self._release_leases)
        if offset < self.log_start_offset or offset > log_end:
            raise OffsetOutOfRange(
                f"offset {offset} is outside [{self.log_start_offset}, {log_end}] "
                f"of {self.topic}-{self.index}"
            )
        segments = self._pin()
        try:
            self._check_local(segments, offset)
            slices: list[tuple[LogSegment, int, int]] = []
            total = 0
            bound = self._bound(segments, offset, max_offset, nowait)
            if bound is not None and bound[0] < 0:
                return FileRecords([], self._release_leases)
            records = False  # whether what is planned holds a record (or a marker)
            first_seg = self._segment_index(segments, offset)
            for i, seg in enumerate(segments[first_seg:], first_seg):
                if bound is not None and i > bound[0]:
                    break
                try:
                    found = seg.find_batch(offset, nowait=nowait)
                    if found is None:
                        continue
                    pos, first = found
                    limit = pos + max_bytes - total
                    if not slices and min_one:
                        limit = max(limit, pos + first.size)
                    if bound is not None and i == bound[0]:
                        limit = min(limit, bound[1])
                    end = seg.batches_end(pos, limit, nowait=nowait) if limit > pos else pos
                    if end > pos and not records:
                        records = seg.holds_records(pos, end, first, nowait=nowait)
                except PageCacheMiss:
                    if slices and records:
                        break  # what is planned so far; the client fetches the rest next time
                    raise
                if end > pos:
                    slices.append((seg, pos, end - pos))
                    total += end - pos
                if end < seg.size or total >= max_bytes:
                    break
            with self._readers_lock:  # pinned: none of these segments is closed yet
                for seg, _pos, _length in slices:
                    seg.leases += 1
            return FileRecords(slices, self._release_leases)
        finally:
            self._unpin()

    def offset_for_timestamp(
        self, timestamp_ms: int, *, local_from: int | None = None
    ) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp ≥ ``timestamp_ms``.

        Finds the first batch (in offset order) whose max timestamp reaches the target with
        the time and offset indexes, then decodes that batch to find the exact record.
        Batches with no such record at or above the log start offset (below the start, or
        emptied by compaction) are skipped.  Only local segments are looked at; with
        ``local_from`` (where the caller's look at the remote segments stopped),
        ``OffsetNotLocal`` when the local segments no longer start there.
        """
        segments = self._pin()
        try:
            if local_from is not None and segments[0].base_offset > local_from:
                raise OffsetNotLocal(f"{self!r} starts locally at {segments[0].base_offset} now")
            for seg in segments:
                if seg.max_timestamp < timestamp_ms:
                    continue
                found = seg.find_timestamp(timestamp_ms)
                if found is None:
                    continue
                for _pos, header, body in seg.iter_batches(found[0], with_body=True):
                    if header.max_timestamp < timestamp_ms or header.records_count == 0:
                        continue
                    if header.last_offset < self.log_start_offset:
                        continue
                    assert body is not None
                    start = self.log_start_offset
                    try:
                        for rec in iter_records(body):
                            if rec.timestamp >= timestamp_ms and rec.offset >= start:
                                return rec.offset, rec.timestamp
                    except BayouError:
                        return max(header.base_offset, self.log_start_offset), header.max_timestamp
            return None
        finally:
            self._unpin()

    def max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record holding the log's largest timestamp."""
        segments = self._pin()
        try:
            best: LogSegment | None = None
            for seg in segments:
                if seg.max_timestamp >= 0 and (
                    best is None or seg.max_timestamp > best.max_timestamp
                ):
                    best = seg
            if best is None:
                return None
            found = best.find_batch(best.offset_of_max_timestamp)
            if found is None:
                return None
            pos, header = found
            with contextlib.suppress(BayouError):
                for rec in iter_records(best.read(pos, header.size)):
                    if rec.timestamp == best.max_timestamp:
                        return rec.offset, rec.timestamp
            return header.base_offset, header.max_timestamp
        finally:
            self._unpin()

    # ------------------------------------------------------------------ readers vs. retirement

    def _pin(self) -> list[LogSegment]:
        with self._readers_lock:
            if self._closed:  # deleted (or shut down) after the caller found this log
                raise UnknownTopicOrPartition(f"{self.topic}-{self.index} is closed")
            self._reading += 1
            return self.segments

    def _unpin(self) -> None:
        with self._readers_lock:
            self._reading -= 1
            closable = self._closable()
        for seg in closable:
            seg.close()

    def _retire(self, segments: list[LogSegment]) -> None:
        """Close the fds of segments that left the list, once no reader is pinned and no
        ``FileRecords`` holds a lease on them."""
        with self._readers_lock:
            self._retired.extend(segments)
            closable = self._closable()
        for seg in closable:
            seg.close()

    def _release_leases(self, segments: list[LogSegment]) -> None:
        """A ``FileRecords`` was sent or dropped: its segments may close if retired."""
        with self._readers_lock:
            for seg in segments:
                seg.leases -= 1
            closable = self._closable()
        for seg in closable:
            seg.close()

    def _closable(self) -> list[LogSegment]:
        """Retired segments nobody reads any more (under ``_readers_lock``)."""
        if self._reading or not self._retired:
            return []
        closable = [seg for seg in self._retired if not seg.leases]
        if closable:
            self._retired = [seg for seg in self._retired if seg.leases]
        return closable

    # ------------------------------------------------------------------ retention

    def delete_records(self, offset: int) -> int:
        """DeleteRecords: move the log start offset up to ``offset`` (-1: the high
        watermark); return the new log start offset.  Segments below it are deleted by
        ``delete_old_segments``."""
        with self._lock:
            target = delete_records_target(
                self.topic, self.index, self.config, self.log_end_offset, offset
            )
            self.log_start_offset = max(self.log_start_offset, target)
            return self.log_start_offset

    def deletable_segments(self, now: int) -> int:
        """How many leading segments retention (or the log start offset) removes."""
        return deletable_segments(
            self.segments, self.log_start_offset, self.size_bytes, self.config, now
        )

    def delete_old_segments(self, now: int | None = None) -> int:
        """Delete whole segments past retention.ms/retention.bytes (cleanup.policy delete)
        or below the log start offset; move the log start offset; persist it.  Returns the
        number of segments deleted.  Worker thread; appends and reads go on meanwhile."""
        if self.tiered:
            return self._delete_old_segments_tiered(now)
        with self.maintenance_lock:
            with self._lock:
                if self._closed:
                    return 0
                now = self._clock_ms() if now is None else now
                count = self.deletable_segments(now)
                doomed: list[LogSegment] = []
                if count:
                    if count == len(self.segments):
                        self.roll(now)  # the active segment goes too: start a new one
                    doomed = self.segments[:count]
                    self.segments = self.segments[count:]
                    self.size_bytes -= sum(s.size for s in doomed)
                    self.log_start_offset = max(self.log_start_offset, self.segments[0].base_offset)
                moved = self.log_start_offset != self._persisted_start
            if not moved and not doomed:
                return 0
            for seg in doomed:
                seg.rename_suffix(DELETED_SUFFIX)
            self.flush()
            self.checkpoint()
            for seg in doomed:
                seg.unlink_files()
            if doomed:
                fsync_dir(self.directory)
            self._retire(doomed)
            return len(doomed)

    def _delete_old_segments_tiered(self, now: int | None) -> int:
        """``delete_old_segments`` with tiered storage (``tiered/retention.py``): retention
        judges the remote-only segments and the local ones as one log and deletes a prefix
        of it everywhere; ``local.retention.*`` then deletes local copies that are safely
        remote.  Order: the remote copies below the new log start are marked ``deleting``
        in ``remote.json`` (their objects go later, in the background), local files are
        renamed ``.deleted``, the new log start is checkpointed, the files unlinked.  A
        crash in between leaves ``.deleted`` files (removed by recovery) and a log start
        that recovery raises to the first segment still readable."""
        with self.maintenance_lock:
            with self._lock:
                if self._closed:
                    return 0
                now = self._clock_ms() if now is None else now
                remote_only: list[RemoteSegment] = self.remote.remote_only(self.local_start_offset)
                n_remote, n_local, local_only = tiered_deletions(
                    remote_only,
                    self.segments,
                    self.log_start_offset,
                    self.size_bytes,
                    self.config,
                    now,
                    self.remote.copied_end(),
                )
                if n_local == len(self.segments):
                    self.roll(now)  # the active segment goes too: start a new one
                    local_only = 0
                if n_remote < len(remote_only):
                    first_kept = remote_only[n_remote].base_offset
                else:
                    first_kept = self.segments[n_local].base_offset
                doomed = self.segments[: n_local + local_only]
                self.segments = self.segments[n_local + local_only :]
                self.size_bytes -= sum(s.size for s in doomed)
                self.log_start_offset = max(self.log_start_offset, first_kept)
                start = self.log_start_offset
                moved = start != self._persisted_start
            gone = self.remote.mark_deleting(lambda e: e.next_offset <= start)
            if not moved and not doomed:
                return len(gone)
            for seg in doomed:
                seg.rename_suffix(DELETED_SUFFIX)
            self.flush()
            self.checkpoint()
            for seg in doomed:
                seg.unlink_files()
            if doomed:
                fsync_dir(self.directory)
            self._retire(doomed)
            return n_remote + len(doomed)

    def replace_segments(self, old: list[LogSegment], new: LogSegment) -> bool:
        """Swap the cleaned ``new`` (files already named ``.swap``) in for ``old``.

        The crash-safe order: old files renamed ``.deleted``, ``.swap`` renamed to the plain
        names, directory fsynced, old files unlinked.  The segment list changes under
        ``_lock`` (the only moment the cleaner holds it); the old segments' fds are closed
        when no reader is pinned.  False (nothing done) if the log was closed meanwhile.
        """
        with self._lock:
            if self._closed or self.aborting:
                return False
        for seg in old:
            seg.rename_suffix(DELETED_SUFFIX)
        new.rename_suffix("")
        fsync_dir(self.directory)
        with self._lock:
            segs = self.segments
            first = next(i for i, s in enumerate(segs) if s is old[0])
            self.segments = [*segs[:first], new, *segs[first + len(old) :]]
            self.size_bytes += new.size - sum(s.size for s in old)
        for seg in old:
            seg.unlink_files()
        self._retire(old)
        return True

    # ------------------------------------------------------------------ durability

    def needs_flush(self, now_ms: int) -> bool:
        """Whether flush.messages or flush.ms (or a segment roll) calls for a flush."""
        unflushed = self.log_end_offset - self.recovery_point
        if unflushed <= 0:
            return False
        return (
            unflushed >= self.config.flush_messages
            or now_ms - self._last_flush_ms >= self.config.flush_ms
            or self._roll_generation != self._flushed_generation
        )

    def flush(self) -> int:
        """fsync everything appended so far; return the new recovery point.

        Safe from a worker thread while the loop thread appends: descriptors are duplicated
        under the lock and fsynced outside it.
        """
        with self._lock:
            if self._closed:
                return self.recovery_point
            target = self.log_end_offset
            generation = self._roll_generation
            if target <= self.recovery_point and generation == self._flushed_generation:
                return self.recovery_point
            fds = [
                fd
                for s in self.segments
                if s.next_offset > self.recovery_point or s is self.active
                for fd in s.dup_fds()
            ]
            snap = self.producer_state.snapshot()
        try:
            for fd in fds:
                os.fsync(fd)
        except OSError as exc:
            raise KafkaStorageError(f"cannot fsync {self!r}: {exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)
        if generation != self._flushed_generation:
            fsync_dir(self.directory)  # new segment files are durable entries
        with self._lock:
            if target > self.recovery_point:
                self.recovery_point = target
                self._flushed_state = (target, snap)
            self._flushed_generation = max(self._flushed_generation, generation)
            self._last_flush_ms = self._clock_ms()
            return self.recovery_point

    def release_idle_files(self) -> None:
        """Close the active segment's index files when nothing was appended since the last
        call (sealed segments hold none): an idle partition keeps one descriptor, its
        ``.log``.  Called every few seconds by the broker; the next index entry reopens."""
        with self._lock:
            if self._closed:
                return
            if self.log_end_offset == self._idle_mark:
                self.active.release_index_files()
            self._idle_mark = self.log_end_offset

    def checkpoint(self) -> None:
        """Persist the recovery point and the producer state as of it (flushed data only)."""
        with self._checkpoint_lock:
            if self._closed:
                return
            self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        offset, snap = self._flushed_state
        if offset != self._written_state_offset:
            save_snapshot(self.directory / PRODUCER_STATE_FILE, offset, snap)
            self._written_state_offset = offset
        point = (self.recovery_point, self.log_start_offset)
        if point != self._written_checkpoint:  # an idle partition's is on disk already
            write_checkpoint(self.directory, *point)
            self._written_checkpoint = point

    def close(self) -> None:
        """Seal, flush, checkpoint and close (idempotent); a running cleaner pass stops."""
        self.aborting = True
        with self.maintenance_lock, self._checkpoint_lock:
            if self._closed:
                return
            with self._lock:
                self.active.seal()
            self.flush()
            self._write_checkpoint()
            self._close_files()

    def close_without_flush(self) -> None:
        """Close the files, writing nothing (the partition is being deleted)."""
        self.aborting = True
        with self.maintenance_lock, self._checkpoint_lock:
            self._close_files()

    def _close_files(self) -> None:
        with self._lock:
            self._closed = True  # from now on _pin refuses new readers
            segments = list(self.segments)
        # A reader pinned before that (a cold read in a worker thread) keeps the fds open
        # until it unpins; the last _unpin closes them with the other retired segments.
        self._retire(segments)
