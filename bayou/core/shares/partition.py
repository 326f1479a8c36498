"""SharePartition: one partition of a topic as one share group consumes it (KIP-932).

Theory of operation
-------------------
A share partition is a window of offsets ``[start, end)`` over the log:

- everything below ``start`` (Kafka's share-partition start offset, SPSO) is done:
  acknowledged, or archived (rejected, delivered too often, not a record at all);
- everything at or past ``end`` has never been handed out: Available, delivery count 0;
- inside the window, ``records`` holds the offsets that are not done yet, in offset order,
  each **Available** (released, or its lock expired — to be delivered again) or **Acquired**
  (held by one member until it acknowledges or its lock expires), with its delivery count.
  An offset of the window that is not in ``records`` is done — acknowledged or archived:
  no need to tell the two apart once nothing can happen to it any more.

Operations (all deterministic: the time is an argument):

- ``fetch_offset``: where the next read starts — the first Available offset of the window,
  else ``end``;
- ``acquire``: given the batches a read found from there, hands out Available offsets and
  then new ones from ``end`` (each batch whole, or exactly ``max_records`` when asked),
  raising each one's delivery count and locking it for ``lock_ms``; batches that are not
  deliverable (transaction markers, aborted transactions under read_committed) and offsets
  the log no longer has (compaction, retention) become done without a delivery.  New
  offsets are taken only while the window is smaller than the in-flight limit;
- ``acknowledge``: ACCEPT, REJECT and GAP make an Acquired offset done; RELEASE makes it
  Available again (archived instead once it was delivered ``delivery_limit`` times); RENEW
  extends its lock.  Every offset acknowledged must be Acquired by that member, or the whole
  call is refused (INVALID_RECORD_STATE) and nothing changes;
- ``expire`` (lock timeouts) and ``release_member`` (a member left, or its session closed)
  release as RELEASE does; the delivery count is *not* lowered: a record whose consumer died
  with it counts as delivered;
- ``start`` moves up to the first offset not done after every change.

The durable form (``snapshot``) is the window and the delivery count of every offset not
done.  Acquired offsets are written as Available with their count: locks are not durable, so
after a restart whatever was held is delivered again, counting the lost delivery.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from bayou.core.shares.model import Ack, AckType, AcquiredRange, Batch, RecordState
from bayou.errors import ErrorCode

A = RecordState


class InFlight:
    """One offset of the window that is not done."""

    __slots__ = ("count", "deadline", "owner", "state")

    def __init__(self, state: RecordState, count: int, owner: str | None = None) -> None:
        self.state = state
        self.count = count
        self.owner = owner
        self.deadline = 0


class SharePartition:
    def __init__(self, topic: str, partition: int, topic_id: str, start: int) -> None:
        self.topic = topic
        self.partition = partition
        self.topic_id = topic_id
        self.start = start
        self.end = start
        self.records: OrderedDict[int, InFlight] = OrderedDict()
        self.available = 0  # how many of ``records`` are Available
        self.state_epoch = 0  # moves on a reset (AlterShareGroupOffsets): plans made before
        self._locks: list[tuple[int, int, int]] = []  # (deadline, first, last) heap

    # ------------------------------------------------------------------ reading

    @property
    def acquired(self) -> int:
        return len(self.records) - self.available

    def in_flight(self) -> int:
        return len(self.records)

    def fetch_offset(self) -> int:
        """Where the next read for acquisition starts."""
        if self.available:
            for offset, entry in self.records.items():
                if entry.state == A.AVAILABLE:
                    return offset
        return self.end

    def can_acquire(self, limit: int) -> bool:
        return self.available > 0 or self.end - self.start < limit

    def held_by(self, member: str) -> list[int]:
        return [o for o, e in self.records.items() if e.state == A.ACQUIRED and e.owner == member]

    def next_deadline(self) -> int | None:
        return self._locks[0][0] if self._locks else None

    # ------------------------------------------------------------------ changes

    def reset(self, start: int) -> None:
        """Start over at ``start`` (AlterShareGroupOffsets; a topic recreated)."""
        self.start = self.end = start
        self.records.clear()
        self.available = 0
        self._locks.clear()
        self.state_epoch += 1

    def truncate(self, log_start: int) -> bool:
        """Offsets below the log's start (retention, DeleteRecords) can never be delivered:
        they are done.  True when the window moved."""
        if log_start <= self.start:
            return False
        while self.records:
            offset = next(iter(self.records))
            if offset >= log_start:
                break
            entry = self.records.popitem(last=False)[1]
            if entry.state == A.AVAILABLE:
                self.available -= 1
        self.end = max(self.end, log_start)
        self._advance()
        self.start = max(self.start, log_start)
        return True

    def acquire(
        self,
        now: int,
        member: str,
        batches: Iterable[Batch],
        *,
        read_from: int,
        max_records: int,
        lock_ms: int,
        limit: int,
        whole_batches: bool,
    ) -> tuple[list[AcquiredRange], bool]:
        """Hand out offsets of ``batches`` (what a read from ``read_from`` found) to
        ``member``; the ranges acquired and whether anything changed."""
        batches = list(batches)
        taken: list[tuple[int, int]] = []  # (offset, count)
        changed = self._drop_missing(read_from, batches)
        deadline = now + lock_ms
        for batch in batches:
            if len(taken) >= max_records:
                break
            # offsets already in the window: only Available ones are handed out again
            hi = min(batch.last, self.end - 1)
            offset = max(batch.base, self.start)
            while offset <= hi and self.available and len(taken) < max_records:
                entry = self.records.get(offset)
                if entry is not None and entry.state == A.AVAILABLE:
                    self._lock(entry, member, deadline)
                    taken.append((offset, entry.count))
                    changed = True
                offset += 1
            if batch.last < self.end or len(taken) >= max_records:
                continue
            # offsets never handed out before: the window grows
            first = max(batch.base, self.end)
            if not batch.deliverable:
                self.end = batch.last + 1  # markers, aborted records: done, never delivered
                changed = True
                continue
            room = limit - (first - self.start)
            if room <= 0:
                break
            count = batch.last - first + 1
            if not whole_batches:
                count = min(count, max_records - len(taken))
            count = min(count, room)
            for offset in range(first, first + count):
                entry = InFlight(A.ACQUIRED, 1, member)
                entry.deadline = deadline
                self.records[offset] = entry
                taken.append((offset, 1))
            self.end = first + count
            changed = True
            if count < batch.last - first + 1:
                break
        if taken:
            self._push_locks(deadline, (o for o, _c in taken))
        self._advance()
        return _ranges(taken), changed

    def _drop_missing(self, read_from: int, batches: list[Batch]) -> bool:
        """Available offsets that a read from ``read_from`` proved gone from the log
        (between its batches: compaction, retention) are done."""
        if not batches or not self.available:
            return False
        upto = min(batches[-1].last, self.end - 1)
        gone = []
        for offset, entry in self.records.items():
            if offset > upto:
                break
            if offset < read_from or entry.state != A.AVAILABLE:
                continue
            if not any(b.base <= offset <= b.last for b in batches):
                gone.append(offset)
        for offset in gone:
            del self.records[offset]
        self.available -= len(gone)
        return bool(gone)

    def acknowledge(
        self, now: int, member: str, acks: Iterable[Ack], *, delivery_limit: int, lock_ms: int
    ) -> tuple[ErrorCode, bool]:
        """Apply ``acks`` all or nothing; (error, whether anything changed)."""
        acks = list(acks)
        for ack in acks:
            size = ack.last - ack.first + 1
            if size < 1 or len(ack.types) not in (1, size):
                return ErrorCode.INVALID_REQUEST, False
            if any(t not in AckType._value2member_map_ for t in ack.types):
                return ErrorCode.INVALID_REQUEST, False
            if ack.first < self.start or ack.last >= self.end:
                return ErrorCode.INVALID_RECORD_STATE, False
            for offset in range(ack.first, ack.last + 1):
                entry = self.records.get(offset)
                if entry is None or entry.state != A.ACQUIRED or entry.owner != member:
                    return ErrorCode.INVALID_RECORD_STATE, False
        renewed: list[int] = []
        for ack in acks:
            for offset in range(ack.first, ack.last + 1):
                kind = ack.type_at(offset)
                entry = self.records[offset]
                if kind == AckType.RELEASE:
                    self._release(offset, entry, delivery_limit)
                elif kind == AckType.RENEW:
                    entry.deadline = now + lock_ms
                    renewed.append(offset)
                else:  # ACCEPT, REJECT, GAP: done
                    del self.records[offset]
        if renewed:
            self._push_locks(now + lock_ms, renewed)
        self._advance()
        return ErrorCode.NONE, bool(acks)

    def expire(self, now: int, delivery_limit: int) -> int:
        """Release every offset whose lock expired by ``now``; how many were released."""
        released = 0
        while self._locks and self._locks[0][0] <= now:
            deadline, first, last = heapq.heappop(self._locks)
            for offset in range(first, last + 1):
                entry = self.records.get(offset)
                if entry is not None and entry.state == A.ACQUIRED and entry.deadline == deadline:
                    self._release(offset, entry, delivery_limit)
                    released += 1
        if released:
            self._advance()
        return released

    def release_member(self, member: str, delivery_limit: int) -> int:
        """Release everything ``member`` holds; how many offsets."""
        held = self.held_by(member)
        for offset in held:
            self._release(offset, self.records[offset], delivery_limit)
        if held:
            self._advance()
        return len(held)

    # ------------------------------------------------------------------ durable form

    def snapshot(self) -> dict[str, Any]:
        ranges: list[list[int]] = []
        for offset, entry in self.records.items():
            if ranges and ranges[-1][1] == offset - 1 and ranges[-1][2] == entry.count:
                ranges[-1][1] = offset
            else:
                ranges.append([offset, offset, entry.count])
        return {
            "topic_id": self.topic_id,
            "start": self.start,
            "end": self.end,
            "epoch": self.state_epoch,
            "ranges": ranges,
        }

    @classmethod
    def from_snapshot(cls, topic: str, partition: int, snap: dict[str, Any]) -> SharePartition:
        sp = cls(topic, partition, str(snap["topic_id"]), int(snap["start"]))
        sp.end = int(snap["end"])
        sp.state_epoch = int(snap["epoch"])
        for first, last, count in snap["ranges"]:
            for offset in range(int(first), int(last) + 1):
                sp.records[offset] = InFlight(A.AVAILABLE, int(count))
        sp.available = len(sp.records)
        return sp

    # ------------------------------------------------------------------ internals

    def _lock(self, entry: InFlight, member: str, deadline: int) -> None:
        entry.state = A.ACQUIRED
        entry.count += 1
        entry.owner = member
        entry.deadline = deadline
        self.available -= 1

    def _release(self, offset: int, entry: InFlight, delivery_limit: int) -> None:
        if entry.count >= delivery_limit:
            del self.records[offset]  # delivered as often as allowed: archived
            return
        entry.state = A.AVAILABLE
        entry.owner = None
        entry.deadline = 0
        self.available += 1

    def _push_locks(self, deadline: int, offsets: Iterable[int]) -> None:
        for r in _ranges((o, 0) for o in offsets):
            heapq.heappush(self._locks, (deadline, r.first, r.last))

    def _advance(self) -> None:
        """``start`` moves up to the first offset not done (or ``end``)."""
        self.start = next(iter(self.records)) if self.records else self.end
        if not self.records:
            self._locks.clear()


def _ranges(offsets: Iterable[tuple[int, int]]) -> list[AcquiredRange]:
    """Consecutive offsets with the same count, as ranges (input in offset order)."""
    out: list[AcquiredRange] = []
    for offset, count in sorted(offsets):
        if out and out[-1].last == offset - 1 and out[-1].count == count:
            last = out[-1]
            out[-1] = AcquiredRange(last.first, offset, count)
        else:
            out.append(AcquiredRange(offset, offset, count))
    return out
