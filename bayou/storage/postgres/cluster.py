"""Brokers sharing one PostgreSQL database as a cluster: leases, leadership, placement.

Theory of operation
-------------------
Every broker on the database (``bayou serve --storage postgres://… --node-id N``) runs one
``PgCluster``; ``docs/design/cluster.md`` is the long form.

**Registration.**  ``join`` writes the broker's row in ``bayou.brokers`` (node id, a fresh
incarnation id, the advertised Kafka host and port) with ``lease_until = now() + lease``,
PostgreSQL's clock, so brokers' clocks never matter.  A row of the same node id whose lease
is still running belongs to a live broker (or one killed less than a lease ago): ``join``
waits for it to lapse, at most a lease, then refuses to start.  Every heartbeat renews the
lease; a broker is *live* while its lease runs, and Metadata lists exactly the live brokers.
This broker's own lease, as it knows it, ends ``0.9 * lease`` after it *sent* its last
successful renewal (before PostgreSQL stamped it, so never later than the others think):
past that it leads nothing and coordinates nothing, so it stops acknowledging within its
lease when it is cut off from the database.  ``leave`` ends the lease at once (a clean
shutdown moves everything immediately).

**Leadership.**  Each heartbeat also reads the live brokers and every partition's
``(leader_id, leader_epoch)``.  A partition's leader is ``rendezvous(partition, live node
ids)`` — every broker computes the same from the same live set.  A broker claims the
partitions that hash to it and that it does not hold yet: one ``UPDATE`` sets ``leader_id``
to itself and ``leader_epoch + 1``, and the engine's handle holds the new epoch, *fenced*:
its appends commit only while the row still has that epoch (``writer.py``), so a broker that
lost a partition — to a broker that claimed it after this one's lease lapsed, or after a
join moved it — can no longer commit to it, whatever it believes.  The previous leader keeps
leading until the new one claims (no gap while a broker joins); a dead broker's partitions
are claimed by the next heartbeat after its lease lapsed.  Partitions this broker does not
lead are unfenced: the HTTP, MQTT and AMQP doors' appends go through under the partition's
row lock (offsets stay unique and ordered); Kafka's Produce, Fetch and ListOffsets answer
NOT_LEADER_OR_FOLLOWER there, and clients follow the leader in Metadata.

**Coordinators.**  A group or transactional id is owned by ``rendezvous(key, live)``.  When
the live set changes, the callbacks registered with ``on_change`` run at once (the core
drops the groups it no longer owns, so its timers never write for them), and the new set
becomes the *serving* set only ``SETTLE_HEARTBEATS`` heartbeats later, once every previous
owner has seen the change and stopped; the core then loads the groups it gained from the
state log.  Meanwhile ``coordinator_error`` answers COORDINATOR_LOAD_IN_PROGRESS for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from bayou.errors import ErrorCode, InvalidConfig, KafkaError
from bayou.log_limits import RateLimitedLog
from bayou.storage.cluster import (
    BrokerAddress,
    Leadership,
    coordinator_key,
    partition_key,
    rendezvous,
)
from bayou.storage.engine import PartitionKey
from bayou.storage.postgres.notify import CHANNEL, leaders_payload

if TYPE_CHECKING:
    from bayou.storage.postgres.engine import PostgresEngine

log = logging.getLogger(__name__)
limited = RateLimitedLog(log, 10.0)

OWN_LEASE_SHARE = 0.9  # of the lease this broker trusts its own
SETTLE_HEARTBEATS = 2

_RENEW = """UPDATE bayou.brokers SET lease_until = now() + %s * interval '1 millisecond',
    host = %s, port = %s, tls_port = %s WHERE node_id = %s AND incarnation = %s
    RETURNING node_id"""
_REGISTER = """INSERT INTO bayou.brokers (node_id, incarnation, host, port, rack, lease_until,
        tls_port)
    VALUES (%s, %s, %s, %s, %s, now() + %s * interval '1 millisecond', %s)
    ON CONFLICT (node_id) DO UPDATE SET incarnation = excluded.incarnation,
        host = excluded.host, port = excluded.port, rack = excluded.rack,
        tls_port = excluded.tls_port,
        started_at = now(), lease_until = excluded.lease_until
    WHERE bayou.brokers.lease_until < now() OR bayou.brokers.incarnation = excluded.incarnation
    RETURNING node_id"""
_LIVE = """SELECT node_id, host, port, rack, tls_port FROM bayou.brokers
    WHERE lease_until > now() ORDER BY node_id"""
_LEADERS = """SELECT p.id, t.name, p.index, p.leader_id, p.leader_epoch FROM bayou.partitions p
    JOIN bayou.topics t ON t.topic_id = p.topic_id WHERE t.kind = 'topic'"""
_CLAIM = """UPDATE bayou.partitions SET leader_epoch = leader_epoch + 1, leader_id = %s
    WHERE id = ANY(%s) RETURNING id, leader_epoch"""

Callback = Callable[[bool], Awaitable[None]]  # load: also load what was gained


class PgCluster:
    """The ``Cluster`` of brokers sharing a PostgreSQL engine (see the module docstring)."""

    shared = True

    def __init__(
        self, engine: PostgresEngine, node_id: int, *, lease_ms: int, heartbeat_ms: int
    ) -> None:
        if heartbeat_ms * 2 > lease_ms:
            raise InvalidConfig("the cluster heartbeat must be at most half the lease")
        self.node_id = node_id
        self._engine = engine
        self.lease_ms = lease_ms
        self.heartbeat_s = heartbeat_ms / 1000
        self.incarnation = uuid.uuid4()
        self._address: BrokerAddress | None = None
        self._live: dict[int, BrokerAddress] = {}
        self._serving: tuple[int, ...] = ()  # the live set the coordinators are loaded for
        self._settle_at: float | None = None  # when the live set becomes the serving one
        self._leaders: dict[PartitionKey, Leadership] = {}
        self._claimed: dict[int, int] = {}  # partition id -> the epoch this broker claimed
        self._lease_end = 0.0  # monotonic: this broker's own lease, as it knows it
        self._heard = 0.0  # monotonic: when the last heartbeat that read the live set began
        self._callbacks: list[Callback] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def join(self, address: BrokerAddress) -> None:
        self._address = address
        engine = self._engine
        engine.fence_appends = False
        for handle in engine.all_partitions():
            if not handle.internal:
                handle.fenced = False
        engine.on_topics_changed = self._wake.set
        deadline = time.monotonic() + self.lease_ms / 1000 + self.heartbeat_s
        while not await self._register():
            if time.monotonic() > deadline:
                raise InvalidConfig(
                    f"node id {self.node_id} is held by a live broker: give each broker its "
                    "own --node-id"
                )
            log.info("node id %d is still leased (a previous run?): waiting", self.node_id)
            await asyncio.sleep(self.heartbeat_s)
        await self._tick()
        # coordinators serve only once every previous owner has seen this broker (at once
        # when no other broker is live: a previous owner's lease has lapsed, it stopped)
        self._serving = ()
        alone = set(self._live) <= {self.node_id}
        self._settle_at = time.monotonic() + (0 if alone else SETTLE_HEARTBEATS * self.heartbeat_s)
        self._task = asyncio.create_task(self._run())
        log.info(
            "joined the cluster as node %d: live brokers %s",
            self.node_id,
            ", ".join(str(n) for n in self._live),
        )

    async def leave(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            # on Python < 3.12 ``wait_for`` swallows a cancel that lands as its wait ends (a
            # NOTIFY of another broker leaving at the same moment sets ``_wake``): the loop
            # then goes on, so cancel until the task is really done
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
            await asyncio.gather(task, return_exceptions=True)
        self._lease_end = 0.0
        with contextlib.suppress(KafkaError):
            await self._engine.db.run(
                "leaving the cluster",
                "UPDATE bayou.brokers SET lease_until = now() - interval '1 millisecond' "
                "WHERE node_id = %s AND incarnation = %s",
                (self.node_id, self.incarnation),
            )
        await self._announce()

    def on_change(self, callback: Callback) -> None:
        self._callbacks.append(callback)
        self._wake.set()  # a settle that is due can run now

    # ------------------------------------------------------------------ what the core asks

    def brokers(self) -> list[BrokerAddress]:
        """The live brokers; this one alone while its lease has lapsed (cut off from the
        database it leads nothing, but clients keep a broker to ask again)."""
        if not self._live and self._address is not None:
            return [self._address]
        return list(self._live.values())

    def broker(self, node_id: int) -> BrokerAddress | None:
        return self._live.get(node_id)

    @property
    def controller_id(self) -> int:
        return min(self._live, default=self.node_id)

    def leadership(self, topic: str, index: int) -> Leadership:
        found = self._leaders.get((topic, index))
        if found is None:
            return Leadership(-1, 0)
        if found.leader == self.node_id and not self._lease_valid():
            return Leadership(-1, found.epoch)
        return found

    def leads(self, topic: str, index: int) -> bool:
        if not self._lease_valid():
            return False
        handle = self._engine.topic_partition(topic, index)
        return (
            handle is not None
            and handle.fenced
            and self._claimed.get(handle.id, -1) == handle.leader_epoch
        )

    def coordinator(self, key_type: int, key: str) -> int:
        return rendezvous(coordinator_key(key_type, key), self._live)

    def coordinator_error(self, key_type: int, key: str) -> ErrorCode:
        if not self._lease_valid() or self.coordinator(key_type, key) != self.node_id:
            return ErrorCode.NOT_COORDINATOR
        if rendezvous(coordinator_key(key_type, key), self._serving) != self.node_id:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        return ErrorCode.NONE

    def owns(self, key_type: int, key: str) -> bool:
        """Whether this broker owns the key by the live set (what the coordinators keep)."""
        return self._lease_valid() and self.coordinator(key_type, key) == self.node_id

    def active(self) -> bool:
        return self._lease_valid()

    def settled(self) -> bool:
        """Also: the live set was read less than two heartbeats ago.  A broker whose
        heartbeats fail keeps its lease for a while with a view that may be stale; two
        brokers that both answer True then hold the same view (a change one has settled on
        is at least two heartbeats old, so the other's last read saw it too)."""
        return (
            self._lease_valid()
            and self._settle_at is None
            and bool(self._live)
            and self._serving == tuple(self._live)
            and time.monotonic() - self._heard < SETTLE_HEARTBEATS * self.heartbeat_s
        )

    def _lease_valid(self) -> bool:
        return time.monotonic() < self._lease_end

    # ------------------------------------------------------------------ the heartbeat

    async def _register(self) -> bool:
        assert self._address is not None
        a = self._address
        sent = time.monotonic()
        try:
            async with self._engine.db.connection("registering the broker") as conn:
                cur = await conn.execute(
                    _REGISTER,
                    (
                        self.node_id,
                        self.incarnation,
                        a.host,
                        a.port,
                        a.rack,
                        self.lease_ms,
                        a.tls_port,
                    ),
                )
                row = await cur.fetchone()
        except psycopg.Error as exc:
            raise InvalidConfig(f"cannot register the broker: {exc}") from None
        if row is None:
            return False
        self._lease_end = sent + self.lease_ms / 1000 * OWN_LEASE_SHARE
        await self._announce()
        return True

    async def _announce(self) -> None:
        """Tell the other brokers to look again now (not at their next heartbeat)."""
        with contextlib.suppress(KafkaError, psycopg.Error):
            await self._engine.db.run(
                "announcing the cluster change",
                "SELECT pg_notify(%s, %s)",
                (CHANNEL, leaders_payload(self._engine.sender)),
            )

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
            self._wake.clear()
            try:
                await self._tick()
            except (KafkaError, psycopg.Error) as exc:
                limited.warning("heartbeat", "cluster heartbeat failed: %s", exc)
                self._lost_if_lapsed()
            except Exception:
                log.exception("cluster heartbeat failed")
                self._lost_if_lapsed()
            await self._settle()

    def _lost_if_lapsed(self) -> None:
        """Cut off from the database past its own lease: this broker leads and coordinates
        nothing (the others have taken over); it rejoins when a heartbeat succeeds."""
        if self._lease_valid() or not self._live:
            return
        log.warning("node %d: its lease lapsed without a heartbeat; serving nothing", self.node_id)
        self._live = {}
        self._leaders = {}
        self._settle_at = None
        self._serving = ()
        self._notify()

    async def _tick(self) -> None:
        assert self._address is not None
        a = self._address
        # stalled past its own lease (the others may have taken everything over): serve
        # nothing until this heartbeat's view has settled, as a broker joining
        self._lost_if_lapsed()
        sent = time.monotonic()
        async with self._engine.db.connection("cluster heartbeat") as conn:
            cur = await conn.execute(
                _RENEW,
                (self.lease_ms, a.host, a.port, a.tls_port, self.node_id, self.incarnation),
            )
            renewed = await cur.fetchone() is not None
            if renewed:
                self._lease_end = sent + self.lease_ms / 1000 * OWN_LEASE_SHARE
            cur = await conn.execute(_LIVE)
            live_rows = await cur.fetchall()
            cur = await conn.execute(_LEADERS)
            rows = await cur.fetchall()
            live = {
                int(n): BrokerAddress(int(n), host, int(port), rack, int(tls_port))
                for n, host, port, rack, tls_port in live_rows
            }
            claimed = await self._claim(conn, rows, live) if self._lease_valid() else {}
        if not renewed:
            limited.warning("lease", "node %d lost its lease: registering again", self.node_id)
            with contextlib.suppress(InvalidConfig):
                await self._register()
        self._apply(rows, live, claimed)
        self._heard = sent  # the view read since ``sent`` is the one in force now

    async def _claim(
        self, conn: Any, rows: list[tuple[Any, ...]], live: dict[int, BrokerAddress]
    ) -> dict[int, int]:
        """Claim the partitions that hash to this broker and that it does not hold.

        A partition is held when the table names this broker at the epoch it claimed *and*
        its engine handle is fenced at that epoch.  One the engine has not loaded yet (a
        topic another broker just created: its rows are read here before the catalog's
        reload) is not claimed: a claim without a handle would fence nothing, and the next
        heartbeat, finding the table already naming this broker, would never claim it
        again — the partition led by no one until the live set changed."""
        me = self.node_id
        wanted = [
            int(pid)
            for pid, name, index, leader, epoch in rows
            if rendezvous(partition_key(name, index), live) == me
            and (leader != me or self._claimed.get(pid) != epoch or not self._holds(pid))
            and self._engine.partition_by_id(pid) is not None
        ]
        if not wanted:
            return {}
        async with conn.transaction():
            cur = await conn.execute(_CLAIM, (me, wanted))
            claimed = {int(pid): int(epoch) for pid, epoch in await cur.fetchall()}
            await conn.execute(
                "SELECT pg_notify(%s, %s)", (CHANNEL, leaders_payload(self._engine.sender))
            )
        for pid, epoch in claimed.items():
            handle = self._engine.partition_by_id(pid)
            if handle is not None:
                handle.leader_epoch = epoch
                handle.fenced = True
                handle.producers_at = None  # reload the producer state under the row lock
        self._claimed.update(claimed)
        return claimed

    def _holds(self, pid: int) -> bool:
        """Whether the engine's handle of ``pid`` is fenced at the epoch claimed for it."""
        handle = self._engine.partition_by_id(pid)
        return (
            handle is not None
            and handle.fenced
            and handle.leader_epoch == self._claimed.get(pid, -1)
        )

    def _apply(
        self, rows: list[tuple[Any, ...]], live: dict[int, BrokerAddress], claimed: dict[int, int]
    ) -> None:
        me = self.node_id
        leaders: dict[PartitionKey, Leadership] = {}
        for pid, name, index, leader, epoch in rows:
            if pid in claimed:
                leader, epoch = me, claimed[pid]
            elif (leader != me or self._claimed.get(pid) != epoch) and self._claimed.pop(
                pid, None
            ) is not None:  # taken over by another broker
                handle = self._engine.partition_by_id(pid)
                if handle is not None:
                    handle.fenced = False
                    log.info("%s-%d is led by node %d now", name, index, leader)
            leaders[(name, index)] = Leadership(leader if leader in live else -1, epoch)
        self._leaders = leaders
        if tuple(live) != tuple(self._live):
            log.info("live brokers: %s", ", ".join(str(n) for n in live) or "none (lease lost)")
            self._live = live
            self._settle_at = time.monotonic() + SETTLE_HEARTBEATS * self.heartbeat_s
            self._notify()

    async def _settle(self) -> None:
        """The live set has been stable long enough: the coordinators serve it."""
        if self._settle_at is None or time.monotonic() < self._settle_at or not self._callbacks:
            return  # (nobody to load yet: the core subscribes right after join)
        self._settle_at = None
        target = tuple(self._live)
        for result in await asyncio.gather(
            *(callback(True) for callback in self._callbacks), return_exceptions=True
        ):
            if isinstance(result, BaseException):
                log.error("a coordinator failed to load", exc_info=result)
        self._serving = target

    def _notify(self) -> None:
        """The live set changed: the coordinators drop what they no longer own, now."""
        for callback in self._callbacks:
            task = asyncio.ensure_future(callback(False))
            task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a coordinator failed to follow the cluster", exc_info=task.exception())
