"""AMQP consumers: tail a topic's partitions through cursors, deliver within prefetch, track acks.

Theory of operation
-------------------
A ``Consumer`` (one ``basic.consume``) owns a set of partitions of its queue's topic and a
core ``Cursor`` in each.  Its ``_run`` task loops: while its channel may deliver (flow on,
socket writable, prefetch room), it reads records from each owned partition's cursor (the
core reads the page cache on the loop and cold data in a worker thread) and hands each to
the channel as a ``basic.deliver``; when there is nothing to read it parks on the engine's
"data landed" notification for its cursors and on its own "kick" future (acks, assignment
changes, flow).  A cursor that was replaced or dropped while a read was in flight (a purge,
a revocation) has its records discarded.

Without a group, a consumer owns every partition and starts where ``x-stream-offset`` says
(a core ``StartSpec``; ``next`` by default, a time resolved by the engine off the loop), or,
for a temporary queue, where the queue's previous consumer stopped (``QueuePositions``).
Acks only free prefetch room.  With a group (``x-consumer-group``, or a durable named queue)
the consumer is a member of a Kafka consumer group through the core's ``GroupMember``
(KIP-848 against the broker's coordinator, heartbeating in its own task): ``on_assign``
starts each new partition at the group's committed offset (else ``x-stream-offset``, else
``first``), ``on_revoke`` stops reading a partition and commits it before the coordinator
hears it is free.  Joining, leaving and releasing partitions wake the group's other members
on this broker (``QueuePositions.group_changed``), so they reconcile at once instead of at
their next heartbeat (``group.consumer.heartbeat.interval.ms``, 5 s by default): a new
member gets the partitions another one gave up within milliseconds.

Acks commit: per partition the committable offset is the lowest offset still pending
(delivered and not acked, or waiting for redelivery), else the position — so unacked
messages are never skipped, and a restarted or replacement consumer resumes at the first
message not acked (at-least-once).  Commits are coalesced by a ``_committer`` task.

``basic.nack``/``basic.reject`` with requeue put the offset on a redelivery queue (read
again with ``Cursor.record_at`` and delivered with ``redelivered``); without requeue the
message counts as settled.

``GetCursor`` serves ``basic.get``: one cursor per partition of the queue, in the broker,
starting at (and committing to) the queue's group ``amqp:<queue>`` through ``core.offsets``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable

from bayou.core import Core, Cursor, GroupMember, Offsets, StartSpec, TopicPartition
from bayou.core.groups import GroupCoordinatorError
from bayou.errors import KafkaError
from bayou.gateways.amqp.interfaces import DeliveryChannel, QueuePositions
from bayou.gateways.amqp.names import topic_for
from bayou.protocol.kafka.records import DecodedRecord

log = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
ROUND_LIMIT = 256  # deliveries per round before yielding to the loop
IDLE_WAIT_S = 1.0
CLIENT_ID = "bayou-amqp"


def group_of(queue: str) -> str:
    """The consumer group holding a queue's position (durable queues, ``basic.get``)."""
    return f"amqp:{queue}"


def committed_offset(offsets: Offsets, topic: str, partition: int) -> int | None:
    """The group's committed offset of one partition (None: none, or no coordinator)."""
    try:
        found = offsets.committed([(topic, partition)]).get((topic, partition))
    except GroupCoordinatorError:
        return None
    return found[0] if found is not None else None


class Consumer:
    def __init__(
        self,
        core: Core,
        channel: DeliveryChannel,
        queues: QueuePositions,
        tag: str,
        queue: str,
        *,
        no_ack: bool,
        start: StartSpec,
        resume_queue: bool = False,
        group: str | None,
        prefetch: int,
        client_host: str = "",
    ) -> None:
        """``start``: where to begin without a committed offset; ``resume_queue``: begin
        where the temporary queue's previous consumer stopped instead."""
        self.core = core
        self.channel = channel
        self.queues = queues
        self.tag = tag
        self.queue = queue
        self.topic = topic_for(queue)
        self.no_ack = no_ack
        self.start_spec = start
        self.resume_queue = resume_queue
        self.group = group
        self.prefetch = prefetch
        self.client_host = client_host
        self.cursors: dict[int, Cursor] = {}
        self.pending: dict[int, dict[int, None]] = {}
        self.redeliver: deque[tuple[int, int]] = deque()
        self.unacked = 0
        self.member: GroupMember | None = None
        self.stopped = False
        self._committed: dict[int, int] = {}
        self._kick: asyncio.Future[None] | None = None
        self._commit_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"Consumer({self.tag} on {self.queue})"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take the partitions (all of them, or join the group) and start delivering.
        Raises ``KafkaError`` when the topic is gone."""
        if self.group is None:
            meta = self.core.topics().get(self.topic)
            for p in range(meta.partitions if meta else 0):
                await self._own(p, None)
                if self.stopped:
                    return
        else:
            member = self.member = self.core.group_member(
                self.group,
                topics=[self.topic],
                client_id=CLIENT_ID,
                client_host="/" + self.client_host,
                on_revoke=self._revoked,
                on_assign=self._assigned,
            )
            try:
                await member.poll(force=True)  # join now: the others are woken next
            except GroupCoordinatorError as exc:
                log.warning(
                    "AMQP consumer %s: joining group %s failed: %s", self.tag, self.group, exc
                )
            if self.stopped:
                return
            member.start()
            self.queues.group_changed(self)
            self._tasks.append(asyncio.create_task(self._committer()))
        self._tasks.append(asyncio.create_task(self._run()))

    draining = False  # a stream's unacked deliveries need no member to be settled

    async def cancel(self) -> None:
        """``basic.cancel``: the same as ``stop``."""
        await self.stop()

    async def stop(self) -> None:
        """Stop delivering; commit what was acked and leave the group.  Every caller
        returns once that is done (the first call does it)."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        self.stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.member is None:
            self.queues.consumer_stopped(self.queue, {p: self.committable(p) for p in self.cursors})
            return
        member = self.member
        with contextlib.suppress(Exception):
            await member.leave()  # on_revoke commits every partition first
        self.queues.group_changed(self)

    def kick(self) -> None:
        kick = self._kick
        if kick is not None and not kick.done():
            kick.set_result(None)

    def wake_member(self) -> None:
        if self.member is not None and not self.stopped:
            self.member.wake()

    # ------------------------------------------------------------------ positions

    async def _own(self, partition: int, committed: int | None) -> None:
        """Start reading ``partition``: at ``committed``, else where the queue or the
        start spec says.  Raises ``KafkaError`` when the partition is gone."""
        core, topic = self.core, self.topic
        handle = core.partition(topic, partition)
        start: int | None = committed
        if start is None and self.resume_queue:
            start = self.queues.queue_start(self.queue, partition)
            if start is None:
                start = handle.log_start_offset
        if start is None:
            cursor = await core.cursor_at(topic, partition, self.start_spec)
        else:
            start = min(max(start, handle.log_start_offset), handle.log_end_offset)
            cursor = core.cursor(topic, partition, start)
        self.cursors[partition] = cursor
        self.pending[partition] = {}
        self._committed.setdefault(partition, -1)

    def committable(self, partition: int) -> int:
        """The lowest offset not yet done with in ``partition``."""
        pending = self.pending.get(partition)
        if pending:
            return min(pending)
        return self.cursors[partition].position

    def owns(self, partition: int) -> bool:
        return partition in self.cursors

    def settled(self, partition: int, offset: int) -> None:
        """An ack (or a reject without requeue) of a delivered message."""
        self.unacked -= 1
        pending = self.pending.get(partition)
        if pending is not None:
            pending.pop(offset, None)
            if self.group is not None:
                self._commit_wanted.set()
        self.kick()

    def rejected(self, partition: int, offset: int) -> None:
        self.settled(partition, offset)  # a stream has no dead-lettering

    def requeue(self, partition: int, offset: int) -> None:
        self.unacked -= 1
        if offset in self.pending.get(partition, ()):  # not revoked, not purged
            self.redeliver.append((partition, offset))
        self.kick()

    def ready_in(self, partition: int) -> tuple[int, int]:
        """(position, messages waiting for redelivery) in an owned partition."""
        waiting = sum(1 for p, _offset in self.redeliver if p == partition)
        return self.cursors[partition].position, waiting

    def skip_to(self, ends: dict[int, int]) -> None:
        """queue.purge: move past ``ends`` in every owned partition.  Messages delivered and
        not yet acked stay unacked on the channel but are no longer redelivered."""
        for p, cursor in list(self.cursors.items()):
            end = ends.get(p)
            if end is not None:  # a new cursor: a read in flight on the old one is dropped
                self.cursors[p] = self.core.cursor(self.topic, p, max(cursor.position, end))
                self.pending[p].clear()
        self.redeliver.clear()
        self.kick()

    async def commit_now(self) -> None:
        """Commit the group's offsets now (after ``skip_to``)."""
        with contextlib.suppress(Exception):
            await self._commit(self.cursors)

    # ------------------------------------------------------------------ delivery loop

    def _budget(self) -> int:
        budget = ROUND_LIMIT
        if self.no_ack:
            return budget
        if self.prefetch:
            budget = min(budget, self.prefetch - self.unacked)
        ch = self.channel
        if ch.global_prefetch:
            budget = min(budget, ch.global_prefetch - ch.unacked_count)
        return budget

    async def _run(self) -> None:
        while not self.stopped:
            if self.channel.paused() or self._budget() <= 0:
                await self._park(None)
                continue
            try:
                delivered, caught_up = await self._deliver_some()
            except KafkaError as exc:  # the topic is gone
                log.info("AMQP consumer %s on %s stops: %s", self.tag, self.topic, exc)
                self.channel.consumer_gone(self, notify=True)
                return
            if delivered:
                self.channel.flush_soon()
                if self.group is not None and self.no_ack:
                    self._commit_wanted.set()
            if caught_up:
                await self._park(list(self.cursors.values()))
            else:
                await asyncio.sleep(0)

    async def _park(self, cursors: list[Cursor] | None) -> None:
        kick = asyncio.get_running_loop().create_future()
        self._kick = kick
        waiter: asyncio.Future[bool] | None = None
        aws: list[asyncio.Future[object]] = [kick]
        if cursors:
            waiter = asyncio.ensure_future(self.core.wait_any(cursors, IDLE_WAIT_S))
            aws.append(waiter)  # type: ignore[arg-type]
        try:
            await asyncio.wait(aws, timeout=IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._kick = None
            if waiter is not None:
                if not waiter.done():
                    waiter.cancel()
                elif not waiter.cancelled():
                    waiter.exception()  # a topic gone: the next read says so

    async def _deliver_some(self) -> tuple[int, bool]:
        """Deliver what prefetch allows; (delivered, every partition read to its end)."""
        budget = self._budget()
        delivered = 0
        while self.redeliver and budget > 0:
            partition, offset = self.redeliver.popleft()
            cursor = self.cursors.get(partition)
            if cursor is None:
                continue
            record = await cursor.record_at(offset)
            pending = self.pending.get(partition)
            if self.cursors.get(partition) is not cursor or pending is None:
                continue  # revoked or purged meanwhile
            if record is None:  # gone (retention): count it settled
                pending.pop(offset, None)
                continue
            self._deliver(partition, record, redelivered=True)
            delivered += 1
            budget -= 1
        caught_up = True
        for partition, cursor in list(self.cursors.items()):
            if budget <= 0:
                caught_up = False
                break
            records = await cursor.read(READ_BYTES, budget)
            if self.cursors.get(partition) is not cursor:
                continue  # revoked or purged while reading: those records are not ours
            for record in records:
                self._deliver(partition, record, redelivered=False)
            if records:
                self.core.metrics.door("amqp").sent_records(self.topic, records)
            delivered += len(records)
            budget -= len(records)
            if cursor.lag() > 0:
                caught_up = False
        return delivered, caught_up

    def _deliver(self, partition: int, record: DecodedRecord, *, redelivered: bool) -> None:
        self.channel.deliver(self, self.tag, self.queue, partition, record, redelivered=redelivered)
        if not self.no_ack:
            self.track(partition, record.offset)

    def track(self, partition: int, offset: int) -> None:
        """A message was delivered with a delivery tag the client must ack."""
        self.unacked += 1
        pending = self.pending.get(partition)
        if pending is not None:
            pending[offset] = None

    # ------------------------------------------------------------------ group membership

    async def _assigned(self, gained: frozenset[TopicPartition]) -> None:
        """``on_assign``: start each new partition at the group's committed offset."""
        member = self.member
        parts = sorted(p for t, p in gained if t == self.topic and p not in self.cursors)
        if member is None or not parts:
            return
        try:
            committed = await member.fetch_committed([(self.topic, p) for p in parts])
        except GroupCoordinatorError:
            committed = {}
        for p in parts:
            found = committed.get((self.topic, p))
            try:
                await self._own(p, found[0] if found is not None else None)
            except KafkaError:
                continue
        self.kick()

    async def _revoked(self, lost: frozenset[TopicPartition]) -> None:
        """``on_revoke``: stop reading the partitions, then commit what was done in them."""
        parts = [p for t, p in lost if t == self.topic and p in self.cursors]
        todo = {p: self._commit_offset(p) for p in parts}
        for p in parts:
            del self.cursors[p]
            self.pending.pop(p, None)
        self.redeliver = deque(x for x in self.redeliver if x[0] not in todo)
        try:
            await self._commit_offsets(todo)
        except (GroupCoordinatorError, KafkaError) as exc:
            log.info("AMQP consumer %s: commit on revoke failed: %s", self.tag, exc)
        for p in parts:
            self._committed.pop(p, None)
        self.kick()
        # The member tells the coordinator right after this returns, before it suspends:
        # the members woken here heartbeat after that and find the partitions free.
        self.queues.group_changed(self)

    def _commit_offset(self, partition: int) -> int:
        if self.no_ack:
            return self.cursors[partition].position
        return self.committable(partition)

    async def _committer(self) -> None:
        while not self.stopped:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            try:
                await self._commit(self.cursors)
            except Exception as exc:
                log.debug("AMQP consumer %s: commit failed: %s", self.tag, exc)
                await asyncio.sleep(0.1)

    async def _commit(self, partitions: Iterable[int]) -> None:
        await self._commit_offsets(
            {p: self._commit_offset(p) for p in list(partitions) if p in self.cursors}
        )

    async def _commit_offsets(self, todo: dict[int, int]) -> None:
        """Commit ``todo`` (partition → offset) as the group member, skipping what the
        group already has.  A fenced member (epoch 0) commits nothing."""
        member = self.member
        todo = {p: o for p, o in todo.items() if o > self._committed.get(p, -1)}
        if member is None or member.epoch <= 0 or not todo:
            return
        await member.commit({(self.topic, p): o for p, o in sorted(todo.items())})
        for p, o in todo.items():
            if p in self._committed or p in self.cursors:
                self._committed[p] = max(self._committed.get(p, -1), o)


class GetCursor:
    """``basic.get`` on a queue: one cursor per partition, per queue, in this broker.

    It starts at the committed offsets of the queue's group (``amqp:<queue>``, shared with
    durable-queue consumers), else at the start of each partition, hands out partitions in
    turn, and commits acked positions to that group through ``core.offsets`` (accepted while
    the group has no live members, as for any client committing outside a group).  Reads
    are serialised: two ``basic.get`` at once never get the same message."""

    def __init__(self, core: Core, queue: str) -> None:
        self.core = core
        self.queue = queue
        self.topic = topic_for(queue)
        self.offsets = core.offsets(group_of(queue))
        self.cursors: dict[int, Cursor] = {}
        self.pending: dict[int, dict[int, None]] = {}
        self.redeliver: deque[tuple[int, int]] = deque()
        self._turn = 0
        self._committed: dict[int, int] = {}
        self._commit_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        """Cursors for the partitions that have none yet, at the group's committed offsets
        (asked of whichever broker coordinates the group), else at the partition's start."""
        meta = self.core.topics().get(self.topic)
        new = [p for p in range(meta.partitions if meta else 0) if p not in self.cursors]
        if not new:
            return
        try:
            committed = await self.offsets.fetch_committed([(self.topic, p) for p in new])
        except GroupCoordinatorError:
            committed = {}
        for p in new:
            if p in self.cursors:  # made meanwhile
                continue
            start = self.core.partition(self.topic, p).log_start_offset
            found = committed.get((self.topic, p))
            if found is not None:
                start = max(start, found[0])
            self.cursors[p] = self.core.cursor(self.topic, p, start)
            self.pending[p] = {}

    def position(self, partition: int) -> int | None:
        cursor = self.cursors.get(partition)
        return cursor.position if cursor is not None else None

    async def next_message(self) -> tuple[int, DecodedRecord, bool] | None:
        """The next message: (partition, record, redelivered), or None when none is ready."""
        async with self._lock:
            return await self._next()

    async def _next(self) -> tuple[int, DecodedRecord, bool] | None:
        await self._refresh()
        while self.redeliver:
            p, offset = self.redeliver.popleft()
            cursor = self.cursors.get(p)
            record = await cursor.record_at(offset) if cursor is not None else None
            if record is not None and self.cursors.get(p) is cursor:
                return p, record, True
            self.pending.get(p, {}).pop(offset, None)
        parts = sorted(self.cursors)
        for i in range(len(parts)):
            p = parts[(self._turn + i) % len(parts)]
            cursor = self.cursors[p]
            records = await cursor.read(1, 1)
            if not records or self.cursors.get(p) is not cursor:
                continue
            self._turn = (self._turn + i + 1) % len(parts)
            self.core.metrics.door("amqp").sent_records(self.topic, records)
            return p, records[0], False
        return None

    def skip_to(self, ends: dict[int, int]) -> None:
        """queue.purge: move past ``ends`` (the group's commit is the purge's to make)."""
        for p, end in ends.items():
            cursor = self.cursors.get(p)
            if cursor is not None:
                self.cursors[p] = self.core.cursor(self.topic, p, max(cursor.position, end))
                self.pending[p].clear()
                self._committed[p] = max(self._committed.get(p, -1), end)
        self.redeliver.clear()

    def remaining(self) -> int:
        total = 0
        for p, cursor in self.cursors.items():
            total += max(0, self.core.partition(self.topic, p).log_end_offset - cursor.position)
        return total

    def settler(self, *, no_ack: bool) -> GetSettler:
        return GetSettler(self, no_ack)

    def track(self, partition: int, offset: int) -> None:
        self.pending[partition][offset] = None

    def done(self, partition: int, offset: int) -> None:
        self._commit_soon()

    def settled(self, partition: int, offset: int) -> None:
        self.pending.get(partition, {}).pop(offset, None)
        self._commit_soon()

    def requeue(self, partition: int, offset: int) -> None:
        if offset in self.pending.get(partition, ()):
            self.redeliver.append((partition, offset))

    def _commit_soon(self) -> None:
        if self._commit_task is None or self._commit_task.done():
            self._commit_task = asyncio.create_task(self._commit())

    async def _commit(self) -> None:
        """Commit until the positions are all committed: what was settled while a commit
        was on its way (``_commit_soon`` starts no second task) goes in the next one."""
        while not self.core.stopping:
            todo: dict[TopicPartition, int] = {}
            for p, cursor in self.cursors.items():
                pending = self.pending.get(p)
                offset = min(pending) if pending else cursor.position
                if offset > self._committed.get(p, -1):
                    todo[(self.topic, p)] = offset
            if not todo:
                return
            try:
                await self.offsets.commit(todo)
            except GroupCoordinatorError:
                return
            for (_topic, p), offset in todo.items():
                self._committed[p] = max(self._committed.get(p, -1), offset)


class GetSettler:
    __slots__ = ("cursor", "no_ack")

    def __init__(self, cursor: GetCursor, no_ack: bool) -> None:
        self.cursor = cursor
        self.no_ack = no_ack

    def settled(self, partition: int, offset: int) -> None:
        self.cursor.settled(partition, offset)

    def requeue(self, partition: int, offset: int) -> None:
        self.cursor.requeue(partition, offset)

    def rejected(self, partition: int, offset: int) -> None:
        self.cursor.settled(partition, offset)
