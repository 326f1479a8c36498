"""Shared subscriptions (``$share/<name>/<filter>``) as members of Kafka share groups.

Theory of operation
-------------------
A shared subscription is the share group ``mqtt-share:<name>/<filter>``
(``share_group_id``; ``docs/design/shares.md``): each session subscribed to it is one
member of that group inside the broker (a ``ShareConsumer``), over the Kafka topics its
filter maps to.  The share coordinator hands each record to one member at a time and keeps
every record's state and delivery count durable, so the members compete per message and a
slow or dead member's messages go to the others — what the door's own round-robin queue
could not do once a message was handed out.  (The name space is the group coordinator's:
``mqtt:<client id>`` is a persistent session's consumer group, hence another prefix.  A
share name holds no ``/``, so the group id names the share and the filter unambiguously.)

- **Every partition.**  A member acquires from every partition of its topics, not only
  the ones the ``simple`` assignor gives it: MQTT has no partitions, and a member whose
  client stopped acknowledging must not keep a partition to itself.  (When the group's
  assignment changes, the coordinator releases what a member holds in partitions it was
  not given: those few messages may be delivered twice.)
- **Where it starts.**  A partition that exists when the subscription is made begins at its
  end — the end when the member set it up, which the SUBACK waits for (``started``), so
  every message published after the SUBACK is the group's (new messages only, as MQTT
  subscriptions do, unless the group already has a
  position there: a group outlives its members, so a shared subscription made again gets
  what was published meanwhile, as a queue does); a partition that appears later (a topic
  created by its first PUBLISH, more partitions) or that a persistent member meets when it
  comes back, at its start, so those messages are not lost.
  Records of the Kafka topic that the filter does not match are accepted unseen.
- **The in-flight window.**  A member holds at most the client's Receive Maximum (20 for
  3.1.1), and at most ``MAX_HELD``, of messages not yet settled: it acquires that many minus
  what it holds (a 5.0 client that announces no maximum allows 65,535: one member would
  take all there is and its peers would wait).  QoS 0 is
  accepted when sent; QoS 1 on PUBACK, QoS 2 on PUBCOMP (or a PUBREC with an error); a
  message the client cannot take (over its Maximum Packet Size, expired) is rejected.  A
  message delivered again (delivery count above 1) goes out with DUP set.
- **Going away.**  When its connection ends (clean or persistent session) the member
  applies the acknowledgements it got, releases everything else it holds and leaves the
  group: the others get those messages at once, with DUP set.  It joins again when the
  session is taken up again.  A message held longer than ``share.record.lock.duration.ms``
  (30 s) by a client that does not acknowledge goes to the others too.
- **Kafka's view.**  The group is an ordinary share group: ``bayou``'s and Kafka's tools
  describe it, and a Kafka share consumer with ``group.id=mqtt-share:<name>/<filter>``
  competes with the MQTT members.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

from bayou.core import Core
from bayou.core.shares import AckType, Place, ShareConsumer, ShareCoordinatorError
from bayou.core.shares import Delivery as ShareDelivery
from bayou.core.shares.driver import ShareDriver
from bayou.core.shares.remote import set_up_remotely
from bayou.errors import ErrorCode
from bayou.gateways.mqtt.messages import TP, Delivery, Message
from bayou.gateways.mqtt.subscriptions import SubOptions
from bayou.protocol.kafka.records import DecodedRecord
from bayou.protocol.mqtt.topics import matches

log = logging.getLogger("bayou.mqtt")

GROUP_PREFIX = "mqtt-share:"
IDLE_WAIT_S = 1.0
RETRIABLE = (ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
MAX_HELD = 100  # messages one member holds at most, whatever the client's Receive Maximum
START_WAIT_S = 10.0  # how long a SUBACK waits for the member's partitions to be set up


def share_group_id(share_name: str, topic_filter: str) -> str:
    """The Kafka share group of ``$share/<share_name>/<topic_filter>``."""
    return f"{GROUP_PREFIX}{share_name}/{topic_filter}"


class ShareHost(Protocol):
    """The door, as a shared subscription sees it."""

    @property
    def core(self) -> Core: ...

    def share_partitions(self, topic_filter: str) -> list[TP]:
        """The existing Kafka partitions whose records ``topic_filter`` may match."""
        ...

    def mqtt_topic(self, kafka_topic: str, key: bytes | None) -> str: ...

    def message_from_record(self, mqtt_topic: str, rec: DecodedRecord) -> Message: ...

    def background(self, awaitable: Awaitable[Any]) -> None: ...


class ShareRecipient(Protocol):
    """The session a member delivers to."""

    client_id: str
    subs: dict[str, SubOptions]

    def inflight_limit(self) -> int:
        """How many QoS 1/2 messages the client takes unacknowledged (0: offline)."""
        ...

    def enqueue(self, delivery: Delivery, pump: bool = True) -> None: ...

    def schedule_pump(self) -> None: ...


class ShareTicket:
    """What a delivery of a shared subscription owes its share group."""

    __slots__ = ("delivery", "member", "reader")

    def __init__(self, member: SharedMember, reader: ShareConsumer, delivery: ShareDelivery):
        self.member = member
        self.reader = reader
        self.delivery = delivery

    @property
    def redelivered(self) -> bool:
        return self.delivery.delivery_count > 1

    def settle(self, delivered: bool) -> None:
        """The client has it (accept), or could not take it (reject)."""
        self.member.settle(self, AckType.ACCEPT if delivered else AckType.REJECT)


class _Reader(ShareConsumer):
    """A ``ShareConsumer`` that reads every partition it was given by its member."""

    every_partition = True

    def __init__(self, place: Place, group_id: str, **kw: Any) -> None:
        super().__init__(place, group_id, [], **kw)
        self.readable: list[TP] = []

    def partitions(self) -> list[tuple[str, int]]:
        return self.readable

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Change the subscribed topics (a heartbeat that rejoins with them)."""
        wanted = sorted(set(topics))
        if wanted != self.topics:
            self.topics = wanted
            if self.epoch > 0:
                await self._heartbeat(0)


class SharedMember:
    """One session's place in a shared subscription (see the module docstring)."""

    def __init__(
        self, host: ShareHost, session: ShareRecipient, share_name: str, topic_filter: str
    ) -> None:
        self.host = host
        self.session = session
        self.share_name = share_name
        self.topic_filter = topic_filter
        self.subscription = f"$share/{share_name}/{topic_filter}"
        self.group_id = share_group_id(share_name, topic_filter)
        self.reader: _Reader | None = None
        self.held = 0  # handed to the session, not settled yet
        self._acks: list[tuple[ShareDelivery, AckType]] = []
        self._wake = asyncio.Event()
        self._refresh = False
        self._started = False  # it joined once: partitions it meets from now on are new
        self._set_up: asyncio.Future[None] | None = None  # done once it has been
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SharedMember({self.session.client_id!r} in {self.group_id!r})"

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        """The session is connected: join the group and deliver."""
        if self._task is None:
            core, group_id = self.host.core, self.group_id
            self.reader = _Reader(
                lambda: core.share_place(group_id),
                group_id,
                client_id=self.session.client_id,
                client_host="/mqtt",
                remote=core.share_remote(),
            )
            if self._set_up is None:
                self._set_up = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run(self.reader))

    async def started(self) -> None:
        """Until the member's partitions are set up — where the group starts reading each
        is fixed — or it gave up, or ``START_WAIT_S`` passed (it goes on trying)."""
        if self._set_up is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._set_up), START_WAIT_S)

    def disconnect(self) -> None:
        """The connection ended (or the subscription): settle what was acknowledged,
        release the rest, leave the group."""
        task, reader = self._task, self.reader
        self._task = self.reader = None
        self.held = 0
        acks, self._acks = self._acks, []
        if task is not None and reader is not None:
            task.cancel()
            self.host.background(self._leave(task, reader, acks))

    @staticmethod
    async def _leave(
        task: asyncio.Task[None], reader: ShareConsumer, acks: list[tuple[ShareDelivery, AckType]]
    ) -> None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if acks:
            with contextlib.suppress(Exception):
                await reader.acknowledge(acks)
        await reader.close()

    def refresh(self) -> None:
        """The topics or partitions may have changed (the door's interest refresh)."""
        if self._task is not None:
            self._refresh = True
            self._wake.set()

    # ------------------------------------------------------------------ settling

    def settle(self, ticket: ShareTicket, kind: AckType) -> None:
        if ticket.reader is not self.reader:
            return  # from before a disconnect: released already
        self.held -= 1
        self._acks.append((ticket.delivery, kind))
        self._wake.set()

    # ------------------------------------------------------------------ the member's task

    async def _run(self, reader: _Reader) -> None:
        try:
            joined = await self._join(reader)
        finally:
            self._mark_set_up()  # given up, or left: nothing to wait for
        if not joined:
            return
        while True:
            try:
                await self._turn(reader)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("MQTT %s: delivering failed", self)
                await asyncio.sleep(IDLE_WAIT_S)

    def _mark_set_up(self) -> None:
        if self._set_up is not None and not self._set_up.done():
            self._set_up.set_result(None)

    async def _join(self, reader: _Reader) -> bool:
        """Set up the partitions and join the group, again while its coordinator is moving;
        False when that failed for good."""
        while True:
            try:
                await self._prepare(reader, initial=not self._started)
                self._started = True
                self._mark_set_up()
                await reader.join()
                return True
            except ShareCoordinatorError as exc:
                if exc.code not in RETRIABLE:  # the broker stopping, or shares not running
                    log.warning(
                        "MQTT %s: joining share group %s failed: %s", self, self.group_id, exc
                    )
                    return False
                # in a cluster, its coordinator moving or being taken over: again shortly
                log.debug("MQTT %s: joining %s: %s, again", self, self.group_id, exc)
                await asyncio.sleep(IDLE_WAIT_S)
            except Exception:
                log.exception("MQTT %s: joining share group %s failed", self, self.group_id)
                return False

    async def _turn(self, reader: _Reader) -> None:
        """Settle, refresh, acquire and hand over what there is room for, or wait."""
        self._wake.clear()
        if self._acks:
            acks, self._acks = self._acks, []
            code = await reader.acknowledge(acks)
            if code:
                log.debug("MQTT %s: acknowledgement refused: %s", self, code.name)
        if self._refresh:
            self._refresh = False
            try:
                await self._prepare(reader, initial=False)
            except BaseException:
                self._refresh = True  # the next turn tries again
                raise
        room = min(self.session.inflight_limit(), MAX_HELD) - self.held
        if room > 0:
            try:
                got = await reader.acquire(room)
            except ShareCoordinatorError as exc:
                log.debug("MQTT %s: acquiring failed: %s", self, exc)
                got = []
            if got:
                self._deliver(reader, got)
                return
        await self._park(reader, wait_for_records=room > 0)

    async def _prepare(self, reader: _Reader, *, initial: bool) -> None:
        """Share partitions for every partition the filter may read (see the module
        docstring for where they start), then subscribe to their topics."""
        core = self.host.core
        wanted = self.host.share_partitions(self.topic_filter)
        known = set(reader.readable)
        where = core.share_place(self.group_id)
        if not isinstance(where, ShareDriver):  # another broker coordinates the group
            await set_up_remotely(
                core.group_link,
                where,
                self.group_id,
                # partitions the coordinator creates itself (on a member's read, once the
                # group has members) are new ones: from their start, as here
                configs={"share.auto.offset.reset": "earliest"},
                partitions=[tp for tp in wanted if tp not in known],
                reset="latest" if initial else "earliest",
            )
            reader.readable = wanted
            await reader.subscribe(t for t, _ in wanted if t in core.topics())
            return
        driver = where
        coordinator = driver.coordinator
        topic_ids = driver.topic_ids()
        for topic, partition in wanted:
            if (topic, partition) in known:
                continue
            await driver.run(
                functools.partial(
                    coordinator.ensure_partition,
                    group_id=self.group_id,
                    topic=topic,
                    partition=partition,
                    log_bounds=driver.log_bounds,
                    topic_id=topic_ids.get(topic),
                    reset="latest" if initial else "earliest",
                )
            )
        reader.readable = wanted
        topics = self.host.core.topics()
        await reader.subscribe(t for t, _ in wanted if t in topics)

    def _deliver(self, reader: ShareConsumer, got: list[ShareDelivery]) -> None:
        session = self.session
        opts = session.subs.get(self.subscription)
        skipped: list[tuple[ShareDelivery, AckType]] = []
        sent = False
        for d in got:
            topic = self.host.mqtt_topic(d.topic, d.record.key)
            if opts is None or not matches(self.topic_filter, topic):
                skipped.append((d, AckType.ACCEPT))  # not for this subscription
                continue
            msg = self.host.message_from_record(topic, d.record)
            ids = (opts.sub_id,) if opts.sub_id is not None else ()
            delivery = Delivery(
                msg,
                min(msg.qos, opts.qos),
                opts.retain_as_published and msg.retain,
                ids,
                (d.topic, d.partition),
                d.offset,
                False,
                ShareTicket(self, reader, d),
            )
            self.held += 1
            session.enqueue(delivery, pump=False)
            sent = True
        if skipped:
            self._acks.extend(skipped)
            self._wake.set()
        if sent:
            session.schedule_pump()

    async def _park(self, reader: ShareConsumer, *, wait_for_records: bool) -> None:
        """Until woken (acknowledgements, a refresh) or, when asked, until records land or
        are released; at most ``IDLE_WAIT_S``."""
        aws: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if wait_for_records:
            with contextlib.suppress(ShareCoordinatorError):
                driver = self.host.core.share_driver()
                aws.append(asyncio.ensure_future(driver.wait(reader.partitions(), IDLE_WAIT_S)))
        try:
            await asyncio.wait(aws, timeout=IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in aws:
                if not fut.done():
                    fut.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await fut
