"""MQTT control packets (3.1.1 and 5.0) as plain data, with reason codes and properties.

One class per packet type covers both versions: fields that exist only in 5.0 (reason codes on
acknowledgements, properties) are simply ignored when a 3.1.1 connection encodes them, and take
their defaults when a 3.1.1 packet is decoded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

MQTT_311 = 4
MQTT_5 = 5
MQTT_31 = 3  # protocol name "MQIsdp": decoded so that it can be refused politely

MAX_REMAINING_LENGTH = 268_435_455
MAX_PACKET_ID = 65_535


class PacketType(enum.IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Reason(enum.IntEnum):
    """MQTT 5.0 reason codes (3.1.1 CONNACK return codes are mapped from these)."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    REAUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


# 3.1.1 CONNACK return codes for the 5.0 reasons that have one.
CONNACK_311: dict[int, int] = {
    Reason.SUCCESS: 0,
    Reason.UNSUPPORTED_PROTOCOL_VERSION: 1,
    Reason.CLIENT_IDENTIFIER_NOT_VALID: 2,
    Reason.SERVER_UNAVAILABLE: 3,
    Reason.SERVER_BUSY: 3,
    Reason.SERVER_SHUTTING_DOWN: 3,
    Reason.BAD_USER_NAME_OR_PASSWORD: 4,
    Reason.NOT_AUTHORIZED: 5,
}
CONNACK_FROM_311: dict[int, int] = {
    0: Reason.SUCCESS,
    1: Reason.UNSUPPORTED_PROTOCOL_VERSION,
    2: Reason.CLIENT_IDENTIFIER_NOT_VALID,
    3: Reason.SERVER_UNAVAILABLE,
    4: Reason.BAD_USER_NAME_OR_PASSWORD,
    5: Reason.NOT_AUTHORIZED,
}


@dataclass
class Properties:
    """MQTT 5.0 properties; ``None`` (or an empty list) means absent."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: list[int] = field(default_factory=list)
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None


_PROPERTY_DEFAULTS: dict[str, object] = {}


def empty_properties() -> Properties:
    """``Properties()`` without running the 27-field ``__init__`` (one per received PUBLISH)."""
    props = object.__new__(Properties)
    if not _PROPERTY_DEFAULTS:
        _PROPERTY_DEFAULTS.update(vars(Properties()))
    props.__dict__.update(_PROPERTY_DEFAULTS)
    props.subscription_identifiers = []
    props.user_properties = []
    return props


@dataclass
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=Properties)


@dataclass
class Connect:
    client_id: str = ""
    protocol_level: int = MQTT_311
    protocol_name: str = "MQTT"
    clean_start: bool = True
    keep_alive: int = 60
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.CONNECT


@dataclass
class ConnAck:
    session_present: bool = False
    reason_code: int = Reason.SUCCESS
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.CONNACK


@dataclass
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.PUBLISH


@dataclass
class PubAck:
    packet_id: int
    reason_code: int = Reason.SUCCESS
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.PUBACK


@dataclass
class PubRec:
    packet_id: int
    reason_code: int = Reason.SUCCESS
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.PUBREC


@dataclass
class PubRel:
    packet_id: int
    reason_code: int = Reason.SUCCESS
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.PUBREL


@dataclass
class PubComp:
    packet_id: int
    reason_code: int = Reason.SUCCESS
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.PUBCOMP


@dataclass
class Subscription:
    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass
class Subscribe:
    packet_id: int
    subscriptions: list[Subscription]
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.SUBSCRIBE


@dataclass
class SubAck:
    packet_id: int
    reason_codes: list[int]
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.SUBACK


@dataclass
class Unsubscribe:
    packet_id: int
    topic_filters: list[str]
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.UNSUBSCRIBE


@dataclass
class UnsubAck:
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.UNSUBACK


@dataclass
class PingReq:
    packet_type = PacketType.PINGREQ


@dataclass
class PingResp:
    packet_type = PacketType.PINGRESP


@dataclass
class Disconnect:
    reason_code: int = Reason.SUCCESS
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.DISCONNECT


@dataclass
class Auth:
    reason_code: int = Reason.SUCCESS
    properties: Properties = field(default_factory=Properties)

    packet_type = PacketType.AUTH


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)
AckPacket = PubAck | PubRec | PubRel | PubComp
