"""AMQP 0-9-1: our compact definition of every class, method and content property.

Theory of operation
-------------------
``DEFINITIONS`` is the whole protocol in one table, written for Bayou from the AMQP 0-9-1
specification (RabbitMQ's JSON edition, kept outside the project): one line per method::

    <class>.<method>  <class-id>.<method-id>  <flags>  <field>:<type> ...

(an indented line continues the fields of the method above it).
flags: ``C`` the client sends it, ``S`` the server sends it (``CS`` both); ``!`` it expects a
reply; ``+`` content (header and body frames) follows.  Field names are the specification's
in snake_case (``global`` is ``global_``).  ``PROPERTIES`` lists the basic class's content
properties in flag-bit order.  Domains are resolved to the nine wire types here, so the codec
only knows ``bit octet short long longlong shortstr longstr table timestamp``.  A unit test
cross-checks this table against the reference JSON when that file is present.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_MIN_SIZE = 4096
FRAME_OVERHEAD = 8  # type, channel, size, frame-end

# Reply codes (soft errors close a channel, hard errors the connection).
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
CONNECTION_FORCED = 320
INVALID_PATH = 402
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

REPLY_NAMES = {
    REPLY_SUCCESS: "REPLY_SUCCESS",
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE",
    NO_ROUTE: "NO_ROUTE",
    NO_CONSUMERS: "NO_CONSUMERS",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    CONNECTION_FORCED: "CONNECTION_FORCED",
    INVALID_PATH: "INVALID_PATH",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}
HARD_ERRORS = frozenset(
    {
        CONNECTION_FORCED,
        INVALID_PATH,
        FRAME_ERROR,
        SYNTAX_ERROR,
        COMMAND_INVALID,
        CHANNEL_ERROR,
        UNEXPECTED_FRAME,
        RESOURCE_ERROR,
        NOT_ALLOWED,
        NOT_IMPLEMENTED,
        INTERNAL_ERROR,
    }
)

DEFINITIONS = """
connection.start            10.10  S!  version_major:octet version_minor:octet
                                      server_properties:table mechanisms:longstr locales:longstr
connection.start_ok         10.11  C   client_properties:table mechanism:shortstr response:longstr
                                      locale:shortstr
connection.secure           10.20  S!  challenge:longstr
connection.secure_ok        10.21  C   response:longstr
connection.tune             10.30  S!  channel_max:short frame_max:long heartbeat:short
connection.tune_ok          10.31  C   channel_max:short frame_max:long heartbeat:short
connection.open             10.40  C!  virtual_host:shortstr capabilities:shortstr insist:bit
connection.open_ok          10.41  S   known_hosts:shortstr
connection.close            10.50  CS! reply_code:short reply_text:shortstr class_id:short
                                      method_id:short
connection.close_ok         10.51  CS
connection.blocked          10.60  S   reason:shortstr
connection.unblocked        10.61  S
connection.update_secret    10.70  C!  new_secret:longstr reason:shortstr
connection.update_secret_ok 10.71  S
channel.open                20.10  C!  out_of_band:shortstr
channel.open_ok             20.11  S   channel_id:longstr
channel.flow                20.20  CS! active:bit
channel.flow_ok             20.21  CS  active:bit
channel.close               20.40  CS! reply_code:short reply_text:shortstr class_id:short
                                      method_id:short
channel.close_ok            20.41  CS
access.request              30.10  C!  realm:shortstr exclusive:bit passive:bit active:bit
                                      write:bit read:bit
access.request_ok           30.11  S   ticket:short
exchange.declare            40.10  C!  ticket:short exchange:shortstr type:shortstr passive:bit
                                      durable:bit auto_delete:bit internal:bit nowait:bit
                                      arguments:table
exchange.declare_ok         40.11  S
exchange.delete             40.20  C!  ticket:short exchange:shortstr if_unused:bit nowait:bit
exchange.delete_ok          40.21  S
exchange.bind               40.30  C!  ticket:short destination:shortstr source:shortstr
                                      routing_key:shortstr nowait:bit arguments:table
exchange.bind_ok            40.31  S
exchange.unbind             40.40  C!  ticket:short destination:shortstr source:shortstr
                                      routing_key:shortstr nowait:bit arguments:table
exchange.unbind_ok          40.51  S
queue.declare               50.10  C!  ticket:short queue:shortstr passive:bit durable:bit
                                      exclusive:bit auto_delete:bit nowait:bit arguments:table
queue.declare_ok            50.11  S   queue:shortstr message_count:long consumer_count:long
queue.bind                  50.20  C!  ticket:short queue:shortstr exchange:shortstr
                                      routing_key:shortstr nowait:bit arguments:table
queue.bind_ok               50.21  S
queue.purge                 50.30  C!  ticket:short queue:shortstr nowait:bit
queue.purge_ok              50.31  S   message_count:long
queue.delete                50.40  C!  ticket:short queue:shortstr if_unused:bit if_empty:bit
                                      nowait:bit
queue.delete_ok             50.41  S   message_count:long
queue.unbind                50.50  C!  ticket:short queue:shortstr exchange:shortstr
                                      routing_key:shortstr arguments:table
queue.unbind_ok             50.51  S
basic.qos                   60.10  C!  prefetch_size:long prefetch_count:short global_:bit
basic.qos_ok                60.11  S
basic.consume               60.20  C!  ticket:short queue:shortstr consumer_tag:shortstr
                                      no_local:bit no_ack:bit exclusive:bit nowait:bit
                                      arguments:table
basic.consume_ok            60.21  S   consumer_tag:shortstr
basic.cancel                60.30  CS! consumer_tag:shortstr nowait:bit
basic.cancel_ok             60.31  CS  consumer_tag:shortstr
basic.publish               60.40  C+  ticket:short exchange:shortstr routing_key:shortstr
                                      mandatory:bit immediate:bit
basic.return                60.50  S+  reply_code:short reply_text:shortstr exchange:shortstr
                                      routing_key:shortstr
basic.deliver               60.60  S+  consumer_tag:shortstr delivery_tag:longlong redelivered:bit
                                      exchange:shortstr routing_key:shortstr
basic.get                   60.70  C!  ticket:short queue:shortstr no_ack:bit
basic.get_ok                60.71  S+  delivery_tag:longlong redelivered:bit exchange:shortstr
                                      routing_key:shortstr message_count:long
basic.get_empty             60.72  S   cluster_id:shortstr
basic.ack                   60.80  CS  delivery_tag:longlong multiple:bit
basic.reject                60.90  C   delivery_tag:longlong requeue:bit
basic.recover_async         60.100 C   requeue:bit
basic.recover               60.110 C!  requeue:bit
basic.recover_ok            60.111 S
basic.nack                  60.120 CS  delivery_tag:longlong multiple:bit requeue:bit
tx.select                   90.10  C!
tx.select_ok                90.11  S
tx.commit                   90.20  C!
tx.commit_ok                90.21  S
tx.rollback                 90.30  C!
tx.rollback_ok              90.31  S
confirm.select              85.10  C!  nowait:bit
confirm.select_ok           85.11  S
"""

# The basic class's content properties, in flag-bit order (bit 15 first).
PROPERTIES = """
content_type:shortstr content_encoding:shortstr headers:table delivery_mode:octet
priority:octet correlation_id:shortstr reply_to:shortstr expiration:shortstr
message_id:shortstr timestamp:timestamp type:shortstr user_id:shortstr app_id:shortstr
cluster_id:shortstr
"""

WIRE_TYPES = frozenset(
    {"bit", "octet", "short", "long", "longlong", "shortstr", "longstr", "table", "timestamp"}
)
CLASS_IDS = {
    "connection": 10,
    "channel": 20,
    "access": 30,
    "exchange": 40,
    "queue": 50,
    "basic": 60,
    "confirm": 85,
    "tx": 90,
}
BASIC_CLASS = 60


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str  # "basic.publish"
    class_id: int
    method_id: int
    fields: tuple[tuple[str, str], ...]  # (name, wire type)
    from_client: bool
    from_server: bool
    synchronous: bool
    content: bool

    @property
    def key(self) -> tuple[int, int]:
        return (self.class_id, self.method_id)

    @property
    def class_name(self) -> str:
        return self.name.split(".", 1)[0]


def _parse_fields(words: list[str]) -> tuple[tuple[str, str], ...]:
    fields = []
    for word in words:
        name, _, wire = word.partition(":")
        if wire not in WIRE_TYPES:
            raise ValueError(f"unknown wire type in {word!r}")
        fields.append((name, wire))
    return tuple(fields)


def _parse() -> dict[str, MethodSpec]:
    out: dict[str, MethodSpec] = {}
    joined: list[str] = []
    for line in DEFINITIONS.strip().splitlines():
        if line.startswith(" "):  # a continuation line: more fields of the method above
            joined[-1] += line
        else:
            joined.append(line)
    for line in joined:
        name, ids, flags, *words = line.split()
        if not set(flags) <= set("CS!+"):  # a method without flags has no fields either
            raise ValueError(f"bad flags in {line!r}")
        class_id, method_id = (int(x) for x in ids.split("."))
        out[name] = MethodSpec(
            name,
            class_id,
            method_id,
            _parse_fields(words),
            "C" in flags,
            "S" in flags,
            "!" in flags,
            "+" in flags,
        )
    return out


METHODS: dict[str, MethodSpec] = _parse()
BY_ID: dict[tuple[int, int], MethodSpec] = {spec.key: spec for spec in METHODS.values()}
PROPERTY_FIELDS: tuple[tuple[str, str], ...] = _parse_fields(PROPERTIES.split())
PROPERTY_NAMES = frozenset(name for name, _ in PROPERTY_FIELDS)
