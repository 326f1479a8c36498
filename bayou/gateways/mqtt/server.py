"""The MQTT gateway: an asyncio listener driving ``bayou.protocol.mqtt`` over the broker core.

Theory of operation
-------------------
``MqttGateway`` owns the sessions, the subscription trie, the retained-message tree, one
``Tailer`` per Kafka partition that some subscription may read, and the durable state logs.
``MqttClient`` is one TCP connection (or WebSocket, sniffed from the first bytes on the same
port): bytes go through ``ServerConnection`` and come out as packets.

Publishing: the PUBLISHes found in one read are grouped per (Kafka topic, partition), each
group becomes one record batch (``build_batch``) appended through ``BrokerState.append_now``;
QoS 0 is done then.  QoS 1 and 2 acknowledgements are sent once the append is as durable as
the topic's flush policy asks (``make_durable``), in the order the PUBLISHes came.  QoS 2 uses
"store on PUBLISH": the packet id stays in the session until PUBREL, so a resent PUBLISH is
not appended twice.

Delivering: tailers wake through ``waiters.wait_any`` when their partition grows, decode the
new records once, map each to its MQTT topic, match it in the trie and offer it to the
matching sessions and share groups (see ``session.py`` for queues, catch-up and persistence).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from bayou.core import now_ms
from bayou.errors import KafkaError, OffsetOutOfRange
from bayou.gateways.legacy_state import LegacyState as BrokerState
from bayou.gateways.mqtt.mapping import (
    H_CLIENT,
    H_QOS,
    H_RETAIN,
    RecordMeta,
    TopicMapper,
    headers_for,
    meta_from_headers,
    parse_rules,
    partition_for,
)
from bayou.gateways.mqtt.session import (
    NEVER_EXPIRES,
    TP,
    DecodedChunk,
    Delivery,
    Inflight,
    Message,
    Session,
    ShareGroup,
    SubOptions,
    WillState,
)
from bayou.gateways.mqtt.store import RETAINED_LOG, SESSIONS_LOG, StateLog
from bayou.gateways.mqtt.systree import SysCounters, SysTree
from bayou.gateways.mqtt.trie import SubscriptionTrie, TopicTree
from bayou.log_limits import RateLimitedLog
from bayou.protocol.kafka.records import (
    DecodedRecord,
    Record,
    build_batch,
    iter_batches,
    iter_records,
)
from bayou.protocol.mqtt.packets import (
    Properties,
    Publish,
)
from bayou.protocol.mqtt.topics import is_sys, parse_shared

if TYPE_CHECKING:
    from bayou.gateways.mqtt.client import MqttClient

log = logging.getLogger("bayou.mqtt")

Authenticator = Callable[[str, str | None, bytes | None], bool]
TAIL_READ = 1024 * 1024
REFRESH_INTERVAL_S = 1.0
SAVE_INTERVAL_S = 0.5
MAX_PACKET_SIZE = 1024 * 1024 + 1024
RECEIVE_MAXIMUM = 1024
TARGET_CACHE = 100_000
KEY_CACHE = 100_000
TAIL_SLICE = 256  # records offered between two turns of the event loop
META_CACHE = 4096
CHUNKS_KEPT = 16  # decoded catch-up reads kept in all
CHUNKS_PER_PARTITION = 4
SYS_QOS = 2  # as mosquitto publishes its $SYS tree
_PLAIN_HEADERS = frozenset((H_QOS, H_RETAIN, H_CLIENT))


class Tailer:
    """Follows one partition from ``position`` and offers each new record to its matches."""

    def __init__(self, gateway: MqttGateway, tp: TP, position: int) -> None:
        self.gateway = gateway
        self.tp = tp
        self.position = position
        self.task: asyncio.Task[None] | None = None
        self._topics: dict[bytes | None, str] = {}  # record key → MQTT topic

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        gw = self.gateway
        waiters = gw.state.waiters
        while not gw.stopping:
            try:
                plog = gw.state.logs.partition(*self.tp)
            except KafkaError:
                return
            if self.position < plog.log_start_offset:
                self.position = plog.log_start_offset
            if self.position < plog.log_end_offset:
                try:
                    data = await gw.state.read(plog, self.position, TAIL_READ)
                except OffsetOutOfRange:
                    self.position = plog.log_start_offset
                    continue
                try:
                    await self.process(data)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("MQTT delivery from %s-%d failed at offset %d",
                                  *self.tp, self.position)
                    self.position = plog.log_end_offset
                await asyncio.sleep(0)
            else:
                await waiters.wait_any([self.tp], 1.0)

    async def process(self, data: bytes | bytearray | memoryview) -> None:
        """Offer the records in ``data`` from ``position`` on.

        Every ``TAIL_SLICE`` records it lets the loop run, with ``position`` up to date, so
        the sessions' pumps drain their queues between slices: a session that keeps up is
        never pushed into catch-up by the size of one read (a single batch can hold a few
        thousand records, more than a queue takes).
        """
        gw = self.gateway
        topic = self.tp[0]
        tp = self.tp
        view = memoryview(data)
        topics = self._topics
        budget = TAIL_SLICE
        for pos, header in iter_batches(data):
            if header.last_offset < self.position or header.is_control:
                self.position = max(self.position, header.last_offset + 1)
                continue
            for rec in iter_records(view[pos : pos + header.size]):
                offset = rec.offset
                if offset < self.position:
                    continue
                key = rec.key
                mqtt_topic = topics.get(key)
                if mqtt_topic is None:
                    mqtt_topic = gw.mapper.mqtt_topic(topic, key)
                    if len(topics) >= KEY_CACHE:
                        topics.clear()
                    topics[key] = mqtt_topic
                owners = gw.owners_of(mqtt_topic)
                if owners:
                    msg = gw.message_from_record(mqtt_topic, rec)
                    for owner, options in owners:
                        if isinstance(owner, ShareGroup):
                            owner.offer(msg, options[0], tp, offset)
                        else:
                            owner.offer(msg, options, tp, offset)
                self.position = offset + 1
                budget -= 1
                if budget <= 0:
                    budget = TAIL_SLICE
                    await asyncio.sleep(0)
            self.position = max(self.position, header.last_offset + 1)


class MqttGateway:
    name = "mqtt"

    @property
    def address(self) -> str:
        return f"{self.state.config.host}:{self.port}"

    def health(self) -> dict[str, object]:
        return {"listening": self.port != 0}

    def __init__(self, state: BrokerState, *, host: str | None = None, port: int | None = None,
                 authenticate: Authenticator | None = None) -> None:
        self.state = state
        self.host = host or state.config.host
        self.port = state.config.mqtt_port if port is None else port
        self.mapper = TopicMapper(parse_rules(getattr(state.config, "mqtt_topic_rules", "")))
        self.authenticate = authenticate
        self.clock_ms = now_ms
        self.trie: SubscriptionTrie[SubOptions] = SubscriptionTrie()
        self.retained: TopicTree[Message] = TopicTree()
        self.sys_retained: TopicTree[Message] = TopicTree()  # $SYS/broker/..., memory only
        self.stats = SysCounters()
        self.sys_interval = state.config.mqtt_sys_interval
        self.sessions: dict[str, Session] = {}
        self.groups: dict[tuple[str, str], ShareGroup] = {}
        self.tailers: dict[TP, Tailer] = {}
        self.clients: set[MqttClient] = set()
        self.client_log = RateLimitedLog(log)  # what a client can trigger, per peer host
        data_dir = state.config.data_dir
        internal = state.config.internal_log_config()
        self.retained_log = StateLog(data_dir, RETAINED_LOG, state.flusher, now_ms, internal)
        self.sessions_log = StateLog(data_dir, SESSIONS_LOG, state.flusher, now_ms, internal)
        self.stopping = False
        self._filters: dict[str, int] = {}  # plain filter → subscriptions using it
        self._known_topics: set[str] = set()
        self._targets: dict[str, TP] = {}  # MQTT topic → (Kafka topic, partition)
        # MQTT topic → its trie matches grouped per owner; dropped on every subscription change
        self._owners: dict[str, list[tuple[Any, list[SubOptions]]]] = {}
        self._metas: dict[tuple[tuple[str, bytes | None], ...], RecordMeta] = {}
        self._chunks: dict[TP, list[DecodedChunk]] = {}  # recent catch-up reads, newest first
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wills: dict[str, asyncio.TimerHandle] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        for state_log in (self.retained_log, self.sessions_log):
            if state_log.log is not None:  # compacted by the broker's cleaner from now on
                self.state.maintenance.register(state_log.log)
        self._known_topics = set(self.state.logs.topics())
        self.refresh_interest()
        for session in self.sessions.values():
            for tp, offset in list(session.behind.items()):
                tailer = self.tailers.get(tp)
                if tailer is not None and offset >= tailer.position:
                    del session.behind[tp]
        from bayou.gateways.mqtt.client import MqttClient

        self._server = await asyncio.get_running_loop().create_server(
            lambda: MqttClient(self), self.host, self.port, reuse_address=True, backlog=1024)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._housekeeping())]
        if self.sys_interval > 0:
            self._tasks.append(asyncio.create_task(self._sys_updates()))

    def _load(self) -> None:
        self.retained_log.open()
        self.sessions_log.open()
        for key, value, headers in self.retained_log.load().values():
            meta = meta_from_headers(headers)
            self.retained.set(key.decode(), Message(key.decode(), value or b"", meta.qos, True,
                                                    meta.origin, None, meta.props))
        for key, value, _h in self.sessions_log.load().values():
            try:
                self._restore_session(key.decode(), json.loads(value or b"{}"))
            except Exception:
                log.exception("cannot restore MQTT session %r; dropping it", key)

    def _restore_session(self, client_id: str, doc: dict[str, Any]) -> None:
        session = Session(self, client_id, int(doc.get("expiry", 0)))
        session.disconnected_at = doc.get("disconnected_at") or self.clock_ms()
        session.stored = True
        for topic, partition, offset in doc.get("positions", []):
            session.behind[(topic, int(partition))] = int(offset)
        session.restored_inflight = list(doc.get("inflight", []))
        session.pubrel_wait = set(doc.get("pubrel", []))
        self.sessions[client_id] = session
        for topic_filter, raw in doc.get("subs", {}).items():
            self._add_subscription(session, topic_filter, SubOptions.load(raw))

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
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
        for state_log in (self.retained_log, self.sessions_log):
            if state_log.log is not None:
                self.state.maintenance.unregister(state_log.log)
        await asyncio.to_thread(self._close_logs)

    def _close_logs(self) -> None:
        self.retained_log.close()
        self.sessions_log.close()

    async def _housekeeping(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(SAVE_INTERVAL_S)
            ticks += 1
            try:
                await self._save_sessions()
                if ticks % 2 == 0:
                    self.refresh_interest()
                    self._expire_sessions()
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
            "subscriptions": sum(self._filters.values()),
            "shared_subscriptions": sum(len(group.members) for group in self.groups.values()),
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

    async def _save_sessions(self, all_persistent: bool = False) -> None:
        entries: list[tuple[bytes, bytes | None, list[tuple[str, bytes | None]]]] = []
        for session in self.sessions.values():
            if session.persistent and (session.dirty or all_persistent):
                session.dirty = False
                session.stored = True
                entries.append((session.client_id.encode(),
                                json.dumps(session.dump()).encode(), []))
        await self.sessions_log.put(entries)

    async def save_session(self, session: Session) -> None:
        session.dirty = False
        session.stored = True
        await self.sessions_log.put([(session.client_id.encode(),
                                      json.dumps(session.dump()).encode(), [])])

    def _expire_sessions(self) -> None:
        now = self.clock_ms()
        for session in list(self.sessions.values()):
            if (session.conn is None and session.expiry_s != NEVER_EXPIRES
                    and session.disconnected_at is not None
                    and now - session.disconnected_at >= session.expiry_s * 1000):
                log.info("MQTT session %s expired", session.client_id)
                self.stats.clients_expired += 1
                self.drop_session(session)

    # ------------------------------------------------------------------ subscriptions

    def owners_of(self, mqtt_topic: str) -> list[tuple[Any, list[SubOptions]]]:
        """The sessions and share groups whose filters match ``mqtt_topic``, each with the
        options of its matching subscriptions (one trie walk per topic, then cached)."""
        owners = self._owners.get(mqtt_topic)
        if owners is None:
            by_owner: dict[Any, list[SubOptions]] = {}
            for owner, opts in self.trie.match(mqtt_topic):
                by_owner.setdefault(owner, []).append(opts)
            owners = list(by_owner.items())
            if len(self._owners) >= KEY_CACHE:
                self._owners.clear()
            self._owners[mqtt_topic] = owners
        return owners

    def _add_subscription(self, session: Session, topic_filter: str, opts: SubOptions) -> bool:
        self._owners.clear()
        group_name, plain = parse_shared(topic_filter)
        new = topic_filter not in session.subs
        session.subs[topic_filter] = opts
        if group_name is None:
            self.trie.add(plain, session, opts)
        else:
            key = (group_name, plain)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = ShareGroup(group_name, plain, self.stats)
                self.trie.add(plain, group, SubOptions(2))
            group.members[session.client_id] = (session, opts)
            session.groups[topic_filter] = group
        if new:
            self._filters[plain] = self._filters.get(plain, 0) + 1
        return new

    def _remove_subscription(self, session: Session, topic_filter: str) -> bool:
        if session.subs.pop(topic_filter, None) is None:
            return False
        self._owners.clear()
        group_name, plain = parse_shared(topic_filter)
        if group_name is None:
            self.trie.remove(plain, session)
        else:
            group = session.groups.pop(topic_filter, None)
            if group is not None:
                group.members.pop(session.client_id, None)
                if not group.members:
                    self.trie.remove(plain, group)
                    self.groups.pop((group_name, plain), None)
        left = self._filters.get(plain, 1) - 1
        if left:
            self._filters[plain] = left
        else:
            self._filters.pop(plain, None)
        return True

    def drop_session(self, session: Session) -> None:
        for topic_filter in list(session.subs):
            self._remove_subscription(session, topic_filter)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if session.stored:
            session.stored = False
            self.state.background(self.sessions_log.put(
                [(session.client_id.encode(), None, [])]))
        self.refresh_interest()

    def interest_of(self, session: Session) -> Iterable[TP]:
        topics: set[str] = set()
        existing = self.state.logs.topics()
        for topic_filter in session.subs:
            if not topic_filter.startswith("$share/"):
                topics |= self.mapper.kafka_topics_for_filter(topic_filter, existing)
        for topic in topics:
            meta = existing.get(topic)
            if meta is not None:
                for p in range(meta.partitions):
                    yield (topic, p)

    def refresh_interest(self) -> None:
        """Start a tailer for every partition a subscription may read; stop the others."""
        existing = self.state.logs.topics()
        wanted: set[str] = set()
        for topic_filter in self._filters:
            wanted |= self.mapper.kafka_topics_for_filter(topic_filter, existing)
        needed: set[TP] = set()
        for topic in wanted:
            meta = existing.get(topic)
            if meta is None:
                continue
            for p in range(meta.partitions):
                tp = (topic, p)
                needed.add(tp)
                if tp not in self.tailers:
                    plog = self.state.logs.partition(topic, p)
                    fresh = topic not in self._known_topics
                    start = plog.log_start_offset if fresh else plog.log_end_offset
                    tailer = self.tailers[tp] = Tailer(self, tp, start)
                    tailer.start()
        for tp in list(self.tailers):
            if tp not in needed:
                self.tailers.pop(tp).stop()
        for tp in list(self._chunks):
            if tp not in needed:
                del self._chunks[tp]
        self._known_topics = set(existing)
        self._targets.clear()

    # ------------------------------------------------------------------ messages

    def message_from_record(self, mqtt_topic: str, rec: DecodedRecord) -> Message:
        headers = rec.headers
        plain = len(headers) <= 3
        if plain:
            for name, value in headers:
                if name not in _PLAIN_HEADERS or value is None or len(value) > 256:
                    plain = False
                    break
        if plain:
            # QoS, retain and client id only (what an MQTT PUBLISH without properties
            # stores): few distinct combinations, so their meaning is kept, not re-parsed
            key = tuple(headers)
            meta = self._metas.get(key)
            if meta is None:
                if len(self._metas) >= META_CACHE:
                    self._metas.clear()
                meta = self._metas[key] = meta_from_headers(headers)
        else:
            meta = meta_from_headers(headers)
        expiry_at = rec.timestamp + meta.expiry_s * 1000 if meta.expiry_s is not None else None
        return Message(mqtt_topic, rec.value or b"", meta.qos, meta.retain, meta.origin,
                       expiry_at, meta.props)

    def kafka_target(self, mqtt_topic: str) -> TP:
        """(Kafka topic, partition) for an MQTT topic, auto-creating the topic if allowed.

        Cached per MQTT topic; the cache is dropped by ``refresh_interest`` (every second and
        whenever a topic is created) and after a failed append, so a topic's new partition
        count is seen within a second, like a Kafka producer's metadata refresh.
        """
        tp = self._targets.get(mqtt_topic)
        if tp is not None:
            return tp
        topic = self.mapper.kafka_topic(mqtt_topic)
        meta = self.state.logs.topics().get(topic)
        if meta is None:
            meta = self.state.topic_or_autocreate(topic)
            self.refresh_interest()
        tp = (topic, partition_for(mqtt_topic.encode(), meta.partitions))
        if len(self._targets) >= TARGET_CACHE:
            self._targets.clear()
        self._targets[mqtt_topic] = tp
        return tp

    def catch_up_chunk(self, tp: TP, plog: Any, offset: int) -> DecodedChunk:
        """The decoded log chunk holding ``offset`` for a session catching up on ``tp``:
        one of the last reads of ``tp`` when it covers ``offset`` (sessions behind together
        share one read and one decoding), else a new read.  At most ``CHUNKS_KEPT``."""
        chunks = self._chunks.get(tp)
        if chunks is not None:
            for chunk in chunks:
                if chunk.covers(plog, offset):
                    return chunk
        else:
            chunks = []
        chunk = DecodedChunk(self, tp, plog, offset)
        chunks.insert(0, chunk)
        del chunks[CHUNKS_PER_PARTITION:]
        self._chunks.pop(tp, None)
        while len(self._chunks) >= CHUNKS_KEPT // CHUNKS_PER_PARTITION:
            del self._chunks[next(iter(self._chunks))]
        self._chunks[tp] = chunks
        return chunk

    def forget_targets(self) -> None:
        self._targets.clear()

    def set_retained(self, publish: Publish, client_id: str) -> Any:
        """Update the retained tree; returns the awaitable that makes it durable."""
        topic = publish.topic
        key = topic.encode()
        if publish.payload:
            props = publish.properties
            expiry = props.message_expiry_interval
            msg = Message(topic, publish.payload, publish.qos, True, client_id,
                          self.clock_ms() + expiry * 1000 if expiry is not None else None,
                          stored_props(props))
            self.retained.set(topic, msg)
            headers = headers_for(props, publish.qos, True, client_id)
            return self.retained_log.put([(key, publish.payload, headers)])
        self.retained.set(topic, None)
        return self.retained_log.put([(key, None, [])])

    def publish_will(self, client_id: str, will: WillState) -> None:
        self._wills.pop(client_id, None)
        if self.stopping:
            return
        if is_sys(will.topic):
            log.warning("the will of MQTT client %s is on %s, which is the broker's: "
                        "not published", client_id, will.topic)
            return
        publish = Publish(will.topic, will.payload, will.qos, will.retain, False, None,
                          will.props)
        try:
            tp = self.kafka_target(will.topic)
            headers = headers_for(will.props, will.qos, will.retain, client_id)
            batch = build_batch([Record(self.clock_ms(), will.topic.encode(), will.payload,
                                        headers)])
            self.state.background(self.state.append(tp[0], tp[1], batch))
            if will.retain:
                self.state.background(self.set_retained(publish, client_id))
            log.info("published the will of MQTT client %s on %s", client_id, will.topic)
        except KafkaError as exc:
            log.warning("cannot publish the will of %s on %s: %s", client_id, will.topic, exc)

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

    def restore_inflight(self, session: Session) -> None:
        """Read back from the log the in-flight messages a restarted session had."""
        for entry in session.restored_inflight:
            topic, partition, offset, pid, qos, released, sub_ids = entry
            tp = (topic, int(partition))
            try:
                plog = self.state.logs.partition(*tp)
                data = plog.read(int(offset), 64 * 1024)
            except KafkaError:
                continue
            for pos, header in iter_batches(data):
                if not header.base_offset <= offset <= header.last_offset:
                    continue
                for rec in iter_records(memoryview(data)[pos : pos + header.size]):
                    if rec.offset == offset:
                        msg = self.message_from_record(self.mapper.mqtt_topic(topic, rec.key),
                                                       rec)
                        d = Delivery(msg, int(qos), False, tuple(sub_ids), tp, offset, True)
                        item = Inflight(d)
                        item.released = bool(released)
                        session.inflight[int(pid)] = item
        session.restored_inflight = []


def stored_props(props: Properties) -> Properties:
    return Properties(payload_format_indicator=props.payload_format_indicator,
                      content_type=props.content_type, response_topic=props.response_topic,
                      correlation_data=props.correlation_data,
                      user_properties=list(props.user_properties))
