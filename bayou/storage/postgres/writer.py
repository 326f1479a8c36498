"""Appends, transaction markers and state-log entries: stored in call order, offsets assigned
inside the PostgreSQL transaction that stores them.

Theory of operation
-------------------
**The commit queue.**  Every write (a produce payload for one partition, a marker, a
state-log batch) is checked first, on the event loop, by the engine-neutral rules
(``append.check_payload``: framing, CRC, sizes, no client-written control batch); what passes
joins a *job* (one ``append_many`` call is one job), and jobs queue here in call order.  Up
to ``LANES`` transactions run at once.  A free lane takes, in queue order, every waiting
job that shares no partition with a transaction still running nor with an earlier job left
waiting (so per partition, writes commit exactly in call order), up to ``GROUP_MAX_BYTES``,
and stores them all in one transaction.  Under load that is group commit: while one
transaction commits, the next one's writes gather, and one COMMIT (one WAL flush) acknowledges
them all.  Idle, a write is one transaction on its own.

**One transaction** (two round trips, in pipeline mode):

1. ``BEGIN``; ``SELECT … FROM partitions WHERE id = ANY(…) ORDER BY id FOR UPDATE`` — the
   partition rows, locked in id order (so two brokers' transactions cannot deadlock).  A
   row whose ``leader_epoch`` is not the one this broker holds fails its writes with
   NOT_LEADER_OR_FOLLOWER when the handle is fenced (a partition this broker leads, or any
   partition outside a cluster): a broker that lost a partition can no longer commit to it.  A
   cached producer state whose ``producers_at`` is not the row's next offset is reloaded
   from ``producers`` (another broker wrote meanwhile, or a transaction failed).
2. In memory, write by write in call order: the producer-state check (a retried batch is
   answered with the offsets it got the first time, and writes nothing), offsets assigned
   from the row's next offset by patching base offsets (``append.assign_offsets``), the
   active segment rolled as the other engines roll it (``segment.bytes``, ``segment.ms``,
   int32 relative offsets), the producer state updated, an ABORT indexed.
3. ``INSERT`` the batches (one row per batch, a statement per MiB or so), the closed segments, the
   producer states, the aborted transactions; ``UPDATE`` the partition rows (next offset,
   active segment, size, first unstable offset, ``version + 1``); ``pg_notify`` the new
   states; ``COMMIT``.

Only after the commit are the cached partition states replaced and the waiters woken, so
nothing is readable or acknowledged before it is durable (``synchronous_commit`` is the
database's: with its default, the WAL is flushed before COMMIT returns).

**Failures.**  A dead connection found in step 1 (PostgreSQL restarted) is harmless: nothing
was sent that could commit, so the group is retried on a fresh connection (bounded by
``RETRY_S``).  A failure after step 3 was sent has an unknown outcome: every write of the
group is answered KAFKA_STORAGE_ERROR (retriable), the producer states involved are marked
stale, and the client's retry finds out — an idempotent producer's retry of a batch that did
commit is recognised as a duplicate and answered with its original offsets.

A job is never cancelled half-way: the caller awaits it through ``asyncio.shield``, so a
produce request whose connection closes still has its transaction finish (or fail) whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from bayou.config import INT_MAX
from bayou.errors import (
    ErrorCode,
    InvalidProducerEpoch,
    KafkaError,
    KafkaStorageError,
    UnknownTopicOrPartition,
)
from bayou.protocol.kafka.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchHeader,
    build_control_batch,
    parse_header,
)
from bayou.storage.append import assign_offsets
from bayou.storage.engine import AppendResult
from bayou.storage.postgres.db import storage_error
from bayou.storage.postgres.notify import CHANNEL, PartitionState, partition_payloads
from bayou.storage.postgres.partition import restore_producers
from bayou.storage.producer_state import ProducerStateManager

if TYPE_CHECKING:
    from bayou.storage.postgres.engine import PostgresEngine
    from bayou.storage.postgres.partition import PgPartition

log = logging.getLogger(__name__)

LANES = 4
GROUP_MAX_BYTES = 8 * 1024 * 1024
INSERT_CHUNK_BYTES = 1024 * 1024
GROUP_MAX_WRITES = 2000
RETRY_S = 10.0

_LOCK = """SELECT id, leader_epoch, version, log_start_offset, next_offset, size_bytes,
    has_aborted, segment_base, segment_created_ms, segment_size, segment_max_timestamp
    FROM bayou.partitions WHERE id = ANY(%s) ORDER BY id FOR UPDATE"""

_PRODUCERS = """SELECT partition_id, producer_id, epoch, batches, txn_first_offset,
    coordinator_epoch, last_timestamp FROM bayou.producers WHERE partition_id = ANY(%s)"""

_INSERT_BATCHES = """INSERT INTO bayou.batches
    (partition_id, base_offset, last_offset, max_timestamp, size, segment, data)
    SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[],
                         %b::int[], %b::bigint[], %b::bytea[])"""  # binary: no hex encoding

_INSERT_SEGMENTS = """INSERT INTO bayou.segments
    (partition_id, base_offset, next_offset, created_ms, size, max_timestamp)
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                         %s::bigint[], %s::bigint[])"""

_UPDATE_PARTITIONS = """UPDATE bayou.partitions p SET version = v.version,
    next_offset = v.next_offset, size_bytes = v.size_bytes,
    first_unstable_offset = v.first_unstable, has_aborted = v.has_aborted,
    segment_base = v.segment_base, segment_created_ms = v.segment_created_ms,
    segment_size = v.segment_size, segment_max_timestamp = v.segment_max_timestamp
    FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                %s::boolean[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
      AS v(id, version, next_offset, size_bytes, first_unstable, has_aborted, segment_base,
           segment_created_ms, segment_size, segment_max_timestamp)
    WHERE p.id = v.id"""

_UPSERT_PRODUCER = """INSERT INTO bayou.producers (partition_id, producer_id, epoch, batches,
    txn_first_offset, coordinator_epoch, last_timestamp)
    VALUES (%s, %s, %s, %s::bigint[], %s, %s, %s)
    ON CONFLICT (partition_id, producer_id) DO UPDATE SET epoch = excluded.epoch,
    batches = excluded.batches, txn_first_offset = excluded.txn_first_offset,
    coordinator_epoch = excluded.coordinator_epoch, last_timestamp = excluded.last_timestamp"""

_INSERT_ABORTED = """INSERT INTO bayou.aborted_txns
    (partition_id, last_offset, producer_id, first_offset, last_stable_offset)
    VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"""

_NOTIFY = "SELECT pg_notify(%s, %s)"


@dataclass(eq=False, slots=True)
class Write:
    """One partition's share of a job: checked batches, or a marker to write."""

    partition: PgPartition
    buf: bytearray
    headers: list[BatchHeader]
    marker: int | None = None  # CONTROL_COMMIT / CONTROL_ABORT: a transaction marker
    coordinator_epoch: int = -1
    result: AppendResult | KafkaError | None = None
    #: the LogAppendTime already written into ``buf`` (None: the transaction's clock)
    append_time: int | None = None
    #: where ``buf``'s bytes already are (the object-storage engine's object): the batch
    #: rows then refer to it, ``(stored_at, position in buf)``, instead of holding the bytes
    stored_at: Any = None


@dataclass(eq=False)
class Job:
    writes: list[Write]
    future: asyncio.Future[None]
    keys: frozenset[int] = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.keys = frozenset(w.partition.id for w in self.writes)
        self.size = sum(len(w.buf) for w in self.writes)


class _Row:
    """A partition row as locked, changed in memory by the transaction's writes."""

    __slots__ = (
        "changed",
        "has_aborted",
        "leader_epoch",
        "log_start",
        "next_offset",
        "segment_base",
        "segment_created_ms",
        "segment_max_ts",
        "segment_size",
        "size",
        "version",
    )

    def __init__(self, row: tuple[Any, ...]) -> None:
        (
            _id,
            self.leader_epoch,
            self.version,
            self.log_start,
            self.next_offset,
            self.size,
            self.has_aborted,
            self.segment_base,
            self.segment_created_ms,
            self.segment_size,
            self.segment_max_ts,
        ) = row
        self.changed = False


class _Unsent(Exception):
    """The transaction failed before anything that could commit was sent: safe to retry."""


class _Tx:
    """What one transaction writes, gathered in memory (step 2), sent in step 3."""

    def __init__(self) -> None:
        self.batches: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        self.segments: tuple[list[int], ...] = ([], [], [], [], [], [])
        self.producers: dict[tuple[int, int], None] = {}  # (partition, producer) touched
        self.aborted: list[tuple[int, int, int, int, int]] = []

    def add_batch(
        self, pid: int, base: int, last: int, max_ts: int, size: int, segment: int, data: Any
    ) -> None:
        for column, value in zip(
            self.batches, (pid, base, last, max_ts, size, segment, data), strict=True
        ):
            column.append(value)

    def batch_chunks(self) -> Iterator[tuple[list[Any], ...]]:
        """The batch rows as INSERTs of about ``INSERT_CHUNK_BYTES`` each (PostgreSQL takes a
        few large statements faster than one huge array or many tiny ones)."""
        sizes = self.batches[4]
        start = total = 0
        for i, size in enumerate(sizes):
            total += size
            if total >= INSERT_CHUNK_BYTES or i + 1 == len(sizes):
                yield tuple(column[start : i + 1] for column in self.batches)
                start, total = i + 1, 0


class Writer:
    """The commit queue of one engine (see the module docstring)."""

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine
        self._pending: deque[Job] = deque()
        self._busy: set[int] = set()
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ queue

    async def submit(self, writes: list[Write]) -> None:
        """Store ``writes`` (one job); each gets its ``result``."""
        await asyncio.shield(self.enqueue(writes))

    def enqueue(self, writes: list[Write]) -> asyncio.Future[None]:
        """Queue ``writes`` as one job now (its place in the order is taken here); the
        future is done once each write has its ``result``."""
        future = asyncio.get_running_loop().create_future()
        if self._closed:
            for w in writes:
                w.result = KafkaStorageError("the broker is shutting down")
            future.set_result(None)
            return future
        self._pending.append(Job(writes, future))
        self._idle.clear()
        self._dispatch()
        return future

    def _dispatch(self) -> None:
        while len(self._running) < LANES and self._pending:
            group = self._take()
            if not group:
                return
            keys = frozenset().union(*(job.keys for job in group))
            self._busy |= keys
            task = asyncio.create_task(self._run(group, keys))
            self._running.add(task)

    def _take(self) -> list[Job]:
        blocked = set(self._busy)
        taken: list[Job] = []
        left: deque[Job] = deque()
        size = writes = 0
        for job in self._pending:
            fits = not taken or (
                size + job.size <= GROUP_MAX_BYTES and writes + len(job.writes) <= GROUP_MAX_WRITES
            )
            if fits and not (job.keys & blocked):
                taken.append(job)
                size += job.size
                writes += len(job.writes)
            else:
                blocked |= job.keys
                left.append(job)
        self._pending = left
        return taken

    async def _run(self, group: list[Job], keys: frozenset[int]) -> None:
        try:
            await self._store(group)
        except Exception as exc:  # never leave a caller waiting
            log.exception("storing %d write(s) failed", sum(len(j.writes) for j in group))
            for job in group:
                for w in job.writes:
                    if w.result is None:
                        w.result = KafkaStorageError(f"storing failed: {exc}")
        finally:
            for job in group:
                if not job.future.done():
                    job.future.set_result(None)
            self._busy -= keys
            self._running.discard(asyncio.current_task())
            self._dispatch()
            if not self._running and not self._pending:
                self._idle.set()

    async def close(self) -> None:
        """Refuse new writes; wait for the queued ones."""
        self._closed = True
        await self._idle.wait()

    # ------------------------------------------------------------------ markers

    async def marker(
        self,
        partition: PgPartition,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
    ) -> AppendResult:
        batch = bytearray(
            build_control_batch(
                commit,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                timestamp=self._engine.clock_ms(),
                coordinator_epoch=coordinator_epoch,
            )
        )
        write = Write(
            partition,
            batch,
            [parse_header(batch)],
            marker=CONTROL_COMMIT if commit else CONTROL_ABORT,
            coordinator_epoch=coordinator_epoch,
        )
        await self.submit([write])
        if isinstance(write.result, KafkaError):
            raise write.result
        assert write.result is not None
        return write.result

    # ------------------------------------------------------------------ the transaction

    async def _store(self, group: list[Job]) -> None:
        writes = [w for job in group for w in job.writes]
        partitions = {w.partition.id: w.partition for w in writes}
        deadline = time.monotonic() + RETRY_S
        attempt = 0
        while True:
            attempt += 1
            for w in writes:
                w.result = None
            try:
                states = await self._transaction(writes, partitions)
            except _Unsent as exc:
                _mark_stale(partitions.values())
                if time.monotonic() >= deadline:
                    _fail(writes, storage_error("storing batches", exc.__cause__ or exc))
                    return
                self._engine.db.check_soon()
                await asyncio.sleep(min(0.05 * attempt, 0.5))
                continue
            except KafkaError as exc:  # the pool could not give a connection in time
                _mark_stale(partitions.values())
                _fail(writes, exc)
                return
            except psycopg.Error as exc:  # sent: the outcome is unknown, or rolled back
                _mark_stale(partitions.values())
                self._engine.db.check_soon()
                _fail(writes, storage_error("storing batches", exc))
                return
            except BaseException:  # a bug, or cancelled at shutdown: trust nothing cached
                _mark_stale(partitions.values())
                raise
            for pid, state in states.items():
                partitions[pid].apply(state)
            return

    async def _transaction(
        self, writes: list[Write], partitions: dict[int, PgPartition]
    ) -> dict[int, PartitionState]:
        engine = self._engine
        ids = sorted(partitions)
        sent = False
        try:
            async with (
                engine.db.connection("storing batches") as conn,
                conn.pipeline(),
                conn.transaction(),
            ):
                cur = await conn.execute(_LOCK, (ids,))
                rows = {row[0]: _Row(row) for row in await cur.fetchall()}
                stale = [
                    pid
                    for pid, row in rows.items()
                    if partitions[pid].producers_at != row.next_offset
                ]
                if stale:
                    cur = await conn.execute(_PRODUCERS, (stale,))
                    restore_producers(partitions, stale, await cur.fetchall())
                tx = _Tx()
                self._apply(writes, rows, tx)
                states = _new_states(partitions, rows)
                sent = True
                await self._send(conn, tx, partitions, rows, states)
        except psycopg.OperationalError as exc:
            if not sent:
                raise _Unsent(str(exc)) from exc
            raise
        for pid, row in rows.items():
            partitions[pid].producers_at = row.next_offset
        return states

    def _apply(self, writes: list[Write], rows: dict[int, _Row], tx: _Tx) -> None:
        now = self._engine.clock_ms()
        for w in writes:
            p = w.partition
            row = rows.get(p.id)
            if row is None or p.closed:
                w.result = UnknownTopicOrPartition(f"{p.topic}-{p.index} was deleted")
                continue
            if p.fenced and row.leader_epoch != p.leader_epoch:
                w.result = KafkaError(
                    f"this broker's leader epoch {p.leader_epoch} of {p.topic}-{p.index} is "
                    f"not the partition's ({row.leader_epoch})",
                    ErrorCode.NOT_LEADER_OR_FOLLOWER,
                )
                continue
            try:
                if w.marker is None:
                    duplicate = p.producer_state.check(w.headers)
                    if duplicate is not None:
                        w.result = AppendResult(
                            duplicate.base_offset,
                            duplicate.last_offset,
                            duplicate.append_time_ms,
                            row.log_start,
                            duplicate.last_offset - duplicate.base_offset + 1,
                        )
                        continue
                else:
                    _check_marker(p.producer_state, w)
            except KafkaError as exc:
                w.result = exc
                continue
            w.result = _place(w, row, tx, now)

    async def insert_batches(self, conn: psycopg.AsyncConnection[Any], tx: _Tx) -> None:
        """Send the transaction's batch rows (their bytes inline)."""
        for chunk in tx.batch_chunks():
            await conn.execute(_INSERT_BATCHES, chunk)

    async def _send(
        self,
        conn: psycopg.AsyncConnection[Any],
        tx: _Tx,
        partitions: dict[int, PgPartition],
        rows: dict[int, _Row],
        states: dict[int, PartitionState],
    ) -> None:
        await self.insert_batches(conn, tx)
        if tx.segments[0]:
            await conn.execute(_INSERT_SEGMENTS, tx.segments)
        for pid, producer_id in tx.producers:
            entry = partitions[pid].producer_state.producers[producer_id]
            await conn.execute(
                _UPSERT_PRODUCER,
                (
                    pid,
                    producer_id,
                    entry.epoch,
                    [n for meta in entry.batches for n in meta],
                    entry.current_txn_first_offset,
                    entry.coordinator_epoch,
                    entry.last_timestamp,
                ),
            )
        for aborted in tx.aborted:
            await conn.execute(_INSERT_ABORTED, aborted)
        if states:
            changed = [(pid, rows[pid]) for pid in states]
            columns: tuple[list[Any], ...] = tuple([] for _ in range(10))
            for pid, row in changed:
                state = states[pid]
                for column, value in zip(
                    columns,
                    (
                        pid,
                        state.version,
                        row.next_offset,
                        row.size,
                        state.first_unstable_offset,
                        row.has_aborted,
                        row.segment_base,
                        row.segment_created_ms,
                        row.segment_size,
                        row.segment_max_ts,
                    ),
                    strict=True,
                ):
                    column.append(value)
            await conn.execute(_UPDATE_PARTITIONS, columns)
            for payload in partition_payloads(self._engine.sender, states.items()):
                await conn.execute(_NOTIFY, (CHANNEL, payload))


def _check_marker(state: ProducerStateManager, w: Write) -> None:
    header = w.headers[0]
    entry = state.producers.get(header.producer_id)
    if entry is not None and header.producer_epoch < entry.epoch:
        raise InvalidProducerEpoch(
            f"marker for producer {header.producer_id} epoch {header.producer_epoch}, older "
            f"than {entry.epoch}"
        )
    if entry is not None and w.coordinator_epoch < entry.coordinator_epoch:
        raise KafkaError(
            f"marker from coordinator epoch {w.coordinator_epoch}, older than "
            f"{entry.coordinator_epoch}",
            ErrorCode.TRANSACTION_COORDINATOR_FENCED,
        )


def _place(w: Write, row: _Row, tx: _Tx, now: int) -> AppendResult:
    """Assign offsets to ``w`` from the row's next offset and gather its rows (step 2)."""
    p = w.partition
    config = p.config
    append_time = now if config.log_append_time and w.marker is None else -1
    if w.append_time is not None:
        append_time = w.append_time
    first = row.next_offset
    buf = w.buf
    spans = assign_offsets(buf, w.headers, first, append_time)
    last = spans[-1][1]
    if row.segment_size > 0 and (
        row.segment_size + len(buf) > config.segment_bytes
        or now - row.segment_created_ms >= config.roll_ms
        or last - row.segment_base > INT_MAX
    ):
        for column, value in zip(
            tx.segments,
            (
                p.id,
                row.segment_base,
                first,
                row.segment_created_ms,
                row.segment_size,
                row.segment_max_ts,
            ),
            strict=True,
        ):
            column.append(value)
        row.segment_base = first
        row.segment_created_ms = now
        row.segment_size = 0
        row.segment_max_ts = -1
    row.next_offset = last + 1
    row.size += len(buf)
    row.segment_size += len(buf)
    row.changed = True
    state = p.producer_state
    single = len(spans) == 1
    pos = 0
    for h, (base, batch_last, max_ts, size) in zip(w.headers, spans, strict=True):
        if w.stored_at is not None:
            data: Any = (w.stored_at, pos)
        else:
            data = buf if single else bytes(buf[pos : pos + size])
        tx.add_batch(p.id, base, batch_last, max_ts, size, row.segment_base, data)
        done = state.update(
            h,
            base,
            batch_last,
            append_time,
            marker=w.marker,
            coordinator_epoch=w.coordinator_epoch,
        )
        if h.producer_id >= 0:
            tx.producers[(p.id, h.producer_id)] = None
        if done is not None and done.aborted:
            unstable = state.first_unstable_offset()
            lso = max(row.next_offset if unstable is None else unstable, row.log_start)
            tx.aborted.append((p.id, done.last_offset, done.producer_id, done.first_offset, lso))
            row.has_aborted = True
        row.segment_max_ts = max(row.segment_max_ts, max_ts)
        pos += size
    return AppendResult(first, last, append_time, row.log_start, last - first + 1)


def _new_states(
    partitions: dict[int, PgPartition], rows: dict[int, _Row]
) -> dict[int, PartitionState]:
    states: dict[int, PartitionState] = {}
    for pid, row in rows.items():
        if not row.changed:
            continue
        unstable = partitions[pid].producer_state.first_unstable_offset()
        states[pid] = PartitionState(
            row.version + 1,
            row.log_start,
            row.next_offset,
            -1 if unstable is None else unstable,
            row.size,
            row.has_aborted,
        )
    return states


def _mark_stale(partitions: Iterable[PgPartition]) -> None:
    for p in partitions:
        p.producers_at = None


def _fail(writes: list[Write], error: KafkaError) -> None:
    for w in writes:
        w.result = error
