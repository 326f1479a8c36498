"""GroupMember: one consumer-group member inside the broker (a KIP-848 client).

Theory of operation
-------------------
Every reader inside the broker that shares partitions with others — an HTTP consumer
instance, an AMQP queue consumer, later streams and connectors — is a member of a Kafka
consumer group using the consumer protocol (KIP-848) against the broker's own group
coordinator, exactly as a Kafka client would be: so Kafka consumers and in-broker readers
share one group, and every lag tool sees every reader.

``poll`` sends one ``ConsumerGroupHeartbeat`` when one is due (or forced): epoch 0 joins with
the subscription (topics, or a regex), later ones report the partitions the member owns.
The coordinator's server-side assignor answers with the member's target assignment.  The
member *reconciles* as KIP-848 asks: partitions taken away are revoked first — the owner's
``on_revoke`` runs (commit what was processed) before the member stops owning them — and the
next heartbeat, sent at once, tells the coordinator, which can then give them to another
member; partitions gained are adopted (``on_assign``).  A fenced or unknown member rejoins
with epoch 0 owning nothing.  ``leave`` sends epoch -1.

``start`` runs ``poll`` in a task at the coordinator's heartbeat interval (faster while a
rebalance is in progress), for owners that do not poll themselves.

Offsets: ``commit`` commits with the member's id and epoch (OffsetCommit semantics, durable
per the coordinator's log policy); ``fetch_committed`` reads the group's committed offsets
(``committed``: the same, synchronously, only where this broker coordinates the group).

In a cluster the group may be coordinated by another broker: then every call goes there
(``Core.group_owner`` says where; ``forwarding.py`` sends the Kafka requests), and the
member is to that coordinator what a Kafka consumer connected to this broker would be.
``Offsets`` does the same for readers that are not members (Kafka's ``assign()`` consumers:
generation -1, accepted while the group has no live members) — an AMQP ``basic.get``, an
MQTT session's positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from bayou.core.forwarding import FORWARDED_CLIENT_ID, GroupLink
from bayou.core.groups import (
    ConsumerGroup,
    ConsumerHeartbeatResponse,
    ConsumerState,
    GroupCoordinatorError,
    GroupDriver,
    GroupSettings,
    OffsetCommit,
)
from bayou.errors import ErrorCode
from bayou.storage.cluster import BrokerAddress

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
Committed = tuple[int, str | None]  # (next offset to read, metadata)
Listener = Callable[[frozenset[TopicPartition]], Awaitable[None]]

REBALANCE_TIMEOUT_MS = 30_000
REBALANCE_HEARTBEAT_S = 0.1
LEAVE_EPOCH = -1
E = ErrorCode


class MemberHost(Protocol):
    """What a member needs of the core (``Core``): the coordinator and the topics."""

    @property
    def groups(self) -> GroupDriver | None: ...

    @property
    def group_settings(self) -> GroupSettings: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def group_link(self) -> GroupLink: ...

    def group_driver(self, group_id: str | None = None) -> GroupDriver: ...

    def group_owner(self, group_id: str) -> GroupDriver | BrokerAddress: ...

    def topic_sizes(self) -> dict[str, int]: ...


class Offsets:
    """A group's committed offsets, for readers inside the broker."""

    client_id = FORWARDED_CLIENT_ID

    def __init__(self, core: MemberHost, group_id: str) -> None:
        self.core = core
        self.group_id = group_id

    async def commit(
        self,
        offsets: Mapping[TopicPartition, int | Committed],
        *,
        member_id: str = "",
        epoch: int = -1,
    ) -> None:
        """Commit; raises ``GroupCoordinatorError`` (the first partition's error too)."""
        if not offsets:
            return
        commits = []
        for (topic, p), value in offsets.items():
            offset, metadata = value if isinstance(value, tuple) else (value, "")
            commits.append(
                OffsetCommit(topic, p, offset, -1, metadata if metadata is not None else "")
            )
        owner = self.core.group_owner(self.group_id)
        group = self.group_id
        codes: list[ErrorCode]
        if isinstance(owner, BrokerAddress):
            codes = await self.core.group_link.commit(
                owner,
                group_id=group,
                member_id=member_id,
                epoch=epoch,
                commits=commits,
                client_id=self.client_id,
            )
        else:
            driver = owner
            codes = await driver.run(
                lambda now, _token: driver.coordinator.commit_offsets(
                    now,
                    group_id=group,
                    generation=epoch,
                    member_id=member_id,
                    instance_id=None,
                    offsets=commits,
                )
            )
        for code in codes:
            if code != E.NONE:
                raise GroupCoordinatorError(code)

    def committed(self, partitions: list[TopicPartition] | None) -> dict[TopicPartition, Committed]:
        """Committed offsets of ``partitions`` (None: all of the group's)."""
        error, fetched = (
            self.core.group_driver(self.group_id).read().fetch_offsets(self.group_id, partitions)
        )
        if error != E.NONE:
            raise GroupCoordinatorError(error)
        return {(f.topic, f.partition): (f.offset, f.metadata) for f in fetched if f.offset >= 0}

    async def fetch_committed(
        self, partitions: list[TopicPartition] | None
    ) -> dict[TopicPartition, Committed]:
        """Committed offsets of ``partitions`` (None: all of the group's), from whichever
        broker coordinates the group."""
        owner = self.core.group_owner(self.group_id)
        if isinstance(owner, BrokerAddress):
            error, fetched = await self.core.group_link.fetch(
                owner, group_id=self.group_id, partitions=partitions, client_id=self.client_id
            )
        else:
            error, fetched = owner.read().fetch_offsets(self.group_id, partitions)
        if error != E.NONE:
            raise GroupCoordinatorError(error)
        return {(f.topic, f.partition): (f.offset, f.metadata) for f in fetched if f.offset >= 0}


class GroupMember(Offsets):
    """A KIP-848 member of ``group_id`` (see the module docstring)."""

    def __init__(
        self,
        core: MemberHost,
        group_id: str,
        *,
        topics: list[str] | None = None,
        pattern: str | None = None,
        client_id: str,
        client_host: str,
        on_revoke: Listener | None = None,
        on_assign: Listener | None = None,
        rebalance_timeout_ms: int = REBALANCE_TIMEOUT_MS,
    ) -> None:
        super().__init__(core, group_id)
        self.topics = topics
        self.pattern = pattern
        self.client_id = client_id
        self.client_host = client_host
        self.on_revoke = on_revoke
        self.on_assign = on_assign
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.member_id = uuid.uuid4().hex
        self.epoch = 0
        self.assignment: frozenset[TopicPartition] = frozenset()
        self.interval_s = core.group_settings.consumer_heartbeat_interval_ms / 1000
        self.last_heartbeat = 0.0
        self.reconciling = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._left = False

    def __repr__(self) -> str:
        return f"GroupMember({self.group_id}, {self.member_id[:8]}, epoch {self.epoch})"

    def owned(self) -> dict[str, frozenset[int]]:
        out: dict[str, set[int]] = {}
        for topic, p in self.assignment:
            out.setdefault(topic, set()).add(p)
        return {t: frozenset(ps) for t, ps in out.items()}

    # ------------------------------------------------------------------ heartbeats

    async def poll(self, *, force: bool = False, spacing_s: float | None = None) -> bool:
        """Heartbeat when due (``spacing_s`` instead of the interval; ``force``: now) and
        reconcile; True when the assignment changed.  Raises ``GroupCoordinatorError``."""
        changed = False
        async with self._lock:
            for _ in range(3):  # a revocation is acknowledged by the next heartbeat, at once
                wait = self.interval_s if spacing_s is None else spacing_s
                if self._left or (not force and time.monotonic() - self.last_heartbeat < wait):
                    return changed
                target = await self._heartbeat()
                if target is None or target == self.assignment:
                    return changed
                changed = True
                lost = self.assignment - target
                gained = target - self.assignment
                if lost:
                    if self.on_revoke is not None:
                        with contextlib.suppress(GroupCoordinatorError):
                            await self.on_revoke(lost)
                    self.assignment = self.assignment - lost
                if gained:
                    self.assignment = self.assignment | gained
                    if self.on_assign is not None:
                        await self.on_assign(gained)
                if not lost:
                    return changed
                force = True
        return changed

    async def _heartbeat(self) -> frozenset[TopicPartition] | None:
        """One heartbeat; the target assignment when the coordinator sent one."""
        owner = self.core.group_owner(self.group_id)
        if isinstance(owner, BrokerAddress):
            return self._answered(await self._forward(owner, self.epoch), None)
        driver = owner
        sizes = self.core.topic_sizes()
        joining = self.epoch == 0
        resp = await driver.run(
            lambda now, _token: driver.coordinator.consumer_heartbeat(
                now,
                group_id=self.group_id,
                member_id=self.member_id,
                member_epoch=self.epoch,
                instance_id=None,
                rack_id=None,
                rebalance_timeout_ms=self.rebalance_timeout_ms,
                subscribed=self._subscribed(joining),
                server_assignor=None,
                owned=None if joining else self.owned(),
                client_id=self.client_id,
                client_host=self.client_host,
                topic_sizes=sizes,
                subscribed_regex=self.pattern,
            )
        )
        return self._answered(resp, driver)

    async def _forward(self, owner: BrokerAddress, epoch: int) -> ConsumerHeartbeatResponse:
        """The heartbeat (or, at ``LEAVE_EPOCH``, the leave) sent to the coordinating
        broker."""
        joining = epoch == 0
        leaving = epoch == LEAVE_EPOCH
        return await self.core.group_link.heartbeat(
            owner,
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=epoch,
            rebalance_timeout_ms=-1 if leaving else self.rebalance_timeout_ms,
            subscribed=None if leaving else self._subscribed(joining),
            subscribed_regex=None if leaving else self.pattern,
            owned=None if joining or leaving else self.owned(),
            client_id=self.client_id,
        )

    def _subscribed(self, joining: bool) -> list[str] | None:
        """The topic names a heartbeat sends: the list, or [] for a pattern's join."""
        return self.topics if self.topics is not None else ([] if joining else None)

    def _answered(
        self, resp: ConsumerHeartbeatResponse, driver: GroupDriver | None
    ) -> frozenset[TopicPartition] | None:
        """Take a heartbeat's answer; the target assignment when it sent one."""
        self.last_heartbeat = time.monotonic()
        if resp.error in (E.UNKNOWN_MEMBER_ID, E.FENCED_MEMBER_EPOCH):
            self.epoch = 0  # rejoin on the next heartbeat, owning nothing
            return frozenset()
        if resp.error != E.NONE:
            raise GroupCoordinatorError(resp.error, resp.message or "")
        self.member_id = resp.member_id or self.member_id
        moved = resp.member_epoch != self.epoch
        self.epoch = resp.member_epoch
        if resp.heartbeat_interval_ms > 0:
            self.interval_s = resp.heartbeat_interval_ms / 1000
        # while the group reconciles (partitions moving between members, this one waiting
        # for some another still holds), heartbeat quickly: they move in milliseconds.  A
        # coordinator on another broker does not say: an answer that moved the member does
        if driver is not None:
            group = driver.coordinator.group(self.group_id)
            self.reconciling = (
                isinstance(group, ConsumerGroup) and group.state != ConsumerState.STABLE
            )
        else:
            self.reconciling = moved or resp.assignment is not None
        if resp.assignment is None:
            return None
        return frozenset((t, p) for t, ps in resp.assignment.items() for p in ps)

    async def commit(
        self,
        offsets: Mapping[TopicPartition, int | Committed],
        *,
        member_id: str = "",
        epoch: int = -1,
    ) -> None:
        """Commit as this member (its id and epoch).  A member that is not in the group yet
        (epoch 0) joins first — unless it is inside its own ``poll`` (an ``on_revoke``
        committing), which holds the lock: then the commit goes as it stands."""
        if self.epoch == 0 and not self._left and not self._lock.locked():
            await self.poll(force=True)
        await super().commit(offsets, member_id=self.member_id, epoch=self.epoch)

    # ------------------------------------------------------------------ background

    def start(self) -> None:
        """Heartbeat in a task until ``stop`` (for owners that do not ``poll``)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._left:
            try:
                await self.poll(force=True)
            except GroupCoordinatorError as exc:
                if not self.core.stopping:
                    log.warning("%s: heartbeat failed: %s", self, exc)
            delay = REBALANCE_HEARTBEAT_S if self.reconciling else self.interval_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def leave(self) -> None:
        """Revoke everything (``on_revoke``) and leave the group (epoch -1)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        async with self._lock:
            if self._left:
                return
            self._left = True
            if self.assignment and self.on_revoke is not None:
                with contextlib.suppress(GroupCoordinatorError):
                    await self.on_revoke(self.assignment)
            self.assignment = frozenset()
            if self.epoch == 0:
                return
            with contextlib.suppress(GroupCoordinatorError):
                owner = self.core.group_owner(self.group_id)
                if isinstance(owner, BrokerAddress):
                    await self._forward(owner, LEAVE_EPOCH)
                    self.epoch = 0
                    return
            driver = self.core.groups
            if driver is None:
                return
            sizes = self.core.topic_sizes()
            with contextlib.suppress(GroupCoordinatorError):  # else the session timeout
                await driver.run(
                    lambda now, _token: driver.coordinator.consumer_heartbeat(
                        now,
                        group_id=self.group_id,
                        member_id=self.member_id,
                        member_epoch=LEAVE_EPOCH,
                        instance_id=None,
                        rack_id=None,
                        rebalance_timeout_ms=-1,
                        subscribed=None,
                        server_assignor=None,
                        owned=None,
                        client_id=self.client_id,
                        client_host=self.client_host,
                        topic_sizes=sizes,
                    )
                )
            self.epoch = 0
