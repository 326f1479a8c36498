"""Classic queues: consumers compete for a queue's messages as members of its share group.

Theory of operation
-------------------
A queue declared without ``x-queue-type: stream`` (RabbitMQ's default, a *classic* queue;
``quorum`` too) is the share group ``amqp:<queue>`` over the queue's topic
(``docs/design/shares.md``): every ``basic.consume`` is a ``QueueConsumer``, one member of
that group inside the broker (``core.share_consumer``), and ``basic.get`` on a channel is
a ``QueueGetter``, one more member.  The share coordinator hands each record to one
member at a time, so consumers compete per message, and it keeps every record's state
and delivery count durable in ``__share_group_state``.

- **Prefetch.**  A consumer acquires no more than its room: ``basic.qos`` prefetch minus
  what it holds (and the channel's ``global`` limit minus the channel's unacked), exactly
  that many records, never whole batches.  Without ``no_ack`` a delivery is held until the
  client settles it; ``no_ack`` deliveries are accepted as they go out.
- **Settling.**  ``basic.ack`` accepts, ``basic.nack``/``basic.reject`` with requeue
  release (the record goes back to the group; its next delivery has ``redelivered`` set:
  delivery count above 1), without requeue reject — after publishing the record to the
  queue's dead-letter exchange, when it has one.  Acknowledgements are coalesced by one
  task per member (one coordinator operation, one state write, per burst of acks).
- **Going away.**  A consumer that is cancelled or whose channel or connection closes (a
  client killed -9) applies the acks it received, then releases everything it still holds
  and leaves the group: the other members get those records at once, marked redelivered.
  ``basic.cancel`` only stops deliveries: what the client holds stays unacked (RabbitMQ's
  semantics) and the member leaves once it is settled, or with the channel.
- **Policy at delivery time** (``QueuePolicy``, from the queue's arguments): a record
  whose ``x-message-ttl`` or per-message ``expiration`` ran out since it was appended, or
  that was already delivered ``x-delivery-limit`` + 1 times (N redeliveries after the
  first, as RabbitMQ's quorum queues count), is not delivered: it is dead-lettered
  (reason ``expired`` or ``delivery_limit``) when the queue has a dead-letter exchange,
  and rejected.  The share group's own ``share.delivery.count.limit`` is set one above the
  last allowed delivery (or out of reach without a limit, as classic queues requeue
  forever), so the coordinator never archives a record before the door could dead-letter
  it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bayou.core import Core, now_ms
from bayou.core.shares import AckType, Delivery, ShareConsumer, ShareCoordinatorError
from bayou.gateways.amqp.interfaces import DeadLetters, DeliveryChannel
from bayou.gateways.amqp.names import topic_for
from bayou.protocol.kafka.records import DecodedRecord

log = logging.getLogger(__name__)

ROUND_LIMIT = 256  # records acquired per round
IDLE_WAIT_S = 1.0
CLIENT_ID = "bayou-amqp"
EXPIRATION_HEADER = "amqp-expiration"
LOCK_DURATION_MS = 1_800_000  # RabbitMQ's consumer timeout: 30 minutes
UNLIMITED_DELIVERIES = 2**31 - 1
WINDOW = 10_000  # share.record.lock.partition.limit's maximum


def share_group_of(queue: str) -> str:
    return f"amqp:{queue}"


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else value


def is_stream_queue(arguments: Mapping[str, Any]) -> bool:
    """Whether a queue's declaration asked for a stream (``x-queue-type: stream``)."""
    return bool(_text(arguments.get("x-queue-type")) == "stream")


def _non_negative(arguments: Mapping[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid arg '{name}' for queue: {value!r} is not a non-negative integer")
    return value


@dataclass(frozen=True)
class QueuePolicy:
    """What a classic queue's arguments ask of its deliveries."""

    delivery_limit: int | None = None  # redeliveries allowed after the first
    message_ttl_ms: int | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> QueuePolicy:
        """Raises ``ValueError`` (for a 406) on a bad argument."""
        limit = _non_negative(arguments, "x-delivery-limit")
        ttl = _non_negative(arguments, "x-message-ttl")
        dlx = _text(arguments.get("x-dead-letter-exchange"))
        dlrk = _text(arguments.get("x-dead-letter-routing-key"))
        if dlx is not None and not isinstance(dlx, str):
            raise ValueError("invalid arg 'x-dead-letter-exchange' for queue: not a string")
        if dlrk is not None and not isinstance(dlrk, str):
            raise ValueError("invalid arg 'x-dead-letter-routing-key' for queue: not a string")
        if dlrk is not None and dlx is None:
            raise ValueError(
                "invalid arg 'x-dead-letter-routing-key' for queue: "
                "requires 'x-dead-letter-exchange'"
            )
        return cls(limit, ttl, dlx, dlrk)

    def share_configs(self) -> dict[str, str]:
        """The share group's configs this policy needs (see the module docstring)."""
        limit = UNLIMITED_DELIVERIES
        if self.delivery_limit is not None:
            limit = min(self.delivery_limit + 2, UNLIMITED_DELIVERIES)
        return {
            "share.delivery.count.limit": str(limit),
            "share.record.lock.duration.ms": str(LOCK_DURATION_MS),
            "share.auto.offset.reset": "earliest",  # partitions added later: all of them
            # a message held long (a slow task) holds the window: as wide as it goes
            "share.record.lock.partition.limit": str(WINDOW),
        }

    def dead_reason(self, record: DecodedRecord, delivery_count: int, now: int) -> str | None:
        """Why this delivery must not reach a consumer (None: deliver it)."""
        limit = self.delivery_limit
        if limit is not None and delivery_count > limit + 1:
            return "delivery_limit"
        ttl = self.message_ttl_ms
        for name, value in record.headers:
            if name == EXPIRATION_HEADER and value is not None:
                try:
                    expiration = int(value)
                except ValueError:
                    continue
                ttl = expiration if ttl is None else min(ttl, expiration)
        if ttl is not None and record.timestamp >= 0 and record.timestamp + ttl <= now:
            return "expired"
        return None


class ShareSettler:
    """One member of a classic queue's share group, and what it holds: the deliveries its
    channel sent and the client has not settled yet.  Acks are applied by one task."""

    def __init__(
        self,
        core: Core,
        dead_letters: DeadLetters,
        queue: str,
        policy: QueuePolicy,
        client_host: str,
    ) -> None:
        self.core = core
        self.dead_letters = dead_letters
        self.queue = queue
        self.topic = topic_for(queue)
        self.group = share_group_of(queue)
        self.policy = policy
        self.reader: ShareConsumer = core.share_consumer(
            self.group, [self.topic], client_id=CLIENT_ID, client_host="/" + client_host
        )
        self.held: dict[tuple[int, int], Delivery] = {}
        self._acks: list[tuple[Delivery, AckType]] = []
        self._dead: list[tuple[Delivery, str]] = []
        self._ack_wanted = asyncio.Event()
        self._acker: asyncio.Task[None] | None = None
        self._closing = False
        self.no_ack = False

    async def join(self) -> None:
        await self.reader.join()
        self._acker = asyncio.create_task(self._run_acker())

    def _screen(self, got: list[Delivery]) -> list[Delivery]:
        """The deliveries to hand out; the others go to be dead-lettered and rejected."""
        now = now_ms()
        out = []
        for d in got:
            reason = self.policy.dead_reason(d.record, d.delivery_count, now)
            if reason is None:
                out.append(d)
            else:
                self._dead.append((d, reason))
        if len(out) < len(got):
            self._ack_wanted.set()
        return out

    def _settle(self, partition: int, offset: int, kind: AckType, dead: bool = False) -> None:
        d = self.held.pop((partition, offset), None)
        if d is None:
            return
        if dead and self.policy.dead_letter_exchange is not None:
            self._dead.append((d, "rejected"))
        else:
            self._acks.append((d, kind))
        self._ack_wanted.set()
        self.settled_one()

    def settled_one(self) -> None:
        """A held delivery was settled (room for another)."""

    def settled(self, partition: int, offset: int) -> None:
        self._settle(partition, offset, AckType.ACCEPT)

    def requeue(self, partition: int, offset: int) -> None:
        self._settle(partition, offset, AckType.RELEASE)

    def rejected(self, partition: int, offset: int) -> None:
        self._settle(partition, offset, AckType.REJECT, dead=True)

    async def _run_acker(self) -> None:
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            try:
                await self._flush()
            except Exception as exc:  # the coordinator stopping
                log.debug("AMQP queue %s: acknowledging failed: %r", self.queue, exc)
            if self._closing and not self._acks and not self._dead:
                return

    async def _flush(self) -> None:
        dead, self._dead = self._dead, []
        for d, reason in dead:
            try:
                await self.dead_letters.dead_letter(self.queue, d.partition, d.record, reason)
            except Exception:
                log.exception("AMQP queue %s: dead-lettering failed", self.queue)
        acks, self._acks = self._acks, []
        acks.extend((d, AckType.REJECT) for d, _reason in dead)
        if acks:
            code = await self.reader.acknowledge(acks)
            if code:
                log.debug("AMQP queue %s: acknowledgement refused: %s", self.queue, code.name)

    async def close(self) -> None:
        """Apply what was settled, release the rest, leave the group."""
        self._closing = True
        self._ack_wanted.set()
        if self._acker is not None:
            await asyncio.gather(self._acker, return_exceptions=True)
        self.held.clear()
        await self.reader.close()


class QueueConsumer(ShareSettler):
    """``basic.consume`` on a classic queue."""

    def __init__(
        self,
        core: Core,
        channel: DeliveryChannel,
        dead_letters: DeadLetters,
        tag: str,
        queue: str,
        *,
        no_ack: bool,
        prefetch: int,
        policy: QueuePolicy,
        client_host: str = "",
    ) -> None:
        super().__init__(core, dead_letters, queue, policy, client_host)
        self.channel = channel
        self.tag = tag
        self.no_ack = no_ack
        self.prefetch = prefetch
        self.stopped = False
        self.member = None  # not a consumer-group member
        self._kick: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._draining = False

    def __repr__(self) -> str:
        return f"QueueConsumer({self.tag} on {self.queue})"

    @property
    def draining(self) -> bool:
        """Cancelled, and the client still holds deliveries it may settle."""
        return self._draining and self._stopping is None

    async def cancel(self) -> None:
        """``basic.cancel``: stop delivering.  As in RabbitMQ, what the client holds stays
        unacked on the channel and its acks still count; the member leaves once the last
        one is settled, or when the channel closes (releasing what is left)."""
        self.stopped = True
        self.kick()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.held:
            self._draining = True
        else:
            await self.stop()

    async def start(self) -> None:
        """Join the queue's share group and start delivering."""
        try:
            await self.join()
        except ShareCoordinatorError as exc:
            log.warning("AMQP consumer %s: joining %s failed: %s", self.tag, self.group, exc)
            raise
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        self.stopped = True
        self.kick()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.close()

    def kick(self) -> None:
        kick = self._kick
        if kick is not None and not kick.done():
            kick.set_result(None)

    def settled_one(self) -> None:
        if self._draining and not self.held:
            self._draining = False
            self.core.background(self.stop())
        self.kick()

    def wake_member(self) -> None:
        return None

    def owns(self, partition: int) -> bool:
        return False

    def _budget(self) -> int:
        budget = ROUND_LIMIT
        if self.no_ack:
            return budget
        if self.prefetch:
            budget = min(budget, self.prefetch - len(self.held))
        ch = self.channel
        if ch.global_prefetch:
            budget = min(budget, ch.global_prefetch - ch.unacked_count)
        return budget

    async def _run(self) -> None:
        while not self.stopped:
            budget = self._budget()
            if self.channel.paused() or budget <= 0:
                await self._park(wait_for_records=False)
                continue
            try:
                got = await self.reader.acquire(budget)
            except ShareCoordinatorError as exc:
                log.debug("AMQP consumer %s: acquiring failed: %s", self.tag, exc)
                got = []
            if self.stopped:  # never delivered: back to the group now
                self._acks.extend((d, AckType.RELEASE) for d in got)
                self._ack_wanted.set()
                return
            if not got:
                await self._park(wait_for_records=True)
                continue
            self._deliver(self._screen(got))

    def _deliver(self, deliveries: list[Delivery]) -> None:
        accepted = []
        for d in deliveries:
            self.channel.deliver(
                self,
                self.tag,
                self.queue,
                d.partition,
                d.record,
                redelivered=d.delivery_count > 1,
            )
            if self.no_ack:
                accepted.append((d, AckType.ACCEPT))
            else:
                self.held[(d.partition, d.offset)] = d
        if accepted:
            self._acks.extend(accepted)
            self._ack_wanted.set()
        if deliveries:
            self.channel.flush_soon()

    async def _park(self, *, wait_for_records: bool) -> None:
        """Until kicked (acks, flow, prefetch, stop) or, when asked, until records land
        or are released; at most ``IDLE_WAIT_S``."""
        kick = asyncio.get_running_loop().create_future()
        self._kick = kick
        aws: list[asyncio.Future[Any]] = [kick]
        waiter: asyncio.Future[bool] | None = None
        if wait_for_records:
            try:
                driver = self.core.share_driver()
            except ShareCoordinatorError:
                driver = None
            if driver is not None:
                waiter = asyncio.ensure_future(driver.wait(self.reader.partitions(), IDLE_WAIT_S))
                aws.append(waiter)
        try:
            await asyncio.wait(aws, timeout=IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._kick = None
            if waiter is not None and not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiter


class QueueGetter(ShareSettler):
    """``basic.get`` on a classic queue, for one channel (closed with it)."""

    MAX_SKIPPED = 1000  # dead records passed over by one basic.get

    async def get(self) -> Delivery | None:
        for _ in range(self.MAX_SKIPPED):
            got = await self.reader.acquire(1)
            if not got:
                return None
            out = self._screen(got)
            if out:
                return out[0]
        return None

    def hold(self, d: Delivery) -> None:
        self.held[(d.partition, d.offset)] = d

    def accept_now(self, d: Delivery) -> None:
        self._acks.append((d, AckType.ACCEPT))
        self._ack_wanted.set()

    def settler(self, *, no_ack: bool) -> GetTag:
        return GetTag(self, no_ack)


class GetTag:
    """The settler of one ``basic.get`` delivery."""

    __slots__ = ("getter", "no_ack")

    def __init__(self, getter: QueueGetter, no_ack: bool) -> None:
        self.getter = getter
        self.no_ack = no_ack

    def settled(self, partition: int, offset: int) -> None:
        self.getter.settled(partition, offset)

    def requeue(self, partition: int, offset: int) -> None:
        self.getter.requeue(partition, offset)

    def rejected(self, partition: int, offset: int) -> None:
        self.getter.rejected(partition, offset)
