"""The object-storage engine (``s3://bucket/prefix?metadata=postgres://…``): record batches in
objects, everything else — and the order of the batches — in PostgreSQL.

Theory of operation
-------------------
This is the PostgreSQL engine (``storage/postgres/``) with one difference: where the bytes
of a topic's record batches live.  Topics, partitions, offsets, segments, producer state,
the aborted-transaction index, state logs, configs, notifications, retention and the
cleaner's decisions are the PostgreSQL engine's, unchanged; the subclasses here replace
only what touches batch bytes:

* ``ObjectEngine.commit`` sends produce writes through the flusher (``flusher.py``: one
  object per flush for every partition, then the usual transaction, whose batch rows refer
  to the object) — transaction markers and state logs (small, latency-bound: a commit of
  group offsets must not wait for a flush) stay inline in PostgreSQL, as on
  ``postgres://``;
* ``ObjectWriter.insert_batches`` writes those rows (object id and byte position instead of
  ``data``) and the object's row;
* ``ObjectPartition`` reads through ``bayou.read_batch_refs`` (the same KIP-74 budget as
  ``read_batches``) and then the object byte ranges, through the read cache
  (``cache.py``): consecutive batches of one object are one range; each batch's base offset
  is patched from its row;
* ``ObjectMaintenance`` pages batches for compaction the same way, and after each round
  runs the collector (``gc.py``).  Compaction itself is the PostgreSQL engine's: a batch it
  re-encodes is stored inline in its row (and leaves its object); a dropped one loses its
  row.  Objects nothing refers to are deleted by the collector.

Reads of rows with inline bytes (markers, state logs, compacted batches, or a database that
``postgres://`` filled first) work as on ``postgres://``: a database can move from
``postgres://`` to ``s3://`` (the first ``s3://`` broker records its bucket and prefix in
``cluster.object_store``), never back.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from bayou.config import TopicConfig
from bayou.errors import InvalidConfig, KafkaStorageError
from bayou.storage.engine import Buffer, MaintenanceReport
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.objects import ObjectNotFound, ObjectStore, ObjectStoreError
from bayou.storage.postgres.db import Connection, redacted
from bayou.storage.postgres.engine import PostgresEngine, wall_clock_ms
from bayou.storage.postgres.maintenance import PAGE_ROWS, PgMaintenance
from bayou.storage.postgres.partition import (
    PgPartition,
    _first_at_or_after,
    _record_with_timestamp,
)
from bayou.storage.postgres.writer import _INSERT_BATCHES, Write, Writer, _Tx
from bayou.storage.s3.cache import ObjectCache
from bayou.storage.s3.flusher import OBJECTS, Flusher, StagedObject
from bayou.storage.s3.gc import ObjectCollector
from bayou.storage.s3.settings import ObjectEngineSettings

log = logging.getLogger(__name__)

#: a batch row as the reads see it: base offset, size, inline bytes, object id, position, key
Ref = tuple[int, int, bytes | None, int | None, int | None, str | None]

_REFS = "b.base_offset, b.size, b.data, b.object_id, b.object_pos, o.key"
_JOIN = "bayou.batches b LEFT JOIN bayou.objects o ON o.id = b.object_id"

_READ = """SELECT base_offset, size, data, object_id, object_pos, object_key
    FROM bayou.read_batch_refs(%s, %s, %s, %s, %s)"""

_BY_TIME = f"""
SELECT b.last_offset, {_REFS} FROM {_JOIN}
 WHERE b.partition_id = %(p)s AND b.max_timestamp >= %(ts)s AND b.last_offset >= %(from)s
   AND b.base_offset >= coalesce((
        SELECT min(s.base) FROM (
            SELECT base_offset AS base FROM bayou.segments
             WHERE partition_id = %(p)s AND max_timestamp >= %(ts)s AND next_offset > %(from)s
            UNION ALL
            SELECT segment_base FROM bayou.partitions
             WHERE id = %(p)s AND segment_max_timestamp >= %(ts)s) s), 0)
 ORDER BY b.base_offset LIMIT 8"""

_MAX_TIMESTAMP = f"""
SELECT b.max_timestamp, {_REFS} FROM {_JOIN}
 WHERE b.partition_id = %(p)s AND b.last_offset >= %(from)s AND b.max_timestamp >= 0
 ORDER BY b.max_timestamp DESC, b.base_offset LIMIT 1"""

_PAGE = f"""SELECT b.last_offset, b.segment, {_REFS} FROM {_JOIN}
    WHERE b.partition_id = %s AND b.base_offset >= %s AND b.base_offset < %s
    ORDER BY b.base_offset LIMIT %s"""

_FIRST = f"""SELECT {_REFS} FROM {_JOIN}
    WHERE b.partition_id = %s AND b.last_offset >= %s ORDER BY b.base_offset LIMIT 1"""

_INSERT_REFS = """INSERT INTO bayou.batches
    (partition_id, base_offset, last_offset, max_timestamp, size, segment, object_id, object_pos)
    SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[],
                         %b::int[], %b::bigint[], %b::bigint[], %b::bigint[])"""

_INSERT_OBJECTS = """INSERT INTO bayou.objects (id, key, size, created_ms)
    SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::bigint[])"""


class ObjectPartition(PgPartition):
    """A topic's partition whose batches may be in objects (see the module docstring)."""

    _engine: ObjectEngine

    READ = _READ

    async def _batches(self, rows: list[tuple[Any, ...]]) -> Buffer:
        return await self._engine.read_bytes(rows)

    async def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        self.check_open()
        start = self.state.log_start_offset
        cursor = start
        for _ in range(10_000):
            rows = await self._engine.db.fetch(
                "looking up an offset by time",
                _BY_TIME,
                {"p": self.id, "ts": timestamp_ms, "from": cursor},
                binary=True,
            )
            if not rows:
                return None
            datas = await self._engine.batch_bytes([row[1:] for row in rows])
            batches = [(row[1], row[0], data) for row, data in zip(rows, datas, strict=True)]
            found = await self._engine.offload(_first_at_or_after, batches, timestamp_ms, start)
            if found is not None:
                return found
            cursor = rows[-1][0] + 1
        return None

    async def max_timestamp(self) -> tuple[int, int] | None:
        self.check_open()
        start = self.state.log_start_offset
        rows = await self._engine.db.fetch(
            "looking up the largest timestamp",
            _MAX_TIMESTAMP,
            {"p": self.id, "from": start},
            binary=True,
        )
        if not rows:
            return None
        ts, *ref = rows[0]
        (data,) = await self._engine.batch_bytes([tuple(ref)])
        return await self._engine.offload(_record_with_timestamp, data, ts, start, ref[0])


class ObjectWriter(Writer):
    """The commit queue, writing batch rows that refer to objects (and the objects' rows)."""

    async def insert_batches(self, conn: psycopg.AsyncConnection[Any], tx: _Tx) -> None:
        inline = _Tx()
        refs: tuple[list[Any], ...] = tuple([] for _ in range(8))
        objects: dict[int, StagedObject] = {}
        for row in zip(*tx.batches, strict=True):
            pid, base, last, max_ts, size, segment, data = row
            if isinstance(data, tuple):
                (obj, at), pos = data
                objects[obj.id] = obj
                values = (pid, base, last, max_ts, size, segment, obj.id, at + pos)
                for column, value in zip(refs, values, strict=True):
                    column.append(value)
            else:
                inline.add_batch(pid, base, last, max_ts, size, segment, data)
        if objects:
            await conn.execute(
                _INSERT_OBJECTS,
                (
                    list(objects),
                    [o.key for o in objects.values()],
                    [o.size for o in objects.values()],
                    [o.created_ms for o in objects.values()],
                ),
            )
            await conn.execute(_INSERT_REFS, refs)
        for chunk in inline.batch_chunks():
            await conn.execute(_INSERT_BATCHES, chunk)


class ObjectMaintenance(PgMaintenance):
    """Retention and compaction as on ``postgres://``, batch bytes read from objects, and
    the collector after every round."""

    _engine: ObjectEngine

    async def round(self, now: int | None = None) -> list[MaintenanceReport]:
        reports = await super().round(now)
        await self._engine.collector.round(self._engine.clock_ms() if now is None else now)
        return reports

    async def _pages(
        self, conn: Connection, p: PgPartition, start: int, end: int
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        position = start
        while position < end:
            cur = await conn.execute(_PAGE, (p.id, position, end, PAGE_ROWS), binary=True)
            rows = await cur.fetchall()
            if not rows:
                return
            datas = await self._engine.batch_bytes([row[2:] for row in rows])
            yield [(r[2], r[0], r[1], d) for r, d in zip(rows, datas, strict=True)]
            position = rows[-1][2] + 1

    async def _first_batch(self, conn: Connection, p: PgPartition, offset: int) -> bytes | None:
        cur = await conn.execute(_FIRST, (p.id, offset), binary=True)
        row = await cur.fetchone()
        if row is None:
            return None
        (data,) = await self._engine.batch_bytes([row])
        return data


class ObjectEngine(PostgresEngine):
    """The ``LogEngine`` with batches in object storage (see the module docstring)."""

    kind = "s3"
    partition_class = ObjectPartition

    def __init__(
        self,
        settings: ObjectEngineSettings,
        cache_dir: Path,
        topic_defaults: Mapping[str, Any] | None = None,
        *,
        internal_config: TopicConfig,
        maintenance: MaintenanceSettings,
        node_id: int = 0,
        clock_ms: Callable[[], int] = wall_clock_ms,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            settings.metadata,
            topic_defaults,
            internal_config=internal_config,
            maintenance=maintenance,
            node_id=node_id,
            clock_ms=clock_ms,
        )
        self.settings = settings
        self.location = f"{settings.store.url} (metadata: {redacted(settings.metadata)})"
        self.objects = ObjectStore(settings.store, os.environ if environ is None else environ)
        self.cache = ObjectCache(
            self.objects, cache_dir, settings.cache_bytes, settings.chunk_bytes
        )
        self.writer = ObjectWriter(self)
        self.maintenance = ObjectMaintenance(self, maintenance)
        self.flusher = Flusher(self)
        self.collector = ObjectCollector(self)
        self._filling: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        await asyncio.to_thread(self.cache.reset)
        try:  # wrong credentials, a missing bucket, no store: one line at start, not later
            await self.objects.get_range(f"{OBJECTS}.probe", 0, 1)
        except ObjectNotFound:
            pass
        except ObjectStoreError as exc:
            raise InvalidConfig(f"cannot use the object store: {exc}") from None
        await super().open()

    async def check_database(self, conn: Connection, object_store: str | None) -> None:
        mine = self.settings.store.url
        if object_store is None:
            cur = await conn.execute(
                "UPDATE bayou.cluster SET object_store = coalesce(object_store, %s) "
                "RETURNING object_store",
                (mine,),
            )
            row = await cur.fetchone()
            object_store = row[0] if row else mine
        if object_store != mine:
            raise InvalidConfig(
                f"the database keeps its record batches in {object_store}, not {mine}"
            )

    async def close(self) -> None:
        await self.flusher.close()
        await super().close()
        if self._filling:
            await asyncio.gather(*list(self._filling), return_exceptions=True)

    async def maintain(self, now_ms: int | None = None) -> list[MaintenanceReport]:
        self.collector.list_next = True
        return await self.maintenance.round(now_ms)

    async def commit(self, writes: list[Write]) -> None:
        inline = [w for w in writes if w.partition.internal]
        produced = [w for w in writes if not w.partition.internal]
        if inline:
            await super().commit(inline)
        if produced:
            await self.flusher.submit(produced)

    def remember(self, object_id: int, data: bytes | bytearray) -> None:
        """Put an object just written into the read cache (in the background)."""
        task = asyncio.create_task(self._fill(object_id, data))
        self._filling.add(task)
        task.add_done_callback(self._filling.discard)

    async def _fill(self, object_id: int, data: bytes | bytearray) -> None:
        try:
            await asyncio.to_thread(self.cache.add_object, object_id, memoryview(data))
        except OSError as exc:
            log.warning("caching object %x failed: %s", object_id, exc)

    async def _fetch_runs(
        self, rows: Sequence[Sequence[Any]]
    ) -> tuple[list[bytes], list[tuple[int, int] | None]]:
        """The byte ranges ``rows`` (``Ref``) need — one per run of consecutive batches of
        one object, fetched concurrently through the cache — and where each row's batch is
        in them (None: inline)."""
        runs: list[list[Any]] = []  # object id, key, start, end
        where: list[tuple[int, int] | None] = []
        for _base, size, data, object_id, pos, key in rows:
            if data is not None:
                where.append(None)
                continue
            if object_id is None or key is None or pos is None:
                raise KafkaStorageError("a batch's object is missing from the index")
            run = runs[-1] if runs else None
            if run is None or run[0] != object_id or run[3] != pos:
                run = [object_id, key, pos, pos]
                runs.append(run)
            where.append((len(runs) - 1, run[3] - run[2]))
            run[3] += size
        fetched = await asyncio.gather(
            *(self.cache.read(oid, key, start, end) for oid, key, start, end in runs)
        )
        return list(fetched), where

    async def read_bytes(self, rows: Sequence[Sequence[Any]]) -> bytes | bytearray:
        """The batches of ``rows`` end to end, base offsets patched in."""
        if len(rows) == 1 and rows[0][2] is not None:
            return bytes(rows[0][2])
        fetched, where = await self._fetch_runs(rows)
        out = bytearray()
        for (base, size, data, *_rest), at in zip(rows, where, strict=True):
            if at is None:
                out += data
                continue
            run, pos = at
            start = len(out)
            out += memoryview(fetched[run])[pos : pos + size]
            out[start : start + 8] = int(base).to_bytes(8, "big", signed=True)
        return out

    async def batch_bytes(self, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """Each row's batch, its base offset patched in."""
        fetched, where = await self._fetch_runs(rows)
        out: list[bytes] = []
        for (base, size, data, *_rest), at in zip(rows, where, strict=True):
            if at is None:
                out.append(bytes(data))
                continue
            run, pos = at
            batch = bytearray(memoryview(fetched[run])[pos : pos + size])
            batch[0:8] = int(base).to_bytes(8, "big", signed=True)
            out.append(bytes(batch))
        return out
