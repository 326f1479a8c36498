"""Which quota applies to a client, and how far over it the client is.

Theory of operation
-------------------
``Quotas`` (one per core) holds the ``QuotaStore`` and turns it into limits.  For each quota
type (produce bytes, fetch bytes, request time, partition mutations) a client — a user name
and a client id — gets the first quota set in Kafka's order (KIP-55), which also decides what
the quota is shared by (the *bucket*: the rate that is measured):

====  ==========================================  =================================
 #    entity                                      bucket (user, client id)
====  ==========================================  =================================
 1    user U, client-id C                         (U, C)
 2    user U, client-id ``<default>``             (U, C): each client of U its own
 3    user U                                      (U, ""): all clients of U together
 4    user ``<default>``, client-id C             (U, C)
 5    user ``<default>``, client-id ``<default>``   (U, C)
 6    user ``<default>``                          (U, "")
 7    client-id C                                 ("", C): all users of C together
 8    client-id ``<default>``                     ("", C)
====  ==========================================  =================================

``client(user, client_id)`` answers a ``ClientQuota`` with one ``Limit`` per type that
applies (None when none does — the cheap answer doors get while no quota is set: ``active``
is False and they do not even ask).  Each bucket is a ``SampledRate`` (``rate.py``) shared by
every connection in it; a ``Limit`` records into it and answers the throttle time.  The
answers are cached per (user, client id) until the store changes (``version``), so a door
asks once per connection and re-asks when ``version`` moves.

Connection rates (KIP-612): ``connection_throttle_ms(ip)`` records one connection for the
address under its ``connection_creation_rate`` — the address's own quota, else the
``<default>`` IP quota, else the broker option — and answers how long to hold the
connection before closing it when that is over the rate (the connection is then not
counted, as Kafka does).

Memory: rates, IP rates and cached answers are bounded (``MAX_RATES``, ``MAX_CACHED``).  A
rate idle for the whole window holds nothing a fresh one would not, so idle ones are dropped
first (and ``version`` moves, so nobody keeps recording into a dropped one); past the bound
after that, all are dropped — every client starts a fresh window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bayou.core.quotas.entities import (
    CLIENT_ID,
    CONNECTION_CREATION_RATE,
    CONSUMER_BYTE_RATE,
    CONTROLLER_MUTATION_RATE,
    IP,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    USER,
    DescribeFilter,
    Entity,
    QuotaRequestError,
    Values,
    canonical_ip,
)
from bayou.core.quotas.rate import SampledRate
from bayou.core.quotas.store import Alteration, QuotaStore
from bayou.storage.engine import StateStore

MAX_RATES = 50_000
MAX_CACHED = 10_000
CLIENT_TYPES = (
    PRODUCER_BYTE_RATE,
    CONSUMER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    CONTROLLER_MUTATION_RATE,
)
PERCENT_PER_SECOND = 100.0  # request time: one second on the loop is 100 % of it


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass(frozen=True)
class QuotaSettings:
    window_num: int = 11  # Kafka's quota.window.num
    window_size_s: int = 1  # quota.window.size.seconds
    connection_creation_rate_per_ip: int = 0  # connections/s per address; 0: no limit


Bucket = tuple[str, str]
K = TypeVar("K")


def resolve(configured: Mapping[Entity, float], user: str, client_id: str) -> (
    tuple[Bucket, float] | None
):  # fmt: skip
    """The quota for (user, client id) among ``configured`` (entity → value, one quota
    type), in Kafka's order, with the bucket it is measured in (see the module docstring)."""
    u, c = (USER, user), (CLIENT_ID, client_id)
    du, dc = (USER, None), (CLIENT_ID, None)
    both = (user, client_id)
    for entity, bucket in (
        ((u, c), both),
        ((u, dc), both),
        ((u,), (user, "")),
        ((du, c), both),
        ((du, dc), both),
        ((du,), (user, "")),
        ((c,), ("", client_id)),
        ((dc,), ("", client_id)),
    ):
        bound = configured.get(entity)
        if bound is not None:
            return bucket, bound
    return None


class Limit:
    """One quota of one client: its bound and the shared rate it is measured in."""

    __slots__ = ("_clock", "_settings", "bound", "rate")

    def __init__(
        self, rate: SampledRate, bound: float, settings: QuotaSettings, clock: Callable[[], float]
    ) -> None:
        self.rate = rate
        self.bound = bound
        self._settings = settings
        self._clock = clock

    def record(self, value: float, cap_ms: float | None = None) -> int:
        """Record ``value``; the throttle time (ms) it leaves the client with."""
        now = self._clock()
        self.rate.record(value, now)
        if cap_ms is None:
            return self.rate.throttle_ms(self.bound, now)
        return self.rate.throttle_ms(self.bound, now, cap_ms)

    def record_no_throttle(self, value: float) -> None:
        self.rate.record(value, self._clock())

    def throttle_ms(self) -> int:
        """The throttle time now, recording nothing."""
        return self.rate.throttle_ms(self.bound, self._clock())

    @property
    def window_value(self) -> float:
        """Most that one request may carry without being throttled for certain (a fetch is
        capped at it, as Kafka caps it)."""
        s = self._settings
        return self.bound * max(1, s.window_num - 1) * s.window_size_s


class ClientQuota:
    """The limits that apply to one (user, client id): None where no quota of that type is
    set."""

    __slots__ = ("fetch", "mutations", "produce", "request", "request_cap_ms")

    def __init__(
        self,
        produce: Limit | None,
        fetch: Limit | None,
        request: Limit | None,
        mutations: Limit | None,
        request_cap_ms: float,
    ) -> None:
        self.produce = produce
        self.fetch = fetch
        self.request = request
        self.mutations = mutations
        self.request_cap_ms = request_cap_ms

    def request_time(self, seconds: float) -> int:
        """Record ``seconds`` of request handling; the throttle time (ms).  Kafka bounds
        this one by a window: a slow request is not a reason to stop a client for long."""
        if self.request is None:
            return 0
        return self.request.record(seconds * PERCENT_PER_SECOND, self.request_cap_ms)

    def request_time_unthrottled(self, seconds: float) -> None:
        """Record ``seconds`` of request handling that counts from the next request on."""
        if self.request is not None:
            self.request.record_no_throttle(seconds * PERCENT_PER_SECOND)


class Quotas:
    """See the module docstring."""

    def __init__(
        self, settings: QuotaSettings | None = None, clock: Callable[[], float] = monotonic_ms
    ) -> None:
        self.settings = settings or QuotaSettings()
        self.store = QuotaStore()
        self.clock = clock
        self.active = False  # some user or client-id quota is set
        self.version = 0
        self.held_connections = 0  # refused connections a door holds before closing them
        self._by_type: dict[str, dict[Entity, float]] = {t: {} for t in CLIENT_TYPES}
        self._ip: dict[str, float] = {}  # canonical address or "" (<default>) → rate
        self._rates: dict[tuple[str, str, str], SampledRate] = {}
        self._ip_rates: dict[str, SampledRate] = {}
        self._cached: dict[tuple[str, str], ClientQuota | None] = {}

    @property
    def window_ms(self) -> float:
        return self.settings.window_size_s * 1000.0

    async def open(self, state: StateStore) -> None:
        await self.store.open(state, self._changed)
        self._changed()

    # -- the store -------------------------------------------------------------------------

    def describe(self, flt: DescribeFilter) -> list[tuple[Entity, Values]]:
        return self.store.describe(flt)

    async def alter(
        self, alterations: Sequence[Alteration], validate_only: bool = False
    ) -> list[QuotaRequestError | None]:
        results = await self.store.alter(alterations, validate_only)
        self._changed()
        return results

    def _changed(self) -> None:
        by_type: dict[str, dict[Entity, float]] = {t: {} for t in CLIENT_TYPES}
        ip: dict[str, float] = {}
        for entity, values in self.store.entities.items():
            if entity[0][0] == IP:
                if CONNECTION_CREATION_RATE in values:
                    ip[entity[0][1] or ""] = values[CONNECTION_CREATION_RATE]
                continue
            for key, value in values.items():
                if key in by_type:
                    by_type[key][entity] = value
        self._by_type = by_type
        self._ip = ip
        self.active = any(by_type.values())
        self._cached.clear()
        self.version += 1

    # -- clients ---------------------------------------------------------------------------

    def client(self, user: str, client_id: str) -> ClientQuota | None:
        """The limits of (user name, client id), or None when no quota applies."""
        key = (user, client_id)
        try:
            return self._cached[key]
        except KeyError:
            pass
        produce, fetch, request, mutations = (self._limit(t, user, client_id) for t in CLIENT_TYPES)
        found = (
            ClientQuota(produce, fetch, request, mutations, self.window_ms)
            if produce or fetch or request or mutations
            else None
        )
        if len(self._cached) >= MAX_CACHED:
            self._cached.clear()
        self._cached[key] = found
        return found

    def _limit(self, quota_type: str, user: str, client_id: str) -> Limit | None:
        configured = self._by_type[quota_type]
        if not configured:
            return None
        found = resolve(configured, user, client_id)
        if found is None:
            return None
        bucket, bound = found
        key = (quota_type, *bucket)
        rate = self._rates.get(key)
        if rate is None:
            now = self.clock()
            if len(self._rates) >= MAX_RATES:
                self._sweep(self._rates, now)
            rate = self._rates[key] = SampledRate(self.settings.window_num, self.window_ms, now)
        return Limit(rate, bound, self.settings, self.clock)

    def _sweep(self, rates: dict[K, SampledRate], now: float) -> None:
        """Drop idle rates (all of them if that is not enough) and make every door ask
        again, so nobody keeps recording into a dropped one."""
        idle = self.settings.window_num * self.window_ms
        for key in [k for k, r in rates.items() if now - r.last_ms >= idle]:
            del rates[key]
        if len(rates) >= MAX_RATES:
            rates.clear()
        self._cached.clear()
        self.version += 1

    # -- connections -----------------------------------------------------------------------

    def connection_throttle_ms(self, host: str) -> int:
        """Count a new connection from ``host``; 0 to accept it, else how long to hold it
        before closing it (it is then not counted)."""
        default = self.settings.connection_creation_rate_per_ip
        if not self._ip and not default:
            return 0
        ip = canonical_ip(host) or host
        bound = self._ip.get(ip)
        if bound is None:
            bound = self._ip.get("")
        if bound is None:
            if not default:
                return 0
            bound = float(default)
        now = self.clock()
        rate = self._ip_rates.get(ip)
        if rate is None:
            if len(self._ip_rates) >= MAX_RATES:
                self._sweep(self._ip_rates, now)
            rate = self._ip_rates[ip] = SampledRate(self.settings.window_num, self.window_ms, now)
        rate.record(1.0, now)
        throttle = rate.throttle_ms(bound, now)
        if throttle:
            rate.record(-1.0, now)
        return throttle
