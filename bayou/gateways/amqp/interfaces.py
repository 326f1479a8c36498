"""What the AMQP door's parts need from one another, as small Protocols.

Theory of operation
-------------------
The door's modules import one another in one direction only::

    server ──> channel ──> topology ──> consumers ──> interfaces
                  └───────────────────────┘

Each part talks back up the chain only through an interface defined here, never by
importing the module above it (not even for type checking):

- a ``Consumer`` or the ``basic.get`` cursor delivers through a ``DeliveryChannel`` (the
  channel: prefetch and flow state, ``deliver``, cancelling a consumer that cannot go on),
  and asks ``QueuePositions`` (the topology) where a temporary queue's reader starts and
  which other readers of its group to wake; a classic queue's consumer dead-letters
  through ``DeadLetters`` (the topology);
- a ``Channel`` talks to its ``ChannelConnection`` (the connection: the sans-I/O protocol
  object, whether the socket is backed up, flushing, closing the channel on an error);
- every unacknowledged delivery remembers its ``Settler`` (the consumer or the ``basic.get``
  cursor it came from), which an ack, nack or reject settles.

So a consumer unit-tests with a stand-in channel, and a channel with a stand-in connection,
both over a real ``Core`` on the memory engine, without sockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bayou.core.security.acl import AclOperation, ResourceType
from bayou.protocol.amqp import AmqpError, ServerConnection
from bayou.protocol.kafka.records import DecodedRecord


class Settler(Protocol):
    """Where a delivery came from: settles it when the client acks, nacks or rejects it."""

    @property
    def no_ack(self) -> bool: ...

    def settled(self, partition: int, offset: int) -> None:
        """An ack, or a reject/nack without requeue."""
        ...

    def requeue(self, partition: int, offset: int) -> None:
        """A reject/nack with requeue (or ``basic.recover``): deliver it again."""
        ...

    def rejected(self, partition: int, offset: int) -> None:
        """A reject/nack without requeue (dead-lettered where the queue says so)."""
        ...


class ConsumerHandle(Protocol):
    """A consumer as its channel sees it."""

    @property
    def tag(self) -> str: ...

    def kick(self) -> None:
        """Look again now: prefetch room, flow or the socket changed."""
        ...

    async def stop(self) -> None:
        """Stop delivering, commit what was acked, leave the group."""
        ...

    async def cancel(self) -> None:
        """``basic.cancel``: stop delivering; a classic queue's consumer keeps what the
        client holds unacked until it is settled (``draining``) or the channel closes."""
        ...

    @property
    def draining(self) -> bool: ...


class DeliveryChannel(Protocol):
    """What a consumer (or the ``basic.get`` cursor) needs from its channel."""

    @property
    def global_prefetch(self) -> int:
        """``basic.qos`` with ``global``: the channel's limit of unacked messages (0: none)."""
        ...

    @property
    def unacked_count(self) -> int: ...

    def paused(self) -> bool:
        """Deliveries must wait: ``channel.flow(false)``, a backed-up socket, or closed."""
        ...

    def deliver(
        self,
        settler: Settler,
        consumer_tag: str | None,
        queue: str,
        partition: int,
        record: DecodedRecord,
        *,
        redelivered: bool,
        message_count: int = 0,
    ) -> int:
        """Send ``record`` (``basic.deliver``, or ``basic.get-ok`` without a tag); its tag."""
        ...

    def consumer_gone(self, consumer: ConsumerHandle, *, notify: bool) -> None:
        """The consumer cannot go on (its topic is gone): forget it, stop it, and tell the
        client with ``basic.cancel`` when ``notify``."""
        ...

    def flush_soon(self) -> None:
        """Write what was sent, once this loop iteration ends."""
        ...


class GroupReader(Protocol):
    """A reader that is a member of a consumer group on this broker."""

    @property
    def group(self) -> str | None: ...

    def wake_member(self) -> None:
        """Heartbeat now (a member of the group joined or left)."""
        ...


class QueuePositions(Protocol):
    """What a consumer needs to know of its queue beyond its topic (the topology)."""

    def queue_start(self, queue: str, partition: int) -> int | None:
        """Where a temporary queue's next consumer starts (None: not a temporary queue)."""
        ...

    def consumer_stopped(self, queue: str, positions: Mapping[int, int]) -> None:
        """A consumer without a group stopped; ``positions``: its lowest unacked offsets."""
        ...

    def group_changed(self, reader: GroupReader) -> None:
        """``reader`` joined or left its group: the group's other members here should
        heartbeat now rather than at their next interval."""
        ...


class DeadLetters(Protocol):
    """Where a classic queue's consumers send what they dead-letter (the topology)."""

    async def dead_letter(
        self, queue: str, partition: int, record: DecodedRecord, reason: str
    ) -> None:
        """Publish ``record`` to the queue's dead-letter exchange (nothing when it has
        none, or the exchange is gone), with RabbitMQ's ``x-death`` headers."""
        ...


class ChannelHandle(Protocol):
    """A channel as its connection sees it."""

    @property
    def number(self) -> int: ...

    def abort(self) -> None: ...


class ChannelConnection(Protocol):
    """What a channel needs from its connection."""

    @property
    def proto(self) -> ServerConnection: ...

    @property
    def write_paused(self) -> bool:
        """Deliver nothing now: the socket's write buffer is over its high-water mark, or
        the client is over its consumer_byte_rate."""
        ...

    @property
    def peer_host(self) -> str: ...

    @property
    def exclusive_queues(self) -> set[str]:
        """Queues that go when this connection does (mutable)."""
        ...

    def flush_soon(self) -> None: ...

    def maybe_resume_reading(self) -> None:
        """The channel's backlog shrank: reading may resume."""
        ...

    def channel_error(self, channel: ChannelHandle, exc: AmqpError) -> None:
        """Close ``channel`` with ``exc`` (the connection, for a hard error)."""
        ...

    def allowed(self, operation: AclOperation, resource_type: ResourceType, name: str) -> bool:
        """The ACLs' answer for this connection's principal (always yes without an
        authorizer); a refusal is audited."""
        ...
