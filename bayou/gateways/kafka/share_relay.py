"""ShareFetch and ShareAcknowledge for a share group another broker coordinates: relayed to
that broker over a connection of the client's own.

Theory of operation
-------------------
A Kafka share consumer sends ShareFetch and ShareAcknowledge to each partition's *leader*;
in a cluster a share group's state — membership, every share partition's records and
locks — lives in one broker, the group's coordinator (``docs/design/cluster.md``).  A
broker that leads a partition but does not coordinate the group relays the request, as it
is, to the coordinator and the coordinator's response, as it is, to the client (the records
are read by the coordinator from the shared engine; nothing is decoded here).

The share session is the client connection's.  So every client connection (and group) gets
**its own connection to the coordinator** (``ShareRelays``): the coordinator keys the
session by the relaying connection (``share_sessions.py``), and when the client's
connection closes — a consumer killed, a network cut — this broker closes the relaying
connection and the coordinator releases what the session held at once, as it does for a
client connected to it directly.  When this broker dies, its relaying connections close
with it (the kernel closes a killed process's sockets), with the same effect.  Locks run on
the coordinator as ever.

When the coordinator moves (``Core.group_coordinator`` names another broker) the old
relaying connection is closed — the old coordinator, if alive, releases the session — and
the request goes to the new one, which knows no session: the client is told
SHARE_SESSION_NOT_FOUND and opens a new one.  A coordinator that cannot be reached answers
the same (its session is gone with the connection), or COORDINATOR_NOT_AVAILABLE for a
request opening a session; clients retry both.  A relayed request that reaches a broker
which does not coordinate the group is refused there (NOT_COORDINATOR), never relayed
twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bayou.core.forwarding import (
    CALL_TIMEOUT_S,
    FORWARDED_CLIENT_ID,
    BrokerConnection,
    Credentials,
)
from bayou.core.groups import GroupCoordinatorError
from bayou.core.types import BrokerAddress
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.share_sessions import OPEN

log = logging.getLogger(__name__)

SHARE_FETCH = 78
Refusal = Callable[[Any, ErrorCode], Any]


class ShareRelays:
    """Every client connection's relaying connections, by group id."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._links: dict[object, dict[str, BrokerConnection]] = {}

    def __len__(self) -> int:
        return sum(len(links) for links in self._links.values())

    def link(self, ctx: RequestContext, group_id: str, address: BrokerAddress) -> BrokerConnection:
        """The connection relaying ``ctx``'s connection's requests of ``group_id`` to
        ``address`` (a new one when there was none, or one to another broker)."""
        owner = ctx.connection
        links = self._links.get(owner)
        if links is None:
            links = self._links[owner] = {}
            if owner is not None:
                owner.on_close(lambda: self.client_gone(owner))
        found = links.get(group_id)
        if found is not None and found.address != address:  # the coordinator moved
            found.close()
            found = None
        if found is None:
            found = links[group_id] = BrokerConnection(address, self._credentials)
        return found

    def drop(self, ctx: RequestContext, group_id: str) -> None:
        """Close the relaying connection of ``ctx``'s group (the coordinator releases what
        its session held)."""
        found = self._links.get(ctx.connection, {}).pop(group_id, None)
        if found is not None:
            found.close()

    def client_gone(self, owner: object) -> None:
        for link in self._links.pop(owner, {}).values():
            link.close()

    def close(self) -> None:
        for owner in list(self._links):
            self.client_gone(owner)


async def relay(ctx: RequestContext, request: Any, address: BrokerAddress, refuse: Refusal) -> Any:
    """``request`` (ShareFetch or ShareAcknowledge) answered by the coordinator at
    ``address``, over ``ctx``'s connection's relaying connection."""
    relays: ShareRelays = ctx.door.share_relays
    group_id = request.group_id or ""
    timeout = CALL_TIMEOUT_S
    if ctx.header.api_key == SHARE_FETCH:
        timeout += max(0, request.max_wait_ms) / 1000
    link = relays.link(ctx, group_id, address)
    try:
        return await link.call(
            ctx.header.api_key, ctx.version, request, FORWARDED_CLIENT_ID, timeout
        )
    except GroupCoordinatorError as exc:
        log.debug("share group %s: relaying to %d failed: %s", group_id, address.node_id, exc)
        relays.drop(ctx, group_id)
        if request.share_session_epoch == OPEN:
            return refuse(request, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        return refuse(request, ErrorCode.SHARE_SESSION_NOT_FOUND)
