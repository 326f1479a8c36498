"""ShareConsumer: one member of a share group inside the broker, for doors that are not Kafka.

Theory of operation
-------------------
What a door needs to be a queue consumer (AMQP ``basic.consume`` on a classic queue, an MQTT
shared subscription) on the share-group machinery, with the same semantics a Kafka
``KafkaShareConsumer`` gets:

- ``join`` makes it a member (ShareGroupHeartbeat's epochs, through the coordinator) and
  starts a task that heartbeats every ``share.heartbeat.interval.ms``, rejoining if the
  coordinator forgot it (a restart, a session expiry);
- ``acquire(max_records, timeout_s)`` hands out up to ``max_records`` records of the
  partitions assigned to it — a door bounds what a consumer holds by asking for no more
  than its prefetch minus ``held`` — waiting up to ``timeout_s`` for records to land or to
  be released by another member.  Partitions are tried round-robin from where the last call
  stopped, so one busy partition does not starve the others.  Every ``Delivery`` carries its
  delivery count (1 the first time: a door's "redelivered" flag is ``delivery_count > 1``).
  Offsets the log no longer holds (compaction) are acknowledged GAP at once;
- ``acknowledge`` accepts, releases or rejects deliveries (RabbitMQ's ack, nack with
  requeue, reject/nack without requeue); RENEW extends a lock;
- ``release_all`` gives back everything held (a channel closed); ``close`` releases and
  leaves the group, so the records go to the other members at once.

In a cluster the group may be coordinated by another broker: ``place`` says where, each
call (a ``ShareDriver`` here, a ``BrokerAddress`` there), and the calls go to that broker
through a ``RemoteMember`` (``remote.py``: ShareGroupHeartbeat, ShareFetch and
ShareAcknowledge over a connection of this member's own).  When the coordinator moves, the
member follows at its next call (a heartbeat, at the latest) and rejoins there.

A record's acquisition lock still runs (``share.record.lock.duration.ms``): a delivery held
longer is released and may go to another member; acknowledging it afterwards answers
INVALID_RECORD_STATE.  The consumer keeps no record of its own: the coordinator's
share partitions know who holds what.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bayou.core.forwarding import Credentials
from bayou.core.shares.coordinator import partitions_of
from bayou.core.shares.driver import ShareDriver
from bayou.core.shares.model import (
    Ack,
    AckType,
    HeartbeatResponse,
    Partitions,
    ShareCoordinatorError,
)
from bayou.core.shares.remote import RemoteMember
from bayou.errors import ErrorCode
from bayou.protocol.kafka.records import DecodedRecord
from bayou.storage.cluster import BrokerAddress
from bayou.storage.metadata import TopicMeta

log = logging.getLogger(__name__)


JOIN_WAIT_S, JOIN_RETRY_S = 15.0, 0.2
BETWEEN_COORDINATORS = (ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)


@dataclass(frozen=True)
class Delivery:
    topic: str
    partition: int
    offset: int
    delivery_count: int
    record: DecodedRecord


Place = Callable[[], "ShareDriver | BrokerAddress"]
"""Where the group is coordinated now: this broker's driver, or another broker's address
(raises ShareCoordinatorError when nobody can be asked)."""


class Remote:
    """What a member needs to reach another broker: the login its listener requires and
    the topic catalogue (topic ids on the wire)."""

    def __init__(
        self, credentials: Credentials, topics: Callable[[], Mapping[str, TopicMeta]]
    ) -> None:
        self.credentials = credentials
        self.topics = topics


class ShareConsumer:
    #: whether ``partitions`` names partitions beyond the member's assignment (a subclass's
    #: choice): the coordinator of another broker must then let it read them
    every_partition = False

    def __init__(
        self,
        place: Place,
        group_id: str,
        topics: list[str],
        *,
        client_id: str,
        client_host: str,
        member_id: str | None = None,
        remote: Remote | None = None,
    ) -> None:
        self._place = place
        self._remote_context = remote
        self._remote: RemoteMember | None = None
        self.group_id = group_id
        self.topics = sorted(set(topics))
        self.client_id = client_id
        self.client_host = client_host
        self.member_id = member_id or str(uuid.uuid4())
        self.epoch = 0
        self.assigned: Partitions = {}
        self.heartbeat_interval_s = 5.0
        self._next = 0  # round-robin position over the assigned partitions
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def _driver(self) -> ShareDriver:
        """This broker's driver when it coordinates the group (NOT_COORDINATOR else)."""
        where = self._where()
        if isinstance(where, RemoteMember):
            raise ShareCoordinatorError(ErrorCode.NOT_COORDINATOR)
        return where

    def _where(self) -> ShareDriver | RemoteMember:
        """Where the group's calls go now (following the coordinator when it moved)."""
        where = self._place()
        if isinstance(where, ShareDriver):
            if self._remote is not None:
                self._remote.close()
                self._remote = None
            return where
        if self._remote_context is None:
            raise ShareCoordinatorError(ErrorCode.NOT_COORDINATOR)
        if self._remote is not None and self._remote.address != where:
            self._remote.close()  # the old coordinator releases what it held
            self._remote = None
        if self._remote is None:
            ctx = self._remote_context
            self._remote = RemoteMember(
                where,
                ctx.credentials,
                ctx.topics,
                self.group_id,
                self.member_id,
                every_partition=self.every_partition,
            )
        return self._remote

    # ------------------------------------------------------------------ membership

    async def _heartbeat(self, epoch: int) -> HeartbeatResponse:
        where = self._where()
        if isinstance(where, RemoteMember):
            resp = await where.heartbeat(epoch, self.topics if epoch == 0 else None)
        else:
            resp = await self._local_heartbeat(where, epoch)
        if resp.error == ErrorCode.NONE:
            self.epoch = resp.member_epoch
            if resp.assignment is not None:
                self.assigned = resp.assignment
            if resp.heartbeat_interval_ms > 0:
                self.heartbeat_interval_s = resp.heartbeat_interval_ms / 1000
        return resp

    async def _local_heartbeat(self, driver: ShareDriver, epoch: int) -> HeartbeatResponse:
        return await driver.run(
            lambda now: driver.coordinator.heartbeat(
                now,
                group_id=self.group_id,
                member_id=self.member_id,
                member_epoch=epoch,
                rack_id=None,
                subscribed=self.topics if epoch == 0 else None,
                client_id=self.client_id,
                client_host=self.client_host,
                topic_sizes=driver.topic_sizes(),
                log_bounds=driver.log_bounds,
                topic_ids=driver.topic_ids(),
            )
        )

    async def join(self) -> None:
        """Become a member (raises ShareCoordinatorError when refused).  While the group is
        between coordinators — a cluster settling after a broker joined or died — it asks
        again, for up to ``JOIN_WAIT_S``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_WAIT_S
        while True:
            try:
                resp = await self._heartbeat(0)
                error, message = resp.error, resp.message or ""
            except ShareCoordinatorError as exc:
                error, message = exc.code, str(exc)
            if error == ErrorCode.NONE:
                break
            if error not in BETWEEN_COORDINATORS or loop.time() >= deadline or self._closed:
                raise ShareCoordinatorError(error, message)
            await asyncio.sleep(JOIN_RETRY_S)
        if self._task is None:
            self._task = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.heartbeat_interval_s)
            if self._closed:
                break
            try:
                resp = await self._heartbeat(self.epoch)
                if resp.error in (
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    ErrorCode.FENCED_MEMBER_EPOCH,
                    ErrorCode.NOT_COORDINATOR,  # it moved: a member of the new one's
                ):
                    await self._heartbeat(0)
            except Exception as exc:  # the coordinator stopping: the next beat tries again
                log.debug("share group %s: heartbeat failed: %r", self.group_id, exc)

    def partitions(self) -> list[tuple[str, int]]:
        """The partitions assigned to this member now: in the broker, the coordinator's
        answer is read directly, so a member sees a partition another one left at once
        instead of at its next heartbeat."""
        try:
            where = self._where()
            now = (
                None
                if isinstance(where, RemoteMember)
                else where.read().assigned(self.group_id, self.member_id)
            )
        except ShareCoordinatorError:
            now = None
        return partitions_of(now if now is not None else self.assigned)

    # ------------------------------------------------------------------ records

    @property
    def held(self) -> int:
        """How many records this member holds (acquired, not yet acknowledged)."""
        where = self._where()
        if isinstance(where, RemoteMember):
            return len(where.held)
        driver = where
        return sum(
            len(sp.held_by(self.member_id))
            for (g, _t, _p), sp in driver.coordinator.partitions.items()
            if g == self.group_id
        )

    async def acquire(self, max_records: int, timeout_s: float = 0.0) -> list[Delivery]:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for some."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            where = self._where()
            if isinstance(where, RemoteMember):  # the coordinator waits, woken by releases
                return await self._acquire_remote(where, max_records, timeout_s)
            out = await self._acquire_once(max_records)
            remaining = deadline - loop.time()
            if out or remaining <= 0 or self._closed:
                return out
            await self._driver().wait(self.partitions(), remaining)

    async def _acquire_remote(
        self, remote: RemoteMember, max_records: int, timeout_s: float
    ) -> list[Delivery]:
        got = await remote.acquire(self.partitions(), max_records, timeout_s)
        out = []
        gaps: dict[tuple[str, int], list[Ack]] = {}
        for topic, partition, offset, count, record in got:
            if record is None:
                gaps.setdefault((topic, partition), []).append(Ack(offset, offset, (AckType.GAP,)))
            else:
                out.append(Delivery(topic, partition, offset, count, record))
        for (topic, partition), acks in gaps.items():
            await remote.acknowledge(topic, partition, acks)
        return out

    async def _acquire_once(self, max_records: int) -> list[Delivery]:
        driver = self._driver()
        parts = self.partitions()
        out: list[Delivery] = []
        if not parts:
            return out
        for i in range(len(parts)):
            if len(out) >= max_records:
                break
            topic, partition = parts[(self._next + i) % len(parts)]
            got = await driver.acquire(
                self.group_id,
                self.member_id,
                topic,
                partition,
                max_records=max_records - len(out),
                whole_batches=False,
                decoded=True,
            )
            if got is None:
                continue
            gaps = []
            for record, offset, count in got.records():
                if record is None:
                    gaps.append(offset)
                else:
                    out.append(Delivery(topic, partition, offset, count, record))
            if gaps:
                await self._ack(topic, partition, [Ack(o, o, (AckType.GAP,)) for o in gaps])
        self._next = (self._next + 1) % len(parts)
        return out

    async def _ack(self, topic: str, partition: int, acks: list[Ack]) -> ErrorCode:
        where = self._where()
        if isinstance(where, RemoteMember):
            return await where.acknowledge(topic, partition, acks)
        driver = where
        return await driver.run(
            lambda now: driver.coordinator.acknowledge(
                now,
                group_id=self.group_id,
                member_id=self.member_id,
                topic=topic,
                partition=partition,
                acks=acks,
            )
        )

    async def acknowledge(self, deliveries: Iterable[tuple[Delivery, AckType]]) -> ErrorCode:
        """Acknowledge deliveries (per partition, all or nothing); the first error."""
        by_partition: dict[tuple[str, int], list[Ack]] = {}
        for d, kind in deliveries:
            by_partition.setdefault((d.topic, d.partition), []).append(
                Ack(d.offset, d.offset, (int(kind),))
            )
        error = ErrorCode.NONE
        for (topic, partition), acks in sorted(by_partition.items()):
            code = await self._ack(topic, partition, acks)
            if error == ErrorCode.NONE:
                error = code
        return error

    async def release_all(self) -> int:
        where = self._where()
        if isinstance(where, RemoteMember):
            return await where.release()
        driver = where
        return await driver.run(
            lambda now: driver.coordinator.release(now, self.group_id, self.member_id)
        )

    async def close(self) -> None:
        """Release what is held and leave the group (the others get it at once)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.release_all()
            await self._heartbeat(-1)
        if self._remote is not None:
            self._remote.close()
            self._remote = None
