"""Log compaction: keep the last record of every key (Kafka's ``LogCleaner``, simplified).

Theory of operation
-------------------
A partition with ``cleanup.policy`` containing ``compact`` is split at two offsets:

* ``clean_offset`` (``cleaner.json``): below it the log was cleaned before;
* the *first uncleanable offset*: the base offset of the first segment that must not be
  touched yet — the active segment, or one holding records younger than
  ``min.compaction.lag.ms``.  A pass starts with a flush, so it only rewrites fsynced
  segments (below the recovery point).

``[clean_offset, first uncleanable)`` is the dirty section.  ``needs_cleaning`` says a pass is
due when dirty bytes / (clean + dirty bytes) ≥ ``min.cleanable.dirty.ratio``, when the first
dirty record is older than ``max.compaction.lag.ms``, or when kept tombstones have outlived
``delete.retention.ms``.

A pass (``clean``), in a worker thread, never blocking appends or reads:

1. builds the *key map* over the dirty section: a 16-byte BLAKE2 digest of each key → the
   offset of its last record.  The map holds at most ``map_entries`` keys (the broker
   derives it from ``log.cleaner.dedupe.buffer.size`` at 24 bytes an entry, as Kafka's
   ``SkimpyOffsetMap`` does); when it is full the pass stops at that batch and the rest of
   the dirty section waits for the next pass (several passes for a big backlog);
2. notes in ``cleaner.json`` that segments below the map's end may get offset gaps;
3. rewrites the segments from the log start up to the map's end, in groups of consecutive
   segments whose total size fits ``segment.bytes``, each group into one new segment whose
   base offset is the group's first.  A record is dropped when the map holds a later offset
   for its key, or when it is a tombstone (null value) first cleaned longer than
   ``delete.retention.ms`` ago.  Records past the map's end, keyless records (refused on
   compacted topics, but one made compacted later may hold some) and control batches are
   kept.  A batch keeps its base offset, last offset delta, producer id/epoch/base sequence,
   partition leader epoch, attributes and codec; only batches that lost records are
   re-encoded (``build_batch`` with the survivors' offset deltas), the others are copied
   byte for byte.  A batch that lost every record is kept *empty* when it is the last of
   its group (so the group's offset range is visible in the new file) or the last batch of
   an idempotent producer (so its sequence survives a restart), as Kafka does;
4. swaps each group in with the crash-safe rename protocol (below), one group at a time
   (disk overhead: one group), then records the pass in ``cleaner.json`` (``clean_offset``
   = where the map ended; the pass time, for tombstone horizons).

Crash safety (Kafka's ``.cleaned``/``.swap`` protocol)::

    write <B>.log.cleaned (+ indexes), fsync          crash → .cleaned removed, old kept
    rename indexes then log to .swap, fsync dir       crash → recovery finishes the swap
    rename old segments' files to .deleted            crash → recovery finishes the swap
    rename <B>.*.swap to <B>.*, fsync dir             crash → .deleted removed
    unlink the .deleted files

Recovery treats ``<B>.log.swap`` as a complete segment (it was fsynced before the rename):
it verifies it, deletes every ``.log`` whose base offset lies in ``[B, its next offset)`` and
renames it into place.  The empty trailing batch guarantees that range covers the whole
group.  Below ``clean_offset`` recovery accepts offset gaps.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bayou.config import INT_MAX, LONG_MAX
from bayou.errors import BayouError
from bayou.protocol.kafka.records import (
    BatchHeader,
    Record,
    build_batch,
    iter_records,
)
from bayou.storage.cleaner_state import CleanerState, save_cleaner_state
from bayou.storage.engine import AbortedTxn
from bayou.storage.files import fsync_dir, segment_path
from bayou.storage.log import PartitionLog
from bayou.storage.pacer import no_pace
from bayou.storage.producer_state import Snapshot
from bayou.storage.recovery import CLEANED_SUFFIX, SWAP_SUFFIX
from bayou.storage.segment import LogSegment

MAP_ENTRY_BYTES = 24  # what Kafka counts per key-map entry: 16-byte hash + 8-byte offset
# the pacer is asked after every batch and every this many records within one: a 1 MB batch
# of small records is tens of milliseconds of Python, far more than one pacing slice
PACE_RECORDS = 128
_WRITE_CHUNK = 1024 * 1024


@dataclass
class CleanStats:
    """What one pass did."""

    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    segments_in: int = 0
    segments_out: int = 0
    map_end: int = 0
    map_full: bool = False


def _key_digest(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=16).digest()


def cleanable_segments(log: PartitionLog, now: int) -> list[LogSegment]:
    """The leading segments the cleaner may rewrite (see the module docstring)."""
    segs = log.segments
    lag = log.config.min_compaction_lag_ms
    stable = log.last_stable_offset
    out: list[LogSegment] = []
    for seg in segs[:-1]:
        if (lag > 0 and seg.max_timestamp > now - lag) or seg.next_offset > stable:
            break  # too young, or holding an open transaction's data
        out.append(seg)
    return out


class AbortedRanges:
    """Which transactional batches belong to aborted transactions (the partition's
    aborted-transaction index, per producer)."""

    def __init__(self, aborted: Iterable[AbortedTxn]) -> None:
        self._by_producer: dict[int, list[tuple[int, int]]] = {}
        for txn in aborted:
            self._by_producer.setdefault(txn.producer_id, []).append(
                (txn.first_offset, txn.last_offset)
            )

    def covers(self, header: BatchHeader) -> bool:
        """Whether ``header`` is data of an aborted transaction."""
        if not header.is_transactional or header.is_control:
            return False
        ranges = self._by_producer.get(header.producer_id, ())
        return any(f <= header.base_offset <= last for f, last in ranges)


def _first_timestamp(seg: LogSegment, offset: int) -> int | None:
    found = seg.find_batch(offset)
    return None if found is None else found[1].base_timestamp


def needs_cleaning(log: PartitionLog, now: int) -> bool:
    """Whether a compacted log is due for a pass (dirty ratio, max lag, tombstone horizon)."""
    config = log.config
    if not config.compact:
        return False
    segs = cleanable_segments(log, now)
    if not segs:
        return False
    state = log.cleaner_state
    if state.tombstone_since_ms >= 0 and (
        state.tombstone_since_ms + config.delete_retention_ms <= now
    ):
        return True
    first_dirty = max(state.clean_offset, segs[0].base_offset)
    clean = sum(s.size for s in segs if s.next_offset <= first_dirty)
    dirty_segs = [s for s in segs if s.next_offset > first_dirty]
    dirty = sum(s.size for s in dirty_segs)
    if dirty == 0:
        return False
    if dirty / (clean + dirty) >= config.min_cleanable_dirty_ratio:
        return True
    if config.max_compaction_lag_ms < LONG_MAX:
        first = _first_timestamp(dirty_segs[0], first_dirty)
        if first is not None and now - first > config.max_compaction_lag_ms:
            return True
    return False


def _build_map(
    segs: list[LogSegment],
    first_dirty: int,
    capacity: int,
    stats: CleanStats,
    aborted: AbortedRanges,
    pace: Callable[[], None] = no_pace,
) -> dict[bytes, int]:
    """Key digest → last offset over the dirty section, stopping when ``capacity`` is
    reached (at a batch boundary, always after at least one batch)."""
    offset_map: dict[bytes, int] = {}
    end = first_dirty
    for seg in segs:
        if seg.next_offset <= first_dirty:
            continue
        found = seg.find_batch(first_dirty)
        if found is None:
            continue
        for _pos, header, body in seg.iter_batches(found[0], with_body=True):
            pace()
            if header.last_offset < first_dirty:
                continue
            if (
                header.records_count
                and len(offset_map) + header.records_count > capacity
                and end > first_dirty
            ):
                stats.map_full = True
                stats.map_end = end
                return offset_map
            if not header.is_control and header.records_count and not aborted.covers(header):
                assert body is not None
                for i, rec in enumerate(iter_records(body), 1):
                    if rec.key is not None:
                        offset_map[_key_digest(rec.key)] = rec.offset
                    if i % PACE_RECORDS == 0:  # a batch can hold thousands of records
                        pace()
            end = header.last_offset + 1
        end = max(end, seg.next_offset)
    stats.map_end = end
    return offset_map


class Sized(Protocol):
    """What grouping by size asks of a segment (the local one, PostgreSQL's rows)."""

    @property
    def base_offset(self) -> int: ...

    @property
    def next_offset(self) -> int: ...

    @property
    def size(self) -> int: ...


S = TypeVar("S", bound=Sized)


def size_groups(segs: list[S], max_bytes: int) -> list[list[S]]:
    """Consecutive segments whose total size fits one segment (Kafka's groupSegmentsBySize),
    each group's offsets within an int of its base."""
    groups: list[list[S]] = []
    for seg in segs:
        if groups:
            group = groups[-1]
            size = sum(s.size for s in group) + seg.size
            if size <= max_bytes and seg.next_offset - 1 - group[0].base_offset <= INT_MAX:
                group.append(seg)
                continue
        groups.append([seg])
    return groups


class CompactionPass:
    """One cleaning pass's per-record decisions (engine-neutral: the memory engine uses it
    too): the key map, the tombstone horizon and the batches that must survive."""

    def __init__(
        self,
        now: int,
        offset_map: dict[bytes, int],
        map_end: int,
        stats: CleanStats,
        *,
        delete_retention_ms: int,
        prior: CleanerState,
        producer_state: Snapshot,
        aborted: AbortedRanges | None = None,
    ) -> None:
        self.now = now
        self.map = offset_map
        self.map_end = map_end
        self.stats = stats
        self.delete_retention = delete_retention_ms
        self.prior = CleanerState(prior.clean_offset, list(prior.passes))
        self.tombstone_since = -1
        self.producer_last = {
            batches[-1].last_offset for _e, batches, _t, _c in producer_state.values() if batches
        }
        self.aborted = aborted or AbortedRanges(())
        self._txn_kept: dict[int, bool] = {}  # producer → data of its transaction kept so far
        self.pace: Callable[[], None] = no_pace  # asked every PACE_RECORDS records

    def _keep_tombstone(self, offset: int) -> bool:
        first = self.prior.first_cleaned_ms(offset)
        if first is not None and first + self.delete_retention <= self.now:
            return False
        since = self.now if first is None else first
        if self.tombstone_since < 0 or since < self.tombstone_since:
            self.tombstone_since = since
        return True

    def filter_batch(
        self, header: BatchHeader, body: memoryview, last_of_group: bool
    ) -> bytes | None:
        """The batch as it should be written (maybe re-encoded), or None to drop it."""
        must_keep = last_of_group or header.last_offset in self.producer_last
        if header.is_control:
            return self._filter_marker(header, body, must_keep)
        if header.records_count == 0:
            return bytes(body) if must_keep else None
        aborted = self.aborted.covers(header)
        kept: list[tuple[int, Record]] = []
        total = 0
        pace = self.pace
        for rec in iter_records(body):
            total += 1
            if total % PACE_RECORDS == 0:
                pace()
            keep = not aborted  # an aborted transaction's records all go
            if keep and rec.offset < self.map_end and rec.key is not None:
                latest = self.map.get(_key_digest(rec.key))
                if latest is not None and rec.offset < latest:
                    keep = False
                elif rec.value is None:
                    keep = self._keep_tombstone(rec.offset)
            if keep:
                delta = rec.offset - header.base_offset
                kept.append((delta, Record(rec.timestamp, rec.key, rec.value, rec.headers)))
        self.stats.records_read += total
        self.stats.records_kept += len(kept)
        if kept and header.is_transactional:
            self._txn_kept[header.producer_id] = True
        if len(kept) == total:
            return bytes(body)
        if not kept and not must_keep:
            return None
        append_time = header.timestamp_type == 1
        records = [r for _, r in kept]
        return build_batch(
            records,
            base_offset=header.base_offset,
            producer_id=header.producer_id,
            producer_epoch=header.producer_epoch,
            base_sequence=header.base_sequence,
            compression=header.compression,
            timestamp_type=header.timestamp_type,
            is_transactional=header.is_transactional,
            partition_leader_epoch=header.partition_leader_epoch,
            max_timestamp=(
                header.max_timestamp
                if append_time or not records
                else max(r.timestamp for r in records)
            ),
            offset_deltas=[d for d, _ in kept],
            last_offset_delta=header.last_offset_delta,
            base_timestamp=None if records else header.base_timestamp,
        )

    def _filter_marker(
        self, header: BatchHeader, body: memoryview, must_keep: bool
    ) -> bytes | None:
        """A transaction marker stays while its transaction has data in the log (a
        READ_COMMITTED reader needs it), and like a tombstone until ``delete.retention.ms``
        after it was first cleaned; then it goes (Kafka's cleaner does the same)."""
        data_kept = self._txn_kept.pop(header.producer_id, False)
        if must_keep or data_kept or self._keep_tombstone(header.base_offset):
            return bytes(body)
        return None


class _Pass(CompactionPass):
    """A pass over one local ``PartitionLog``: the decisions, and the segment rewriting."""

    def __init__(
        self,
        log: PartitionLog,
        now: int,
        offset_map: dict[bytes, int],
        map_end: int,
        stats: CleanStats,
        aborted: AbortedRanges,
        pace: Callable[[], None] = no_pace,
    ) -> None:
        with log._lock:
            snap = log.producer_state.snapshot()
        super().__init__(
            now,
            offset_map,
            map_end,
            stats,
            delete_retention_ms=log.config.delete_retention_ms,
            prior=log.cleaner_state,
            producer_state=snap,
            aborted=aborted,
        )
        self.log = log
        self.pace = pace

    def rewrite(self, group: list[LogSegment]) -> LogSegment:
        """Write the cleaned copy of ``group`` as ``<base>.*.cleaned`` and fsync it."""
        log = self.log
        base = group[0].base_offset
        for suffix in (".log", ".index", ".timeindex", ".txnindex"):  # a failed pass's
            for extra in (CLEANED_SUFFIX, SWAP_SUFFIX):
                leftover = segment_path(log.directory, base, suffix + extra)
                if leftover.exists():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(leftover)
        out = LogSegment(log.directory, base, self.now, suffix=CLEANED_SUFFIX, new=True)
        try:
            interval = log.config.index_interval_bytes
            group_end = group[-1].next_offset
            buf = bytearray()
            meta: list[tuple[int, int, int, int]] = []
            for seg in group:
                self.stats.bytes_read += seg.size
                for _pos, header, body in seg.iter_batches(0, with_body=True):
                    self.pace()
                    if log.aborting:
                        raise _Aborted
                    assert body is not None
                    data = self.filter_batch(header, body, header.last_offset + 1 == group_end)
                    if data is None:
                        continue
                    max_ts = int.from_bytes(data[35:43], "big", signed=True)
                    meta.append((header.base_offset, header.last_offset, max_ts, len(data)))
                    buf += data
                    if len(buf) >= _WRITE_CHUNK:
                        out.append(buf, meta, interval)
                        buf, meta = bytearray(), []
            if buf:
                out.append(buf, meta, interval)
            out.seal()
            # the group's aborted transactions stay indexed (READ_COMMITTED readers of what
            # survives, and of the markers kept)
            out.txn_index.rewrite([t for seg in group for t in seg.txn_index.entries()])
            out.fsync()
        except BaseException:
            out.delete()
            raise
        self.stats.bytes_written += out.size
        return out


class _Aborted(BayouError):
    """The log is closing: the pass stops (the .cleaned files are removed)."""


def clean(
    log: PartitionLog, now: int, map_entries: int, pace: Callable[[], None] = no_pace
) -> CleanStats | None:
    """Run one cleaning pass on ``log`` if anything is cleanable; None if nothing was done.

    Call from a worker thread: it reads and writes files for as long as it takes, holding
    the log's lock only to swap each cleaned group in, and calls ``pace`` once per batch it
    reads (the broker's ``Pacer`` yields the GIL to a busy event loop there).  Raises what
    the file system raises (the ``.cleaned`` files of the group being written are removed
    first).
    """
    with log.maintenance_lock:
        if log.aborting or not log.config.compact:
            return None
        log.flush()  # the cleaner only rewrites fsynced segments
        segs = cleanable_segments(log, now)
        if not segs:
            return None
        state = log.cleaner_state
        stats = CleanStats()
        first_dirty = max(state.clean_offset, segs[0].base_offset)
        aborted = AbortedRanges(t for seg in log.segments for t in seg.txn_index.entries())
        offset_map = _build_map(segs, first_dirty, max(1, map_entries), stats, aborted, pace)
        map_end = max(stats.map_end, first_dirty)
        work = [s for s in segs if s.base_offset < map_end]
        if not work:
            return None
        cleaning = _Pass(log, now, offset_map, map_end, stats, aborted, pace)
        state.gaps_below = max(state.gaps_below, map_end)
        save_cleaner_state(log.directory, state)  # before any swap: gaps allowed below
        for group in size_groups(work, log.config.segment_bytes):
            try:
                seg = cleaning.rewrite(group)
            except _Aborted:
                return None
            seg.rename_suffix(SWAP_SUFFIX)
            fsync_dir(log.directory)
            if not log.replace_segments(group, seg):
                seg.close()  # the log closed meanwhile: recovery finishes the swap
                return None
            stats.segments_in += len(group)
            stats.segments_out += 1
        state.add_pass(map_end, now, log.log_start_offset)
        state.tombstone_since_ms = cleaning.tombstone_since
        save_cleaner_state(log.directory, state)
        return stats
