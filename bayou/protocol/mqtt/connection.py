"""The server side of one MQTT connection as a state machine (sans-I/O).

Theory of operation
-------------------
``ServerConnection`` is fed the bytes a client sent (``receive_data``) and returns the packets
they hold, already checked against everything the protocol says about one connection:

* the first packet is CONNECT and there is only one; a client never sends server packets
  (CONNACK, SUBACK, UNSUBACK, PINGRESP);
* enhanced authentication (5.0, §4.12): a CONNECT naming an Authentication Method puts the
  connection in ``AUTHENTICATING`` until the caller accepts (``connack``) or refuses it; in
  between the client may send only AUTH (Continue authentication, the same method) or
  DISCONNECT.  Once connected, AUTH is allowed only with the CONNECT's method: Re-authenticate
  starts a new exchange, Continue authentication carries it on;
* topic aliases (5.0) are resolved, so every PUBLISH handed out carries its topic name;
  those the server may send are kept in ``outbound_aliases`` (``aliases.py``) when the
  client allows them;
* topic names and filters are valid; a client PUBLISH carries no subscription identifier;
* the client keeps within the Receive Maximum the server announced (unacknowledged QoS 1
  and QoS 2 PUBLISHes), and within the Maximum Packet Size.

A publisher's usual PUBLISHes — QoS 0/1, not retained, a topic name, no properties — come
out of ``receive_data`` as one ``PublishRun`` per run of them: tuples cut from the stream
(``FrameReader.plain_publishes``), each topic name checked once per connection, the run's
QoS 1 count checked against the Receive Maximum; anything else in between is decoded into
its packet object, in stream order.

``receive_acks`` is the fast path of the commonest read of all, a QoS 1 subscriber's
PUBACKs: when the bytes are nothing but whole success PUBACKs without properties (which
need no checks beyond a non-zero packet id), it returns their packet ids and no objects.

Any violation raises an ``MqttError`` whose ``reason`` is the 5.0 reason code; the caller then
sends ``goodbye(error)`` (a DISCONNECT on 5.0, a refusing CONNACK before the session starts,
nothing on 3.1.1 where the connection is just closed) and closes the transport.

``send(packet)`` encodes what the server sends with the negotiated version and keeps the
inbound quota: a PUBACK, a PUBCOMP or a failing PUBREC gives a slot back.  The outbound flow
(packet identifiers of server PUBLISHes, the client's Receive Maximum) belongs to the session,
which outlives connections, so it is left to the caller; ``client_receive_maximum`` and
``client_max_packet_size`` tell it the client's limits.

No clock is kept: the caller times keep-alive with ``keep_alive`` (the CONNECT value).
"""

from __future__ import annotations

import enum
import struct

from bayou.protocol.mqtt.aliases import OutboundAliases
from bayou.protocol.mqtt.codec import FrameReader, PlainPublish, decode, encode, utf8_text
from bayou.protocol.mqtt.errors import MqttError, ProtocolError
from bayou.protocol.mqtt.packets import (
    MQTT_5,
    MQTT_31,
    MQTT_311,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    Reason,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from bayou.protocol.mqtt.topics import valid_topic_name

DEFAULT_MAX_PACKET_SIZE = 1024 * 1024 + 1024
_PLAIN_PUBACK = struct.Struct(">2xH")  # 0x40, remaining length 2, packet id
_PUBACK_HEAD = b"\x40\x02"
_PUBLISH = int(PacketType.PUBLISH)
_SERVER_ONLY = (PacketType.CONNACK, PacketType.SUBACK, PacketType.UNSUBACK, PacketType.PINGRESP)


class State(enum.Enum):
    AWAIT_CONNECT = "await-connect"
    AUTHENTICATING = "authenticating"  # CONNECT named an authentication method: no CONNACK yet
    CONNECTED = "connected"
    CLOSED = "closed"


class UnsupportedProtocolVersion(MqttError):
    reason = Reason.UNSUPPORTED_PROTOCOL_VERSION


MAX_NAMES = 1024  # topic names of plain PUBLISHes kept decoded and checked, per connection


class PublishRun:
    """PUBLISHes in a row without properties or retain flag, at QoS 0 or 1 (the bulk of a
    publisher's reads), checked as ``_receive_publish`` checks a ``Publish``: (first byte,
    topic bytes, payload, packet id) each, the topic's name being ``names[topic]``."""

    __slots__ = ("items", "names")

    def __init__(self, items: list[PlainPublish], names: dict[bytes, str]) -> None:
        self.items = items
        self.names = names


class ServerConnection:
    def __init__(
        self,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        receive_maximum: int = 1024,
        topic_alias_maximum: int = 64,
    ) -> None:
        self.state = State.AWAIT_CONNECT
        self.version = MQTT_311
        self.max_packet_size = max_packet_size
        self.receive_maximum = receive_maximum
        self.topic_alias_maximum = topic_alias_maximum
        self.keep_alive = 0
        self.client_receive_maximum = 65535
        self.client_max_packet_size = 268_435_460
        self.outbound_aliases: OutboundAliases | None = None  # 5.0, if the client allows
        self._reader = FrameReader(max_packet_size)
        self._names: dict[bytes, str] = {}  # see PublishRun
        self._aliases: dict[int, str] = {}
        self._inbound_qos1 = 0
        self._inbound_qos2: set[int] = set()
        self._connect_version: int | None = None
        self.auth_method: str | None = None  # 5.0 enhanced authentication, from CONNECT

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Packet | PublishRun]:
        """Packets in ``data`` (plus what was buffered), a run of plain PUBLISHes as one
        ``PublishRun``; raises MqttError on a violation."""
        if self.state is State.CLOSED:
            return []
        reader = self._reader
        reader.feed(data)
        packets: list[Packet | PublishRun] = []
        while True:
            if self.state is State.CONNECTED:
                run = reader.plain_publishes(self.version == MQTT_5)
                if run:
                    packets.append(self._receive_run(run))
            frame = reader.next_frame()
            if frame is None:
                return packets
            first, body = frame
            packets.append(self._receive(first, body))

    def _receive_run(self, run: list[PlainPublish]) -> PublishRun:
        """What ``_receive_publish`` checks, for a run of plain PUBLISHes: each topic name
        once per connection (``_names``), the QoS 1 count against the Receive Maximum."""
        names = self._names
        if len(names) >= MAX_NAMES:  # bounded: a new map (a run of this read keeps the old)
            names = self._names = {}
        qos1 = 0
        last = None
        for first, topic, _payload, _pid in run:
            if first != 0x30:
                qos1 += 1
            if topic is last or topic in names:
                last = topic
                continue
            name = utf8_text(topic)
            if not valid_topic_name(name):
                raise MqttError(f"invalid topic name {name!r}", Reason.TOPIC_NAME_INVALID)
            names[topic] = name
            last = topic
        if qos1:
            self._inbound_qos1 += qos1
            if self._inbound_qos1 + len(self._inbound_qos2) > self.receive_maximum:
                raise MqttError(
                    "the client exceeded the Receive Maximum", Reason.RECEIVE_MAXIMUM_EXCEEDED
                )
        return PublishRun(run, names)

    def receive_acks(self, data: bytes) -> list[int] | None:
        """When ``data`` is nothing but whole plain PUBACKs (success, no properties: what a
        QoS 1 subscriber sends back) and nothing is buffered, their packet ids, in order —
        what ``receive_data`` would return as ``PubAck``s, without a packet object each;
        otherwise None, and ``data`` is left for ``receive_data``."""
        n = len(data) >> 2
        if (
            not n
            or len(data) & 3
            or self.state is not State.CONNECTED
            or self._reader.buffered()
            or data[0::4] != b"\x40" * n
            or data[1::4] != b"\x02" * n
        ):
            return None
        pids = [pid for (pid,) in _PLAIN_PUBACK.iter_unpack(data)]
        if 0 in pids:
            return None  # refused by receive_data
        return pids

    def buffered(self) -> int:
        """Bytes received of a packet not complete yet (the request-bytes budget counts
        them)."""
        return self._reader.buffered()

    def _receive(self, first: int, body: bytes) -> Packet:
        kind = first >> 4
        if kind == _PUBLISH and self.state is State.CONNECTED:  # the commonest, checked first
            publish = decode(first, body, self.version)
            assert isinstance(publish, Publish)
            self._receive_publish(publish)
            return publish
        if self.state is State.AWAIT_CONNECT:
            if kind != PacketType.CONNECT:
                raise ProtocolError("the first packet must be CONNECT")
            return self._receive_connect(first, body)
        if self.state is State.AUTHENTICATING and kind not in (
            PacketType.AUTH,
            PacketType.DISCONNECT,
        ):
            raise ProtocolError(f"{PacketType(kind).name} before the authentication ended")
        if kind == PacketType.CONNECT:
            raise ProtocolError("a second CONNECT")
        if kind in _SERVER_ONLY:
            raise ProtocolError(f"a client sent {PacketType(kind).name}")
        packet = decode(first, body, self.version)
        if isinstance(packet, Publish):
            self._receive_publish(packet)
        elif isinstance(packet, Subscribe):
            # An invalid filter is refused in the SUBACK, not by closing the connection.
            if len(packet.properties.subscription_identifiers) > 1:
                raise ProtocolError("more than one subscription identifier")
        elif isinstance(packet, Auth):
            self._receive_auth(packet)
        elif isinstance(packet, Disconnect):
            self.state = State.CLOSED
        return packet

    def _receive_connect(self, first: int, body: bytes) -> Connect:
        packet = decode(first, body, MQTT_311)
        assert isinstance(packet, Connect)
        if packet.protocol_level not in (MQTT_31, MQTT_311, MQTT_5):
            raise UnsupportedProtocolVersion(f"unsupported protocol level {packet.protocol_level}")
        self._connect_version = packet.protocol_level
        self.version = packet.protocol_level
        if packet.will is not None and not valid_topic_name(packet.will.topic):
            raise MqttError(f"invalid will topic {packet.will.topic!r}", Reason.TOPIC_NAME_INVALID)
        props = packet.properties
        if props.receive_maximum is not None:
            self.client_receive_maximum = props.receive_maximum
        if props.maximum_packet_size is not None:
            self.client_max_packet_size = props.maximum_packet_size
        if self.version == MQTT_5 and props.topic_alias_maximum:
            self.outbound_aliases = OutboundAliases(props.topic_alias_maximum)
        self.keep_alive = packet.keep_alive
        self.auth_method = props.authentication_method if self.version == MQTT_5 else None
        self.state = State.AUTHENTICATING if self.auth_method is not None else State.CONNECTED
        return packet

    def _receive_auth(self, packet: Auth) -> None:
        if self.auth_method is None:
            raise ProtocolError("AUTH without an authentication method in CONNECT")
        if packet.properties.authentication_method != self.auth_method:
            raise ProtocolError("AUTH with another authentication method than CONNECT's")
        allowed = (
            (Reason.CONTINUE_AUTHENTICATION,)
            if self.state is State.AUTHENTICATING
            else (Reason.CONTINUE_AUTHENTICATION, Reason.REAUTHENTICATE)
        )
        if packet.reason_code not in allowed:
            raise ProtocolError(f"AUTH with reason code {packet.reason_code:#x}")

    def _receive_publish(self, packet: Publish) -> None:
        props = packet.properties
        if props.subscription_identifiers:
            raise ProtocolError("a client PUBLISH carries a subscription identifier")
        alias = props.topic_alias
        if alias is not None:
            if alias > self.topic_alias_maximum:
                raise MqttError(
                    f"topic alias {alias} above the maximum", Reason.TOPIC_ALIAS_INVALID
                )
            if packet.topic:
                self._aliases[alias] = packet.topic
            else:
                known = self._aliases.get(alias)
                if known is None:
                    raise ProtocolError(f"topic alias {alias} was never set")
                packet.topic = known
            props.topic_alias = None
        if not valid_topic_name(packet.topic):
            raise MqttError(f"invalid topic name {packet.topic!r}", Reason.TOPIC_NAME_INVALID)
        if packet.qos == 1:
            self._inbound_qos1 += 1
        elif packet.qos == 2:
            assert packet.packet_id is not None
            self._inbound_qos2.add(packet.packet_id)
        if self._inbound_qos1 + len(self._inbound_qos2) > self.receive_maximum:
            raise MqttError(
                "the client exceeded the Receive Maximum", Reason.RECEIVE_MAXIMUM_EXCEEDED
            )

    # ------------------------------------------------------------------ sending

    def send(self, packet: Packet) -> bytes:
        """Encode a server packet for this connection, releasing inbound quota on acks."""
        if isinstance(packet, PubAck):
            self._inbound_qos1 = max(0, self._inbound_qos1 - 1)
        elif isinstance(packet, PubComp) or (
            isinstance(packet, PubRec) and packet.reason_code >= 0x80
        ):
            self._inbound_qos2.discard(packet.packet_id)
        elif isinstance(packet, Disconnect):
            self.state = State.CLOSED
        return encode(packet, self.version)

    def pubacks(self, pids: list[int]) -> list[bytes]:
        """Success PUBACKs for ``pids``, in order: what ``send(PubAck(pid))`` gives for
        each, without a packet object each."""
        self._inbound_qos1 = max(0, self._inbound_qos1 - len(pids))
        return [_PUBACK_HEAD + pid.to_bytes(2, "big") for pid in pids]

    def connack(self, session_present: bool, properties: Properties | None = None) -> bytes:
        """Accept the connection."""
        props = properties or Properties()
        if self.version == MQTT_5:
            props.receive_maximum = self.receive_maximum
            props.maximum_packet_size = self.max_packet_size
            props.topic_alias_maximum = self.topic_alias_maximum
        self.state = State.CONNECTED
        return self.send(ConnAck(session_present, Reason.SUCCESS, props))

    def auth(self, reason: int, data: bytes | None) -> bytes:
        """An AUTH of the connection's authentication method: Continue authentication with
        the next challenge, or Success ending a re-authentication."""
        props = Properties(authentication_method=self.auth_method, authentication_data=data)
        return self.send(Auth(reason, props))

    def goodbye(self, error: MqttError) -> bytes:
        """What to send before closing because of ``error`` (may be empty)."""
        reason = int(error.reason)
        if self.state is State.CLOSED:
            return b""
        if self.state in (State.AWAIT_CONNECT, State.AUTHENTICATING) or isinstance(
            error, UnsupportedProtocolVersion
        ):
            self.state = State.CLOSED
            if self._connect_version == MQTT_5:
                props = Properties(reason_string=str(error)[:200])
                return encode(ConnAck(False, reason, props), MQTT_5)
            if self._connect_version is not None or isinstance(error, UnsupportedProtocolVersion):
                return encode(ConnAck(False, reason), MQTT_311)
            return b""
        self.state = State.CLOSED
        if self.version == MQTT_5:
            props = Properties(reason_string=str(error)[:200])
            return encode(Disconnect(reason, props), MQTT_5)
        return b""

    def refuse(self, reason: int, message: str = "") -> bytes:
        """A CONNACK refusing the connection (bad credentials, bad client id ...)."""
        self.state = State.CLOSED
        props = Properties(reason_string=message or None)
        return encode(ConnAck(False, reason, props), self.version)

    def ping_response(self) -> bytes:
        return encode(PingResp(), self.version)

    def suback(self, packet_id: int, codes: list[int]) -> bytes:
        return self.send(SubAck(packet_id, codes))

    def unsuback(self, packet: Unsubscribe, codes: list[int]) -> bytes:
        return self.send(UnsubAck(packet.packet_id, codes))
