"""What the MQTT door delivers: messages, deliveries, wills.

``Message`` is one stored record seen as MQTT (topic, payload, QoS, properties), shared by
every session it goes to: its PUBLISH is encoded once per (version, QoS, retain) and reused
— QoS 0 whole, QoS 1/2 as the bytes before and after the packet id.  ``Delivery`` is a
message on its way to one session (the QoS and subscription ids of that session's
subscriptions, and the partition and offset it came from, which the session's positions
follow).  ``MessageFactory`` turns a decoded record into a ``Message``, keeping the meaning
of the few header sets that MQTT PUBLISHes without properties produce.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from bayou.gateways.mqtt.mapping import (
    H_CLIENT,
    H_QOS,
    H_RETAIN,
    RecordMeta,
    meta_from_headers,
)
from bayou.protocol.kafka.records import DecodedRecord
from bayou.protocol.mqtt.codec import encode_properties, encode_publish_parts
from bayou.protocol.mqtt.packets import Properties

TP = tuple[str, int]  # (Kafka topic, partition)
_U16 = struct.Struct(">H")
META_CACHE = 4096
_PLAIN_HEADERS = frozenset((H_QOS, H_RETAIN, H_CLIENT))


class Message:
    """One message to deliver, shared by every session it goes to."""

    __slots__ = (
        "_v5",
        "_wire",
        "expiry_at",
        "origin",
        "payload",
        "props",
        "qos",
        "retain",
        "topic",
        "topic_bytes",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        origin: str | None,
        expiry_at: int | None,
        props: Properties,
    ) -> None:
        self.topic = topic
        self.topic_bytes = topic.encode()
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.origin = origin
        self.expiry_at = expiry_at
        self.props = props
        self._v5: bytes | None = None
        # (5.0?, qos, retain) → the PUBLISH without packet id, encoded once for every session
        # it goes to: QoS 0 the whole packet, QoS 1/2 the bytes before and after the id
        self._wire: dict[tuple[bool, int, bool], tuple[bytes, bytes]] | None = None

    def publish_bytes(self, v5: bool, qos: int, retain: bool, pid: int | None) -> bytes:
        """The PUBLISH for a message without expiry sent without subscription ids or DUP."""
        parts = self.publish_parts(v5, qos, retain)
        if pid is None:
            return parts[0]
        return parts[0] + _U16.pack(pid) + parts[1]

    def publish_parts(self, v5: bool, qos: int, retain: bool) -> tuple[bytes, bytes]:
        """``publish_bytes`` without the packet id: QoS 0 the whole packet (and ``b""``),
        QoS 1/2 the bytes before and after the id."""
        key = (v5, qos, retain)
        wire = self._wire
        if wire is None:
            wire = self._wire = {}
        parts = wire.get(key)
        if parts is None:
            props = self.v5_properties((), 0) if v5 else None
            parts = wire[key] = encode_publish_parts(
                self.topic_bytes, self.payload, qos, retain, props
            )
        return parts

    def v5_properties(self, sub_ids: tuple[int, ...], now: int) -> bytes | None:
        """Encoded 5.0 properties, or None when the message has expired."""
        if self.expiry_at is None and not sub_ids:
            if self._v5 is None:
                self._v5 = encode_properties(self.props)
            return self._v5
        props = stored_props(self.props)
        if self.expiry_at is not None:
            remaining = (self.expiry_at - now + 999) // 1000
            if remaining <= 0:
                return None
            props.message_expiry_interval = remaining
        props.subscription_identifiers = list(sub_ids)
        return encode_properties(props)

    def expired(self, now: int) -> bool:
        return self.expiry_at is not None and now >= self.expiry_at


class Settlement(Protocol):
    """What a delivery of a shared subscription owes its share group (``shared.py``)."""

    @property
    def redelivered(self) -> bool: ...

    def settle(self, delivered: bool) -> None:
        """The client has it (True), or could not take it (False)."""
        ...


class Delivery:
    """A message on its way to one session — or, with ``wire``, a run of ``count`` QoS 0
    messages of one partition from ``offset`` on, encoded (``Run``), sent as they are."""

    __slots__ = (
        "count",
        "msg",
        "nbytes",
        "offset",
        "qos",
        "retain",
        "share",
        "sub_ids",
        "tp",
        "tracked",
        "wire",
    )

    def __init__(
        self,
        msg: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        tp: TP | None,
        offset: int,
        tracked: bool,
        share: Settlement | None = None,
        wire: bytes | None = None,
        count: int = 1,
        nbytes: int = 0,
    ) -> None:
        self.msg = msg
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.tp = tp
        self.offset = offset
        self.tracked = tracked  # counts for the session's positions (own subscriptions)
        self.share = share  # a shared subscription's: settled when sent or acknowledged
        self.wire = wire  # a run's PUBLISHes, encoded (then ``count`` and ``nbytes`` of payload)
        self.count = count
        self.nbytes = nbytes


class Run:
    """Consecutive records of one partition offered to the same sessions, without expiry:
    what a QoS 0 subscription takes as one ``Delivery``.  Its PUBLISHes (QoS 0, retain flag
    clear, no properties but the message's own) are joined once per protocol version and
    shared by every session that takes the run."""

    __slots__ = ("_wire", "messages", "nbytes", "offsets", "owners", "tp")

    def __init__(self, tp: TP) -> None:
        self.tp = tp
        self.owners: object = None  # the ``owners_of`` answer these records share
        self.messages: list[Message] = []
        self.offsets: list[int] = []
        self.nbytes = 0  # payload bytes
        self._wire: dict[bool, tuple[bytes, int]] = {}

    def add(self, msg: Message, offset: int) -> None:
        self.messages.append(msg)
        self.offsets.append(offset)
        self.nbytes += len(msg.payload)

    def clear(self) -> None:
        self.owners = None
        self.messages = []
        self.offsets = []
        self.nbytes = 0
        self._wire = {}

    def wire(self, v5: bool) -> tuple[bytes, int]:
        """The run's PUBLISHes joined, and the size of the largest."""
        got = self._wire.get(v5)
        if got is None:
            packets = [m.publish_bytes(v5, 0, False, None) for m in self.messages]
            got = self._wire[v5] = (b"".join(packets), max(map(len, packets)))
        return got


@dataclass
class WillState:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: Properties
    delay_s: int = 0


def stored_props(props: Properties) -> Properties:
    """The properties a stored message keeps (not the per-delivery ones)."""
    return Properties(
        payload_format_indicator=props.payload_format_indicator,
        content_type=props.content_type,
        response_topic=props.response_topic,
        correlation_data=props.correlation_data,
        user_properties=list(props.user_properties),
    )


class MessageFactory:
    """Stored records → ``Message``s."""

    def __init__(self) -> None:
        self._metas: dict[tuple[tuple[str, bytes | None], ...], RecordMeta] = {}

    def from_record(self, mqtt_topic: str, rec: DecodedRecord) -> Message:
        headers = rec.headers
        # QoS, retain and client id only (what an MQTT PUBLISH without properties stores):
        # few distinct combinations, so their meaning is kept, not re-parsed
        meta = None
        if len(headers) <= 3:
            key = tuple(headers)
            meta = self._metas.get(key)
            if meta is None and all(
                name in _PLAIN_HEADERS and value is not None and len(value) <= 256
                for name, value in headers
            ):
                if len(self._metas) >= META_CACHE:
                    self._metas.clear()
                meta = self._metas[key] = meta_from_headers(headers)
        if meta is None:
            meta = meta_from_headers(headers)
        expiry_at = rec.timestamp + meta.expiry_s * 1000 if meta.expiry_s is not None else None
        return Message(
            mqtt_topic,
            rec.value or b"",
            meta.qos,
            meta.retain,
            meta.origin,
            expiry_at,
            meta.props,
        )
