"""Cursor: the one way a door or layer reads a partition — from a position, waiting for data.

Theory of operation
-------------------
A ``Cursor`` holds a partition and a *position* (the next offset to read).  ``read`` asks the
engine for whole stored batches from the position (the engine never blocks the event loop:
page cache first, else a worker thread, or async I/O), decodes the records at or after the
position, skips control batches (transaction markers), and moves the position past the last
batch it looked at — so compacted gaps, markers and emptied batches never stall a reader.
``read`` returns at least one record when there is one (KIP-74), then stops at ``max_bytes``
of keys and values or ``max_records``; the position then points at the first record not
returned.

A position outside the log (below the log start after retention or DeleteRecords, or above
the end after a topic was recreated) is *reset* by the cursor's policy, as Kafka's
``auto.offset.reset``: ``earliest`` (the log start), ``latest`` (the log end) or ``none``
(raise ``OffsetOutOfRange`` and let the caller decide).

Isolation (``read_committed``, Kafka's consumer setting): only batches below the partition's
last stable offset are read, and the records of aborted transactions are skipped (the
engine's aborted-transaction index says which producer's offsets each abort covers; readers
that decode whole batches themselves ask ``aborted`` for the same answer); at
``read_uncommitted`` (the default) everything is read, aborted records included.

``wait`` returns at once when there is data at the position, else waits for the engine's
"data landed" notification (or the timeout).  ``wait_any`` does the same for several cursors
(a consumer over many partitions): one wait, whichever partition grows first.

Where a reader starts is a ``StartSpec``: ``earliest``, ``latest``, ``next`` (= latest), an
offset (clamped to the log), ``last`` (the last record), or a time (the first record at or
after it — an engine lookup, never on the event loop for cold data).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from bayou.errors import OffsetOutOfRange
from bayou.protocol.kafka.records import BatchHeader, DecodedRecord, iter_batches, iter_records
from bayou.storage.engine import LogEngine, Partition, PartitionKey

Reset = Literal["earliest", "latest", "none"]
Isolation = Literal["read_uncommitted", "read_committed"]
# A stand-in cost per record on top of its key and value, for the max_bytes budget.
RECORD_OVERHEAD = 16
DEFAULT_READ_BYTES = 1024 * 1024
NO_LIMIT = 1 << 30
EMPTY_WAIT_S = 0.5


@dataclass(frozen=True)
class Scanned:
    """One stored batch a ``scan`` found: where it is in the view, its header, and whether
    its records are for this reader (see ``Cursor.scan``)."""

    pos: int
    header: BatchHeader
    deliverable: bool


@dataclass(frozen=True)
class StartSpec:
    """Where a reader starts: kind ``earliest``, ``latest``, ``next``, ``last``, ``offset``
    (value: the offset) or ``timestamp`` (value: epoch ms)."""

    kind: Literal["earliest", "latest", "next", "last", "offset", "timestamp"]
    value: int = 0

    @classmethod
    def earliest(cls) -> StartSpec:
        return cls("earliest")

    @classmethod
    def latest(cls) -> StartSpec:
        return cls("latest")


async def resolve_start(
    partition: Partition, spec: StartSpec, isolation: Isolation = "read_uncommitted"
) -> int:
    """The offset ``spec`` names in ``partition`` (always within the log); at
    ``read_committed`` the end is the last stable offset, as Kafka's ListOffsets answers."""
    start = partition.log_start_offset
    end = (
        partition.last_stable_offset if isolation == "read_committed" else partition.log_end_offset
    )
    kind = spec.kind
    if kind == "earliest":
        offset = start
    elif kind in ("latest", "next"):
        offset = end
    elif kind == "last":
        offset = end - 1
    elif kind == "offset":
        offset = spec.value
    else:
        found = await partition.offset_for_timestamp(spec.value)
        offset = end if found is None else found[0]
    return min(max(offset, partition.log_start_offset), partition.log_end_offset)


class Aborted:
    """The aborted transactions over a read: per producer id, the offset ranges an abort
    covers (from the engine's aborted-transaction index)."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: dict[int, list[tuple[int, int]]]) -> None:
        self._ranges = ranges

    def covers(self, header: BatchHeader) -> bool:
        """Whether the batch holds records of an aborted transaction (skip it whole)."""
        if not self._ranges or not header.is_transactional:
            return False
        return any(
            first <= header.base_offset <= last
            for first, last in self._ranges.get(header.producer_id, ())
        )


NO_ABORTS = Aborted({})


class Cursor:
    """Reads one partition of ``engine`` from ``position`` (see the module docstring)."""

    __slots__ = ("engine", "isolation", "partition", "position", "reset", "topic")

    def __init__(
        self,
        engine: LogEngine,
        topic: str,
        partition: int,
        position: int,
        *,
        reset: Reset = "earliest",
        isolation: Isolation = "read_uncommitted",
    ) -> None:
        self.engine = engine
        self.topic = topic
        self.partition = partition
        self.position = position
        self.reset = reset
        self.isolation = isolation

    def __repr__(self) -> str:
        return f"Cursor({self.topic}-{self.partition}@{self.position})"

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)

    def handle(self) -> Partition:
        """The partition now; ``UnknownTopicOrPartition`` once it is gone."""
        return self.engine.partition(self.topic, self.partition)

    def end(self, p: Partition | None = None) -> int:
        """Where reading stops: the log end, or the last stable offset at read_committed."""
        p = self.handle() if p is None else p
        return p.last_stable_offset if self.isolation == "read_committed" else p.log_end_offset

    def lag(self) -> int:
        """Records (offsets) between the position and where reading stops."""
        return max(0, self.end() - self.position)

    def _reset_position(self, p: Partition) -> None:
        if self.reset == "none":
            raise OffsetOutOfRange(
                f"offset {self.position} is outside [{p.log_start_offset}, "
                f"{p.log_end_offset}] of {self.topic}-{self.partition}"
            )
        # as Kafka's auto.offset.reset: earliest is the log start, latest the log end —
        # whichever side of the log the position fell off (a topic recreated, retention)
        if self.reset == "latest":
            self.position = p.log_end_offset
        else:
            self.position = p.log_start_offset

    async def read_batches(self, max_bytes: int = DEFAULT_READ_BYTES) -> memoryview:
        """Whole stored batches from the position (reset applied); the position does not
        move — callers that decode themselves use ``advance``."""
        p = self.handle()
        for _ in range(3):
            if not p.log_start_offset <= self.position <= p.log_end_offset:
                self._reset_position(p)
            end = self.end(p)
            if self.position >= end:
                return memoryview(b"")
            upper = end if self.isolation == "read_committed" else None
            try:
                return memoryview(await p.read(self.position, max(1, max_bytes), upper))
            except OffsetOutOfRange:  # retention moved the start meanwhile
                continue
        return memoryview(b"")

    async def scan(self, max_bytes: int = DEFAULT_READ_BYTES) -> tuple[memoryview, list[Scanned]]:
        """Whole stored batches from the position (reset applied), each with whether its
        records are for a reader at this isolation — not a transaction marker, not an
        aborted transaction's at read_committed.  The position does not move (``read``
        and share groups decide how far they got)."""
        view = await self.read_batches(max_bytes)
        aborted: dict[int, list[tuple[int, int]]] = {}
        if self.isolation == "read_committed" and view:
            for txn in await self.handle().aborted_transactions(self.position, self.end()):
                aborted.setdefault(txn.producer_id, []).append((txn.first_offset, txn.last_offset))
        out = []
        for pos, header in iter_batches(view):
            if header.last_offset < self.position:
                continue
            dead = (
                aborted
                and header.is_transactional
                and any(
                    first <= header.base_offset <= last
                    for first, last in aborted.get(header.producer_id, ())
                )
            )
            out.append(Scanned(pos, header, not (dead or header.is_control)))
        return view, out

    async def aborted(self, view: memoryview) -> Aborted:
        """Which batches of ``view`` (read from the position) belong to aborted
        transactions: none at read_uncommitted (one engine lookup at read_committed)."""
        if self.isolation != "read_committed" or not view:
            return NO_ABORTS
        aborted: dict[int, list[tuple[int, int]]] = {}
        for txn in await self.handle().aborted_transactions(self.position, self.end()):
            aborted.setdefault(txn.producer_id, []).append((txn.first_offset, txn.last_offset))
        return Aborted(aborted) if aborted else NO_ABORTS

    async def read(
        self, max_bytes: int = DEFAULT_READ_BYTES, max_records: int = NO_LIMIT
    ) -> list[DecodedRecord]:
        """Records from the position (at least one when there is one, then up to
        ``max_bytes`` of keys and values and ``max_records``); moves the position."""
        view = await self.read_batches(max_bytes)
        out: list[DecodedRecord] = []
        used = 0
        position = self.position
        aborted = await self.aborted(view)
        for pos, header in iter_batches(view):
            if header.last_offset < position:
                continue
            if not header.is_control and not aborted.covers(header):
                for record in iter_records(view[pos : pos + header.size]):
                    if record.offset < position:
                        continue
                    size = RECORD_OVERHEAD + len(record.key or b"") + len(record.value or b"")
                    if out and (used + size > max_bytes or len(out) >= max_records):
                        self.position = position
                        return out
                    out.append(record)
                    used += size
                    position = record.offset + 1
            position = max(position, header.last_offset + 1)
        self.position = position
        return out

    async def record_at(self, offset: int) -> DecodedRecord | None:
        """The record at exactly ``offset`` (None: compacted away, deleted, a marker).
        The position does not move."""
        p = self.handle()
        if not p.log_start_offset <= offset < p.log_end_offset:
            return None
        try:
            view = memoryview(await p.read(offset, 1))
        except OffsetOutOfRange:
            return None
        for pos, header in iter_batches(view):
            if header.is_control or not header.base_offset <= offset <= header.last_offset:
                continue
            for record in iter_records(view[pos : pos + header.size]):
                if record.offset == offset:
                    return record
        return None

    def ready(self) -> bool:
        """Whether there is something at (or a reset due from) the position."""
        p = self.handle()
        if not p.log_start_offset <= self.position <= p.log_end_offset:
            return True
        return self.position < self.end(p)

    async def wait(self, timeout_s: float) -> bool:
        """Until there is data at the position or ``timeout_s`` passes; True when there is
        (or may be: wake-ups can be spurious)."""
        if self.ready():
            return True
        return await self.engine.wait_for_data([self.key], timeout_s)


async def wait_any(engine: LogEngine, cursors: Sequence[Cursor], timeout_s: float) -> bool:
    """Until one of ``cursors`` has data or ``timeout_s`` passes (True: woken)."""
    keys: list[PartitionKey] = []
    for cursor in cursors:
        if cursor.ready():
            return True
        keys.append(cursor.key)
    if not keys:  # nothing to wait on: wait a little, so that a caller's loop never spins
        await asyncio.sleep(min(timeout_s, EMPTY_WAIT_S))
        return False
    return await engine.wait_for_data(keys, timeout_s)


def keys_of(cursors: Iterable[Cursor]) -> list[PartitionKey]:
    return [c.key for c in cursors]
