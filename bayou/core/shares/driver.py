"""The thin asyncio driver around the deterministic ShareCoordinator.

Theory of operation
-------------------
``run(op)`` calls one coordinator operation with the current time, writes its records to
``__share_group_state`` (one batch, durable per the internal logs' policy: in the OS before
the answer, so a kill -9 loses nothing acknowledged) and returns the answer.  Writes apply
in call order, so the log's order is the order in which operations changed the state.

``acquire`` is the one operation that needs the log first: it asks the coordinator where to
read (``plan``), reads whole stored batches there through a ``Cursor`` (at the group's
``share.isolation.level``: markers and, read_committed, aborted transactions are never
delivered), then runs ``acquire`` with what the read found — no suspension between the
coordinator's answer and its use, and the plan's state epoch guards against a reset while
the read was under way.  The ``Acquisition`` it returns keeps the batches read: the Kafka
door sends those that hold acquired offsets as they are stored; an in-broker consumer
decodes them.

Waiting: ``wait`` returns when data lands on the given partitions (the engine's
notification) or when records became Available again anywhere (released, a lock expired,
offsets altered) — a consumer in a long poll must see a record another member let go.

A timer task sleeps until the coordinator's ``next_deadline`` (at most a second; woken early
after every operation) and runs ``tick``: sessions and acquisition locks expire.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bayou.core.cursor import Cursor, Isolation, Scanned
from bayou.core.shares.coordinator import ShareCoordinator
from bayou.core.shares.model import (
    AcquiredRange,
    Batch,
    Result,
    ShareCoordinatorError,
    ShareSettings,
    TopicPartition,
)
from bayou.core.shares.store import ShareStore
from bayou.errors import ErrorCode, KafkaError
from bayou.protocol.kafka.records import DecodedRecord, iter_records
from bayou.storage.engine import LogEngine, PartitionKey, StateLog

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_TIMER_SLEEP_S = 1.0
READ_BYTES = 1024 * 1024
DECODED_RECORDS = 20_000  # records of recently acquired batches kept decoded


class DecodedBatches:
    """Recently acquired batches, decoded once: in-broker members acquiring a few records
    at a time from one large batch would otherwise decode it all again each time.  Keyed
    by where the batch is and its CRC (a recreated topic's batch at the same offset is
    another batch); bounded by a count of records, least recently used first out."""

    def __init__(self, limit: int = DECODED_RECORDS) -> None:
        self.limit = limit
        self._batches: OrderedDict[tuple[str, int, int, int], list[DecodedRecord]] = OrderedDict()
        self._records = 0

    def get(self, topic: str, partition: int, view: memoryview, b: Scanned) -> list[DecodedRecord]:
        h = b.header
        key = (topic, partition, h.base_offset, h.crc)
        found = self._batches.get(key)
        if found is not None:
            self._batches.move_to_end(key)
            return found
        found = list(iter_records(view[b.pos : b.pos + h.size]))
        self._batches[key] = found
        self._records += len(found)
        while self._records > self.limit and len(self._batches) > 1:
            _key, old = self._batches.popitem(last=False)
            self._records -= len(old)
        return found


@dataclass
class Acquisition:
    """What one acquisition handed out of one partition, and the batches read for it."""

    topic: str
    partition: int
    ranges: list[AcquiredRange]
    view: memoryview
    batches: list[Scanned]
    decoded: DecodedBatches | None = None

    @property
    def count(self) -> int:
        return sum(r.last - r.first + 1 for r in self.ranges)

    def raw(self) -> bytes:
        """The stored batches that hold acquired offsets, as stored (the Kafka door)."""
        parts = []
        for b in self.batches:
            h = b.header
            if b.deliverable and any(
                r.first <= h.last_offset and h.base_offset <= r.last for r in self.ranges
            ):
                parts.append(self.view[b.pos : b.pos + h.size])
        return b"".join(parts)

    def records(self) -> Iterator[tuple[DecodedRecord | None, int, int]]:
        """(record, offset, delivery count) for every acquired offset, in offset order;
        the record is None where the log has none (compacted away: acknowledge it GAP)."""
        counts: dict[int, int] = {}
        for r in self.ranges:
            for offset in range(r.first, r.last + 1):
                counts[offset] = r.count
        for b in self.batches:
            h = b.header
            if not b.deliverable or not any(
                r.first <= h.last_offset and h.base_offset <= r.last for r in self.ranges
            ):
                continue
            if self.decoded is None:
                for record in iter_records(self.view[b.pos : b.pos + h.size]):
                    count = counts.pop(record.offset, None)
                    if count is not None:
                        yield record, record.offset, count
                continue
            batch = self.decoded.get(self.topic, self.partition, self.view, b)
            offsets = [r.offset for r in batch] if len(batch) > 64 else None
            for r in self.ranges:
                if r.last < h.base_offset or r.first > h.last_offset:
                    continue
                i = 0 if offsets is None else bisect.bisect_left(offsets, r.first)
                for record in batch[i:]:
                    if record.offset > r.last:
                        break
                    count = counts.pop(record.offset, None)
                    if count is not None:
                        yield record, record.offset, count
        for offset, count in sorted(counts.items()):
            yield None, offset, count


class ShareDriver:
    def __init__(
        self,
        settings: ShareSettings,
        clock_ms: Callable[[], int],
        log: StateLog,
        engine: LogEngine,
        foreign: Callable[[str], bool],
    ) -> None:
        self.coordinator = ShareCoordinator(settings, foreign)
        self.store = ShareStore(log)
        self.engine = engine
        self.clock_ms = clock_ms
        self.decoded = DecodedBatches()  # for in-broker members (``records``)
        self._released = asyncio.Event()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: False while this broker's cluster lease lapsed: its timers hold off
        self.active: Callable[[], bool] = lambda: True

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> int:
        """Replay the state log; returns how many records were applied."""
        return self.coordinator.load(await self.store.records(), self.clock_ms())

    async def follow(self, owns: Callable[[str], bool], *, load: bool) -> None:
        """The cluster changed: forget the share groups this broker no longer coordinates,
        and (``load``) replay from the state log the ones it gained — those it holds
        nothing of (their records' states and delivery counts, their members, their
        configs as the previous coordinator last wrote them); a group kept all along is
        already true."""
        gone = self.coordinator.drop_groups(lambda g: not owns(g))
        if gone:
            log.info("share coordinator moved away for %d group(s)", len(gone))
        if not load:
            return
        held = self.coordinator.held_groups()
        records = await self.store.records()
        held |= self.coordinator.held_groups()  # created meanwhile: already true
        gained = [r for r in records if r.group_id not in held and owns(r.group_id)]
        if gained:
            self.coordinator.load(gained, self.clock_ms())
            log.info(
                "took over %d share group(s) from the state log", len({r.group_id for r in gained})
            )
            self._notify()  # their Available records, for members waiting
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._timers())

    def shutdown(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._wake is not None:
            self._wake.set()
        self._notify()

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self) -> ShareCoordinator:
        """The coordinator, for operations that only read."""
        return self.coordinator

    # ------------------------------------------------------------------ operations

    async def run(self, op: Callable[[int], Result[T]]) -> T:
        """Run ``op(now)``, make its records durable, return its answer."""
        if self._closed:
            raise ShareCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        result = op(self.clock_ms())
        await self._settle(result)
        assert result.response is not None
        return result.response

    async def _settle(self, result: Result[Any]) -> None:
        if result.records:
            await self.store.append(result.records)
        if result.available:
            self._notify()
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ the log side

    def log_bounds(self, topic: str, partition: int) -> tuple[int, int] | None:
        meta = self.engine.topics().get(topic)
        if meta is None or not 0 <= partition < meta.partitions:
            return None
        p = self.engine.partition(topic, partition)
        return p.log_start_offset, p.log_end_offset

    def log_end(self, topic: str, partition: int) -> int | None:
        bounds = self.log_bounds(topic, partition)
        return None if bounds is None else bounds[1]

    def topic_sizes(self) -> dict[str, int]:
        return {name: meta.partitions for name, meta in self.engine.topics().items()}

    def topic_ids(self) -> dict[str, str]:
        return {name: str(meta.topic_id) for name, meta in self.engine.topics().items()}

    async def acquire(
        self,
        group_id: str,
        member_id: str,
        topic: str,
        partition: int,
        *,
        max_records: int,
        whole_batches: bool = True,
        max_bytes: int = READ_BYTES,
        decoded: bool = False,
    ) -> Acquisition | None:
        """Acquire up to ``max_records`` records of one partition for ``member_id`` (see
        the module docstring); None when there was nothing to acquire."""
        coordinator = self.coordinator
        if self._closed or max_records <= 0:
            return None
        meta = self.engine.topics().get(topic)
        if meta is None:
            return None
        if (group_id, topic, partition) not in coordinator.partitions:
            await self.run(
                lambda now: coordinator.ensure_partition(
                    now, group_id, topic, partition, self.log_bounds, str(meta.topic_id)
                )
            )
        plan = coordinator.plan(group_id, topic, partition)
        if plan is None:
            return None
        read_from, state_epoch = plan
        config = coordinator.config(group_id)
        isolation: Isolation = (
            "read_committed" if config.isolation_level == "read_committed" else "read_uncommitted"
        )
        cursor = Cursor(self.engine, topic, partition, read_from, isolation=isolation)
        try:
            view, scanned = await cursor.scan(max_bytes)
            log_start = cursor.handle().log_start_offset
        except KafkaError:
            return None
        if not scanned:
            return None
        batches = [
            Batch(s.header.base_offset, s.header.last_offset, s.deliverable) for s in scanned
        ]
        ranges = await self.run(
            lambda now: coordinator.acquire(
                now,
                group_id=group_id,
                member_id=member_id,
                topic=topic,
                partition=partition,
                state_epoch=state_epoch,
                batches=batches,
                read_from=cursor.position,
                log_start=log_start,
                max_records=max_records,
                whole_batches=whole_batches,
            )
        )
        if not ranges:
            return None
        return Acquisition(
            topic, partition, ranges, view, scanned, self.decoded if decoded else None
        )

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        self._released.set()
        self._released = asyncio.Event()

    async def wait(self, keys: Sequence[PartitionKey], timeout_s: float) -> bool:
        """Until data lands on ``keys``, records are released, or ``timeout_s`` passes."""
        if timeout_s <= 0 or self._closed:
            return False
        released = asyncio.ensure_future(self._released.wait())
        landed = asyncio.ensure_future(self.engine.wait_for_data(keys, timeout_s))
        try:
            done, _pending = await asyncio.wait(
                (released, landed), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (released, landed):
                if not task.done():
                    task.cancel()
            await asyncio.gather(released, landed, return_exceptions=True)
        return bool(done)

    # ------------------------------------------------------------------ timers

    async def _timers(self) -> None:
        assert self._wake is not None
        coordinator = self.coordinator
        while not self._closed:  # a flag, not only the cancel: 3.11's wait_for can swallow it
            now = self.clock_ms()
            deadline = coordinator.next_deadline()
            sleep_s = MAX_TIMER_SLEEP_S if deadline is None else (deadline - now) / 1000
            self._wake.clear()
            if sleep_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(sleep_s, MAX_TIMER_SLEEP_S))
            now = self.clock_ms()
            if not self.active():  # a cluster member that lost its lease: hands off
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), MAX_TIMER_SLEEP_S)
                continue
            deadline = coordinator.next_deadline()
            if deadline is not None and deadline <= now:
                try:
                    await self._settle(coordinator.tick(now))
                except Exception:
                    log.exception("share coordinator timers failed")


def partitions_held(acquisitions: Sequence[Acquisition]) -> set[TopicPartition]:
    return {(a.topic, a.partition) for a in acquisitions}
