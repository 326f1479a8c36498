"""Retention, DeleteRecords and compaction on PostgreSQL, with the engine-neutral rules.

Theory of operation
-------------------
A partition's batches belong to *segments*, exactly as on the other engines: the closed
ones are rows of ``segments`` (base offset, next offset, creation time, size, max
timestamp), the active one lives in the partition row, and every batch row names its
segment.  So ``retention.deletable_segments`` and the cleaner's ``CompactionPass`` decide
here what they decide on the local and memory engines, and the contract suite's lifecycle
tests pass unchanged.

**Retention** (a round, or DeleteRecords): in one transaction holding the partition row
(``FOR UPDATE``, so it is serialised with appends of every broker): move the log start
(DeleteRecords), ask ``deletable_segments`` how many leading segments go, delete their
batches, segment rows and aborted-transaction entries by offset range, and update the row
(log start, size, ``version + 1``; when every segment goes, a new empty active segment at
the log end), announcing the new state.

**Compaction** of a partition whose closed, stable segments are due (the dirty ratio,
``max.compaction.lag.ms`` or tombstones past ``delete.retention.ms``, as ``cleaner.py``
decides for the local engine):

1. build the key map over the dirty section, reading batches page by page and decoding
   them in a worker thread (at most ``map_entries`` keys, stopping at a batch boundary);
2. group consecutive closed segments whose total size fits ``segment.bytes`` (the local
   cleaner's groups); read their batches page by page, let ``CompactionPass.filter_batch``
   decide each one (in a worker thread), and apply each page's decisions in a transaction
   of its own — drop a batch (DELETE), re-encode it (UPDATE), or keep it — with the sizes
   of its segments and partition adjusted; then one more transaction merges each group's
   segment rows into one (base offset of the group's first, created now) and moves the
   group's batches into it.  Batches keep
   their base offsets, so a row is changed in place and readers see the old or the new
   version of each batch, never a gap that was not a compaction gap;
3. record the pass in the row's ``cleaner`` column (``CleanerState``: where the dirty
   section begins, when passes ran — tombstone horizons).

A crash between page transactions leaves a valid log (some batches cleaned, segments not
merged yet); the pass is redone from the recorded clean offset.

**Who runs it.**  Each broker's engine runs a round every ``log.retention.check.interval.ms``
over every partition it knows.  A partition's maintenance runs under a session advisory lock
(``pg_try_advisory_lock``): brokers sharing a database take turns, and a partition another
broker is cleaning is skipped.  DeleteRecords moves the log start at once and deletes
segments only if it gets that lock (else the next round does).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from bisect import bisect_right
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from bayou.config import LONG_MAX, TopicConfig
from bayou.errors import KafkaError
from bayou.protocol.kafka.records import iter_records, parse_header
from bayou.storage.cleaner import (
    MAP_ENTRY_BYTES,
    AbortedRanges,
    CleanStats,
    CompactionPass,
    size_groups,
)
from bayou.storage.cleaner_state import CleanerState
from bayou.storage.engine import AbortedTxn, MaintenanceReport
from bayou.storage.maintenance import MaintenanceSettings, summary
from bayou.storage.postgres.db import Connection, storage_error
from bayou.storage.postgres.notify import CHANNEL, PartitionState, partition_payloads
from bayou.storage.producer_state import BatchMeta, Snapshot
from bayou.storage.retention import deletable_segments, delete_records_target

if TYPE_CHECKING:
    from bayou.storage.postgres.engine import PostgresEngine
    from bayou.storage.postgres.partition import PgPartition

log = logging.getLogger(__name__)

LOCK_BASE = 1 << 48  # advisory lock keys: LOCK_BASE + partition id
PAGE_BYTES = 8 * 1024 * 1024
PAGE_ROWS = 512

_ROW = """SELECT version, log_start_offset, next_offset, first_unstable_offset, size_bytes,
    has_aborted, segment_base, segment_created_ms, segment_size, segment_max_timestamp,
    cleaner FROM bayou.partitions WHERE id = %s"""

_SEGMENTS = """SELECT base_offset, next_offset, created_ms, size, max_timestamp
    FROM bayou.segments WHERE partition_id = %s ORDER BY base_offset"""

_PAGE = """SELECT base_offset, last_offset, segment, data FROM bayou.batches
    WHERE partition_id = %s AND base_offset >= %s AND base_offset < %s
    ORDER BY base_offset LIMIT %s"""


@dataclass
class Segment:
    """A segment as retention and the cleaner see it (``retention.Segment``)."""

    base_offset: int
    next_offset: int
    created_ms: int
    size: int
    max_timestamp: int

    @property
    def empty(self) -> bool:
        return self.size == 0

    def largest_timestamp(self) -> int:
        return self.max_timestamp if self.max_timestamp >= 0 else self.created_ms


@dataclass
class _Row:
    version: int
    log_start: int
    next_offset: int
    first_unstable: int
    size: int
    has_aborted: bool
    active: Segment
    cleaner: CleanerState

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> _Row:
        version, start, end, unstable, size, aborted, base, created, seg_size, max_ts, doc = row
        return cls(
            version,
            start,
            end,
            unstable,
            size,
            aborted,
            Segment(base, end, created, seg_size, max_ts),
            _cleaner_state(doc),
        )

    @property
    def stable(self) -> int:
        lso = self.next_offset if self.first_unstable < 0 else self.first_unstable
        return max(lso, self.log_start)

    def state(self) -> PartitionState:
        return PartitionState(
            self.version,
            self.log_start,
            self.next_offset,
            self.first_unstable,
            self.size,
            self.has_aborted,
        )


def _cleaner_state(doc: dict[str, Any] | None) -> CleanerState:
    if not doc:
        return CleanerState()
    return CleanerState(
        int(doc["clean_offset"]),
        [(int(e), int(t)) for e, t in doc["passes"]],
        int(doc.get("tombstone_since_ms", -1)),
        int(doc.get("gaps_below", doc["clean_offset"])),
    )


def _cleaner_doc(state: CleanerState) -> str:
    return json.dumps(
        {
            "clean_offset": state.clean_offset,
            "passes": [list(p) for p in state.passes],
            "tombstone_since_ms": state.tombstone_since_ms,
            "gaps_below": state.gaps_below,
        }
    )


def _key_digest(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=16).digest()


class PgMaintenance:
    """Retention and compaction rounds of one engine (see the module docstring)."""

    def __init__(self, engine: PostgresEngine, settings: MaintenanceSettings) -> None:
        self._engine = engine
        self.interval_s = max(settings.interval_ms, 1) / 1000
        self.map_entries = max(settings.dedupe_buffer_size // MAP_ENTRY_BYTES, 1)
        self.cleaner = settings.cleaner_enable
        self._running = asyncio.Lock()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.round()
            except Exception:
                log.exception("log maintenance failed")

    async def round(self, now: int | None = None) -> list[MaintenanceReport]:
        async with self._running:
            now = self._engine.clock_ms() if now is None else now
            out: list[MaintenanceReport] = []
            for p in self._engine.all_partitions():
                report = await self._partition(p, now)
                if report is not None:
                    out.append(report)
            return out

    async def _partition(self, p: PgPartition, now: int) -> MaintenanceReport | None:
        name = f"{p.topic}-{p.index}"
        deleted = 0
        stats: CleanStats | None = None
        try:
            async with self._engine.db.connection("log maintenance") as conn:
                if not await _try_lock(conn, p.id):
                    return None  # another broker is on it
                try:
                    deleted = await self._retention(conn, p, now)
                    if self.cleaner:
                        stats = await self._clean(conn, p, now)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_BASE + p.id,))
        except (psycopg.Error, KafkaError) as exc:
            error = exc if isinstance(exc, KafkaError) else storage_error("maintenance", exc)
            log.error("log maintenance of %s failed: %s", name, error)
            return MaintenanceReport(p.topic, p.index, deleted, p.log_start_offset, None, error)
        if deleted:
            log.info(
                "retention deleted %d segment(s) of %s; log start offset %d",
                deleted,
                name,
                p.log_start_offset,
            )
        cleaned = summary(stats) if stats is not None else None
        if cleaned is not None:
            log.info("cleaned %s: %s", name, cleaned)
        if not deleted and cleaned is None:
            return None
        return MaintenanceReport(p.topic, p.index, deleted, p.log_start_offset, cleaned)

    # ------------------------------------------------------------------ retention

    async def delete_records(self, p: PgPartition, offset: int) -> int:
        """DeleteRecords: move the log start (and delete what it frees if no pass runs)."""
        try:
            async with self._engine.db.connection("deleting records") as conn:
                locked = await _try_lock(conn, p.id)
                try:
                    await self._retention(
                        conn, p, self._engine.clock_ms(), delete_to=offset, segments=locked
                    )
                finally:
                    if locked:
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_BASE + p.id,))
        except psycopg.Error as exc:
            raise storage_error("deleting records", exc) from None
        return p.log_start_offset

    async def _retention(
        self,
        conn: Connection,
        p: PgPartition,
        now: int,
        *,
        delete_to: int | None = None,
        segments: bool = True,
    ) -> int:
        """One retention transaction; how many segments it deleted.  A round first looks
        without a lock, so a partition with nothing to delete costs two small reads."""
        config = p.config
        if delete_to is None:
            cur = await conn.execute(_ROW, (p.id,))
            found = await cur.fetchone()
            if found is None:
                return 0
            row = _Row.of(found)
            cur = await conn.execute(_SEGMENTS, (p.id,))
            segs = [Segment(*r) for r in await cur.fetchall()] + [row.active]
            if not deletable_segments(segs, row.log_start, row.size, config, now):
                return 0
        async with conn.transaction():
            cur = await conn.execute(_ROW + " FOR UPDATE", (p.id,))
            found = await cur.fetchone()
            if found is None:
                return 0
            row = _Row.of(found)
            changed = False
            if delete_to is not None:
                target = delete_records_target(p.topic, p.index, config, row.next_offset, delete_to)
                if target > row.log_start:
                    row.log_start = target
                    changed = True
            count = 0
            if segments:
                cur = await conn.execute(_SEGMENTS, (p.id,))
                segs = [Segment(*r) for r in await cur.fetchall()] + [row.active]
                count = deletable_segments(segs, row.log_start, row.size, config, now)
                if count:
                    changed = True
                    await self._delete_segments(conn, p, row, segs, count, now)
            if not changed:
                return 0
            row.version += 1
            await conn.execute(
                """UPDATE bayou.partitions SET version = %s, log_start_offset = %s,
                   size_bytes = %s, segment_base = %s, segment_created_ms = %s,
                   segment_size = %s, segment_max_timestamp = %s WHERE id = %s""",
                (
                    row.version,
                    row.log_start,
                    row.size,
                    row.active.base_offset,
                    row.active.created_ms,
                    row.active.size,
                    row.active.max_timestamp,
                    p.id,
                ),
            )
            await self._announce(conn, p, row.state())
        p.apply(row.state())
        return count

    async def _delete_segments(
        self, conn: Connection, p: PgPartition, row: _Row, segs: list[Segment], count: int, now: int
    ) -> None:
        if count == len(segs):  # everything: a new empty active segment at the log end
            boundary = row.next_offset
            row.active = Segment(boundary, boundary, now, 0, -1)
            row.log_start = max(row.log_start, boundary)
        else:
            boundary = segs[count].base_offset
            row.log_start = max(row.log_start, boundary)
        row.size -= sum(s.size for s in segs[:count])
        for table, column in (
            ("batches", "base_offset"),
            ("segments", "base_offset"),
            ("aborted_txns", "last_offset"),
        ):
            await conn.execute(
                f"DELETE FROM bayou.{table} WHERE partition_id = %s AND {column} < %s",
                (p.id, boundary),
            )

    async def _announce(self, conn: Connection, p: PgPartition, state: PartitionState) -> None:
        for payload in partition_payloads(self._engine.sender, [(p.id, state)]):
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    # ------------------------------------------------------------------ compaction

    async def _clean(self, conn: Connection, p: PgPartition, now: int) -> CleanStats | None:
        config = p.config
        if not config.compact:
            return None
        cur = await conn.execute(_ROW, (p.id,))
        found = await cur.fetchone()
        if found is None:
            return None
        row = _Row.of(found)
        cur = await conn.execute(_SEGMENTS, (p.id,))
        closed = [Segment(*r) for r in await cur.fetchall()]
        cleanable = _cleanable(closed, config, row.stable, now)
        state = row.cleaner
        if not cleanable or not await self._due(conn, p, config, cleanable, state, now):
            return None
        stats = CleanStats()
        first_dirty = max(state.clean_offset, cleanable[0].base_offset)
        cur = await conn.execute(
            "SELECT producer_id, first_offset, last_offset, last_stable_offset "
            "FROM bayou.aborted_txns WHERE partition_id = %s ORDER BY last_offset",
            (p.id,),
        )
        aborted = AbortedRanges(AbortedTxn(*r) for r in await cur.fetchall())
        offset_map = await self._build_map(
            conn, p, first_dirty, cleanable[-1].next_offset, stats, aborted
        )
        map_end = max(stats.map_end, first_dirty)
        work = [s for s in cleanable if s.base_offset < map_end]
        if not work:
            return None
        decisions = CompactionPass(
            now,
            offset_map,
            map_end,
            stats,
            delete_retention_ms=config.delete_retention_ms,
            prior=state,
            producer_state=await _producer_snapshot(conn, p.id),
            aborted=aborted,
        )
        groups = size_groups(work, config.segment_bytes)
        await self._rewrite(conn, p, groups, decisions, stats, now)
        stats.segments_in += len(work)
        stats.segments_out += len(groups)
        state.gaps_below = max(state.gaps_below, map_end)
        state.add_pass(map_end, now, p.log_start_offset)
        state.tombstone_since_ms = decisions.tombstone_since
        await conn.execute(
            "UPDATE bayou.partitions SET cleaner = %s::jsonb WHERE id = %s",
            (_cleaner_doc(state), p.id),
        )
        return stats

    async def _due(
        self,
        conn: Connection,
        p: PgPartition,
        config: TopicConfig,
        segs: list[Segment],
        state: CleanerState,
        now: int,
    ) -> bool:
        """``cleaner.needs_cleaning``'s rules over segment rows."""
        if state.tombstone_since_ms >= 0 and (
            state.tombstone_since_ms + config.delete_retention_ms <= now
        ):
            return True
        first_dirty = max(state.clean_offset, segs[0].base_offset)
        clean = sum(s.size for s in segs if s.next_offset <= first_dirty)
        dirty = sum(s.size for s in segs if s.next_offset > first_dirty)
        if dirty == 0:
            return False
        if dirty / (clean + dirty) >= config.min_cleanable_dirty_ratio:
            return True
        if config.max_compaction_lag_ms < LONG_MAX:
            first = await self._first_batch(conn, p, first_dirty)
            if first is not None:
                base_timestamp = parse_header(first).base_timestamp
                if now - base_timestamp > config.max_compaction_lag_ms:
                    return True
        return False

    async def _first_batch(self, conn: Connection, p: PgPartition, offset: int) -> bytes | None:
        """The first batch holding an offset at or after ``offset``."""
        cur = await conn.execute(
            "SELECT data FROM bayou.batches WHERE partition_id = %s AND last_offset >= %s "
            "ORDER BY base_offset LIMIT 1",
            (p.id, offset),
            binary=True,
        )
        first = await cur.fetchone()
        return None if first is None else bytes(first[0])

    async def _pages(
        self, conn: Connection, p: PgPartition, start: int, end: int
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The batch rows in ``[start, end)``, a page at a time."""
        position = start
        while position < end:
            cur = await conn.execute(_PAGE, (p.id, position, end, PAGE_ROWS), binary=True)
            rows = await cur.fetchall()
            if not rows:
                return
            yield rows
            position = rows[-1][0] + 1

    async def _build_map(
        self,
        conn: Connection,
        p: PgPartition,
        first_dirty: int,
        end: int,
        stats: CleanStats,
        aborted: AbortedRanges,
    ) -> dict[bytes, int]:
        offset_map: dict[bytes, int] = {}
        position = first_dirty
        capacity = self.map_entries
        cur = await conn.execute(
            "SELECT coalesce(max(base_offset), 0) FROM bayou.batches "
            "WHERE partition_id = %s AND base_offset <= %s",
            (p.id, first_dirty),
        )
        floor = await cur.fetchone()
        async for rows in self._pages(conn, p, floor[0] if floor else 0, end):
            full, position = await self._engine.offload(
                _map_page, rows, offset_map, first_dirty, position, capacity, aborted
            )
            if full:
                stats.map_full = True
                stats.map_end = position
                return offset_map
        stats.map_end = max(position, end)
        return offset_map

    async def _rewrite(
        self,
        conn: Connection,
        p: PgPartition,
        groups: list[list[Segment]],
        decisions: CompactionPass,
        stats: CleanStats,
        now: int,
    ) -> None:
        """Filter every batch of ``groups`` page by page (a transaction per page that
        changed), then merge each group's segment rows into one (one transaction)."""
        bounds = [(g[0].base_offset, g[-1].next_offset) for g in groups]
        kept_size = [0] * len(groups)
        kept_max = [-1] * len(groups)
        async for rows in self._pages(conn, p, bounds[0][0], bounds[-1][1]):
            stats.bytes_read += sum(len(r[3]) for r in rows)
            page = await self._engine.offload(_filter_page, decisions, rows, bounds)
            for g, size in page.kept_size.items():
                kept_size[g] += size
            for g, max_ts in page.kept_max.items():
                kept_max[g] = max(kept_max[g], max_ts)
            if page.dropped or page.rewritten:
                await self._apply_page(conn, p, page)
        stats.bytes_written += sum(kept_size)
        starts = [b for b, _e in bounds]
        ends = [e for _b, e in bounds]
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT version FROM bayou.partitions WHERE id = %s FOR UPDATE", (p.id,)
            )
            if await cur.fetchone() is None:
                return
            await conn.execute(
                """UPDATE bayou.batches b SET segment = g.base
                   FROM unnest(%s::bigint[], %s::bigint[]) AS g(base, stop)
                   WHERE b.partition_id = %s AND b.base_offset >= g.base
                     AND b.base_offset < g.stop AND b.segment <> g.base""",
                (starts, ends, p.id),
            )
            await conn.execute(
                "DELETE FROM bayou.segments WHERE partition_id = %s "
                "AND base_offset >= %s AND base_offset < %s",
                (p.id, starts[0], ends[-1]),
            )
            await conn.execute(
                """INSERT INTO bayou.segments (partition_id, base_offset, next_offset,
                   created_ms, size, max_timestamp)
                   SELECT %s, * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[],
                                            %s::bigint[], %s::bigint[])""",
                (p.id, starts, ends, [now] * len(starts), kept_size, kept_max),
            )

    async def _apply_page(self, conn: Connection, p: PgPartition, page: _Page) -> None:
        """One page's decisions in one transaction (two round trips: the row, locked by
        the UPDATE that shrinks it, then everything else with the COMMIT)."""
        async with conn.pipeline(), conn.transaction():
            cur = await conn.execute(
                "UPDATE bayou.partitions SET size_bytes = size_bytes - %s, version = version + 1 "
                "WHERE id = %s RETURNING version, log_start_offset, next_offset, "
                "first_unstable_offset, size_bytes, has_aborted",
                (sum(page.freed.values()), p.id),
            )
            found = await cur.fetchone()
            if found is None:
                return
            state = PartitionState(*found)
            if page.dropped:
                await conn.execute(
                    "DELETE FROM bayou.batches WHERE partition_id = %s AND base_offset = ANY(%s)",
                    (p.id, page.dropped),
                )
            if page.rewritten:
                offsets, sizes, stamps, datas = zip(*page.rewritten, strict=True)
                await conn.execute(
                    """UPDATE bayou.batches b SET data = v.data, size = v.size,
                       max_timestamp = v.max_timestamp, object_id = NULL, object_pos = NULL
                       FROM unnest(%b::bigint[], %b::int[], %b::bigint[], %b::bytea[])
                         AS v(base_offset, size, max_timestamp, data)
                       WHERE b.partition_id = %b AND b.base_offset = v.base_offset""",
                    (list(offsets), list(sizes), list(stamps), list(datas), p.id),
                )
            await conn.execute(
                """UPDATE bayou.segments s SET size = s.size - v.freed
                   FROM unnest(%s::bigint[], %s::bigint[]) AS v(base_offset, freed)
                   WHERE s.partition_id = %s AND s.base_offset = v.base_offset""",
                (list(page.freed), list(page.freed.values()), p.id),
            )
            await self._announce(conn, p, state)
        p.apply(state)


@dataclass
class _Page:
    dropped: list[int]
    rewritten: list[tuple[int, int, int, bytes]]  # base offset, size, max timestamp, data
    freed: dict[int, int]  # segment → bytes freed
    kept_size: dict[int, int]  # group → bytes kept
    kept_max: dict[int, int]  # group → max timestamp kept


def _filter_page(
    decisions: CompactionPass,
    rows: list[tuple[int, int, int, bytes]],
    bounds: list[tuple[int, int]],
) -> _Page:
    """``CompactionPass``'s decision on each batch of a page (``bounds``: each group's
    [first offset, end); the last batch of a group is kept even if emptied)."""
    page = _Page([], [], {}, {}, {})
    starts = [b for b, _e in bounds]
    for base, last, segment, data in rows:
        g = bisect_right(starts, base) - 1
        body = memoryview(data)
        kept = decisions.filter_batch(parse_header(body), body, last + 1 == bounds[g][1])
        if kept is None:
            page.dropped.append(base)
            page.freed[segment] = page.freed.get(segment, 0) + len(data)
            continue
        max_ts = int.from_bytes(kept[35:43], "big", signed=True)
        if len(kept) != len(data) or kept != data:
            page.rewritten.append((base, len(kept), max_ts, bytes(kept)))
            page.freed[segment] = page.freed.get(segment, 0) + len(data) - len(kept)
        page.kept_size[g] = page.kept_size.get(g, 0) + len(kept)
        page.kept_max[g] = max(page.kept_max.get(g, -1), max_ts)
    return page


def _map_page(
    rows: list[tuple[int, int, int, bytes]],
    offset_map: dict[bytes, int],
    first_dirty: int,
    position: int,
    capacity: int,
    aborted: AbortedRanges,
) -> tuple[bool, int]:
    """Add a page's keys to the map; (map full, where the map ends)."""
    for _base, last, _segment, data in rows:
        if last < first_dirty:
            continue
        header = parse_header(data)
        if (
            header.records_count
            and len(offset_map) + header.records_count > capacity
            and position > first_dirty
        ):
            return True, position
        if not header.is_control and header.records_count and not aborted.covers(header):
            for rec in iter_records(data):
                if rec.key is not None:
                    offset_map[_key_digest(rec.key)] = rec.offset
        position = last + 1
    return False, position


def _cleanable(closed: list[Segment], config: TopicConfig, stable: int, now: int) -> list[Segment]:
    lag = config.min_compaction_lag_ms
    out: list[Segment] = []
    for seg in closed:
        if (lag > 0 and seg.max_timestamp > now - lag) or seg.next_offset > stable:
            break  # too young, or holding an open transaction's data
        out.append(seg)
    return out


async def _try_lock(conn: Connection, partition_id: int) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_BASE + partition_id,))
    got = await cur.fetchone()
    return bool(got and got[0])


async def _producer_snapshot(conn: Connection, partition_id: int) -> Snapshot:
    cur = await conn.execute(
        "SELECT producer_id, epoch, batches, txn_first_offset, coordinator_epoch "
        "FROM bayou.producers WHERE partition_id = %s",
        (partition_id,),
    )
    snap: Snapshot = {}
    for producer_id, epoch, flat, txn, coordinator_epoch in await cur.fetchall():
        metas = tuple(BatchMeta(*flat[i : i + 5]) for i in range(0, len(flat), 5))
        snap[producer_id] = (epoch, metas, txn, coordinator_epoch)
    return snap
