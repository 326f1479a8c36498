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
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from bayou.broker.context import BrokerState, now_ms
from bayou.errors import KafkaError, OffsetOutOfRange
from bayou.gateways.mqtt.mapping import (
    TopicMapper,
    headers_for,
    meta_from_headers,
    parse_rules,
    partition_for,
)
from bayou.gateways.mqtt.session import (
    NEVER_EXPIRES,
    TP,
    Delivery,
    Inflight,
    Message,
    Session,
    ShareGroup,
    SubOptions,
    WillState,
)
from bayou.gateways.mqtt.store import RETAINED_LOG, SESSIONS_LOG, StateLog
from bayou.gateways.mqtt.trie import SubscriptionTrie, TopicTree
from bayou.protocol.kafka.records import (
    DecodedRecord,
    Record,
    build_batch,
    iter_batches,
    iter_records,
)
from bayou.protocol.mqtt import (
    MQTT_5,
    MqttError,
    ProtocolError,
    ServerConnection,
    State,
)
from bayou.protocol.mqtt.packets import (
    Connect,
    Disconnect,
    PingReq,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Reason,
    Subscribe,
    Unsubscribe,
)
from bayou.protocol.mqtt.topics import parse_shared, valid_topic_filter
from bayou.protocol.websocket import WebSocketServer

log = logging.getLogger("bayou.mqtt")

Authenticator = Callable[[str, str | None, bytes | None], bool]
TAIL_READ = 1024 * 1024
REFRESH_INTERVAL_S = 1.0
SAVE_INTERVAL_S = 0.5
MAX_PACKET_SIZE = 1024 * 1024 + 1024
RECEIVE_MAXIMUM = 1024


class Tailer:
    """Follows one partition from ``position`` and offers each new record to its matches."""

    def __init__(self, gateway: MqttGateway, tp: TP, position: int) -> None:
        self.gateway = gateway
        self.tp = tp
        self.position = position
        self.task: asyncio.Task[None] | None = None

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
                    data = plog.read(self.position, TAIL_READ)
                except OffsetOutOfRange:
                    self.position = plog.log_start_offset
                    continue
                try:
                    self.process(data)
                except Exception:
                    log.exception("MQTT delivery from %s-%d failed at offset %d",
                                  *self.tp, self.position)
                    self.position = plog.log_end_offset
                await asyncio.sleep(0)
            else:
                await waiters.wait_any([self.tp], 1.0)

    def process(self, data: bytes) -> None:
        gw = self.gateway
        topic = self.tp[0]
        view = memoryview(data)
        for pos, header in iter_batches(data):
            if header.last_offset < self.position or header.is_control:
                self.position = max(self.position, header.last_offset + 1)
                continue
            for rec in iter_records(view[pos : pos + header.size]):
                if rec.offset < self.position:
                    continue
                mqtt_topic = gw.mapper.mqtt_topic(topic, rec.key)
                found = gw.trie.match(mqtt_topic)
                if found:
                    self.dispatch(mqtt_topic, rec, found)
            self.position = header.last_offset + 1

    def dispatch(self, mqtt_topic: str, rec: DecodedRecord,
                 found: list[tuple[Any, SubOptions]]) -> None:
        msg = self.gateway.message_from_record(mqtt_topic, rec)
        by_owner: dict[Any, list[SubOptions]] = {}
        for owner, opts in found:
            by_owner.setdefault(owner, []).append(opts)
        for owner, options in by_owner.items():
            if isinstance(owner, ShareGroup):
                owner.offer(msg, options[0], self.tp, rec.offset)
            else:
                owner.offer(msg, options, self.tp, rec.offset)


class MqttGateway:
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
        self.sessions: dict[str, Session] = {}
        self.groups: dict[tuple[str, str], ShareGroup] = {}
        self.tailers: dict[TP, Tailer] = {}
        self.clients: set[MqttClient] = set()
        data_dir = state.config.data_dir
        self.retained_log = StateLog(data_dir, RETAINED_LOG, state.flusher, now_ms)
        self.sessions_log = StateLog(data_dir, SESSIONS_LOG, state.flusher, now_ms)
        self.stopping = False
        self._filters: dict[str, int] = {}  # plain filter → subscriptions using it
        self._known_topics: set[str] = set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wills: dict[str, asyncio.TimerHandle] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._known_topics = set(self.state.logs.topics())
        self.refresh_interest()
        for session in self.sessions.values():
            for tp, offset in list(session.behind.items()):
                tailer = self.tailers.get(tp)
                if tailer is not None and offset >= tailer.position:
                    del session.behind[tp]
        self._server = await asyncio.get_running_loop().create_server(
            lambda: MqttClient(self), self.host, self.port, reuse_address=True, backlog=1024)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._housekeeping())]

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

    async def _save_sessions(self, all_persistent: bool = False) -> None:
        entries: list[tuple[bytes, bytes | None, list[tuple[str, bytes | None]]]] = []
        for session in self.sessions.values():
            if session.persistent and (session.dirty or all_persistent):
                session.dirty = False
                entries.append((session.client_id.encode(),
                                json.dumps(session.dump()).encode(), []))
        await self.sessions_log.put(entries)

    async def save_session(self, session: Session) -> None:
        session.dirty = False
        await self.sessions_log.put([(session.client_id.encode(),
                                      json.dumps(session.dump()).encode(), [])])

    def _expire_sessions(self) -> None:
        now = self.clock_ms()
        for session in list(self.sessions.values()):
            if (session.conn is None and session.expiry_s != NEVER_EXPIRES
                    and session.disconnected_at is not None
                    and now - session.disconnected_at >= session.expiry_s * 1000):
                log.info("MQTT session %s expired", session.client_id)
                self.drop_session(session)

    # ------------------------------------------------------------------ subscriptions

    def _add_subscription(self, session: Session, topic_filter: str, opts: SubOptions) -> bool:
        group_name, plain = parse_shared(topic_filter)
        new = topic_filter not in session.subs
        session.subs[topic_filter] = opts
        if group_name is None:
            self.trie.add(plain, session, opts)
        else:
            key = (group_name, plain)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = ShareGroup(group_name, plain)
                self.trie.add(plain, group, SubOptions(2))
            group.members[session.client_id] = (session, opts)
            session.groups[topic_filter] = group
        if new:
            self._filters[plain] = self._filters.get(plain, 0) + 1
        return new

    def _remove_subscription(self, session: Session, topic_filter: str) -> bool:
        if session.subs.pop(topic_filter, None) is None:
            return False
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
        if session.persistent or session.dirty:
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
        self._known_topics = set(existing)

    # ------------------------------------------------------------------ messages

    def message_from_record(self, mqtt_topic: str, rec: DecodedRecord) -> Message:
        meta = meta_from_headers(rec.headers)
        expiry_at = rec.timestamp + meta.expiry_s * 1000 if meta.expiry_s is not None else None
        return Message(mqtt_topic, rec.value or b"", meta.qos, meta.retain, meta.origin,
                       expiry_at, meta.props)

    def kafka_target(self, mqtt_topic: str) -> TP:
        """(Kafka topic, partition) for an MQTT topic, auto-creating the topic if allowed."""
        topic = self.mapper.kafka_topic(mqtt_topic)
        meta = self.state.logs.topics().get(topic)
        if meta is None:
            meta = self.state.topic_or_autocreate(topic)
            self.refresh_interest()
        return topic, partition_for(mqtt_topic.encode(), meta.partitions)

    def set_retained(self, publish: Publish, client_id: str) -> Any:
        """Update the retained tree; returns the awaitable that makes it durable."""
        topic = publish.topic
        key = topic.encode()
        if publish.payload:
            props = publish.properties
            expiry = props.message_expiry_interval
            msg = Message(topic, publish.payload, publish.qos, True, client_id,
                          self.clock_ms() + expiry * 1000 if expiry is not None else None,
                          _stored_props(props))
            self.retained.set(topic, msg)
            headers = headers_for(props, publish.qos, True, client_id)
            return self.retained_log.put([(key, publish.payload, headers)])
        self.retained.set(topic, None)
        return self.retained_log.put([(key, None, [])])

    def publish_will(self, client_id: str, will: WillState) -> None:
        self._wills.pop(client_id, None)
        if self.stopping:
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


def _stored_props(props: Properties) -> Properties:
    return Properties(payload_format_indicator=props.payload_format_indicator,
                      content_type=props.content_type, response_topic=props.response_topic,
                      correlation_data=props.correlation_data,
                      user_properties=list(props.user_properties))


class MqttClient(asyncio.Protocol):
    """One client connection."""

    def __init__(self, gateway: MqttGateway) -> None:
        self.gw = gateway
        self.proto = ServerConnection(max_packet_size=MAX_PACKET_SIZE,
                                      receive_maximum=RECEIVE_MAXIMUM)
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.paused = False
        self.peer = "?"
        self.ws: WebSocketServer | None = None
        self._sniffed = False
        self._will: WillState | None = None
        self._will_ok = True  # False after a normal DISCONNECT
        self._closing = False
        self._last_rx = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._pending: dict[TP, list[Record]] = {}
        self._acks: list[tuple[Publish, TP | None, BaseException | None]] = []
        self._retained_waits: list[Any] = []
        self._outq: deque[tuple[asyncio.Future[Any] | None, list[bytes]]] = deque()

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.gw.clients.add(self)
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._keepalive = loop.call_later(30.0, self._check_keepalive)  # CONNECT deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self.gw.clients.discard(self)
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._detach()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.session is not None:
            self.session.schedule_pump()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_rx = asyncio.get_running_loop().time()
        if not self._sniffed:
            self._sniffed = True
            if data[:1] == b"G":
                self.ws = WebSocketServer()
        if self.ws is not None:
            payload, reply = self.ws.receive_data(data)
            if reply and self.transport is not None:
                self.transport.write(reply)
            if self.ws.closed:
                self._close()
                return
            data = payload
            if not data:
                return
        try:
            for packet in self.proto.receive_data(data):
                self._handle(packet)
                if self._closing:
                    return
            self._flush_publishes()
        except MqttError as exc:
            self._fail(exc)
        except Exception as exc:
            log.exception("MQTT client %s: internal error", self.peer)
            self._fail(MqttError(f"internal error: {exc}", Reason.UNSPECIFIED_ERROR))

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        if self.transport is None or self._closing:
            return
        if self._outq:
            self._outq.append((None, [data]))
            return
        self.transport.write(self.ws.send(data) if self.ws is not None else data)

    def write_many(self, chunks: list[bytes]) -> None:
        if self.transport is None or self._closing:
            return
        data = b"".join(chunks)
        self.transport.write(self.ws.send(data) if self.ws is not None else data)

    def _close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: MqttError) -> None:
        log.warning("MQTT client %s (%s): closing: %s (reason 0x%02x)", self.peer,
                    self.session.client_id if self.session else "-", exc, int(exc.reason))
        goodbye = self.proto.goodbye(exc)
        if goodbye and self.transport is not None:
            self._outq.clear()
            self.transport.write(self.ws.send(goodbye) if self.ws is not None else goodbye)
        self._close()

    def shutdown(self) -> None:
        """The broker is stopping."""
        if self.proto.state is State.CONNECTED and self.proto.version == MQTT_5:
            self.write_many([self.proto.send(Disconnect(Reason.SERVER_SHUTTING_DOWN))])
        self._will_ok = False
        self._close()

    def _check_keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        if self.proto.state is State.AWAIT_CONNECT:
            log.warning("MQTT client %s sent no CONNECT in time", self.peer)
            self._close()
            return
        limit = self.proto.keep_alive * 1.5
        idle = loop.time() - self._last_rx
        if limit and idle >= limit:
            self._fail(MqttError("keep-alive timeout", Reason.KEEP_ALIVE_TIMEOUT))
            return
        if limit:
            self._keepalive = loop.call_later(max(0.05, limit - idle), self._check_keepalive)

    # ------------------------------------------------------------------ packets

    def _handle(self, packet: Any) -> None:
        if isinstance(packet, Publish):
            self._on_publish(packet)
            return
        self._flush_publishes()
        session = self.session
        if isinstance(packet, Connect):
            self._on_connect(packet)
        elif session is None:
            raise ProtocolError("no session")
        elif isinstance(packet, PubAck):
            session.on_puback(packet.packet_id)
        elif isinstance(packet, PubRec):
            if session.on_pubrec(packet.packet_id, packet.reason_code >= 0x80):
                if packet.reason_code < 0x80:
                    self.write(self.proto.send(PubRel(packet.packet_id)))
            elif packet.reason_code < 0x80:
                self.write(self.proto.send(PubRel(packet.packet_id,
                                                  Reason.PACKET_IDENTIFIER_NOT_FOUND)))
        elif isinstance(packet, PubComp):
            session.on_pubcomp(packet.packet_id)
        elif isinstance(packet, PubRel):
            found = packet.packet_id in session.pubrel_wait
            session.pubrel_wait.discard(packet.packet_id)
            session.dirty = session.dirty or found
            reason = Reason.SUCCESS if found else Reason.PACKET_IDENTIFIER_NOT_FOUND
            self.write(self.proto.send(PubComp(packet.packet_id, reason)))
        elif isinstance(packet, Subscribe):
            self._on_subscribe(packet)
        elif isinstance(packet, Unsubscribe):
            codes = []
            for topic_filter in packet.topic_filters:
                removed = self.gw._remove_subscription(session, topic_filter)
                codes.append(Reason.SUCCESS if removed else Reason.NO_SUBSCRIPTION_EXISTED)
            session.dirty = True
            self.gw.refresh_interest()
            self.write(self.proto.unsuback(packet, codes))
        elif isinstance(packet, PingReq):
            self.write(self.proto.ping_response())
        elif isinstance(packet, Disconnect):
            self._on_disconnect(packet)

    def _on_connect(self, packet: Connect) -> None:
        gw = self.gw
        proto = self.proto
        v5 = proto.version == MQTT_5
        if packet.properties.authentication_method is not None:
            self._refuse(Reason.BAD_AUTHENTICATION_METHOD, "enhanced authentication is "
                         "not supported")
            return
        if gw.authenticate is not None and not gw.authenticate(
            packet.client_id, packet.username, packet.password
        ):
            log.warning("MQTT client %s: bad user name or password (user %r)", self.peer,
                        packet.username)
            self._refuse(Reason.BAD_USER_NAME_OR_PASSWORD, "bad user name or password")
            return
        client_id = packet.client_id
        assigned = None
        if not client_id:
            if not packet.clean_start and not v5:
                self._refuse(Reason.CLIENT_IDENTIFIER_NOT_VALID, "empty client id")
                return
            client_id = assigned = "bayou-" + uuid.uuid4().hex[:16]
        if v5:
            expiry = packet.properties.session_expiry_interval or 0
        else:
            expiry = 0 if packet.clean_start else NEVER_EXPIRES
        gw.cancel_will(client_id)
        session = gw.sessions.get(client_id)
        if session is not None and session.conn is not None:
            old = session.conn
            log.info("MQTT client %s taken over by %s", client_id, self.peer)
            if old.proto.version == MQTT_5:
                old.write_many([old.proto.send(Disconnect(Reason.SESSION_TAKEN_OVER))])
            old._detach()
            old._close()
            session = gw.sessions.get(client_id)
        present = session is not None and not packet.clean_start
        if session is not None and packet.clean_start:
            gw.drop_session(session)
            session = None
        if session is None:
            session = Session(gw, client_id, expiry)
            gw.sessions[client_id] = session
        session.expiry_s = expiry
        session.conn = self
        session.disconnected_at = None
        session.dirty = True
        self.session = session
        if packet.will is not None:
            w = packet.will
            self._will = WillState(w.topic, w.payload, w.qos, w.retain,
                                   _stored_props(w.properties),
                                   w.properties.will_delay_interval or 0)
            if w.properties.message_expiry_interval is not None:
                self._will.props.message_expiry_interval = w.properties.message_expiry_interval
        props = Properties()
        if assigned is not None and v5:
            props.assigned_client_identifier = assigned
        if v5:
            props.retain_available = 1
            props.shared_subscription_available = 1
            props.wildcard_subscription_available = 1
            props.subscription_identifier_available = 1
        self.write(proto.connack(present, props))
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if proto.keep_alive:
            loop = asyncio.get_running_loop()
            self._keepalive = loop.call_later(proto.keep_alive * 1.5, self._check_keepalive)
        if session.restored_inflight:
            gw.restore_inflight(session)
        if present:
            session.resend_inflight()
        else:
            session.inflight.clear()
        session.schedule_pump()

    def _refuse(self, reason: int, message: str) -> None:
        data = self.proto.refuse(reason, message)
        if self.transport is not None:
            self.transport.write(self.ws.send(data) if self.ws is not None else data)
        self._will_ok = False
        self._close()

    def _on_disconnect(self, packet: Disconnect) -> None:
        session = self.session
        new_expiry = packet.properties.session_expiry_interval
        if session is not None and new_expiry is not None:
            if session.expiry_s == 0 and new_expiry > 0:
                self._fail(ProtocolError("session expiry set at DISCONNECT after 0 at CONNECT"))
                return
            session.expiry_s = new_expiry
        self._will_ok = packet.reason_code == Reason.DISCONNECT_WITH_WILL
        if not self._will_ok:
            self._will = None
        self._close()

    def _detach(self) -> None:
        session, self.session = self.session, None
        if session is None or session.conn is not self:
            return
        gw = self.gw
        will = self._will if self._will_ok else None
        self._will = None
        if gw.stopping:
            session.go_offline()
            session.disconnected_at = gw.clock_ms()
            return
        if not session.persistent:
            session.go_offline()
            gw.drop_session(session)
            if will is not None:
                gw.publish_will(session.client_id, will)
            return
        session.go_offline()
        session.disconnected_at = gw.clock_ms()
        if will is not None:
            gw.schedule_will(session.client_id, will, min(will.delay_s, session.expiry_s))
        gw.state.background(gw.save_session(session))

    def _on_subscribe(self, packet: Subscribe) -> None:
        session = self.session
        assert session is not None
        gw = self.gw
        sub_ids = packet.properties.subscription_identifiers
        sub_id = sub_ids[0] if sub_ids else None
        codes: list[int] = []
        retained: list[tuple[str, SubOptions]] = []
        for sub in packet.subscriptions:
            topic_filter = sub.topic_filter
            try:
                group, plain = parse_shared(topic_filter)
            except MqttError:
                codes.append(Reason.TOPIC_FILTER_INVALID)
                continue
            if not valid_topic_filter(plain):
                codes.append(Reason.TOPIC_FILTER_INVALID)
                continue
            if group is not None and sub.no_local:
                raise ProtocolError("No Local on a shared subscription")
            opts = SubOptions(sub.qos, sub.no_local, sub.retain_as_published,
                              sub.retain_handling, sub_id)
            new = gw._add_subscription(session, topic_filter, opts)
            codes.append(sub.qos)
            if group is None and (sub.retain_handling == 0
                                  or (sub.retain_handling == 1 and new)):
                retained.append((plain, opts))
        session.dirty = True
        gw.refresh_interest()
        suback = self.proto.suback(packet.packet_id, codes)
        now = gw.clock_ms()
        for plain, opts in retained:
            for msg in gw.retained.match(plain):
                if msg.expired(now):
                    continue
                ids = (opts.sub_id,) if opts.sub_id is not None else ()
                session.enqueue(Delivery(msg, min(msg.qos, opts.qos), True, ids, None, 0,
                                         False), pump=False)
        if session.persistent:
            self._ordered(gw.save_session(session), [suback])
        else:
            self.write(suback)
        session.schedule_pump()

    def _on_publish(self, packet: Publish) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("PUBLISH before CONNECT")
        if packet.qos == 2 and packet.packet_id in session.pubrel_wait:
            self._acks.append((packet, None, None))  # already stored: just PUBREC again
            return
        try:
            tp = self.gw.kafka_target(packet.topic)
        except KafkaError as exc:
            self._acks.append((packet, None, exc))
            return
        headers = headers_for(packet.properties, packet.qos, packet.retain, session.client_id)
        record = Record(self.gw.clock_ms(), packet.topic.encode(), packet.payload, headers)
        self._pending.setdefault(tp, []).append(record)
        self._acks.append((packet, tp, None))
        if packet.retain:
            wait = self.gw.set_retained(packet, session.client_id)
            if packet.qos:
                self._retained_waits.append(wait)
            else:
                self.gw.state.background(wait)
        if packet.qos == 2:
            assert packet.packet_id is not None
            session.pubrel_wait.add(packet.packet_id)
            session.dirty = True

    def _flush_publishes(self) -> None:
        if not self._acks:
            return
        pending, self._pending = self._pending, {}
        acks, self._acks = self._acks, []
        waits, self._retained_waits = self._retained_waits, []
        state = self.gw.state
        failed: dict[TP, BaseException] = {}
        to_flush = []
        for tp, records in pending.items():
            try:
                _result, dirty = state.append_now(tp[0], tp[1], build_batch(records))
            except KafkaError as exc:
                failed[tp] = exc
                continue
            if dirty is not None:
                to_flush.append(dirty)
        out: list[bytes] = []
        for packet, tp, error in acks:
            if error is None and tp is not None:
                error = failed.get(tp)
            if packet.qos == 0:
                if error is not None:
                    log.debug("MQTT QoS 0 publish to %s dropped: %s", packet.topic, error)
                continue
            assert packet.packet_id is not None
            if error is not None:
                if self.proto.version != MQTT_5:
                    raise MqttError(f"publish to {packet.topic} failed: {error}")
                props = Properties(reason_string=str(error)[:200])
                if packet.qos == 2 and self.session is not None:
                    self.session.pubrel_wait.discard(packet.packet_id)
                    out.append(self.proto.send(PubRec(packet.packet_id,
                                                      Reason.IMPLEMENTATION_SPECIFIC_ERROR,
                                                      props)))
                else:
                    out.append(self.proto.send(PubAck(packet.packet_id,
                                                      Reason.IMPLEMENTATION_SPECIFIC_ERROR,
                                                      props)))
                continue
            if packet.qos == 1:
                out.append(self.proto.send(PubAck(packet.packet_id)))
            else:
                out.append(self.proto.send(PubRec(packet.packet_id)))
        if not out:
            if to_flush:
                state.background(state.make_durable(to_flush))
            return
        if to_flush or waits:
            self._ordered(self._durable(to_flush, waits), out)
        elif self._outq:
            self._outq.append((None, out))
        else:
            self.write_many(out)

    async def _durable(self, logs: list[Any], waits: list[Any]) -> None:
        await self.gw.state.make_durable(logs)
        for wait in waits:
            await wait

    def _ordered(self, awaitable: Any, out: list[bytes]) -> None:
        """Send ``out`` once ``awaitable`` is done, after everything queued before it."""
        future = asyncio.ensure_future(awaitable)
        self._outq.append((future, out))
        future.add_done_callback(lambda _f: self._drain())

    def _drain(self) -> None:
        outq = self._outq
        while outq:
            future, out = outq[0]
            if future is not None:
                if not future.done():
                    return
                if not future.cancelled() and future.exception() is not None:
                    outq.clear()
                    self._fail(MqttError(f"storage failure: {future.exception()}",
                                         Reason.UNSPECIFIED_ERROR))
                    return
            outq.popleft()
            self.write_many(out)
