"""Core: all a door (Kafka, HTTP, MQTT, AMQP) or a layer above them sees of the broker.

Theory of operation
-------------------
The core is the storage engine plus the broker's policies and coordinators, behind one
typed async facade:

- **topics**: ``topics()`` (a snapshot), ``topic(name)`` (auto-creating when the broker
  allows it, as Kafka's Metadata and Produce do — concurrent first uses of one new topic
  share one creation), create/delete/grow/alter — every change off the event loop (the
  engine's business);
- **data**: ``append``/``append_many`` (durable per the topic's policy when they return),
  ``partition`` handles, ``cursor`` (the one read path) and ``wait_any``;
- **groups**: the group coordinator's driver (``group_driver``), ``group_member`` (one
  KIP-848 member inside the broker) and ``offsets`` (a group's committed offsets for
  readers that are not members);
- **transactions**: the transaction coordinator's driver (``transaction_driver``), which
  has markers written by each partition's leader (``write_marker`` here, WriteTxnMarkers
  through ``txn_link`` elsewhere) and offsets completed by each group's coordinator
  (``complete_offsets``); ``marker_fence`` guards a leader's verification with another
  broker's coordinator;
- ``security``: users, ACLs, logins and the authorizer every door asks
  (``bayou/core/security/``);
- ``quotas``: client quotas (byte rates, request time, connection rates) every door asks
  (``bayou/core/quotas/``);
- **share groups** (KIP-932): the share coordinator's driver (``share_driver``) and
  ``share_consumer`` (one member inside the broker: queue semantics for doors that are not
  Kafka); group ids are one name space shared with the group coordinator;
- ``metrics``: the broker's metrics (``bayou/observability/``), which the doors count their
  traffic and requests into;
- ``request_budget``: the broker-wide budget of request bytes in flight that every door's
  connections report their unfinished requests to (``queued.max.request.bytes``);
- ``background`` runs a fire-and-forget task with a reference kept; ``stopping`` is set when
  the broker shuts down (long polls end, coordinators refuse new work).

State logs: ``state`` is the engine's ``StateStore`` as the core hands it out — on a shared
engine each log is followed, and what other brokers write to it is handed to its store's
own replay path (``state_follow.py``; a door asks with ``follow_state_log``).

Lifecycle: ``start`` loads the users, ACLs and quotas, the group coordinator, the share
coordinator, then the transaction coordinator (each replaying its state log; transactions a
crash left decided get their markers now) and starts the request budget's stall sweep;
``begin_stop`` sets ``stopping`` and wakes every long poll, so the doors can stop; ``close``
stops the transaction coordinator (marker writes in flight finish, bounded), answers parked
group requests and stops the core's tasks.  The engine is opened before ``start`` and closed
after ``close``.

The core imports no door: ``bayou.app`` builds the engine, the core and the doors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayou.config import TopicConfig
from bayou.core.cursor import Cursor, Isolation, Reset, StartSpec, resolve_start, wait_any
from bayou.core.forwarding import GroupLink, TxnLink
from bayou.core.group_member import GroupMember, Listener, Offsets
from bayou.core.groups import GroupCoordinatorError, GroupDriver, GroupSettings
from bayou.core.groups.store import TOPIC as GROUPS_LOG
from bayou.core.quotas import Quotas
from bayou.core.request_budget import RequestBudget
from bayou.core.security import Security
from bayou.core.shares import (
    SHARES_LOG,
    ShareConsumer,
    ShareCoordinatorError,
    ShareDriver,
    ShareRemote,
    ShareSettings,
)
from bayou.core.state_follow import Apply as ApplyEntries
from bayou.core.state_follow import FollowingStateStore, caught_up, follow
from bayou.core.transactions import (
    COORDINATOR_EPOCH,
    TRANSACTIONS_LOG,
    EngineMarkers,
    MarkerFence,
    TxnCoordinatorError,
    TxnDriver,
    TxnSettings,
)
from bayou.errors import ErrorCode, InvalidTopic, KafkaError, UnknownTopicOrPartition
from bayou.observability import BrokerMetrics
from bayou.storage.broker_configs import DynamicBrokerConfigs
from bayou.storage.cluster import BrokerAddress, Cluster, SingleNode
from bayou.storage.engine import (
    AppendResult,
    Buffer,
    LogEngine,
    Partition,
    PartitionKey,
    StateLog,
)
from bayou.storage.metadata import TopicMeta

log = logging.getLogger(__name__)

TXN_DRAIN_S = 5.0  # at shutdown, how long marker writes in flight may take to finish


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class CoreSettings:
    """The broker-wide policies the core applies (Kafka's names, ``_`` for ``.``)."""

    node_id: int = 0
    cluster_id: str | None = None  # None: the engine's
    auto_create_topics_enable: bool = True
    num_partitions: int = 1
    queued_max_request_bytes: int = 100 * 1024 * 1024
    request_stall_timeout_ms: int = 30_000
    #: what the HTTP, MQTT and AMQP doors deliver: only committed transactions' records
    #: (stopping at the last stable offset), or everything, aborted records included
    door_isolation: Isolation = "read_committed"


class Core:
    """The broker core (see the module docstring)."""

    def __init__(
        self,
        engine: LogEngine,
        settings: CoreSettings,
        group_settings: GroupSettings | None = None,
        txn_settings: TxnSettings | None = None,
        security: Security | None = None,
        share_settings: ShareSettings | None = None,
        metrics: BrokerMetrics | None = None,
        quotas: Quotas | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.engine = engine
        self.cluster: Cluster = cluster or SingleNode(settings.node_id)
        #: the state logs of users, ACLs, quotas and the doors, followed on a shared engine
        self.state = FollowingStateStore(engine, shared=self.cluster.shared)
        self.security = security or Security()
        #: the doors' members' calls to a group coordinated by another broker
        self.group_link = GroupLink(self.topics, self.security.internal_login)
        #: the transaction calls to other brokers: verifications and markers
        self.txn_link = TxnLink(self.security.broker_login)
        #: markers queued here while a verification with another broker is in flight
        self.marker_fence = MarkerFence()
        self.metrics = metrics or BrokerMetrics()
        self.quotas = quotas or Quotas()
        self.settings = settings
        self.group_settings = group_settings or GroupSettings()
        self.txn_settings = txn_settings or TxnSettings()
        self.share_settings = share_settings or ShareSettings()
        self.node_id = settings.node_id
        self.clock_ms = now_ms
        self.stopping = False
        self.groups: GroupDriver | None = None  # set once the coordinator is loaded
        self.transactions: TxnDriver | None = None  # likewise
        self.shares: ShareDriver | None = None  # likewise
        self.request_budget = RequestBudget(
            settings.queued_max_request_bytes, settings.request_stall_timeout_ms / 1000
        )
        self._creating: dict[str, asyncio.Task[TopicMeta]] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the users, ACLs and quotas, the group coordinator from its state log, and
        start the core's tasks (in a shared cluster the coordinators start in ``join``)."""
        await self.security.open(self.state, shared=self.cluster.shared)
        await self.quotas.open(self.state)
        state_log = await self.engine.state.open_log(GROUPS_LOG, public=True)
        groups = GroupDriver(self.group_settings, self.clock_ms, state_log)
        replayed = await groups.open()
        log.info("group coordinator loaded %d record(s)", replayed)
        if not self.cluster.shared:
            await groups.start()
        self.groups = groups
        share_log = await self.engine.state.open_log(SHARES_LOG, public=True)
        shares = ShareDriver(
            self.share_settings,
            self.clock_ms,
            share_log,
            self.engine,
            lambda group_id: group_id in groups.coordinator.groups,
        )
        replayed = await shares.open()
        log.info("share coordinator loaded %d record(s)", replayed)
        groups.coordinator.reserved = shares.coordinator.is_share_group
        await shares.start()
        self.shares = shares
        txn_log = await self.engine.state.open_log(TRANSACTIONS_LOG, public=True)
        transactions = TxnDriver(
            self.txn_settings,
            self.clock_ms,
            txn_log,
            self.engine.allocate_producer_id,
            EngineMarkers(self),
        )
        replayed = await transactions.open()
        log.info("transaction coordinator loaded %d record(s)", replayed)
        if not self.cluster.shared:
            await transactions.start()
        self.transactions = transactions
        self._tasks = [asyncio.create_task(self.request_budget.run())]

    async def join(self, address: BrokerAddress) -> None:
        """The doors listen: join the cluster as ``address``.  In a shared cluster the
        coordinators keep only the groups and transactional ids this broker owns, then
        start (their timers, the markers of transactions left decided)."""
        await self.cluster.join(address)
        if not self.cluster.shared:
            return
        # what was replayed at start may be stale already (the owners go on writing until
        # they see this broker): drop it all; the cluster's first settled view loads back
        # what this broker owns
        if self.groups is not None:
            await self.groups.follow(lambda _g: False, load=False)
        if self.shares is not None:
            await self.shares.follow(lambda _g: False, load=False)
        if self.transactions is not None:
            await self.transactions.follow(lambda _t: False, load=False)
        self.cluster.on_change(self._follow_cluster)
        active = self.cluster.active
        if self.shares is not None:
            self.shares.active = active
        if self.groups is not None:
            self.groups.active = active
            await self.groups.start()
        if self.transactions is not None:
            self.transactions.active = active
            await self.transactions.start()

    async def _follow_cluster(self, load: bool) -> None:
        cluster = self.cluster
        if self.groups is not None:
            await self.groups.follow(lambda g: cluster.owns(0, g), load=load)
        if self.shares is not None:  # share groups are placed as groups are (one name space)
            await self.shares.follow(lambda g: cluster.owns(0, g), load=load)
        if self.transactions is not None:
            await self.transactions.follow(lambda t: cluster.owns(1, t), load=load)

    def begin_stop(self) -> None:
        """The broker is stopping: long polls end, doors may now stop."""
        self.stopping = True
        self.engine.wake_all()

    async def close(self) -> None:
        """After the doors stopped: answer parked group requests, stop the core's tasks."""
        await self.cluster.leave()
        self.state.close()
        self.group_link.close()
        self.txn_link.close()
        if self.transactions is not None:
            self.transactions.shutdown()
            await self.transactions.drain(TXN_DRAIN_S)
        if self.shares is not None:
            self.shares.shutdown()
        if self.groups is not None:
            self.groups.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    @property
    def cluster_id(self) -> str:
        return self.settings.cluster_id or self.engine.cluster_id

    # ------------------------------------------------------------------ topics

    def topics(self) -> Mapping[str, TopicMeta]:
        return self.engine.topics()

    def internal_topics(self) -> Mapping[str, TopicMeta]:
        return self.engine.internal_topics()

    def topic_sizes(self) -> dict[str, int]:
        return {name: meta.partitions for name, meta in self.engine.topics().items()}

    async def topic(self, name: str, *, create: bool = True) -> TopicMeta:
        """The topic's metadata, auto-creating it when allowed; raises Kafka errors."""
        meta = self.engine.topics().get(name)
        if meta is not None:
            return meta
        if name in self.engine.internal_topics():
            raise InvalidTopic(f"Topic '{name}' is internal to the broker")
        if not (create and self.settings.auto_create_topics_enable):
            raise UnknownTopicOrPartition(f"Topic '{name}' does not exist")
        task = self._creating.get(name)
        if task is None:
            task = self._creating[name] = asyncio.ensure_future(self._auto_create(name))
            task.add_done_callback(lambda _t: self._creating.pop(name, None))
        return await asyncio.shield(task)

    async def _auto_create(self, name: str) -> TopicMeta:
        try:
            meta = await self.engine.create_topic(name, self.settings.num_partitions, {})
        except KafkaError as exc:
            if exc.code != ErrorCode.TOPIC_ALREADY_EXISTS:
                raise
            found = self.engine.topics().get(name)
            if found is None:
                raise
            return found
        log.info("auto-created topic %s with %d partition(s)", name, meta.partitions)
        return meta

    async def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> TopicMeta:
        return await self.engine.create_topic(
            name, partitions, configs, validate_only=validate_only
        )

    async def delete_topic(self, name: str) -> None:
        await self.engine.delete_topic(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMeta | None:
        return self.engine.topic_by_id(topic_id)

    async def create_partitions(
        self, name: str, total: int, *, validate_only: bool = False
    ) -> None:
        await self.engine.create_partitions(name, total, validate_only=validate_only)

    # ------------------------------------------------------------------ configs

    def topic_config(self, name: str) -> TopicConfig:
        """The topic's effective config."""
        return self.engine.topic_config(name)

    def resolve_config(self, overrides: Mapping[str, Any]) -> TopicConfig:
        """The effective config of a topic with these (parsed) overrides."""
        return self.engine.resolve_config(overrides)

    @property
    def static_config_defaults(self) -> Mapping[str, Any]:
        """Topic-config defaults from the broker's own configuration."""
        return self.engine.static_defaults

    @property
    def dynamic_configs(self) -> DynamicBrokerConfigs:
        """The dynamic broker configs (cluster-wide and this broker's), as altered through
        the admin API; read-only here — change them with ``alter_broker_configs``."""
        return self.engine.dynamic

    async def alter_topic_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicMeta:
        """Replace the topic's overrides (raw strings, validated whole); live at once."""
        return await self.engine.alter_topic_configs(name, configs, validate_only=validate_only)

    async def alter_broker_configs(
        self,
        scope: str,
        configs: Mapping[str, Any],
        *,
        validate_only: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace the dynamic topic-config defaults of ``scope`` ("default" or "broker")
        and, when ``options`` is given, that scope's other dynamic broker configs."""
        await self.engine.alter_broker_configs(
            scope, configs, validate_only=validate_only, options=options
        )

    # ------------------------------------------------------------------ storage

    @property
    def storage_location(self) -> str:
        """Where the data lives, as an operator would name it (a directory, a URL)."""
        return self.engine.location

    def storage_usage(self) -> tuple[int, int]:
        """(total, usable) bytes where the data lives; -1 when unknown."""
        return self.engine.storage_usage()

    @property
    def data_dir(self) -> Path | None:
        """The data directory when the engine keeps its data in one (the local engine),
        where a door's files from earlier releases may be found; None otherwise."""
        return Path(self.engine.location) if self.engine.kind == "local" else None

    async def open_state_log(self, name: str) -> StateLog:
        """A door's own compacted key-value log in the engine's state store (MQTT sessions
        and retained messages, the AMQP topology); on a shared engine ``follow`` hands what
        other brokers write to it to the door (``state_follow.py``)."""
        return await self.state.open_log(name)

    def follow_state_log(
        self, state_log: StateLog, apply: ApplyEntries, *, own_wins: bool = True
    ) -> None:
        """After loading ``state_log``: hand ``apply`` every entry other brokers write to it
        from now on (nothing happens on an engine no other broker shares); ``own_wins``
        off: ``apply`` also decides between this broker's latest write of a key and another
        broker's later one (``state_follow.py``)."""
        follow(state_log, apply, own_wins=own_wins)

    async def state_caught_up(self, state_log: StateLog, timeout_s: float = 2.0) -> bool:
        """Until what other brokers wrote to ``state_log`` so far is applied (bounded)."""
        return await caught_up(state_log, timeout_s)

    async def allocate_producer_id(self) -> int:
        return await self.engine.allocate_producer_id()

    # ------------------------------------------------------------------ data

    def leads(self, topic: str, index: int) -> bool:
        """Whether Kafka clients should produce and fetch this partition here (its leader;
        the state logs every broker serves).  The other doors ignore leadership: they read
        through the shared engine and append under its partition lock."""
        return topic in self.engine.internal_topics() or self.cluster.leads(topic, index)

    def partition(self, topic: str, index: int) -> Partition:
        return self.engine.partition(topic, index)

    async def append(self, topic: str, partition: int, records: Buffer) -> AppendResult:
        """Append (auto-creating the topic) and wait until durable per the topic's policy;
        an internal topic is refused (INVALID_TOPIC_EXCEPTION, as Kafka answers)."""
        if topic not in self.engine.topics():
            await self.topic(topic)
        return await self.engine.partition(topic, partition).append(records)

    async def append_many(
        self, writes: Sequence[tuple[str, int, Buffer]], *, owned: bool = False
    ) -> list[AppendResult | KafkaError]:
        """Append to several partitions at once (auto-creating topics when allowed);
        ``owned``: the buffers are handed over (``Engine.append_many``)."""
        known = self.engine.topics()
        for name in {topic for topic, _p, _r in writes if topic not in known}:
            with contextlib.suppress(KafkaError):  # that partition's result says why
                await self.topic(name)
        return await self.engine.append_many(writes, owned=owned)

    def cursor(
        self,
        topic: str,
        partition: int,
        position: int,
        *,
        reset: Reset = "earliest",
        isolation: Isolation | None = None,
    ) -> Cursor:
        """A cursor at ``position``; ``isolation`` defaults to the doors' setting."""
        isolation = isolation or self.settings.door_isolation
        return Cursor(self.engine, topic, partition, position, reset=reset, isolation=isolation)

    async def cursor_at(
        self,
        topic: str,
        partition: int,
        start: StartSpec,
        *,
        reset: Reset = "earliest",
        isolation: Isolation | None = None,
    ) -> Cursor:
        """A cursor at ``start`` (earliest, latest, an offset, a time …)."""
        isolation = isolation or self.settings.door_isolation
        position = await resolve_start(self.engine.partition(topic, partition), start, isolation)
        return Cursor(self.engine, topic, partition, position, reset=reset, isolation=isolation)

    def read_end(self, partition: Partition) -> int:
        """Where a door's reader of ``partition`` stops: the last stable offset at
        read_committed (the doors' default), else the log end."""
        if self.settings.door_isolation == "read_committed":
            return partition.last_stable_offset
        return partition.log_end_offset

    async def wait_any(self, cursors: Sequence[Cursor], timeout_s: float) -> bool:
        return await wait_any(self.engine, cursors, timeout_s)

    async def wait_for_data(self, keys: Sequence[PartitionKey], timeout_s: float) -> bool:
        return await self.engine.wait_for_data(keys, timeout_s)

    # ------------------------------------------------------------------ groups

    def group_driver(self, group_id: str | None = None) -> GroupDriver:
        """The group coordinator's driver; COORDINATOR_NOT_AVAILABLE when not running.
        With ``group_id``: NOT_COORDINATOR (or COORDINATOR_LOAD_IN_PROGRESS) when another
        broker of the cluster coordinates that group — the doors' own members are served
        only by the group's coordinator, never by a second one beside it."""
        if self.groups is None:
            raise GroupCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if group_id is not None:
            error = self.cluster.coordinator_error(0, group_id)
            if error != ErrorCode.NONE:
                raise GroupCoordinatorError(error)
        return self.groups

    def group_owner(self, group_id: str) -> GroupDriver | BrokerAddress:
        """Where the doors' own members of ``group_id`` are served: this broker's driver
        when it coordinates the group, else the address of the broker that does (their
        calls are forwarded there: ``forwarding.py``).  NOT_COORDINATOR when no other
        broker can be asked (none live, or this one lost its lease),
        COORDINATOR_LOAD_IN_PROGRESS while this one takes the group over."""
        if self.groups is None:
            raise GroupCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        error, address = self.group_coordinator(group_id)
        if address is not None:
            return address
        if error != ErrorCode.NONE:
            raise GroupCoordinatorError(error)
        return self.groups

    def group_coordinator(self, group_id: str) -> tuple[ErrorCode, BrokerAddress | None]:
        """Who serves a group (or share group) for the doors: (NONE, None) this broker;
        (NOT_COORDINATOR, its address) another broker, to forward to; (the error, None)
        nobody this broker can ask (none live, this one lost its lease) or this one is
        still loading it."""
        cluster = self.cluster
        error = cluster.coordinator_error(0, group_id)
        if error == ErrorCode.NOT_COORDINATOR and cluster.active():
            owner = cluster.coordinator(0, group_id)
            address = cluster.broker(owner) if owner != cluster.node_id else None
            if address is not None:
                return error, address
        return error, None

    async def write_marker(
        self, topic: str, index: int, producer_id: int, producer_epoch: int, commit: bool
    ) -> ErrorCode:
        """Write a transaction marker on a partition this broker leads (the transaction
        coordinator's job, here or forwarded by WriteTxnMarkers); its error.  The marker is
        queued right after the fence saw it (``transactions/fence.py``)."""
        if not self.cluster.leads(topic, index):
            return ErrorCode.NOT_LEADER_OR_FOLLOWER
        try:
            partition = self.engine.partition(topic, index)
            self.marker_fence.marked(producer_id)
            await partition.write_marker(producer_id, producer_epoch, commit, COORDINATOR_EPOCH)
        except KafkaError as exc:
            return exc.code
        return ErrorCode.NONE

    async def complete_offsets(self, producer_id: int, commit: bool) -> ErrorCode:
        """A transaction's outcome for the offsets it committed in the groups this broker
        serves (the offsets partition's "marker"); its error."""
        try:
            driver = self.group_driver()
        except GroupCoordinatorError as exc:
            return exc.code
        self.marker_fence.marked(producer_id)
        await driver.run(
            lambda now, _token: driver.coordinator.complete_txn(now, producer_id, commit)
        )
        return ErrorCode.NONE

    def transaction_driver(self) -> TxnDriver:
        """The transaction coordinator's driver; COORDINATOR_NOT_AVAILABLE when not running."""
        if self.transactions is None or self.stopping:
            raise TxnCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        return self.transactions

    def share_driver(self, group_id: str | None = None) -> ShareDriver:
        """The share coordinator's driver; COORDINATOR_NOT_AVAILABLE when not running.
        With ``group_id``: NOT_COORDINATOR (or COORDINATOR_LOAD_IN_PROGRESS) when another
        broker of the cluster coordinates that share group — the doors' own share members
        are served only by the group's coordinator, never by a second one beside it."""
        if self.shares is None or self.stopping:
            raise ShareCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if group_id is not None:
            error = self.cluster.coordinator_error(0, group_id)
            if error != ErrorCode.NONE:
                raise ShareCoordinatorError(error)
        return self.shares

    def share_place(self, group_id: str) -> ShareDriver | BrokerAddress:
        """Where the doors' own members of share group ``group_id`` are served: this
        broker's driver when it coordinates the group, else the address of the broker that
        does (their calls go there: ``shares/remote.py``).  NOT_COORDINATOR when no other
        broker can be asked, COORDINATOR_LOAD_IN_PROGRESS while this one takes it over."""
        if self.shares is None or self.stopping:
            raise ShareCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        error, address = self.group_coordinator(group_id)
        if address is not None:
            return address
        if error != ErrorCode.NONE:
            raise ShareCoordinatorError(error)
        return self.shares

    def share_remote(self) -> ShareRemote:
        """What a door's share member needs to reach the group's coordinator elsewhere."""
        return ShareRemote(self.security.internal_login, self.topics)

    def share_consumer(
        self,
        group_id: str,
        topics: list[str],
        *,
        client_id: str,
        client_host: str,
        member_id: str | None = None,
    ) -> ShareConsumer:
        """A member of share group ``group_id`` inside the broker (``join`` it first); in a
        cluster, its calls go to the group's coordinator wherever it is."""
        return ShareConsumer(
            lambda: self.share_place(group_id),
            group_id,
            topics,
            client_id=client_id,
            client_host=client_host,
            member_id=member_id,
            remote=self.share_remote(),
        )

    def group_member(
        self,
        group_id: str,
        *,
        topics: list[str] | None = None,
        pattern: str | None = None,
        client_id: str,
        client_host: str,
        on_revoke: Listener | None = None,
        on_assign: Listener | None = None,
    ) -> GroupMember:
        return GroupMember(
            self,
            group_id,
            topics=topics,
            pattern=pattern,
            client_id=client_id,
            client_host=client_host,
            on_revoke=on_revoke,
            on_assign=on_assign,
        )

    def offsets(self, group_id: str) -> Offsets:
        return Offsets(self, group_id)

    # ------------------------------------------------------------------ tasks

    def background(self, awaitable: Awaitable[Any]) -> None:
        """Run ``awaitable`` without waiting for it, keeping a reference until it ends."""
        future = asyncio.ensure_future(awaitable)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
