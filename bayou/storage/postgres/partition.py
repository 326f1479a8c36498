"""One partition of the PostgreSQL engine: its cached offsets, and its reads.

Theory of operation
-------------------
A ``PgPartition`` is the handle the core gets.  What the interface needs synchronously —
log start, log end, last stable offset, size — is a ``PartitionState`` cached here: the
partition row as of a ``version``.  It is replaced only by a newer version, whoever
announces it: this broker's own commits (``writer.py``, ``maintenance.py``), other brokers'
notifications (``notify.py``), or a re-read of the row (``refresh``).  Every change wakes
the partition's ``wait_for_data`` waiters.

The producer state (idempotence, open transactions) is cached too, but it is only trusted
inside the transaction that locked the row, and only if the row's next offset is the one
it was last brought up to date at (``producers_at``): every batch or marker moves the next
offset, so an unchanged next offset means no other broker wrote meanwhile.  Otherwise the
writer reloads it from the ``producers`` table first.  After a failed transaction it is
marked stale (``producers_at = None``) since it may hold changes that never committed.

Reads go to PostgreSQL, never past the log end this broker knows (a consistent view:
the high watermark it answers covers every batch it returns); a read past that end first
re-reads the row, in case another broker's notification has not arrived yet.  Whole
batches come back in one round trip from ``bayou.read_batches``, which stops reading as
soon as the byte budget is spent (KIP-74: at least one batch when asked).  Lookups by time
narrow the scan to the first segment whose max timestamp reaches the target, then decode
the one batch that holds the answer, off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bayou.config import TopicConfig
from bayou.errors import (
    BayouError,
    InvalidTopic,
    KafkaError,
    OffsetOutOfRange,
    UnknownTopicOrPartition,
)
from bayou.protocol.kafka.records import iter_records
from bayou.storage.engine import AbortedTxn, AppendResult, Buffer
from bayou.storage.postgres.notify import PartitionState
from bayou.storage.producer_state import BatchMeta, ProducerEntry, ProducerStateManager
from bayou.storage.txn_index import collect_aborted

if TYPE_CHECKING:
    from bayou.storage.postgres.engine import PostgresEngine

_READ = "SELECT data FROM bayou.read_batches(%s, %s, %s, %s, %s)"

_STATE = """SELECT version, log_start_offset, next_offset, first_unstable_offset, size_bytes,
    has_aborted FROM bayou.partitions WHERE id = %s"""

# the first batches at or after the first segment whose max timestamp reaches the target
_BY_TIME = """
SELECT b.base_offset, b.last_offset, b.data FROM bayou.batches b
 WHERE b.partition_id = %(p)s AND b.max_timestamp >= %(ts)s AND b.last_offset >= %(from)s
   AND b.base_offset >= coalesce((
        SELECT min(s.base) FROM (
            SELECT base_offset AS base FROM bayou.segments
             WHERE partition_id = %(p)s AND max_timestamp >= %(ts)s AND next_offset > %(from)s
            UNION ALL
            SELECT segment_base FROM bayou.partitions
             WHERE id = %(p)s AND segment_max_timestamp >= %(ts)s) s), 0)
 ORDER BY b.base_offset LIMIT 8"""

# the first batch holding the largest timestamp at or after the log start
_MAX_TIMESTAMP = """
SELECT b.base_offset, b.max_timestamp, b.data FROM bayou.batches b
 WHERE b.partition_id = %(p)s AND b.last_offset >= %(from)s AND b.max_timestamp >= 0
 ORDER BY b.max_timestamp DESC, b.base_offset LIMIT 1"""

# aborted transactions from the segment holding the start on (an entry lies in the segment
# holding its marker, so "from that segment on" is "marker at or after its base")
_ABORTED = """
SELECT producer_id, first_offset, last_offset, last_stable_offset FROM bayou.aborted_txns
 WHERE partition_id = %(p)s AND last_offset >= coalesce((
        SELECT max(s.base) FROM (
            SELECT base_offset AS base FROM bayou.segments
             WHERE partition_id = %(p)s AND base_offset <= %(start)s
            UNION ALL
            SELECT segment_base FROM bayou.partitions
             WHERE id = %(p)s AND segment_base <= %(start)s) s), 0)
 ORDER BY last_offset"""


class PgPartition:
    """A ``Partition`` of the PostgreSQL engine (see the module docstring)."""

    #: the statement that reads batches: (partition id, from, to, max bytes, min one) →
    #: rows ``_batches`` turns into the batches' bytes
    READ = _READ

    def __init__(
        self,
        engine: PostgresEngine,
        partition_id: int,
        topic: str,
        index: int,
        config: TopicConfig,
        state: PartitionState,
        leader_epoch: int,
        *,
        internal: bool = False,
    ) -> None:
        self._engine = engine
        self.id = partition_id
        self._topic = topic
        self._index = index
        self.config = config
        self.state = state
        #: the leader epoch this broker holds: while ``fenced``, appends commit only while
        #: the row has it; an unfenced handle (a partition the cluster layer says another
        #: broker leads) appends under the row lock whatever the epoch (the doors' writes)
        self.leader_epoch = leader_epoch
        self.fenced = engine.fence_appends
        self.internal = internal  # a state log: readable as a topic, written by its owner
        self.producer_state = ProducerStateManager()
        self.producers_at: int | None = None  # next offset the producer state is true at
        self.closed = False

    def __repr__(self) -> str:
        return f"PgPartition({self._topic}-{self._index}, id={self.id})"

    # ------------------------------------------------------------------ cached metadata

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def index(self) -> int:
        return self._index

    @property
    def log_start_offset(self) -> int:
        return self.state.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.state.next_offset

    @property
    def last_stable_offset(self) -> int:
        state = self.state
        unstable = state.first_unstable_offset
        lso = state.next_offset if unstable < 0 else unstable
        return max(lso, state.log_start_offset)

    @property
    def size_bytes(self) -> int:
        return self.state.size_bytes

    def producers(self) -> Mapping[int, ProducerEntry]:
        return self.producer_state.producers

    def apply(self, state: PartitionState) -> bool:
        """Adopt ``state`` if it is newer than the cached one; wakes readers.  True when
        adopted."""
        if state.version <= self.state.version or self.closed:
            return False
        self.state = state
        self._engine.waiters.notify(self._topic, self._index)
        return True

    async def refresh(self) -> None:
        """Re-read the row (another broker's change may not have been announced yet)."""
        rows = await self._engine.db.fetch("reading a partition's offsets", _STATE, (self.id,))
        if rows:
            version, start, end, unstable, size, aborted = rows[0]
            self.apply(PartitionState(version, start, end, unstable, size, aborted))

    def check_open(self) -> None:
        if self.closed:
            raise UnknownTopicOrPartition(f"{self._topic}-{self._index} was deleted")

    # ------------------------------------------------------------------ writes

    async def append(self, records: Buffer) -> AppendResult:
        if self.internal:
            raise InvalidTopic(f"Cannot write to internal topic {self._topic}")
        result = (await self._engine.store([(self, records)]))[0]
        if isinstance(result, KafkaError):
            raise result
        return result

    async def write_marker(
        self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int
    ) -> int:
        self.check_open()
        result = await self._engine.writer.marker(
            self, producer_id, producer_epoch, commit, coordinator_epoch
        )
        return result.base_offset

    async def delete_records(self, offset: int) -> int:
        if self.internal:
            raise InvalidTopic(f"Cannot delete records of internal topic {self._topic}")
        self.check_open()
        return await self._engine.maintenance.delete_records(self, offset)

    # ------------------------------------------------------------------ reads

    async def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> Buffer:
        return await self._read(offset, max_bytes, max_offset, min_one=True)

    async def fetch(
        self, offset: int, max_bytes: int, *, min_one: bool, max_offset: int | None = None
    ) -> Buffer:
        return await self._read(offset, max_bytes, max_offset, min_one=min_one)

    async def _read(
        self, offset: int, max_bytes: int, max_offset: int | None, *, min_one: bool
    ) -> Buffer:
        self.check_open()
        if offset > self.state.next_offset:
            await self.refresh()
        end = self.state.next_offset
        if offset == end:
            return b""
        start = self.state.log_start_offset
        if offset < start or offset > end:
            raise OffsetOutOfRange(
                f"offset {offset} is outside [{start}, {end}] of {self._topic}-{self._index}"
            )
        stop = end if max_offset is None else min(end, max_offset)
        rows = await self._engine.db.fetch(
            "reading batches",
            self.READ,
            (self.id, offset, stop, max(max_bytes, 0), min_one),
            binary=True,
        )
        return await self._batches(rows)

    async def _batches(self, rows: list[tuple[Any, ...]]) -> Buffer:
        """The batches the rows of ``READ`` name, end to end (here: in the rows)."""
        if len(rows) == 1:
            data: bytes = rows[0][0]
            return data
        return b"".join(row[0] for row in rows)

    async def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        self.check_open()
        if not self.state.has_aborted:
            return []
        rows = await self._engine.db.fetch(
            "reading aborted transactions", _ABORTED, {"p": self.id, "start": start}
        )
        return collect_aborted([[AbortedTxn(*row) for row in rows]], start, end)

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
            found = await self._engine.offload(_first_at_or_after, rows, timestamp_ms, start)
            if found is not None:
                return found
            cursor = rows[-1][1] + 1
        return None

    async def max_timestamp(self) -> tuple[int, int] | None:
        self.check_open()
        start = self.state.log_start_offset
        rows = await self._engine.db.fetch(
            "looking up the largest timestamp", _MAX_TIMESTAMP, {"p": self.id, "from": start}
        )
        if not rows:
            return None
        base, ts, data = rows[0]
        return await self._engine.offload(_record_with_timestamp, bytes(data), ts, start, base)


def _first_at_or_after(
    rows: list[tuple[int, int, bytes]], timestamp_ms: int, start: int
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record at or after ``start`` with a timestamp ≥
    ``timestamp_ms`` in ``rows`` (whole batches in offset order)."""
    for base, _last, data in rows:
        try:
            for rec in iter_records(data):
                if rec.timestamp >= timestamp_ms and rec.offset >= start:
                    return rec.offset, rec.timestamp
        except BayouError:
            return max(base, start), timestamp_ms
    return None


def _record_with_timestamp(data: bytes, ts: int, start: int, base: int) -> tuple[int, int]:
    for rec in iter_records(data):
        if rec.timestamp == ts and rec.offset >= start:
            return rec.offset, ts
    return max(base, start), ts


def restore_producers(
    partitions: Mapping[int, PgPartition], stale: Sequence[int], rows: Iterable[tuple[Any, ...]]
) -> None:
    """Replace the producer state of the partitions ``stale`` names by the ``producers``
    table's rows (partition, producer, epoch, batches, open txn, coordinator epoch, last
    timestamp)."""
    snaps: dict[int, dict[int, tuple[int, tuple[BatchMeta, ...], int, int]]] = {
        pid: {} for pid in stale
    }
    stamps: dict[tuple[int, int], int] = {}
    for pid, producer_id, epoch, flat, txn, coordinator_epoch, last_ts in rows:
        metas = tuple(BatchMeta(*flat[i : i + 5]) for i in range(0, len(flat), 5))
        snaps[pid][producer_id] = (epoch, metas, txn, coordinator_epoch)
        stamps[(pid, producer_id)] = last_ts
    for pid, snap in snaps.items():
        state = ProducerStateManager()
        state.restore(snap)
        for producer_id, entry in state.producers.items():
            entry.last_timestamp = stamps[(pid, producer_id)]
        partitions[pid].producer_state = state
