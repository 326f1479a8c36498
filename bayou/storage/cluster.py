"""Brokers as a cluster over a shared engine: who is alive, who leads which partition, who
coordinates which group or transactional id.

Theory of operation
-------------------
``Cluster`` is what the core and the doors ask (synchronously: every request does) about
the other brokers.  An engine that only one broker can use (``local``, ``memory://``) runs
as ``SingleNode``: this broker is the whole cluster, leads every partition at epoch 0 and
coordinates every group.  An engine that brokers share (``postgres://…``) brings its own
implementation (``bayou/storage/postgres/cluster.py``): registration with a lease renewed by
heartbeat, leadership rows with epochs, placement by rendezvous hashing over the live node
ids (``rendezvous``) — every broker computes the same owner from the same set of live nodes,
without talking to the others.

``join`` is called once the doors listen (a broker is registered with the Kafka address
clients reach it at); ``leave`` at shutdown, before the engine closes.  ``on_change``
callbacks run with ``load=False`` as soon as the live brokers changed (the coordinators
drop what they no longer own) and with ``load=True`` once the change has settled (they load
what they gained from the state log); ``Core`` subscribes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from bayou.errors import ErrorCode


@dataclass(frozen=True)
class BrokerAddress:
    """A broker as clients reach it: its plain Kafka listener (brokers call each other
    there) and, when it has one, the port of its TLS listener on the same host."""

    node_id: int
    host: str
    port: int
    rack: str | None = None
    tls_port: int = 0  # 0: no TLS listener

    def on_listener(self, tls: bool) -> BrokerAddress | None:
        """This broker as a client of the plain or the TLS listener reaches it (None: it
        has no TLS listener), as Kafka answers each listener with its own addresses."""
        if not tls:
            return self
        if not self.tls_port:
            return None
        return BrokerAddress(self.node_id, self.host, self.tls_port, self.rack, self.tls_port)


@dataclass(frozen=True)
class Leadership:
    """A partition's leader as this broker knows it: ``leader`` -1 when none is live."""

    leader: int
    epoch: int


def rendezvous(key: str, nodes: Iterable[int]) -> int:
    """The node that owns ``key``: highest-random-weight hashing, so that a node leaving
    moves only its own keys, and one joining takes an even share from every other.
    -1 when there is no node."""
    best, best_weight = -1, b""
    for node in nodes:
        weight = hashlib.blake2b(f"{node}\x00{key}".encode(), digest_size=8).digest()
        if weight > best_weight:
            best, best_weight = node, weight
    return best


def partition_key(topic: str, index: int) -> str:
    return f"p\x00{topic}\x00{index}"


def coordinator_key(key_type: int, key: str) -> str:
    """Groups (0) and transactional ids (1) are placed as Kafka places them: by key."""
    return f"c{key_type}\x00{key}"


class Cluster(Protocol):
    """The core's view of the brokers (see the module docstring)."""

    node_id: int
    shared: bool  # other brokers share the engine (placement matters)

    async def join(self, address: BrokerAddress) -> None: ...

    async def leave(self) -> None: ...

    def brokers(self) -> list[BrokerAddress]:
        """The live brokers, this one included, by node id."""
        ...

    def broker(self, node_id: int) -> BrokerAddress | None: ...

    @property
    def controller_id(self) -> int: ...

    def leadership(self, topic: str, index: int) -> Leadership: ...

    def leads(self, topic: str, index: int) -> bool:
        """True while this broker holds the partition's leadership and its own lease."""
        ...

    def coordinator(self, key_type: int, key: str) -> int:
        """The node owning a group (0) or transactional id (1); -1: none live."""
        ...

    def coordinator_error(self, key_type: int, key: str) -> ErrorCode:
        """NONE when this broker serves the key now; NOT_COORDINATOR when another broker
        owns it (or this one lost its lease); COORDINATOR_LOAD_IN_PROGRESS while this one
        is taking it over."""
        ...

    def owns(self, key_type: int, key: str) -> bool:
        """Whether this broker's coordinators keep the key's state (they drop the rest)."""
        ...

    def active(self) -> bool:
        """Whether this broker's own lease runs (it may lead, coordinate, expire)."""
        ...

    def settled(self) -> bool:
        """Whether this broker's coordinators serve the live set it sees (its lease runs
        and no change of the live brokers is still being taken over)."""
        ...

    def on_change(self, callback: Callable[[bool], Awaitable[None]]) -> None: ...


class SingleNode:
    """One broker is the whole cluster (engines no other broker can open)."""

    shared = False

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self._address = BrokerAddress(node_id, "127.0.0.1", 9092)

    async def join(self, address: BrokerAddress) -> None:
        self._address = address

    async def leave(self) -> None:
        return None

    def brokers(self) -> list[BrokerAddress]:
        return [self._address]

    def broker(self, node_id: int) -> BrokerAddress | None:
        return self._address if node_id == self.node_id else None

    @property
    def controller_id(self) -> int:
        return self.node_id

    def leadership(self, topic: str, index: int) -> Leadership:
        return Leadership(self.node_id, 0)

    def leads(self, topic: str, index: int) -> bool:
        return True

    def coordinator(self, key_type: int, key: str) -> int:
        return self.node_id

    def coordinator_error(self, key_type: int, key: str) -> ErrorCode:
        return ErrorCode.NONE

    def owns(self, key_type: int, key: str) -> bool:
        return True

    def active(self) -> bool:
        return True

    def settled(self) -> bool:
        return True

    def on_change(self, callback: Callable[[bool], Awaitable[None]]) -> None:
        return None
