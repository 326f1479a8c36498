"""Client quotas at the doors: who a connection's client is to the quotas, and the mute.

Theory of operation
-------------------
A quota applies to a (user, client id) (``bayou/core/quotas``).  Every door names them the
same way: the user is the principal's name (``User:alice`` → ``alice``), ``ANONYMOUS`` where
no one logged in; the client id is Kafka's request header client id, the MQTT client id,
the AMQP ``connection_name`` client property, and empty on HTTP (an HTTP quota is set on a
user, or on ``user X, client-id <default>``).  ``ConnectionQuota`` is one connection's answer
from ``Quotas.client``, asked again only when the principal, the client id or the store's
version changes — while no quota is set, ``Quotas.active`` is false and doors ask nothing.

Kafka clients are told to wait (``throttle_time_ms``) and are muted besides
(``kafka/throttling.py``).  MQTT and AMQP have no such field, so the broker makes the
client wait the only way TCP allows: the bytes of every message a client publishes are
recorded against its ``producer_byte_rate`` and, over it, the connection is *muted* — its
socket is not read for the throttle time (``Mute``).  The client's writes then block on a
full TCP window: it slows down to the quota, and nothing queues in the broker meanwhile.
Deliveries to MQTT and AMQP consumers are recorded against ``consumer_byte_rate`` and,
over it, the connection's deliveries pause for the throttle time (unsent messages stay in
the log, not in memory).  On HTTP a produce request's records count against
``producer_byte_rate`` and a consume response's against ``consumer_byte_rate``; the
response is held for the throttle time (``hold``), which an HTTP client — one request at
a time per connection — experiences as a slower broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bayou.core.quotas import ClientQuota, Quotas

ANONYMOUS_USER = "ANONYMOUS"


def user_name(principal: str | None) -> str:
    """A principal's user name as quotas name users (``User:alice`` → ``alice``)."""
    if principal is None:
        return ANONYMOUS_USER
    return principal[5:] if principal.startswith("User:") else principal


class ConnectionQuota:
    """One connection's answer from ``Quotas.client``, asked again only when it may change."""

    __slots__ = ("_client_id", "_principal", "_quota", "_quotas", "_version")

    def __init__(self, quotas: Quotas) -> None:
        self._quotas = quotas
        self._version = -1
        self._principal: str | None = None
        self._client_id: str | None = None
        self._quota: ClientQuota | None = None

    def get(self, principal: str | None, client_id: str | None) -> ClientQuota | None:
        quotas = self._quotas
        if not quotas.active:
            return None
        if (
            quotas.version != self._version
            or principal != self._principal
            or client_id != self._client_id
        ):
            self._version = quotas.version
            self._principal = principal
            self._client_id = client_id
            self._quota = quotas.client(user_name(principal), client_id or "")
        return self._quota


class Mute:
    """A connection muted by a quota: ``start(ms)`` mutes it (or keeps it muted longer) and
    calls ``changed`` — then again when the time is up and ``active`` is false."""

    __slots__ = ("_changed", "_handle", "_until")

    def __init__(self, changed: Callable[[], None]) -> None:
        self._changed = changed
        self._handle: asyncio.TimerHandle | None = None
        self._until = 0.0

    @property
    def active(self) -> bool:
        return self._handle is not None

    def start(self, throttle_ms: int) -> None:
        if throttle_ms <= 0:
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + throttle_ms / 1000
        if until <= self._until:
            return
        self._until = until
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(until, self._ended)
        self._changed()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ended(self) -> None:
        self._handle = None
        self._changed()


async def hold(throttle_ms: int) -> None:
    """Hold an HTTP response for a quota's throttle time."""
    if throttle_ms > 0:
        await asyncio.sleep(throttle_ms / 1000)


def throttle_ms(
    quotas: Quotas, principal: str | None, client_id: str, produced: int = 0, fetched: int = 0
) -> int:
    """Record ``produced`` and ``fetched`` bytes of one exchange; the throttle time they
    leave the client with (0 while no quota applies) — for the HTTP door."""
    if not quotas.active:
        return 0
    quota = quotas.client(user_name(principal), client_id)
    if quota is None:
        return 0
    throttle = 0
    if produced and quota.produce is not None:
        throttle = quota.produce.record(produced)
    if fetched and quota.fetch is not None:
        throttle = max(throttle, quota.fetch.record(fetched))
    return throttle
