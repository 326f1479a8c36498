"""One MQTT client connection: bytes → ``ServerConnection`` → packets → the gateway.

Theory of operation
-------------------
``data_received`` feeds the sans-I/O connection (after the WebSocket layer when the first
byte was ``G``) and handles each packet.  PUBLISHes are collected per read and stored
together (``publishing.py``); every other packet first flushes them, so effects keep the
packets' order.  A read that holds nothing but plain PUBACKs — a QoS 1 subscriber's usual
read — skips the packet objects (``receive_acks``): every slot they free is freed, then the
session's one pump (scheduled for the end of this turn of the loop) refills the window and
sends what it took in one write.  Replies go through an ordered output queue: an
acknowledgement that waits for its append (as durable as the topic asks) holds back the
replies behind it, never the deliveries to the client.  Any ``MqttError`` ends the
connection with its reason code and one log line.

The connection sees the door through ``ClientHost`` and its session through ``Session``;
it is the session's ``Connection``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from bayou.core.quotas import Quotas
from bayou.core.request_budget import RequestBudget
from bayou.core.security import Login, Security
from bayou.core.security.acl import AclOperation, ResourceType
from bayou.core.security.scram import MECHANISMS, ScramError, ScramServer
from bayou.gateways.admission import admit
from bayou.gateways.mqtt.mapping import TopicMapper
from bayou.gateways.mqtt.messages import Delivery, Message, WillState, stored_props
from bayou.gateways.mqtt.publishing import Inbound, PublishHost
from bayou.gateways.mqtt.session import NEVER_EXPIRES, Session
from bayou.gateways.mqtt.subscriptions import SubOptions
from bayou.gateways.pacing import ConnectionQuota, Mute
from bayou.log_limits import RateLimitedLog
from bayou.protocol.mqtt import (
    MQTT_5,
    MqttError,
    ProtocolError,
    PublishRun,
    ServerConnection,
    State,
)
from bayou.protocol.mqtt.packets import (
    Auth,
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

LINGER_S = 2.0  # how long a connection the broker ends reads on before closing (see _close)
MAX_PACKET_SIZE = 1024 * 1024 + 1024
RECEIVE_MAXIMUM = 1024
Authenticator = Callable[[str, str | None, bytes | None], bool]  # client id, user, password


class ClientHost(PublishHost, Protocol):
    """The door, as a connection sees it."""

    authenticate: Authenticator | None
    security: Security
    quotas: Quotas
    mapper: TopicMapper
    sessions: dict[str, Session]
    clients: set[MqttClient]
    client_log: RateLimitedLog

    @property
    def stopping(self) -> bool: ...

    @property
    def request_budget(self) -> RequestBudget: ...

    def topic_names(self) -> Iterable[str]: ...

    def open_session(self, client_id: str, expiry_s: int) -> Session: ...

    def drop_session(self, session: Session) -> None: ...

    async def save_session(self, session: Session) -> None: ...

    def add_subscription(self, session: Session, topic_filter: str, opts: SubOptions) -> bool: ...

    def remove_subscription(self, session: Session, topic_filter: str) -> bool: ...

    def refresh_interest(self) -> None: ...

    def retained_matching(self, topic_filter: str) -> Iterable[Message]: ...

    def publish_will(self, client_id: str, will: WillState) -> None: ...

    def schedule_will(self, client_id: str, will: WillState, delay_s: int) -> None: ...

    def cancel_will(self, client_id: str) -> None: ...

    def holds_session(self, client_id: str) -> bool: ...

    async def adopt_session(self, client_id: str, clean_start: bool) -> None: ...

    def background(self, awaitable: Awaitable[Any]) -> None: ...


def guess_protocol(first: bytes) -> str:
    """A hint for the log about who sent ``first`` (the first bytes of a connection) to the
    MQTT port, or ``""``."""
    if len(first) >= 6 and first[0] == 0 and int.from_bytes(first[4:6], "big") < 100:
        return " (a Kafka client?)"  # a 4-byte request size, then the API key
    if first[:4] == b"AMQP":
        return " (an AMQP client?)"
    if first[:2] == b"\x16\x03":
        return " (a TLS handshake? this port is plain MQTT)"
    if first.split(b" ", 1)[0] in (b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH"):
        return " (an HTTP client?)"
    return ""


class MqttClient(asyncio.Protocol):
    """One client connection."""

    def __init__(self, gateway: ClientHost) -> None:
        self.gw = gateway
        self.proto = ServerConnection(
            max_packet_size=MAX_PACKET_SIZE, receive_maximum=RECEIVE_MAXIMUM
        )
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self._write_paused = False  # the transport's buffer is full
        self.peer = "?"
        self.peer_host = "?"  # what client-triggered log lines are rate-limited by
        self._first_bytes = b""
        self.ws: WebSocketServer | None = None
        self._sniffed = False
        self._will: WillState | None = None
        self._will_ok = True  # False after a normal DISCONNECT
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        self._last_rx = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._inbound = Inbound(gateway, self.proto)
        self._inbound.on_drained = self._stored
        self.principal: str | None = None  # who logged in (User:NAME), with an authorizer
        self._cert: str | None = None  # a TLS client certificate's principal
        #: a SCRAM exchange under way, with the CONNECT it answers (None: re-authentication)
        self._scram: tuple[ScramServer, Connect | None] | None = None
        self._refusing = False  # a failed login's answer is waiting (the growing delay)
        #: a CONNECT waits for its session to be taken over from another broker: packets
        #: read after it are held until it is answered (reading is paused meanwhile)
        self._held: list[Any] | None = None
        self._budget_wait = False  # reading paused: the request budget holds this packet
        self._storing_wait = False  # reading paused: too much being stored (publishing.py)
        self._quota = ConnectionQuota(gateway.quotas)
        self._mute = Mute(self._mute_changed)  # reading paused: over producer_byte_rate
        self._delivery_mute = Mute(self._delivery_mute_changed)  # over consumer_byte_rate
        self._published = 0  # PUBLISH bytes read in this data_received, while quotas are on
        # replies in order: (None, bytes) to send, or (a future, None) whose result is them
        self._outq: deque[tuple[asyncio.Future[Any] | None, list[bytes] | None]] = deque()
        # unfinished packets count in the broker-wide request-bytes budget
        self._budget = gateway.request_budget.account(self._budget_resumed, self._budget_stalled)

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not admit(self.gw.quotas, transport, "mqtt"):  # over its address's connection rate
            self._closing = True
            return
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.peer_host = str(peer[0]) if peer else "?"
        self._cert = self.gw.security.certificate_principal(transport.get_extra_info("ssl_object"))
        self.gw.clients.add(self)
        self.gw.stats.sockets += 1
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._keepalive = loop.call_later(30.0, self._check_keepalive)  # CONNECT deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.gw.clients.discard(self)
        self._budget.close()
        self._mute.cancel()
        self._delivery_mute.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._linger is not None:
            self._linger.cancel()
        self._detach()

    @property
    def paused(self) -> bool:
        """Deliver nothing now: the transport's buffer is full, or the client is over its
        consumer_byte_rate (``gateways/pacing.py``)."""
        return self._write_paused or self._delivery_mute.active

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.session is not None and not self.paused:
            self.session.schedule_pump()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refusing:
            return
        self._last_rx = asyncio.get_running_loop().time()
        self.gw.stats.bytes_received += len(data)
        if not self._sniffed:
            self._sniffed = True
            self._first_bytes = bytes(data[:16])
            if data[:1] == b"G":
                self.ws = WebSocketServer()
        if self.ws is not None:
            payload, reply = self.ws.receive_data(data)
            if reply and self.transport is not None and not self.transport.is_closing():
                self.transport.write(reply)
            if self.ws.closed:
                self._close(linger=True)
                return
            data = payload
            if not data:
                return
        try:
            session = self.session
            # a QoS 1 subscriber's usual read: PUBACKs only, their slots freed together
            acks = (
                self.proto.receive_acks(data)
                if session is not None and self._held is None
                else None
            )
            if acks is not None:
                assert session is not None
                self.gw.stats.messages_received += len(acks)
                session.on_pubacks(acks)
            else:
                packets = self.proto.receive_data(data)
                self.gw.stats.messages_received += len(packets)
                for i, packet in enumerate(packets):
                    if self._held is not None:
                        self._held.extend(packets[i:])
                        break
                    self._handle(packet)
                    if self._closing or self._refusing:
                        return
                self._flush_publishes()
                if self._published:
                    self._record_published()
        except MqttError as exc:
            self._fail(exc)
        except Exception as exc:
            log.exception("MQTT client %s: internal error", self.peer)
            self._fail(MqttError(f"internal error: {exc}", Reason.UNSPECIFIED_ERROR))
        if not self._closing and self.transport is not None:
            if not self._budget.update(self.proto.buffered()):
                self._budget_wait = True  # until the budget grants this packet
            if self._inbound.busy:
                self._storing_wait = True  # until the PUBLISHes read are stored
            if (
                self._budget_wait
                or self._storing_wait
                or self._mute.active
                or self._held is not None
            ):
                self.transport.pause_reading()

    def _budget_resumed(self) -> None:
        self._budget_wait = False
        self._resume_reading()

    def _stored(self) -> None:
        if self._storing_wait:
            self._storing_wait = False
            self._resume_reading()

    def _resume_reading(self) -> None:
        if (
            self.transport is not None
            and not self._closing
            and self._held is None
            and not self._budget_wait
            and not self._storing_wait
            and not self._mute.active
        ):
            self.transport.resume_reading()

    def _record_published(self) -> None:
        """Count what this read published against the client's producer_byte_rate; over
        it, read nothing more for the throttle time (``gateways/pacing.py``)."""
        published, self._published = self._published, 0
        session = self.session
        quota = self._quota.get(self.principal, session.client_id if session else None)
        if quota is not None and quota.produce is not None:
            self._mute.start(quota.produce.record(published))

    def _delivery_mute_changed(self) -> None:
        if not self.paused and self.session is not None and not self._closing:
            self.session.schedule_pump()

    def _mute_changed(self) -> None:
        if self._mute.active:
            if self.transport is not None and not self._closing:
                self.transport.pause_reading()
            return
        self._last_rx = asyncio.get_running_loop().time()  # muted is not idle
        self._resume_reading()

    def _budget_stalled(self) -> None:
        log.info(
            "MQTT client %s: closing: a packet made no progress for %g s",
            self.peer,
            self.gw.request_budget.stall_timeout_s,
        )
        self._close()

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        if self._outq and not self._closing:
            self._outq.append((None, [data]))
            return
        self._send(data)

    def write_many(self, chunks: list[bytes], packets: int | None = None) -> None:
        data = b"".join(chunks)
        self._send(data, len(chunks) if packets is None else packets)
        if self.gw.quotas.active and self.session is not None:
            quota = self._quota.get(self.principal, self.session.client_id)
            if quota is not None and quota.fetch is not None:
                self._delivery_mute.start(quota.fetch.record(len(data)))

    def _send(self, data: bytes, packets: int = 1) -> None:
        """Put ``data`` on the wire, unless the connection is ending or gone: writing to a
        client that went away is no error (an acknowledgement that waited for an fsync, a
        delivery scheduled before the reset was seen), so nothing is written or logged."""
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            return
        if self.ws is not None:
            data = self.ws.send(data)
        transport.write(data)
        stats = self.gw.stats
        stats.messages_sent += packets
        stats.bytes_sent += len(data)

    def _close(self, goodbye: bytes = b"", linger: bool = False) -> None:
        """Close after writing ``goodbye``.  With ``linger`` the broker is ending the session
        while the client may still be sending: closing a socket with unread bytes makes the
        kernel answer with RST, and the client, getting the reset, may never read the
        goodbye (the DISCONNECT's reason) that was on its way.  So the write side is shut
        (FIN after the goodbye), what the client still sends is read and dropped, and the
        socket is closed at the client's EOF or after ``LINGER_S`` at the latest.

        The session is let go at once, not when the socket closes: nothing more is sent
        on this connection, and the will (if due) is not held back by the drain."""
        if goodbye:
            self._send(goodbye)
        self._closing = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._detach()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not linger or not transport.can_write_eof():
            transport.close()
            return
        if self._linger is not None:
            return
        transport.write_eof()
        if not transport.is_reading():
            transport.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(LINGER_S, transport.abort)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself (after the goodbye when lingering)

    def _fail(self, exc: MqttError) -> None:
        limited = self.gw.client_log
        if self.proto.state is State.AWAIT_CONNECT and self._first_bytes[:1] != b"\x10":
            # not even a CONNECT: another protocol's client at this port (which tends to
            # retry in a loop), a scanner, or noise
            limited.warning(
                (self.peer_host, "not-mqtt"),
                "MQTT port: %s is not an MQTT client%s (first bytes %s): %s",
                self.peer,
                guess_protocol(self._first_bytes),
                self._first_bytes.hex(" "),
                exc,
            )
        else:
            limited.warning(
                (self.peer_host, int(exc.reason)),
                "MQTT client %s (%s): closing: %s (reason 0x%02x)",
                self.peer,
                self.session.client_id if self.session else "-",
                exc,
                int(exc.reason),
            )
        self._outq.clear()
        self._close(self.proto.goodbye(exc), linger=True)

    def shutdown(self) -> None:
        """The broker is stopping."""
        if self.proto.state is State.CONNECTED and self.proto.version == MQTT_5:
            self.write_many([self.proto.send(Disconnect(Reason.SERVER_SHUTTING_DOWN))])
        self._will_ok = False
        self._close()

    def taken_over(self) -> None:
        """Another connection with the same client id took the session."""
        goodbye = b""
        if self.proto.version == MQTT_5:
            goodbye = self.proto.send(Disconnect(Reason.SESSION_TAKEN_OVER))
        self._detach()
        self._close(goodbye, linger=True)

    def _check_keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        if self.proto.state in (State.AWAIT_CONNECT, State.AUTHENTICATING):
            self.gw.client_log.warning(
                (self.peer_host, "no-connect"), "MQTT client %s did not connect in time", self.peer
            )
            self._close()
            return
        limit = self.proto.keep_alive * 1.5
        idle = 0.0 if self._mute.active else loop.time() - self._last_rx
        if limit and idle >= limit:
            self._fail(MqttError("keep-alive timeout", Reason.KEEP_ALIVE_TIMEOUT))
            return
        if limit:
            self._keepalive = loop.call_later(max(0.05, limit - idle), self._check_keepalive)

    # ------------------------------------------------------------------ packets

    def _handle(self, packet: Any) -> None:
        if type(packet) is PublishRun:
            self._on_publish_run(packet)
            return
        if isinstance(packet, Publish):
            self._on_publish(packet)
            return
        self._flush_publishes()
        session = self.session
        if isinstance(packet, Connect):
            self._on_connect(packet)
        elif isinstance(packet, Auth):
            self._on_auth(packet)
        elif session is None:
            raise ProtocolError("no session")
        elif isinstance(packet, PubAck):
            session.on_puback(packet.packet_id)
        elif isinstance(packet, PubRec):
            if session.on_pubrec(packet.packet_id, packet.reason_code >= 0x80):
                if packet.reason_code < 0x80:
                    self.write(self.proto.send(PubRel(packet.packet_id)))
            elif packet.reason_code < 0x80:
                self.write(
                    self.proto.send(PubRel(packet.packet_id, Reason.PACKET_IDENTIFIER_NOT_FOUND))
                )
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
            codes: list[int] = []
            for topic_filter in packet.topic_filters:
                removed = self.gw.remove_subscription(session, topic_filter)
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
        gw.stats.connects += 1
        method = packet.properties.authentication_method
        if method is not None:
            self._start_scram(method, packet.properties.authentication_data or b"", packet)
            return
        if gw.security.enabled:
            if not self._login(packet):
                return
            self._inbound.authorize = self._may_publish
        if gw.authenticate is not None and not gw.authenticate(
            packet.client_id, packet.username, packet.password
        ):
            self.gw.client_log.warning(
                (self.peer_host, "auth"),
                "MQTT client %s: bad user name or password (user %r)",
                self.peer,
                packet.username,
            )
            self._refuse(Reason.BAD_USER_NAME_OR_PASSWORD, "bad user name or password")
            return
        self._accept(packet)

    def _accept(
        self, packet: Connect, props: Properties | None = None, *, adopted: bool = False
    ) -> None:
        """The CONNECT is authenticated: take or open the session and answer CONNACK
        (with ``props``, e.g. the last authentication data).  On a shared engine, a client
        whose session this broker does not hold waits until another broker's session is
        taken over (``MqttGateway.adopt_session``), with what it sent meanwhile held."""
        gw = self.gw
        if not adopted and packet.client_id and not gw.holds_session(packet.client_id):
            self._held = []
            if self.transport is not None:
                self.transport.pause_reading()
            gw.background(self._adopt_then_accept(packet, props))
            return
        proto = self.proto
        v5 = proto.version == MQTT_5
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
            gw.client_log.info(
                (self.peer_host, "takeover"),
                "MQTT client %s taken over by %s",
                client_id,
                self.peer,
            )
            session.conn.taken_over()
            session = gw.sessions.get(client_id)
        present = session is not None and not packet.clean_start
        if session is not None and packet.clean_start:
            gw.drop_session(session)
            session = None
        if session is None:
            session = gw.open_session(client_id, expiry)
        session.expiry_s = expiry
        self.session = session
        if packet.will is not None:
            w = packet.will
            self._will = WillState(
                w.topic,
                w.payload,
                w.qos,
                w.retain,
                stored_props(w.properties),
                w.properties.will_delay_interval or 0,
            )
            if w.properties.message_expiry_interval is not None:
                self._will.props.message_expiry_interval = w.properties.message_expiry_interval
        props = props or Properties()
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
        session.attach(self, present=present)

    async def _adopt_then_accept(self, packet: Connect, props: Properties | None) -> None:
        try:
            await self.gw.adopt_session(packet.client_id, packet.clean_start)
        except Exception:
            log.exception("MQTT client %s: taking its session over failed", self.peer)
        held, self._held = self._held or [], None
        if self._closing:
            return
        try:
            self._accept(packet, props, adopted=True)
            for packet_held in held:
                if self._closing or self._refusing:
                    return
                self._handle(packet_held)
            self._flush_publishes()
            if self._published:
                self._record_published()
        except MqttError as exc:
            self._fail(exc)
            return
        except Exception as exc:
            log.exception("MQTT client %s: internal error", self.peer)
            self._fail(MqttError(f"internal error: {exc}", Reason.UNSPECIFIED_ERROR))
            return
        self._resume_reading()

    def _login(self, packet: Connect) -> bool:
        """With an authorizer: the user name and password (checked against the user store)
        or the TLS client certificate name the principal.  Bad credentials are refused with
        0x86 (3.1.1: 4) after the growing delay; none at all with 0x87 (3.1.1: 5)."""
        if packet.username is None and packet.password is None:
            if self._cert is not None:
                self.principal = self._cert
                return True
            self._refuse(Reason.NOT_AUTHORIZED, "credentials required")
            return False
        login = self.gw.security.password_login(
            "mqtt", self.peer_host, packet.username or "", packet.password or b""
        )
        if login.principal is not None:
            self.principal = login.principal
            return True
        self._refuse_later(login, "bad user name or password")
        return False

    def _refuse_later(self, login: Login, message: str) -> None:
        """Refuse the connection (0x86; 3.1.1: 4) after the failed login's growing delay."""
        self._refusing = True
        if self.transport is not None:
            self.transport.pause_reading()

        def answer() -> None:
            self._refusing = False
            self._refuse(Reason.BAD_USER_NAME_OR_PASSWORD, message)

        asyncio.get_running_loop().call_later(login.delay_s, answer)

    # -- 5.0 enhanced authentication: SCRAM-SHA-256/512 (RFC 5802) over CONNECT/AUTH ------

    def _start_scram(self, method: str, client_first: bytes, connect: Connect | None) -> None:
        """Answer the client-first message with the server-first (AUTH, Continue
        authentication); ``connect`` is the CONNECT to accept at the end (None: a
        re-authentication)."""
        security = self.gw.security
        mechanism = MECHANISMS.get(method)
        if mechanism is None or not security.enabled:
            message = f"authentication method {method!r} is not offered"
            if connect is None:
                self._fail(MqttError(message, Reason.BAD_AUTHENTICATION_METHOD))
            else:
                self._refuse(Reason.BAD_AUTHENTICATION_METHOD, message)
            return
        scram = ScramServer(mechanism)
        try:
            reply = scram.first(
                client_first, lambda user: security.users.credential(user, mechanism)
            )
            if scram.extensions.get("tokenauth") == "true":
                raise ScramError("delegation tokens are not supported")
        except ScramError as exc:
            self._scram_failed(
                security.refuse("mqtt", self.peer_host, method, "", str(exc)), connect
            )
            return
        self._scram = (scram, connect)
        self.write(self.proto.auth(Reason.CONTINUE_AUTHENTICATION, reply))

    def _on_auth(self, packet: Auth) -> None:
        method = packet.properties.authentication_method or ""
        data = packet.properties.authentication_data or b""
        if packet.reason_code == Reason.REAUTHENTICATE:
            self._start_scram(method, data, None)
            return
        pending, self._scram = self._scram, None
        if pending is None:
            raise ProtocolError("AUTH without an authentication under way")
        scram, connect = pending
        security = self.gw.security
        try:
            server_final = scram.final(data)
            login = security.accept(self.peer_host, scram.user)
        except ScramError as exc:
            login = security.refuse("mqtt", self.peer_host, method, scram.user, str(exc))
            server_final = b""
        if login.principal is None:
            self._scram_failed(login, connect)
        elif connect is None:  # re-authentication: the same user, or the connection ends
            if login.principal != self.principal:
                self._fail(MqttError("re-authentication changed the user", Reason.NOT_AUTHORIZED))
            else:
                self.write(self.proto.auth(Reason.SUCCESS, server_final))
        else:
            self.principal = login.principal
            self._inbound.authorize = self._may_publish
            props = Properties(authentication_method=method, authentication_data=server_final)
            self._accept(connect, props)

    def _scram_failed(self, login: Login, connect: Connect | None) -> None:
        if connect is None:
            self._fail(MqttError("re-authentication failed", Reason.NOT_AUTHORIZED))
        else:
            self._refuse_later(login, "authentication failed")

    def _may_publish(self, topic: str) -> bool:
        kafka_topic = self.gw.mapper.kafka_topic(topic)
        return self.gw.security.allowed(
            "mqtt", self.principal, self.peer_host, AclOperation.WRITE, ResourceType.TOPIC,
            kafka_topic,
        )  # fmt: skip

    def may_read(self, topic_filter: str, quiet: bool = False) -> bool:
        """May this client read every Kafka topic the filter can reach (today's topics)?"""
        security = self.gw.security
        if not security.enabled:
            return True
        topics = self.gw.mapper.kafka_topics_for_filter(topic_filter, self.gw.topic_names())
        principal = self.principal
        if quiet:
            return principal is not None and all(
                security.authorizer.authorize(
                    principal, self.peer_host, AclOperation.READ, ResourceType.TOPIC, t
                )
                for t in topics
            )
        return all(
            security.allowed(
                "mqtt", principal, self.peer_host, AclOperation.READ, ResourceType.TOPIC, t
            )
            for t in topics
        )

    def not_authorized(self) -> None:
        """An ACL this client's subscriptions needed was revoked: end the connection
        (5.0: DISCONNECT 0x87)."""
        goodbye = b""
        if self.proto.version == MQTT_5:
            goodbye = self.proto.send(Disconnect(Reason.NOT_AUTHORIZED))
        self._will_ok = False
        self._close(goodbye, linger=True)

    def _refuse(self, reason: int, message: str) -> None:
        self._will_ok = False
        self._close(self.proto.refuse(reason, message), linger=True)

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
        if gw.sessions.get(session.client_id) is not session:  # another broker holds it now
            session.go_offline(None)
            return
        if gw.stopping:
            session.go_offline(gw.clock_ms())
            return
        if not session.persistent:
            session.go_offline(None)
            gw.drop_session(session)
            if will is not None:
                gw.publish_will(session.client_id, will)
            return
        session.go_offline(gw.clock_ms())
        if will is not None:
            gw.schedule_will(session.client_id, will, min(will.delay_s, session.expiry_s))
        gw.background(gw.save_session(session))

    def _on_subscribe(self, packet: Subscribe) -> None:
        session = self.session
        assert session is not None
        gw = self.gw
        sub_ids = packet.properties.subscription_identifiers
        sub_id = sub_ids[0] if sub_ids else None
        codes: list[int] = []
        retained: list[tuple[str, SubOptions]] = []
        waits: list[Awaitable[None]] = []  # what the SUBACK waits for
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
            if not self.may_read(plain):
                codes.append(Reason.NOT_AUTHORIZED)  # 3.1.1: 0x80
                continue
            opts = SubOptions(
                sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id
            )
            new = gw.add_subscription(session, topic_filter, opts)
            codes.append(sub.qos)
            member = session.shared.get(topic_filter) if group is not None else None
            if member is not None:  # its group's start is fixed before the SUBACK
                waits.append(member.started())
            if group is None and (sub.retain_handling == 0 or (sub.retain_handling == 1 and new)):
                retained.append((plain, opts))
        session.dirty = True
        gw.refresh_interest()
        suback = self.proto.suback(packet.packet_id, codes)
        now = gw.clock_ms()
        for plain, opts in retained:
            for msg in gw.retained_matching(plain):
                if msg.expired(now):
                    continue
                ids = (opts.sub_id,) if opts.sub_id is not None else ()
                session.enqueue(
                    Delivery(msg, min(msg.qos, opts.qos), True, ids, None, 0, False), pump=False
                )
        if session.persistent:
            waits.append(gw.save_session(session))
        if waits:
            self._ordered(asyncio.gather(*waits), [suback])
        else:
            self.write(suback)
        session.schedule_pump()

    # ------------------------------------------------------------------ publishing

    def _on_publish(self, packet: Publish) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("PUBLISH before CONNECT")
        if self.gw.quotas.active:
            self._published += len(packet.payload) + len(packet.topic)
        self._inbound.add(packet, session)

    def _on_publish_run(self, run: PublishRun) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("PUBLISH before CONNECT")
        self.gw.stats.messages_received += len(run.items) - 1  # counted as one packet
        size = self._inbound.add_run(run, session)
        if self.gw.quotas.active:
            self._published += size

    def _flush_publishes(self) -> None:
        replies = self._inbound.flush(self.session)
        if replies is None:
            return
        if isinstance(replies, list):
            self._reply(replies)
        else:
            self._ordered(replies, None)

    # ------------------------------------------------------------------ ordered replies

    def _reply(self, out: list[bytes]) -> None:
        if not out:
            return
        if self._outq:
            self._outq.append((None, out))
        else:
            self.write_many(out)

    def _ordered(self, awaitable: Awaitable[Any], out: list[bytes] | None) -> None:
        """Send ``out`` — or, when None, the list of packets ``awaitable`` returns — once
        ``awaitable`` is done, after everything queued before it."""
        future = asyncio.ensure_future(awaitable)
        self._outq.append((future, out))
        future.add_done_callback(self._drain)

    def _drain(self, _done: object = None) -> None:
        outq = self._outq
        while outq:
            future, out = outq[0]
            if future is not None:
                if not future.done():
                    return
                if not future.cancelled():
                    exc = future.exception()
                    if exc is not None:
                        outq.clear()
                        if self._closing:
                            return
                        if not isinstance(exc, MqttError):
                            exc = MqttError(f"storage failure: {exc}", Reason.UNSPECIFIED_ERROR)
                        self._fail(exc)
                        return
                    if out is None:
                        out = future.result()
            outq.popleft()
            if out:
                self.write_many(out)
