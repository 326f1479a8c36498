"""MQTT 3.1.1 / 5.0 wire format: framing, packet decoding and encoding (sans-I/O).

Theory of operation
-------------------
``FrameReader`` cuts a byte stream into frames: one byte of type and flags, the remaining
length (a variable byte integer of at most four bytes), then the body.  It knows the size of
a frame as soon as its length prefix has arrived, so an oversized packet is refused before
its body is buffered.

``decode(first_byte, body, version)`` turns one frame into a packet object from ``packets``.
Everything the specifications call malformed raises ``MalformedPacket`` (bad lengths, bad
UTF-8 or U+0000 in strings, reserved flag bits set, duplicate properties, properties not
allowed in the packet); a well-formed packet that breaks a rule about values raises
``ProtocolError``.  Semantics that depend on the connection's state (packet order, topic
aliases, quotas) are checked by ``connection.ServerConnection``.

``encode(packet, version)`` is the inverse.  ``encode_publish`` is the delivery hot path: it
builds a PUBLISH from pre-encoded parts without allocating a packet object.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from bayou.protocol.mqtt.errors import MalformedPacket, PacketTooLarge, ProtocolError
from bayou.protocol.mqtt.packets import (
    CONNACK_311,
    CONNACK_FROM_311,
    MAX_REMAINING_LENGTH,
    MQTT_5,
    MQTT_31,
    MQTT_311,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Reason,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    empty_properties,
)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

WILL = 0  # pseudo packet type: the will properties inside CONNECT
P = PacketType
_ACKS = (P.PUBACK, P.PUBREC, P.PUBREL, P.PUBCOMP)
_REASON_STRING_IN = (P.CONNACK, *_ACKS, P.SUBACK, P.UNSUBACK, P.DISCONNECT, P.AUTH)
_ALL = (
    P.CONNECT,
    P.CONNACK,
    P.PUBLISH,
    WILL,
    *_ACKS,
    P.SUBSCRIBE,
    P.SUBACK,
    P.UNSUBSCRIBE,
    P.UNSUBACK,
    P.DISCONNECT,
    P.AUTH,
)

# id -> (attribute, wire type, packets allowed in)
PROPERTY_DEFS: dict[int, tuple[str, str, tuple[int, ...]]] = {
    0x01: ("payload_format_indicator", "byte", (P.PUBLISH, WILL)),
    0x02: ("message_expiry_interval", "u32", (P.PUBLISH, WILL)),
    0x03: ("content_type", "utf8", (P.PUBLISH, WILL)),
    0x08: ("response_topic", "utf8", (P.PUBLISH, WILL)),
    0x09: ("correlation_data", "binary", (P.PUBLISH, WILL)),
    0x0B: ("subscription_identifiers", "varint", (P.PUBLISH, P.SUBSCRIBE)),
    0x11: ("session_expiry_interval", "u32", (P.CONNECT, P.CONNACK, P.DISCONNECT)),
    0x12: ("assigned_client_identifier", "utf8", (P.CONNACK,)),
    0x13: ("server_keep_alive", "u16", (P.CONNACK,)),
    0x15: ("authentication_method", "utf8", (P.CONNECT, P.CONNACK, P.AUTH)),
    0x16: ("authentication_data", "binary", (P.CONNECT, P.CONNACK, P.AUTH)),
    0x17: ("request_problem_information", "byte", (P.CONNECT,)),
    0x18: ("will_delay_interval", "u32", (WILL,)),
    0x19: ("request_response_information", "byte", (P.CONNECT,)),
    0x1A: ("response_information", "utf8", (P.CONNACK,)),
    0x1C: ("server_reference", "utf8", (P.CONNACK, P.DISCONNECT)),
    0x1F: ("reason_string", "utf8", _REASON_STRING_IN),
    0x21: ("receive_maximum", "u16", (P.CONNECT, P.CONNACK)),
    0x22: ("topic_alias_maximum", "u16", (P.CONNECT, P.CONNACK)),
    0x23: ("topic_alias", "u16", (P.PUBLISH,)),
    0x24: ("maximum_qos", "byte", (P.CONNACK,)),
    0x25: ("retain_available", "byte", (P.CONNACK,)),
    0x26: ("user_properties", "pair", _ALL),
    0x27: ("maximum_packet_size", "u32", (P.CONNECT, P.CONNACK)),
    0x28: ("wildcard_subscription_available", "byte", (P.CONNACK,)),
    0x29: ("subscription_identifier_available", "byte", (P.CONNACK,)),
    0x2A: ("shared_subscription_available", "byte", (P.CONNACK,)),
}
_PROPERTY_IDS = {name: pid for pid, (name, _t, _a) in PROPERTY_DEFS.items()}
_BOOLEAN_BYTES = {
    "payload_format_indicator",
    "request_problem_information",
    "request_response_information",
    "maximum_qos",
    "retain_available",
    "wildcard_subscription_available",
    "subscription_identifier_available",
    "shared_subscription_available",
}
_NON_ZERO = {"receive_maximum", "maximum_packet_size", "topic_alias"}


# --------------------------------------------------------------------------- primitives


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return _U16.pack(len(raw)) + raw


def encode_binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return _U16.pack(len(value)) + value


def utf8_text(raw: bytes | memoryview) -> str:
    """An MQTT UTF-8 string's text: well-formed UTF-8 without U+0000, else MalformedPacket."""
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("string is not valid UTF-8") from None
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000")
    return text


class _Cursor:
    """Reads primitives from one packet body; running out of bytes is a malformed packet."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise MalformedPacket("packet ends in the middle of a field")
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def u8(self) -> int:
        if self.pos >= self.end:
            raise MalformedPacket("packet ends in the middle of a field")
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise MalformedPacket("variable byte integer longer than four bytes")

    def binary(self) -> bytes:
        return self._take(self.u16())

    def utf8(self) -> str:
        return utf8_text(self._take(self.u16()))

    def rest(self) -> bytes:
        return self._take(self.end - self.pos)


# --------------------------------------------------------------------------- properties


def decode_properties(cur: _Cursor, packet: int) -> Properties:
    length = cur.varint()
    end = cur.pos + length
    if end > cur.end:
        raise MalformedPacket("property length runs past the packet")
    props = Properties()
    seen: set[int] = set()
    inner = _Cursor(cur.buf, cur.pos, end)
    while inner.pos < end:
        pid = inner.varint()
        definition = PROPERTY_DEFS.get(pid)
        if definition is None:
            raise MalformedPacket(f"unknown property 0x{pid:02x}")
        name, kind, allowed = definition
        if packet not in allowed:
            raise MalformedPacket(f"property {name} is not allowed in this packet")
        if pid in seen and kind != "pair" and not (pid == 0x0B and packet == P.PUBLISH):
            raise ProtocolError(f"property {name} appears twice")
        seen.add(pid)
        value: Any
        if kind == "byte":
            value = inner.u8()
        elif kind == "u16":
            value = inner.u16()
        elif kind == "u32":
            value = inner.u32()
        elif kind == "varint":
            value = inner.varint()
            if value == 0:
                raise ProtocolError("subscription identifier 0")
        elif kind == "utf8":
            value = inner.utf8()
        elif kind == "binary":
            value = inner.binary()
        else:
            value = (inner.utf8(), inner.utf8())
        if name in _BOOLEAN_BYTES and value > 1:
            raise ProtocolError(f"property {name} must be 0 or 1")
        if name in _NON_ZERO and value == 0:
            raise ProtocolError(f"property {name} must not be 0")
        if kind == "pair" or pid == 0x0B:
            getattr(props, name).append(value)
        else:
            setattr(props, name, value)
    cur.pos = end
    return props


def encode_properties(props: Properties) -> bytes:
    out = bytearray()
    for pid, (name, kind, _allowed) in PROPERTY_DEFS.items():
        value = getattr(props, name)
        if value is None or (isinstance(value, list) and not value):
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            out += encode_varint(pid)
            if kind == "byte":
                out.append(item)
            elif kind == "u16":
                out += _U16.pack(item)
            elif kind == "u32":
                out += _U32.pack(item)
            elif kind == "varint":
                out += encode_varint(item)
            elif kind == "utf8":
                out += encode_string(item)
            elif kind == "binary":
                out += encode_binary(item)
            else:
                out += encode_string(item[0]) + encode_string(item[1])
    return encode_varint(len(out)) + bytes(out)


_EMPTY_PROPERTIES = b"\x00"
_TOPIC_ALIAS = 0x23


def add_topic_alias(properties: bytes, alias: int) -> bytes:
    """An encoded property block (length prefix included) with a Topic Alias added."""
    length = 0
    i = 0
    for shift in (0, 7, 14, 21):
        byte = properties[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    return encode_varint(length + 3) + properties[i:] + bytes((_TOPIC_ALIAS,)) + _U16.pack(alias)


# --------------------------------------------------------------------------- framing


# a plain PUBLISH (``FrameReader.plain_publishes``): its first byte, topic (UTF-8 bytes),
# payload and packet id (0 at QoS 0)
PlainPublish = tuple[int, bytes, bytes, int]

# first bytes of the PUBLISHes the plain run takes: QoS 0, QoS 1, QoS 1 resent (DUP); no retain
_PLAIN_FIRST = frozenset((0x30, 0x32, 0x3A))


class FrameReader:
    """Cuts a byte stream into (first byte, body) frames; refuses frames over ``max_size``.

    ``max_size`` counts the whole packet (fixed header included), as MQTT 5.0's Maximum
    Packet Size does.

    The buffer is immutable bytes, so a field cut from it is one copy.  Reads are joined to
    what is left of the buffer when the frame they complete can be cut (``_need``), not at
    every read: a large packet arriving in many reads is joined once.
    """

    def __init__(self, max_size: int = MAX_REMAINING_LENGTH + 5) -> None:
        self.max_size = max_size
        self._buf = b""
        self._pos = 0
        self._parts: list[bytes] = []  # reads after _buf, not joined yet
        self._parts_size = 0
        self._need = 0  # bytes from _pos the frame at _pos needs (0: not known)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._parts.append(bytes(data))
            self._parts_size += len(data)

    def buffered(self) -> int:
        return len(self._buf) - self._pos + self._parts_size

    def _join(self) -> bool:
        """Join the reads not joined yet when the frame waiting for them is whole; whether
        there is anything to cut."""
        if self._parts and self.buffered() >= self._need:
            rest = self._buf[self._pos :]
            self._parts.insert(0, rest)
            self._buf = b"".join(self._parts)
            self._pos = 0
            self._parts.clear()
            self._parts_size = 0
        return len(self._buf) - self._pos >= max(2, self._need)

    def next_frame(self) -> tuple[int, bytes] | None:
        if not self._join():
            return None
        buf = self._buf
        start = self._pos
        avail = len(buf) - start
        length = 0
        i = 1
        for shift in (0, 7, 14, 21):
            if i >= avail:
                self._need = i + 1
                return None
            byte = buf[start + i]
            i += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            raise MalformedPacket("remaining length longer than four bytes")
        if i + length > self.max_size:
            raise PacketTooLarge(
                f"packet of {i + length} bytes exceeds the maximum of {self.max_size}"
            )
        if avail < i + length:
            self._need = i + length
            return None
        self._need = 0
        self._release(start + i + length)
        return buf[start], buf[start + i : start + i + length]

    def plain_publishes(self, v5: bool) -> list[PlainPublish]:
        """The run of whole plain PUBLISHes at the head of the stream, taken off it: QoS 0 or 1,
        not retained, a topic name (not an alias), a non-zero packet id at QoS 1, on 5.0 no
        properties; and frames no larger than ``max_size``.  The first frame that is anything
        else ends the run (it goes through ``next_frame`` and ``decode``, which check all).

        The topic is the name's bytes, unchecked (UTF-8, wildcards: left to the caller); the
        fields are read inline, the ingest hot path."""
        if not self._join():
            return []
        buf = self._buf
        pos = self._pos
        end = len(buf)
        max_size = self.max_size
        plain = _PLAIN_FIRST
        run: list[PlainPublish] = []
        append = run.append
        while end - pos >= 2:
            first = buf[pos]
            if first not in plain:
                break
            length = buf[pos + 1]
            body = pos + 2
            if length & 0x80:  # more length bytes; incomplete or too long: next_frame's
                length &= 0x7F
                shift = 7
                while True:
                    if body >= end or shift > 21:
                        length = -1
                        break
                    byte = buf[body]
                    body += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
                if length < 0:
                    break
            stop = body + length
            if stop > end or stop - pos > max_size:
                break
            if length < 2:
                break
            n = (buf[body] << 8) | buf[body + 1]
            field = body + 2 + n
            if n == 0 or field > stop:
                break
            pid = 0
            if first != 0x30:
                if field + 2 > stop:
                    break
                pid = (buf[field] << 8) | buf[field + 1]
                if pid == 0:
                    break
                field += 2
            if v5:
                if field >= stop or buf[field]:
                    break
                field += 1
            append((first, buf[body + 2 : body + 2 + n], buf[field:stop], pid))
            pos = stop
        if run:
            self._need = 0
        self._release(pos)
        return run

    def _release(self, pos: int) -> None:
        if pos == len(self._buf):  # all cut: the read is let go
            self._buf = b""
            pos = 0
        self._pos = pos


# --------------------------------------------------------------------------- decoding


def _expect_flags(first: int, flags: int) -> None:
    if first & 0x0F != flags:
        raise MalformedPacket(f"reserved flags of packet type {first >> 4} are wrong")


def _packet_id(cur: _Cursor) -> int:
    pid = cur.u16()
    if pid == 0:
        raise ProtocolError("packet identifier 0")
    return pid


def decode_connect(cur: _Cursor) -> Connect:
    name = cur.utf8()
    level = cur.u8()
    if (name, level) not in (("MQTT", MQTT_311), ("MQTT", MQTT_5), ("MQIsdp", MQTT_31)):
        if name not in ("MQTT", "MQIsdp"):
            raise ProtocolError(f"unknown protocol name {name!r}")
        return Connect(protocol_name=name, protocol_level=level)  # refused by the caller
    flags = cur.u8()
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set")
    keep_alive = cur.u16()
    props = decode_properties(cur, P.CONNECT) if level == MQTT_5 else Properties()
    client_id = cur.utf8()
    will = None
    will_qos = (flags >> 3) & 0x03
    if flags & 0x04:
        if will_qos == 3:
            raise MalformedPacket("will QoS 3")
        will_props = decode_properties(cur, WILL) if level == MQTT_5 else Properties()
        will = Will(cur.utf8(), cur.binary(), will_qos, bool(flags & 0x20), will_props)
    elif flags & 0x38:
        raise MalformedPacket("will QoS or retain set without a will")
    username = cur.utf8() if flags & 0x80 else None
    if flags & 0x40:
        if username is None and level != MQTT_5:
            raise MalformedPacket("password without a user name")
        password: bytes | None = cur.binary()
    else:
        password = None
    return Connect(
        client_id, level, name, bool(flags & 0x02), keep_alive, will, username, password, props
    )


def _decode_publish(first: int, cur: _Cursor, version: int) -> Publish:
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = bool(first & 0x08)
    if dup and qos == 0:
        raise MalformedPacket("PUBLISH with DUP set at QoS 0")
    # The ingest hot path: fields are read inline rather than through the cursor's methods.
    buf, pos, end = cur.buf, cur.pos, cur.end
    if end - pos < 2:
        raise MalformedPacket("packet ends in the middle of a field")
    n = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    if pos + n > end:
        raise MalformedPacket("packet ends in the middle of a field")
    topic = utf8_text(buf[pos : pos + n])
    pos += n
    packet_id = None
    if qos:
        if end - pos < 2:
            raise MalformedPacket("packet ends in the middle of a field")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if packet_id == 0:
            raise ProtocolError("packet identifier 0")
        pos += 2
    if version == MQTT_5:
        cur.pos = pos
        props = decode_properties(cur, P.PUBLISH)
        pos = cur.pos
    else:
        props = empty_properties()
    cur.pos = end
    return Publish(topic, bytes(buf[pos:end]), qos, bool(first & 0x01), dup, packet_id, props)


def _decode_ack(
    kind: type[PubAck | PubRec | PubRel | PubComp], cur: _Cursor, version: int
) -> PubAck | PubRec | PubRel | PubComp:
    pid = _packet_id(cur)
    if version != MQTT_5 or cur.remaining() == 0:
        if cur.remaining() and version != MQTT_5:
            raise MalformedPacket("acknowledgement longer than its packet identifier")
        return kind(pid)
    reason = cur.u8()
    props = decode_properties(cur, kind.packet_type) if cur.remaining() else Properties()
    return kind(pid, reason, props)


def _decode_subscribe(cur: _Cursor, version: int) -> Subscribe:
    pid = _packet_id(cur)
    props = decode_properties(cur, P.SUBSCRIBE) if version == MQTT_5 else Properties()
    subs: list[Subscription] = []
    while cur.remaining():
        topic_filter = cur.utf8()
        options = cur.u8()
        if version == MQTT_5:
            if options & 0xC0 or (options >> 4) & 0x03 == 3:
                raise MalformedPacket("reserved subscription option bits set")
        elif options & 0xFC:
            raise MalformedPacket("reserved subscription option bits set")
        if options & 0x03 == 3:
            raise MalformedPacket("subscription with QoS 3")
        subs.append(
            Subscription(
                topic_filter,
                options & 0x03,
                bool(options & 0x04),
                bool(options & 0x08),
                (options >> 4) & 0x03,
            )
        )
    if not subs:
        raise ProtocolError("SUBSCRIBE without a topic filter")
    return Subscribe(pid, subs, props)


def _decode_unsubscribe(cur: _Cursor, version: int) -> Unsubscribe:
    pid = _packet_id(cur)
    props = decode_properties(cur, P.UNSUBSCRIBE) if version == MQTT_5 else Properties()
    filters: list[str] = []
    while cur.remaining():
        filters.append(cur.utf8())
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without a topic filter")
    return Unsubscribe(pid, filters, props)


def _decode_reason_props(cur: _Cursor, version: int, packet: int) -> tuple[int, Properties]:
    if version != MQTT_5 or cur.remaining() == 0:
        return Reason.SUCCESS, Properties()
    reason = cur.u8()
    props = decode_properties(cur, packet) if cur.remaining() else Properties()
    return reason, props


def decode(first: int, body: bytes | memoryview, version: int = MQTT_311) -> Packet:
    """Decode one frame (its first byte and its body) into a packet.

    ``version`` is the connection's protocol level; a CONNECT carries its own.
    """
    cur = _Cursor(body)
    kind = first >> 4
    packet: Packet
    if kind == P.PUBLISH:
        packet = _decode_publish(first, cur, version)
        return packet
    if kind == P.PUBREL or kind == P.SUBSCRIBE or kind == P.UNSUBSCRIBE:
        _expect_flags(first, 0x02)
    else:
        _expect_flags(first, 0x00)
    if kind == P.CONNECT:
        packet = decode_connect(cur)
        if packet.protocol_level not in (MQTT_31, MQTT_311, MQTT_5):
            return packet  # the rest is not read: the version is refused
    elif kind == P.PUBACK:
        packet = _decode_ack(PubAck, cur, version)
    elif kind == P.PUBREC:
        packet = _decode_ack(PubRec, cur, version)
    elif kind == P.PUBREL:
        packet = _decode_ack(PubRel, cur, version)
    elif kind == P.PUBCOMP:
        packet = _decode_ack(PubComp, cur, version)
    elif kind == P.SUBSCRIBE:
        packet = _decode_subscribe(cur, version)
    elif kind == P.UNSUBSCRIBE:
        packet = _decode_unsubscribe(cur, version)
    elif kind == P.PINGREQ:
        packet = PingReq()
    elif kind == P.PINGRESP:
        packet = PingResp()
    elif kind == P.DISCONNECT:
        packet = Disconnect(*_decode_reason_props(cur, version, P.DISCONNECT))
    elif kind == P.AUTH:
        if version != MQTT_5:
            raise MalformedPacket("AUTH before MQTT 5.0")
        packet = Auth(*_decode_reason_props(cur, version, P.AUTH))
    elif kind == P.CONNACK:
        flags = cur.u8()
        if flags & 0xFE:
            raise MalformedPacket("CONNACK reserved flags set")
        code = cur.u8()
        if version == MQTT_5:
            props = decode_properties(cur, P.CONNACK)
        else:
            props = Properties()
            code = CONNACK_FROM_311.get(code, Reason.UNSPECIFIED_ERROR)
        packet = ConnAck(bool(flags & 1), code, props)
    elif kind == P.SUBACK:
        pid = _packet_id(cur)
        props = decode_properties(cur, P.SUBACK) if version == MQTT_5 else Properties()
        packet = SubAck(pid, list(cur.rest()), props)
    elif kind == P.UNSUBACK:
        pid = _packet_id(cur)
        if version == MQTT_5:
            props = decode_properties(cur, P.UNSUBACK)
            packet = UnsubAck(pid, list(cur.rest()), props)
        else:
            packet = UnsubAck(pid)
    else:
        raise MalformedPacket("packet type 0 is reserved")
    if cur.remaining():
        raise MalformedPacket("bytes left over after the packet")
    return packet


# --------------------------------------------------------------------------- encoding


def _frame(first: int, body: bytes | bytearray) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + bytes(body)


def encode_publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int | None,
    properties: bytes | None,
) -> bytes:
    """A PUBLISH from pre-encoded parts: ``topic`` is the UTF-8 topic name, ``properties``
    the encoded property block for 5.0 (``None`` on a 3.1.1 connection)."""
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    head = _U16.pack(len(topic)) + topic
    if qos:
        head += _U16.pack(packet_id or 0)
    if properties is not None:
        head += properties
    return bytes((first,)) + encode_varint(len(head) + len(payload)) + head + payload


def encode_publish_parts(
    topic: bytes, payload: bytes, qos: int, retain: bool, properties: bytes | None
) -> tuple[bytes, bytes]:
    """``encode_publish`` (no DUP) cut around its packet id: the bytes before it and the
    bytes after it, so one encoding serves every packet id (QoS 0: the whole PUBLISH and
    ``b""``).  On 3.1.1 the bytes after the id are ``payload`` itself."""
    first = 0x30 | (qos << 1) | (0x01 if retain else 0)
    after = payload if properties is None else properties + payload
    size = 2 + len(topic) + (2 if qos else 0) + len(after)
    head = bytes((first,)) + encode_varint(size) + _U16.pack(len(topic)) + topic
    if qos:
        return head, after
    return head + after, b""


def _encode_connect(p: Connect, version: int) -> bytes:
    flags = 0x02 if p.clean_start else 0
    body = bytearray(encode_string(p.protocol_name))
    body.append(p.protocol_level)
    if p.will is not None:
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
    if p.username is not None:
        flags |= 0x80
    if p.password is not None:
        flags |= 0x40
    body.append(flags)
    body += _U16.pack(p.keep_alive)
    if version == MQTT_5:
        body += encode_properties(p.properties)
    body += encode_string(p.client_id)
    if p.will is not None:
        if version == MQTT_5:
            body += encode_properties(p.will.properties)
        body += encode_string(p.will.topic) + encode_binary(p.will.payload)
    if p.username is not None:
        body += encode_string(p.username)
    if p.password is not None:
        body += encode_binary(p.password)
    return _frame(0x10, body)


def _encode_ack(first: int, p: PubAck | PubRec | PubRel | PubComp, version: int) -> bytes:
    body = _U16.pack(p.packet_id)
    if version == MQTT_5:
        props = encode_properties(p.properties)
        if props != _EMPTY_PROPERTIES:
            body += bytes((p.reason_code,)) + props
        elif p.reason_code != Reason.SUCCESS:
            body += bytes((p.reason_code,))
    return _frame(first, body)


def _encode_reason_props(first: int, reason: int, props: Properties, version: int) -> bytes:
    if version != MQTT_5:
        return _frame(first, b"")
    encoded = encode_properties(props)
    if encoded == _EMPTY_PROPERTIES:
        return _frame(first, b"" if reason == Reason.SUCCESS else bytes((reason,)))
    return _frame(first, bytes((reason,)) + encoded)


def _encode_subscribe(p: Subscribe, version: int) -> bytes:
    body = bytearray(_U16.pack(p.packet_id))
    if version == MQTT_5:
        body += encode_properties(p.properties)
    for sub in p.subscriptions:
        options = sub.qos
        if version == MQTT_5:
            options |= (
                (0x04 if sub.no_local else 0)
                | (0x08 if sub.retain_as_published else 0)
                | (sub.retain_handling << 4)
            )
        body += encode_string(sub.topic_filter) + bytes((options,))
    return _frame(0x82, body)


def _encode_connack(p: ConnAck, version: int) -> bytes:
    if version == MQTT_5:
        body = bytes((int(p.session_present), p.reason_code)) + encode_properties(p.properties)
    else:
        code = CONNACK_311.get(p.reason_code, 3 if p.reason_code >= 0x80 else 0)
        body = bytes((int(p.session_present), code))
    return _frame(0x20, body)


def _encode_publish_packet(p: Publish, version: int) -> bytes:
    props = encode_properties(p.properties) if version == MQTT_5 else None
    return encode_publish(
        p.topic.encode("utf-8"), p.payload, p.qos, p.retain, p.dup, p.packet_id, props
    )


def _encode_suback(p: SubAck, version: int) -> bytes:
    body = _U16.pack(p.packet_id)
    if version == MQTT_5:
        body += encode_properties(p.properties)
        codes = bytes(p.reason_codes)
    else:
        codes = bytes(c if c < 0x80 else 0x80 for c in p.reason_codes)
    return _frame(0x90, body + codes)


def _encode_unsubscribe(p: Unsubscribe, version: int) -> bytes:
    body = bytearray(_U16.pack(p.packet_id))
    if version == MQTT_5:
        body += encode_properties(p.properties)
    for topic_filter in p.topic_filters:
        body += encode_string(topic_filter)
    return _frame(0xA2, body)


def _encode_unsuback(p: UnsubAck, version: int) -> bytes:
    body = _U16.pack(p.packet_id)
    if version == MQTT_5:
        body += encode_properties(p.properties) + bytes(p.reason_codes)
    return _frame(0xB0, body)


_ENCODERS: dict[int, Callable[[Any, int], bytes]] = {
    P.CONNECT: _encode_connect,
    P.CONNACK: _encode_connack,
    P.PUBLISH: _encode_publish_packet,
    P.PUBACK: lambda p, v: _encode_ack(0x40, p, v),
    P.PUBREC: lambda p, v: _encode_ack(0x50, p, v),
    P.PUBREL: lambda p, v: _encode_ack(0x62, p, v),
    P.PUBCOMP: lambda p, v: _encode_ack(0x70, p, v),
    P.SUBSCRIBE: _encode_subscribe,
    P.SUBACK: _encode_suback,
    P.UNSUBSCRIBE: _encode_unsubscribe,
    P.UNSUBACK: _encode_unsuback,
    P.PINGREQ: lambda p, v: b"\xc0\x00",
    P.PINGRESP: lambda p, v: b"\xd0\x00",
    P.DISCONNECT: lambda p, v: _encode_reason_props(0xE0, p.reason_code, p.properties, v),
    P.AUTH: lambda p, v: _encode_reason_props(0xF0, p.reason_code, p.properties, MQTT_5),
}


def encode(packet: Packet, version: int = MQTT_311) -> bytes:
    """The bytes of ``packet`` for a connection speaking ``version`` (4 = 3.1.1, 5 = 5.0)."""
    if isinstance(packet, Connect):
        version = packet.protocol_level
    return _ENCODERS[packet.packet_type](packet, version)
