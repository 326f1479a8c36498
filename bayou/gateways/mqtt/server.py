"""The MQTT gateway: an asyncio listener driving ``bayou.protocol.mqtt`` over the broker core.

Theory of operation
-------------------
``MqttGateway`` sees the broker only through the ``Core``.  It owns the sessions, the
subscription index (``subscriptions.py``), the retained-message trees, one ``Tailer`` per
Kafka partition that some subscription may read (``tailer.py``), the shared catch-up reads
(``catch_up.py``) and the durable state (``store.py``).  ``MqttClient`` (``client.py``) is one
TCP connection (or WebSocket, sniffed from the first bytes on the same port).

Publishing: a connection groups the PUBLISHes of one read per (Kafka topic, partition) and
appends them with ``Core.append_many`` (one record batch per partition; the engine makes
them as durable as the topics ask before it returns).  The (Kafka topic, partition) of an
MQTT topic is cached (``kafka_target``); a topic that does not exist yet is created through
``Core.topic`` (``resolve_target``), off the event loop.

Delivering: tailers offer new records to the sessions whose filters match; a session that
cannot take them catches up from the log later (``delivery.py``).  A shared subscription
is a Kafka share group whose connected members acquire their records (``shared.py``); only
``$SYS`` messages, which are in no log, go round robin through the door's ``ShareGroup``.  The
gateway is the sessions' ``SessionHost``: where the tailers are, the shared catch-up reads,
a record read back by offset.

Security: with an authorizer a CONNECT must log in (user name and password, or a TLS client
certificate), every PUBLISH and SUBSCRIBE is checked against the ACLs on the Kafka topics it
maps to (``client.py``), and when the ACLs change, housekeeping disconnects clients whose
subscriptions are no longer allowed.  With a TLS certificate a second listener serves
``tls_port`` (MQTT over TLS and secure WebSocket).

Housekeeping, every ``SAVE_INTERVAL_S``: persistent sessions whose state changed are saved
(document and positions, ``store.py``); every second the set of tailed partitions follows the
subscriptions and the topics, and expired sessions are dropped; every ``IDLE_SAVE_TICKS``
the positions of the other connected persistent sessions are committed when they moved (the
records of their partitions went by without matching), so lag tools see them caught up;
and every ``REFRESH_TICKS`` the offsets of sessions nobody committed for half the offsets
retention are committed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from typing import Any

from bayou.broker_config import MqttOptions
from bayou.core import Core
from bayou.core.request_budget import RequestBudget
from bayou.core.types import AppendResult, Buffer, StateEntry
from bayou.errors import KafkaError
from bayou.gateways.mqtt.catch_up import ChunkCache, DecodedChunk
from bayou.gateways.mqtt.client import Authenticator, MqttClient
from bayou.gateways.mqtt.delivery import Outbox
from bayou.gateways.mqtt.mapping import (
    TopicMapper,
    headers_for,
    meta_from_headers,
    parse_rules,
    partition_for,
)
from bayou.gateways.mqtt.messages import TP, Message, MessageFactory, WillState, stored_props
from bayou.gateways.mqtt.session import (
    NEVER_EXPIRES,
    Session,
    legacy_positions,
    subscriptions_of,
)
from bayou.gateways.mqtt.shared import SharedMember
from bayou.gateways.mqtt.store import RetainedStore, SessionStore
from bayou.gateways.mqtt.subscriptions import Owners, ShareGroup, SubOptions, Subscriptions
from bayou.gateways.mqtt.systree import SysCounters, SysTree
from bayou.gateways.mqtt.tailer import Tailer
from bayou.gateways.mqtt.trie import TopicTree
from bayou.log_limits import RateLimitedLog
from bayou.protocol.kafka.records import DecodedRecord, Record, build_batch
from bayou.protocol.mqtt.packets import Properties, Publish
from bayou.protocol.mqtt.topics import is_sys, parse_shared

log = logging.getLogger("bayou.mqtt")


def plain_filter(topic_filter: str) -> str:
    """A subscription's filter without its ``$share/group/`` prefix."""
    return parse_shared(topic_filter)[1]


SAVE_INTERVAL_S = 0.5
INTEREST_TICKS = 2  # housekeeping ticks between interest refreshes and expiry sweeps
IDLE_SAVE_TICKS = 10
REFRESH_TICKS = 120
TARGET_CACHE = 100_000
SYS_QOS = 2  # as mosquitto publishes its $SYS tree


class MqttGateway:
    """The MQTT door (see the module docstring)."""

    name = "mqtt"

    def __init__(
        self,
        core: Core,
        host: str,
        options: MqttOptions,
        *,
        authenticate: Authenticator | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.core = core
        self.host = host
        self.reuse_port = reuse_port  # SO_REUSEPORT: the port shared with other workers
        self.port = options.port
        self.tls_port = options.tls_port
        self.security = core.security
        self.quotas = core.quotas
        self._acl_version = self.security.acls.version
        self.mapper = TopicMapper(parse_rules(options.topic_rules))
        self.authenticate = authenticate
        self.sys_interval = options.sys_interval
        self.stats = SysCounters()
        self.traffic = core.metrics.door("mqtt")
        self.traffic.connections = self._connection_count
        self.factory = MessageFactory()
        self.subscriptions = Subscriptions(self.stats)
        self.retained: TopicTree[Message] = TopicTree()
        self.sys_retained: TopicTree[Message] = TopicTree()  # $SYS/broker/..., memory only
        self.sessions: dict[str, Session] = {}
        self.tailers: dict[TP, Tailer] = {}
        self.clients: set[MqttClient] = set()
        self.client_log = RateLimitedLog(log)  # what a client can trigger, per peer host
        self.retained_store = RetainedStore(core)
        self.session_store = SessionStore(core)
        self.chunks = ChunkCache(core, self.mapper, self.factory)
        self._stopped = False
        self._known_topics: set[str] = set()
        self._targets: dict[str, TP] = {}  # MQTT topic → (Kafka topic, partition)
        # Kafka topic → (subscriptions.version, the outboxes its tailers offer to)
        self._watchers: dict[str, tuple[int, list[Outbox]]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tls_server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wills: dict[str, asyncio.TimerHandle] = {}

    @property
    def address(self) -> str:
        plain = f"{self.host}:{self.port}"
        return f"{plain} tls {self.host}:{self.tls_port}" if self._tls_server else plain

    def topic_names(self) -> Iterable[str]:
        return self.core.topics().keys()

    def health(self) -> dict[str, object]:
        return {"listening": self.port != 0, "connections": len(self.clients)}

    @property
    def stopping(self) -> bool:
        return self._stopped or self.core.stopping

    @property
    def request_budget(self) -> RequestBudget:
        return self.core.request_budget

    def clock_ms(self) -> int:
        return self.core.clock_ms()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._apply_retained(await self.retained_store.open())
        self.retained_store.follow(self._apply_retained)
        for client_id, doc, positions in await self.session_store.open():
            try:
                self._restore_session(client_id, doc, positions)
            except Exception:
                log.exception("cannot restore MQTT session %r; dropping it", client_id)
        self.session_store.follow(self._apply_sessions)
        self._known_topics = set(self.core.topics())
        self.refresh_interest()
        for session in self.sessions.values():
            self._live_where_tailed(session)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: MqttClient(self),
            self.host,
            self.port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=1024,
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        tls = self.security.tls
        if tls is not None and self.tls_port:
            self._tls_server = await asyncio.get_running_loop().create_server(
                lambda: MqttClient(self),
                self.host,
                self.tls_port,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
                backlog=1024,
                ssl=tls.context,
            )
            self.tls_port = self._tls_server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._housekeeping())]
        if self.sys_interval > 0:
            self._tasks.append(asyncio.create_task(self._sys_updates()))

    def _recheck_subscriptions(self) -> None:
        """The ACLs changed: a client that may no longer read what it subscribed to is
        disconnected (its next login's SUBSCRIBE is checked again)."""
        for client in list(self.clients):
            session = client.session
            if session is None or client.principal is None:
                continue
            if not all(client.may_read(plain_filter(f), quiet=True) for f in session.subs):
                client.not_authorized()

    def _apply_retained(self, entries: list[StateEntry]) -> None:
        """Retained messages from the log: the replay at start, then what other brokers of
        a shared engine set or clear (``store.py``)."""
        for entry in entries:
            topic = entry.key.decode("utf-8", "replace")
            if entry.value is None:
                self.retained.set(topic, None)
                continue
            meta = meta_from_headers(entry.headers)
            self.retained.set(
                topic,
                Message(topic, entry.value, meta.qos, True, meta.origin, None, meta.props),
            )

    def _apply_sessions(self, entries: list[StateEntry]) -> None:
        """Another broker of a shared engine wrote these sessions (a document: it holds the
        session now; a tombstone: it dropped it).  A copy held here is let go without a
        write, and a client still connected here is disconnected, its session taken over —
        unless the write is older than this broker's hold (``SessionStore.newer``)."""
        store = self.session_store
        remote = store.remote
        for entry in entries:
            client_id = entry.key.decode("utf-8", "replace")
            session = self.sessions.get(client_id)
            if session is not None and not store.newer(entry):
                # a previous holder's late write (its save as its client left, its expiry):
                # this broker holds the session; the log must end on it again
                store.rewrite(client_id)
                session.dirty = True
                continue
            if entry.value is None:
                remote.pop(client_id, None)
            else:
                remote[client_id] = entry.value
            if session is None:
                continue
            conn = session.conn
            self.forget_session(session)
            if conn is not None:
                self.client_log.info(
                    (client_id, "remote takeover"),
                    "MQTT client %s: its session was taken over through another broker",
                    client_id,
                )
                conn.taken_over()

    def holds_session(self, client_id: str) -> bool:
        """Whether a CONNECT of ``client_id`` can be answered from this broker's memory:
        no other broker of a shared engine may hold its session (see ``adopt_session``)."""
        return not self.core.cluster.shared or client_id in self.sessions

    async def adopt_session(self, client_id: str, clean_start: bool) -> None:
        """Before a CONNECT of a client this broker holds no session of, on a shared
        engine: apply what other brokers wrote (bounded wait), then take over the session
        another broker holds — or, with ``clean_start``, drop it everywhere."""
        store = self.session_store
        await store.caught_up()
        if client_id in self.sessions or client_id not in store.remote:
            return
        if clean_start:
            await store.drop(client_id)
            return
        adopted = await store.adopt(client_id)
        if adopted is None or client_id in self.sessions:
            return
        doc, positions = adopted
        # its partitions are tailed from their end (not from the start, as a topic new to
        # this broker would be): the session catches up from its positions below that
        self._known_topics.update(topic for topic, _p in positions)
        try:
            self._restore_session(client_id, doc, positions)
        except Exception:
            log.exception("cannot take over MQTT session %r", client_id)
            return
        self.refresh_interest()
        session = self.sessions[client_id]
        self._live_where_tailed(session)
        # written now, not at the next save: the previous holder lets its copy go at once
        # (before it could expire it, or save it again as messages reach it offline)
        await self.save_session(session)

    def _live_where_tailed(self, session: Session) -> None:
        """A restored session is live (not behind) where a tailer already reads from its
        position on."""
        behind = session.outbox.behind
        for tp, offset in list(behind.items()):
            tailer = self.tailers.get(tp)
            if tailer is not None and offset >= tailer.position:
                del behind[tp]

    def forget_session(self, session: Session) -> None:
        """Let a session go that another broker holds now: nothing is written."""
        session.stored = False
        self.session_store.forget(session.client_id)
        self.drop_session(session)

    def _restore_session(
        self, client_id: str, doc: dict[str, Any], positions: dict[TP, int]
    ) -> None:
        legacy = legacy_positions(doc)
        session = Session(self, client_id)
        session.load(doc, {**legacy, **positions}, self.clock_ms())
        session.dirty = bool(legacy)  # a version 1 document: commit its positions
        self.sessions[client_id] = session
        for topic_filter, opts in subscriptions_of(doc).items():
            self.add_subscription(session, topic_filter, opts)

    async def stop(self) -> None:
        self._stopped = True
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        for task in self._tasks:
            task.cancel()
        for client in list(self.clients):
            client.shutdown()
        for tailer in self.tailers.values():
            tailer.stop()
        for handle in self._wills.values():
            handle.cancel()
        try:
            await self._save_sessions(all_persistent=True)
        except Exception:
            log.exception("saving MQTT sessions at shutdown failed")

    async def _housekeeping(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(SAVE_INTERVAL_S)
            ticks += 1
            try:
                await self._save_sessions(idle=ticks % IDLE_SAVE_TICKS == 0)
                if self._acl_version != self.security.acls.version:
                    self._acl_version = self.security.acls.version
                    self._recheck_subscriptions()
                if ticks % INTEREST_TICKS == 0:
                    self.refresh_interest()
                    self._expire_sessions()
                if ticks % REFRESH_TICKS == 0:
                    await self._refresh_offsets()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("MQTT housekeeping failed")

    async def _sys_updates(self) -> None:
        """Publish the $SYS tree: the version once, then what changed every interval."""
        loop = asyncio.get_running_loop()
        tree = SysTree(loop.time())
        for topic, payload in tree.static():
            self.publish_sys(topic, payload)
        while True:
            try:
                for topic, payload in tree.update(loop.time(), self.stats, self.sys_gauges()):
                    self.publish_sys(topic, payload)
            except Exception:
                log.exception("MQTT $SYS update failed")
            await asyncio.sleep(self.sys_interval)

    def sys_gauges(self) -> dict[str, int]:
        connected = sum(1 for session in self.sessions.values() if session.conn is not None)
        return {
            "clients_connected": connected,
            "clients_disconnected": len(self.sessions) - connected,
            "clients_total": len(self.sessions),
            "subscriptions": self.subscriptions.count(),
            "shared_subscriptions": self.subscriptions.shared_count(),
            "retained": self.retained.count,
        }

    def publish_sys(self, topic: str, payload: bytes) -> None:
        """A ``$SYS`` value: kept as the retained message of ``topic`` (in memory: the tree
        is rebuilt at start) and handed to the subscribers connected now.  It is in no log,
        so a session with no room for it, or offline, skips it (it gets the retained value
        when it subscribes)."""
        msg = Message(topic, payload, SYS_QOS, True, None, None, Properties())
        self.sys_retained.set(topic, msg)
        for owner, options in self.owners_of(topic):
            if isinstance(owner, ShareGroup):
                owner.offer(msg, options[0], None, 0)
            else:
                owner.offer_unlogged(msg, options)

    def retained_matching(self, topic_filter: str) -> Iterable[Message]:
        tree = self.sys_retained if is_sys(topic_filter) else self.retained
        return tree.match(topic_filter)

    # ------------------------------------------------------------------ sessions

    def open_session(self, client_id: str, expiry_s: int) -> Session:
        session = self.sessions[client_id] = Session(self, client_id, expiry_s)
        return session

    async def _save_sessions(self, *, all_persistent: bool = False, idle: bool = False) -> None:
        chosen = []
        for session in self.sessions.values():
            if session.persistent and (
                session.dirty or all_persistent or (idle and session.conn is not None)
            ):
                session.dirty = False
                session.stored = True
                chosen.append(session)
        if chosen:
            await self.session_store.save(chosen)

    async def save_session(self, session: Session) -> None:
        session.dirty = False
        session.stored = True
        await self.session_store.save([session])

    async def _refresh_offsets(self) -> None:
        due = self.session_store.refresh_due(self.clock_ms())
        sessions = [self.sessions[c] for c in due if c in self.sessions]
        if sessions:
            await self.session_store.save(sessions, full=True)

    def _expire_sessions(self) -> None:
        now = self.clock_ms()
        for session in list(self.sessions.values()):
            if (
                session.conn is None
                and session.expiry_s != NEVER_EXPIRES
                and session.disconnected_at is not None
                and now - session.disconnected_at >= session.expiry_s * 1000
            ):
                log.info("MQTT session %s expired", session.client_id)
                self.stats.clients_expired += 1
                self.drop_session(session)

    def drop_session(self, session: Session) -> None:
        for member in session.shared.values():
            member.disconnect()
        session.shared.clear()
        self.subscriptions.remove_all(session)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if session.stored:
            session.stored = False
            self.background(self.session_store.drop(session.client_id))
        self.refresh_interest()

    # ------------------------------------------------------------------ subscriptions

    def owners_of(self, mqtt_topic: str) -> Owners:
        return self.subscriptions.owners_of(mqtt_topic)

    def add_subscription(self, session: Session, topic_filter: str, opts: SubOptions) -> bool:
        new = self.subscriptions.add(session, topic_filter, opts)
        share_name, plain = parse_shared(topic_filter)
        if share_name is not None and not is_sys(plain) and topic_filter not in session.shared:
            member = session.shared[topic_filter] = SharedMember(self, session, share_name, plain)
            if session.conn is not None:
                member.connect()
        return new

    def remove_subscription(self, session: Session, topic_filter: str) -> bool:
        member = session.shared.pop(topic_filter, None)
        if member is not None:
            member.disconnect()
        return self.subscriptions.remove(session, topic_filter)

    def share_partitions(self, topic_filter: str) -> list[TP]:
        """The existing partitions a shared subscription's ``topic_filter`` may read."""
        existing = self.core.topics()
        return sorted(
            self._partitions_of(self.mapper.kafka_topics_for_filter(topic_filter, existing))
        )

    def _partitions_of(self, topics: Iterable[str]) -> Iterator[TP]:
        existing = self.core.topics()
        for topic in topics:
            meta = existing.get(topic)
            if meta is not None:
                for p in range(meta.partitions):
                    yield (topic, p)

    def interest_of(self, topic_filters: Iterable[str]) -> Iterable[TP]:
        existing = self.core.topics()
        topics: set[str] = set()
        for topic_filter in topic_filters:
            if not topic_filter.startswith("$share/"):
                topics |= self.mapper.kafka_topics_for_filter(topic_filter, existing)
        return self._partitions_of(topics)

    def refresh_interest(self) -> None:
        """Start a tailer for every partition a subscription may read; stop the others."""
        existing = self.core.topics()
        wanted: set[str] = set()
        for topic_filter in self.subscriptions.tailed:
            wanted |= self.mapper.kafka_topics_for_filter(topic_filter, existing)
        needed: set[TP] = set()
        for tp in self._partitions_of(wanted):
            needed.add(tp)
            if tp not in self.tailers:
                partition = self.core.partition(*tp)
                fresh = tp[0] not in self._known_topics
                start = partition.log_start_offset if fresh else self.core.read_end(partition)
                tailer = self.tailers[tp] = Tailer(self, self.core.cursor(*tp, start))
                tailer.start()
        for tp in list(self.tailers):
            if tp not in needed:
                self.tailers.pop(tp).stop()
        self.chunks.keep_only(needed)
        self._known_topics = set(existing)
        self._targets.clear()
        for session in self.sessions.values():
            for member in session.shared.values():
                member.refresh()

    # ------------------------------------------------------------------ SessionHost, TailerHost

    def live_position(self, tp: TP) -> int | None:
        tailer = self.tailers.get(tp)
        return None if tailer is None else tailer.position

    def log_bounds(self, tp: TP) -> tuple[int, int] | None:
        try:
            partition = self.core.partition(*tp)
        except KafkaError:
            return None
        return partition.log_start_offset, partition.log_end_offset

    async def catch_up_chunk(self, tp: TP, offset: int) -> DecodedChunk:
        return await self.chunks.chunk(tp, offset)

    async def message_at(self, tp: TP, offset: int) -> Message | None:
        try:
            rec = await self.core.cursor(*tp, offset, reset="none").record_at(offset)
        except KafkaError:
            return None
        if rec is None:
            return None
        return self.factory.from_record(self.mapper.mqtt_topic(tp[0], rec.key), rec)

    def mqtt_topic(self, kafka_topic: str, key: bytes | None) -> str:
        return self.mapper.mqtt_topic(kafka_topic, key)

    def watchers(self, kafka_topic: str) -> list[Outbox]:
        """The outboxes of the sessions whose own (not shared) subscriptions may reach
        ``kafka_topic``: every session its tailers could offer a record to (worked out
        again after each subscribe or unsubscribe)."""
        subscriptions = self.subscriptions
        version = subscriptions.version
        cached = self._watchers.get(kafka_topic)
        if cached is not None and cached[0] == version:
            return cached[1]
        mapper = self.mapper
        reaches: dict[str, bool] = {}  # plain filter → may reach kafka_topic
        found: list[Outbox] = []
        for subscriber in subscriptions.own:
            for topic_filter in subscriber.subs:
                group, plain = parse_shared(topic_filter)
                if group is not None:
                    continue
                reach = reaches.get(plain)
                if reach is None:
                    reach = reaches[plain] = kafka_topic in mapper.kafka_topics_for_filter(
                        plain, (kafka_topic,)
                    )
                if reach:
                    found.append(subscriber.outbox)
                    break
        if len(self._watchers) >= TARGET_CACHE:
            self._watchers.clear()
        self._watchers[kafka_topic] = (version, found)
        return found

    def message_from_record(self, mqtt_topic: str, rec: DecodedRecord) -> Message:
        return self.factory.from_record(mqtt_topic, rec)

    # ------------------------------------------------------------------ publishing

    def kafka_target(self, mqtt_topic: str) -> TP | None:
        """(Kafka topic, partition) for an MQTT topic; None when the Kafka topic does not
        exist yet (``resolve_target`` creates it).

        Cached per MQTT topic; the cache is dropped by ``refresh_interest`` (every second and
        whenever a topic is created) and after a failed append, so a topic's new partition
        count is seen within a second, like a Kafka producer's metadata refresh.
        """
        tp = self._targets.get(mqtt_topic)
        if tp is not None:
            return tp
        topic = self.mapper.kafka_topic(mqtt_topic)
        meta = self.core.topics().get(topic)
        if meta is None:
            return None
        tp = (topic, partition_for(mqtt_topic.encode(), meta.partitions))
        if len(self._targets) >= TARGET_CACHE:
            self._targets.clear()
        self._targets[mqtt_topic] = tp
        return tp

    async def resolve_target(self, mqtt_topic: str) -> TP:
        """``kafka_target``, creating the Kafka topic when it is missing and the broker
        allows it (else ``KafkaError``)."""
        tp = self.kafka_target(mqtt_topic)
        if tp is not None:
            return tp
        await self.core.topic(self.mapper.kafka_topic(mqtt_topic))
        self.refresh_interest()  # a new topic's tailers start at its beginning
        tp = self.kafka_target(mqtt_topic)
        if tp is None:
            raise KafkaError(f"the Kafka topic of {mqtt_topic} vanished as it was created")
        return tp

    def forget_targets(self) -> None:
        self._targets.clear()

    def append(
        self, writes: Sequence[tuple[str, int, Buffer]]
    ) -> Awaitable[list[AppendResult | KafkaError]]:
        return self._counted(writes, self.core.append_many(writes))

    async def _counted(
        self,
        writes: Sequence[tuple[str, int, Buffer]],
        appending: Awaitable[list[AppendResult | KafkaError]],
    ) -> list[AppendResult | KafkaError]:
        results = await appending
        self.traffic.appended(writes, results)
        return results

    def _connection_count(self) -> int:
        return len(self.clients)

    def set_retained(self, publish: Publish, client_id: str) -> asyncio.Task[None]:
        """Update the retained tree; returns the task that makes it durable (started now,
        so retained writes land in the order they came)."""
        topic = publish.topic
        if publish.payload:
            props = publish.properties
            expiry = props.message_expiry_interval
            msg = Message(
                topic,
                publish.payload,
                publish.qos,
                True,
                client_id,
                self.clock_ms() + expiry * 1000 if expiry is not None else None,
                stored_props(props),
            )
            self.retained.set(topic, msg)
            headers = headers_for(props, publish.qos, True, client_id)
            return self.retained_store.put(topic, publish.payload, headers)
        self.retained.set(topic, None)
        return self.retained_store.put(topic, None, ())

    def background(self, awaitable: Awaitable[Any]) -> None:
        """Run ``awaitable`` without waiting for it; a failure is logged."""
        future = asyncio.ensure_future(awaitable)
        future.add_done_callback(_log_failure)
        self.core.background(future)

    # ------------------------------------------------------------------ wills

    def publish_will(self, client_id: str, will: WillState) -> None:
        self._wills.pop(client_id, None)
        if self.stopping:
            return
        if is_sys(will.topic):
            log.warning(
                "the will of MQTT client %s is on %s, which is the broker's: not published",
                client_id,
                will.topic,
            )
            return
        self.background(self._publish_will(client_id, will))

    async def _publish_will(self, client_id: str, will: WillState) -> None:
        try:
            tp = await self.resolve_target(will.topic)
            headers = headers_for(will.props, will.qos, will.retain, client_id)
            batch = build_batch(
                [Record(self.clock_ms(), will.topic.encode(), will.payload, headers)]
            )
            await self.core.append(tp[0], tp[1], batch)
        except KafkaError as exc:
            log.warning("cannot publish the will of %s on %s: %s", client_id, will.topic, exc)
            return
        if will.retain:
            publish = Publish(
                will.topic, will.payload, will.qos, will.retain, False, None, will.props
            )
            await self.set_retained(publish, client_id)
        log.info("published the will of MQTT client %s on %s", client_id, will.topic)

    def schedule_will(self, client_id: str, will: WillState, delay_s: int) -> None:
        if delay_s <= 0:
            self.publish_will(client_id, will)
            return
        loop = asyncio.get_running_loop()
        self._wills[client_id] = loop.call_later(delay_s, self.publish_will, client_id, will)

    def cancel_will(self, client_id: str) -> None:
        handle = self._wills.pop(client_id, None)
        if handle is not None:
            handle.cancel()


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("MQTT background work failed", exc_info=future.exception())
