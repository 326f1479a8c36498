"""AMQP consumers: tail a topic's partitions, deliver within prefetch, track acks.

Theory of operation
-------------------
A ``Consumer`` (one ``basic.consume``) owns a set of partitions of its queue's topic and a
position in each.  Its ``_run`` task loops: while the channel may deliver (flow on, socket
writable, prefetch room), it reads whole batches from each owned partition at its position
(``PartitionLog.read``), decodes the records past the position and hands each to the channel
as a ``basic.deliver``; when there is nothing to read it parks on the broker's data waiters
(``waiters.wait_any``) and on its own "kick" future (acks, assignment changes, flow).

Without a group, a consumer owns every partition and starts where ``x-stream-offset`` says
(``next`` by default); acks only free prefetch room.  With a group (``x-consumer-group``, or
a durable named queue) the consumer is a member of a Kafka consumer group (KIP-848, the
broker's coordinator with its server-side assignor): a ``_membership`` task heartbeats,
adopts the assignment it is given (committing and releasing revoked partitions first) and
starts each new partition at the group's committed offset (or ``x-stream-offset``, else
``first``).  Acks commit: per partition the committable offset is the lowest offset still
pending (delivered and not acked, or waiting for redelivery), else the position — so
unacked messages are never skipped, and a restarted or replacement consumer resumes at the
first message not acked (at-least-once).  Commits are coalesced by a ``_committer`` task.

``basic.nack``/``basic.reject`` with requeue put the offset on a redelivery queue (delivered
again with ``redelivered``); without requeue the message counts as settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

from bayou.core.groups import GroupCoordinatorError, OffsetCommit
from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.amqp.mapping import StartSpec
from bayou.gateways.amqp.names import topic_for
from bayou.protocol.kafka.records import DecodedRecord, iter_batches, iter_records

if TYPE_CHECKING:
    from bayou.gateways.amqp.channel import Channel
    from bayou.gateways.legacy_state import LegacyState as BrokerState
    from bayou.storage import PartitionLog

log = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
ROUND_LIMIT = 256  # deliveries per round before yielding to the loop
IDLE_WAIT_S = 1.0
MEMBER_HEARTBEAT_MS = 1000
REBALANCE_HEARTBEAT_MS = 100
REBALANCE_TIMEOUT_MS = 30_000


class Consumer:
    def __init__(self, channel: Channel, tag: str, queue: str, *, no_ack: bool,
                 start: StartSpec, group: str | None, prefetch: int) -> None:
        self.channel = channel
        self.state = channel.gateway.state
        self.tag = tag
        self.queue = queue
        self.topic = topic_for(queue)
        self.no_ack = no_ack
        self.start_spec = start
        self.group = group
        self.prefetch = prefetch
        self.positions: dict[int, int] = {}
        self.pending: dict[int, dict[int, None]] = {}
        self.redeliver: deque[tuple[int, int]] = deque()
        self.unacked = 0
        self.member_id = ""
        self.epoch = 0
        self.stopped = False
        self._committed: dict[int, int] = {}
        self._kick: asyncio.Future[None] | None = None
        self._commit_wanted = asyncio.Event()
        self._assigned_once = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.group is None:
            meta = self.state.logs.topics().get(self.topic)
            for p in range(meta.partitions if meta else 0):
                self._own(p)
            self._tasks.append(asyncio.create_task(self._run()))
        else:
            self._tasks.append(asyncio.create_task(self._membership()))
            self._tasks.append(asyncio.create_task(self._committer()))
            self._tasks.append(asyncio.create_task(self._run()))

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
        if self.group is None:
            self.channel.topology.consumer_stopped(
                self, {p: self.committable(p) for p in self.positions})
        elif self.member_id:
            with contextlib.suppress(Exception):
                await self._commit(set(self.positions))
            with contextlib.suppress(Exception):
                await self._heartbeat(leave=True)

    def kick(self) -> None:
        kick = self._kick
        if kick is not None and not kick.done():
            kick.set_result(None)

    # ------------------------------------------------------------------ positions

    def _own(self, partition: int) -> None:
        log_ = self.state.logs.partition(self.topic, partition)
        start = -1
        if self.group is not None and self.state.groups is not None:
            _code, fetched = self.state.groups.coordinator.fetch_offsets(
                self.group, [(self.topic, partition)])
            if fetched and fetched[0].offset >= 0:
                start = fetched[0].offset
        if start < 0:
            spec = self.start_spec
            if spec.kind == "first":
                start = log_.log_start_offset
            elif spec.kind == "last":
                start = max(log_.log_start_offset, log_.log_end_offset - 1)
            elif spec.kind == "next":
                start = log_.log_end_offset
            elif spec.kind == "offset":
                start = spec.value
            elif spec.kind == "queue":
                found_start = self.channel.topology.queue_start(self.queue, partition)
                start = log_.log_start_offset if found_start is None else found_start
            else:
                found = log_.offset_for_timestamp(spec.value)
                start = found[0] if found is not None else log_.log_end_offset
        start = min(max(start, log_.log_start_offset), log_.log_end_offset)
        self.positions[partition] = start
        self.pending[partition] = {}
        self._committed.setdefault(partition, -1)

    def committable(self, partition: int) -> int:
        pending = self.pending.get(partition)
        if pending:
            return min(pending)
        return self.positions[partition]

    def settled(self, partition: int, offset: int) -> None:
        """An ack (or a reject without requeue) of a delivered message."""
        self.unacked -= 1
        pending = self.pending.get(partition)
        if pending is not None:
            pending.pop(offset, None)
            if self.group is not None:
                self._commit_wanted.set()
        self.kick()

    def requeue(self, partition: int, offset: int) -> None:
        self.unacked -= 1
        if offset in self.pending.get(partition, ()):  # not revoked, not purged
            self.redeliver.append((partition, offset))
        self.kick()

    def ready_in(self, partition: int) -> tuple[int, int]:
        """(position, messages waiting for redelivery) in an owned partition."""
        waiting = sum(1 for p, _offset in self.redeliver if p == partition)
        return self.positions[partition], waiting

    def skip_to(self, ends: dict[int, int]) -> None:
        """queue.purge: move past ``ends`` in every owned partition.  Messages delivered and
        not yet acked stay unacked on the channel but are no longer redelivered."""
        for p in self.positions:
            end = ends.get(p)
            if end is not None:
                self.positions[p] = max(self.positions[p], end)
                self.pending[p].clear()
        self.redeliver.clear()
        self.kick()

    async def commit_now(self) -> None:
        """Commit the group's offsets now (after ``skip_to``)."""
        if self.group is not None:
            with contextlib.suppress(Exception):
                await self._commit(set(self.positions))

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
        if self.group is not None:
            await self._assigned_once.wait()
        while not self.stopped:
            if self.channel.paused() or self._budget() <= 0:
                await self._park(None)
                continue
            try:
                delivered, caught_up = self._deliver_some()
            except KafkaError as exc:  # the topic is gone
                log.info("AMQP consumer %s on %s stops: %s", self.tag, self.topic, exc)
                self.channel.consumer_gone(self, notify=True)
                return
            if delivered:
                self.channel.connection.flush_soon()
                if self.group is not None and self.no_ack:
                    self._commit_wanted.set()
            if caught_up:
                await self._park([(self.topic, p) for p in self.positions])
            else:
                await asyncio.sleep(0)

    async def _park(self, keys: list[tuple[str, int]] | None) -> None:
        kick = asyncio.get_running_loop().create_future()
        self._kick = kick
        waiter: asyncio.Future[bool] | None = None
        aws: list[asyncio.Future[object]] = [kick]
        if keys:
            waiter = asyncio.ensure_future(self.state.waiters.wait_any(keys, IDLE_WAIT_S))
            aws.append(waiter)  # type: ignore[arg-type]
        try:
            await asyncio.wait(aws, timeout=IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._kick = None
            if waiter is not None and not waiter.done():
                waiter.cancel()

    def _deliver_some(self) -> tuple[int, bool]:
        """Deliver what prefetch allows; (delivered, every partition read to its end)."""
        budget = self._budget()
        delivered = 0
        while self.redeliver and budget > 0:
            partition, offset = self.redeliver.popleft()
            if partition not in self.pending:
                continue
            record = self._record_at(partition, offset)
            if record is None:  # gone (retention): count it settled
                self.pending[partition].pop(offset, None)
                continue
            self.channel.deliver(self, self.tag, self.queue, partition, record,
                                 redelivered=True)
            if not self.no_ack:
                self.track(partition, offset)
            delivered += 1
            budget -= 1
        caught_up = True
        logs = self.state.logs
        for partition in list(self.positions):
            if budget <= 0:
                caught_up = False
                break
            log_ = logs.partition(self.topic, partition)
            pos = self.positions[partition]
            if pos < log_.log_start_offset:
                pos = log_.log_start_offset
            if pos >= log_.log_end_offset:
                continue
            data = log_.read(pos, READ_BYTES)
            view = memoryview(data)
            for at, header in iter_batches(view):
                if budget <= 0:
                    break
                if header.is_control or header.last_offset < pos:
                    pos = max(pos, header.last_offset + 1)
                    continue
                for record in iter_records(view[at : at + header.size]):
                    if record.offset < pos:
                        continue
                    if budget <= 0:
                        break
                    self.channel.deliver(self, self.tag, self.queue, partition, record,
                                         redelivered=False)
                    if not self.no_ack:
                        self.track(partition, record.offset)
                    delivered += 1
                    budget -= 1
                    pos = record.offset + 1
                else:
                    pos = max(pos, header.last_offset + 1)
            self.positions[partition] = pos
            if pos < log_.log_end_offset:
                caught_up = False
        return delivered, caught_up

    def _record_at(self, partition: int, offset: int) -> DecodedRecord | None:
        log_ = self.state.logs.partition(self.topic, partition)
        record, _pos = first_record(log_, offset)
        return record if record is not None and record.offset == offset else None

    def track(self, partition: int, offset: int) -> None:
        """A message was delivered with a delivery tag the client must ack."""
        self.unacked += 1
        pending = self.pending.get(partition)
        if pending is not None:
            pending[offset] = None

    # ------------------------------------------------------------------ group membership

    async def _heartbeat(self, *, leave: bool = False) -> dict[str, frozenset[int]] | None:
        groups = self.state.groups
        if groups is None or self.state.stopping:
            raise GroupCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        group = self.group
        assert group is not None
        sizes = {name: meta.partitions for name, meta in self.state.logs.topics().items()}
        owned = {self.topic: frozenset(self.positions)} if self.epoch > 0 else None
        resp = await groups.run(
            lambda now, _token: groups.coordinator.consumer_heartbeat(
                now,
                group_id=group,
                member_id=self.member_id,
                member_epoch=-1 if leave else self.epoch,
                instance_id=None,
                rack_id=None,
                rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
                subscribed=[self.topic],
                server_assignor=None,
                owned=owned,
                client_id="bayou-amqp",
                client_host="/" + self.channel.connection.peer_host,
                topic_sizes=sizes,
            )
        )
        if resp.error != ErrorCode.NONE:
            raise GroupCoordinatorError(resp.error, resp.message or "")
        if leave:
            self.member_id, self.epoch = "", 0
            return None
        self.member_id = resp.member_id or self.member_id
        self.epoch = resp.member_epoch
        return resp.assignment

    async def _membership(self) -> None:
        interval_ms = min(MEMBER_HEARTBEAT_MS,
                          self.state.config.group_consumer_heartbeat_interval_ms)
        while not self.stopped:
            delay_ms = interval_ms
            try:
                assignment = await self._heartbeat()
            except GroupCoordinatorError as exc:
                if exc.code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.FENCED_MEMBER_EPOCH):
                    self.epoch = 0
                    await self._apply(frozenset())
                    delay_ms = 0
                else:
                    log.warning("AMQP consumer %s: group %s heartbeat failed: %s",
                                self.tag, self.group, exc)
            else:
                if assignment is not None:
                    mine = assignment.get(self.topic, frozenset())
                    if mine != frozenset(self.positions):
                        await self._apply(mine)
                        delay_ms = REBALANCE_HEARTBEAT_MS
                    self._assigned_once.set()
                groups = self.state.groups
                group = groups.coordinator.group(self.group or "") if groups else None
                if group is not None and getattr(group, "assignment_epoch", 0) != self.epoch:
                    delay_ms = REBALANCE_HEARTBEAT_MS  # reconciling: check back soon
            await asyncio.sleep(delay_ms / 1000)

    async def _apply(self, partitions: frozenset[int]) -> None:
        revoked = set(self.positions) - partitions
        if revoked:
            with contextlib.suppress(Exception):
                await self._commit(revoked)
            for p in revoked:
                self.positions.pop(p, None)
                self.pending.pop(p, None)
                self._committed.pop(p, None)
            self.redeliver = deque(x for x in self.redeliver if x[0] in partitions)
        for p in sorted(partitions - set(self.positions)):
            try:
                self._own(p)
            except KafkaError:
                continue
        self.kick()

    async def _committer(self) -> None:
        while not self.stopped:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            try:
                await self._commit(set(self.positions))
            except Exception as exc:
                log.debug("AMQP consumer %s: commit failed: %s", self.tag, exc)
                await asyncio.sleep(0.1)

    async def _commit(self, partitions: set[int]) -> None:
        groups = self.state.groups
        if groups is None or self.group is None or not self.member_id:
            return
        if self.no_ack:
            todo = {p: self.positions[p] for p in partitions if p in self.positions}
        else:
            todo = {p: self.committable(p) for p in partitions if p in self.positions}
        todo = {p: o for p, o in todo.items() if o > self._committed.get(p, -1)}
        if not todo:
            return
        group, member_id, epoch = self.group, self.member_id, self.epoch
        commits = [OffsetCommit(self.topic, p, o) for p, o in sorted(todo.items())]
        codes = await groups.run(
            lambda now, _token: groups.coordinator.commit_offsets(
                now, group_id=group, generation=epoch, member_id=member_id,
                instance_id=None, offsets=commits,
            )
        )
        for c, code in zip(commits, codes, strict=True):
            if code == ErrorCode.NONE:
                self._committed[c.partition] = max(self._committed.get(c.partition, -1),
                                                   c.offset)


def first_record(log_: PartitionLog, pos: int) -> tuple[DecodedRecord | None, int]:
    """The first record at or after ``pos`` (control batches skipped), and the position
    after what was skipped when there is none."""
    pos = max(pos, log_.log_start_offset)
    while pos < log_.log_end_offset:
        view = memoryview(log_.read(pos, 1))
        advanced = False
        for at, header in iter_batches(view):
            if header.is_control or header.last_offset < pos:
                pos = max(pos, header.last_offset + 1)
                advanced = True
                continue
            for record in iter_records(view[at : at + header.size]):
                if record.offset >= pos:
                    return record, pos
            pos = max(pos, header.last_offset + 1)
            advanced = True
        if not advanced:
            break
    return None, pos


class GetCursor:
    """``basic.get`` on a queue: one cursor per queue in this broker.

    It starts at the committed offsets of the queue's group (``amqp:<queue>``, shared with
    durable-queue consumers), else at the start of each partition, hands out partitions in
    turn, and commits acked positions to that group (accepted while the group has no live
    members, as for any client committing outside a group)."""

    def __init__(self, state: BrokerState, queue: str) -> None:
        self.state = state
        self.queue = queue
        self.topic = topic_for(queue)
        self.group = f"amqp:{queue}"
        self.positions: dict[int, int] = {}
        self.pending: dict[int, dict[int, None]] = {}
        self.redeliver: deque[tuple[int, int]] = deque()
        self._turn = 0
        self._committed: dict[int, int] = {}
        self._commit_task: asyncio.Task[None] | None = None

    def _refresh(self) -> None:
        meta = self.state.logs.topics().get(self.topic)
        for p in range(meta.partitions if meta else 0):
            if p in self.positions:
                continue
            log_ = self.state.logs.partition(self.topic, p)
            start = log_.log_start_offset
            if self.state.groups is not None:
                _code, fetched = self.state.groups.coordinator.fetch_offsets(
                    self.group, [(self.topic, p)])
                if fetched and fetched[0].offset >= 0:
                    start = max(start, fetched[0].offset)
            self.positions[p] = start
            self.pending[p] = {}

    def next_message(self) -> tuple[int, DecodedRecord, bool] | None:
        self._refresh()
        while self.redeliver:
            p, offset = self.redeliver.popleft()
            log_ = self.state.logs.partition(self.topic, p)
            record, _ = first_record(log_, offset)
            if record is not None and record.offset == offset:
                return p, record, True
            self.pending[p].pop(offset, None)
        parts = sorted(self.positions)
        for i in range(len(parts)):
            p = parts[(self._turn + i) % len(parts)]
            log_ = self.state.logs.partition(self.topic, p)
            record, pos = first_record(log_, self.positions[p])
            if record is None:
                self.positions[p] = pos
                continue
            self.positions[p] = record.offset + 1
            self._turn = (self._turn + i + 1) % len(parts)
            return p, record, False
        return None

    def skip_to(self, ends: dict[int, int]) -> None:
        """queue.purge: move past ``ends`` (the group's commit is the purge's to make)."""
        for p, end in ends.items():
            if p in self.positions:
                self.positions[p] = max(self.positions[p], end)
                self.pending[p].clear()
                self._committed[p] = max(self._committed.get(p, -1), end)
        self.redeliver.clear()

    def remaining(self) -> int:
        total = 0
        for p, pos in self.positions.items():
            total += max(0, self.state.logs.partition(self.topic, p).log_end_offset - pos)
        return total

    def settler(self, *, no_ack: bool) -> _GetSettler:
        return _GetSettler(self, no_ack)

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
        groups = self.state.groups
        if groups is None or self.state.stopping:
            return
        todo = {}
        for p, pos in self.positions.items():
            pending = self.pending.get(p)
            offset = min(pending) if pending else pos
            if offset > self._committed.get(p, -1):
                todo[p] = offset
        if not todo:
            return
        commits = [OffsetCommit(self.topic, p, o) for p, o in sorted(todo.items())]
        try:
            codes = await groups.run(
                lambda now, _token: groups.coordinator.commit_offsets(
                    now, group_id=self.group, generation=-1, member_id="", instance_id=None,
                    offsets=commits))
        except GroupCoordinatorError:
            return
        for c, code in zip(commits, codes, strict=True):
            if code == ErrorCode.NONE:
                self._committed[c.partition] = c.offset


class _GetSettler:
    __slots__ = ("cursor", "no_ack")

    def __init__(self, cursor: GetCursor, no_ack: bool) -> None:
        self.cursor = cursor
        self.no_ack = no_ack

    def settled(self, partition: int, offset: int) -> None:
        self.cursor.settled(partition, offset)

    def requeue(self, partition: int, offset: int) -> None:
        self.cursor.requeue(partition, offset)
