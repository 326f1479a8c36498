"""How MQTT topics and messages map onto Kafka topics, keys, partitions and headers.

Default rule: the MQTT topic's first level names the Kafka topic and the whole MQTT topic is
the record key (``sensors/room1/temp`` → topic ``sensors``, key ``sensors/room1/temp``).  Rules
(``filter=kafka_topic``, first match wins) send other topic trees elsewhere; a first level
that is no valid Kafka topic name goes to ``mqtt``.  Back from Kafka, a record's MQTT topic is
its key when the key is an MQTT topic that maps to the record's Kafka topic, the Kafka topic's
name when it has no key, and ``<kafka topic>/<key>`` otherwise.  See docs/design/mqtt.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bayou.core.partitioner import partition_for_key
from bayou.errors import InvalidConfig
from bayou.protocol.mqtt.packets import Properties, empty_properties
from bayou.protocol.mqtt.topics import (
    filters_may_overlap,
    is_sys,
    matches,
    valid_topic_filter,
    valid_topic_name,
)

DEFAULT_KAFKA_TOPIC = "mqtt"
INTERNAL_PREFIX = "__"
_KAFKA_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_CACHE_LIMIT = 100_000

# Kafka headers that carry MQTT metadata (everything else is a user property).
H_QOS = "mqtt.qos"
H_RETAIN = "mqtt.retain"
H_CLIENT = "mqtt.client-id"
H_EXPIRY = "mqtt.message-expiry"
H_RESPONSE_TOPIC = "mqtt.response-topic"
H_CORRELATION = "mqtt.correlation-data"
H_FORMAT = "mqtt.payload-format"
H_CONTENT_TYPE = "content-type"
RESERVED_HEADERS = frozenset(
    (H_QOS, H_RETAIN, H_CLIENT, H_EXPIRY, H_RESPONSE_TOPIC, H_CORRELATION, H_FORMAT, H_CONTENT_TYPE)
)
_QOS_BYTES = (b"0", b"1", b"2")

# Kafka's default partitioner (murmur2 of the key), shared with the other doors.
partition_for = partition_for_key


def valid_kafka_topic(name: str) -> bool:
    return bool(_KAFKA_NAME.match(name)) and name not in (".", "..")


@dataclass(frozen=True)
class Rule:
    topic_filter: str
    kafka_topic: str


def parse_rules(text: str) -> list[Rule]:
    """``"factory/+/metrics/#=metrics; alerts/#=alerts"`` → rules (``;`` or newlines)."""
    rules: list[Rule] = []
    for item in re.split(r"[;\n]", text or ""):
        item = item.strip()
        if not item:
            continue
        topic_filter, sep, kafka_topic = item.rpartition("=")
        topic_filter, kafka_topic = topic_filter.strip(), kafka_topic.strip()
        if not sep or not valid_topic_filter(topic_filter) or not valid_kafka_topic(kafka_topic):
            raise InvalidConfig(f"Invalid MQTT topic rule {item!r}: expected filter=kafka_topic")
        rules.append(Rule(topic_filter, kafka_topic))
    return rules


class TopicMapper:
    def __init__(self, rules: Sequence[Rule] = (), default_topic: str = DEFAULT_KAFKA_TOPIC):
        self.rules = list(rules)
        self.default_topic = default_topic
        self._cache: dict[str, str] = {}

    def kafka_topic(self, mqtt_topic: str) -> str:
        cached = self._cache.get(mqtt_topic)
        if cached is not None:
            return cached
        target = None
        for rule in self.rules:
            if matches(rule.topic_filter, mqtt_topic):
                target = rule.kafka_topic
                break
        if target is None:
            first = mqtt_topic.split("/", 1)[0]
            ok = valid_kafka_topic(first) and not first.startswith(INTERNAL_PREFIX)
            target = first if ok else self.default_topic
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[mqtt_topic] = target
        return target

    def mqtt_topic(self, kafka_topic: str, key: bytes | None) -> str:
        if key is None:
            return kafka_topic
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return kafka_topic
        if valid_topic_name(text) and not is_sys(text) and self.kafka_topic(text) == kafka_topic:
            return text  # never into $SYS, which is the broker's own
        candidate = f"{kafka_topic}/{text}"
        return candidate if valid_topic_name(candidate) else kafka_topic

    def kafka_topics_for_filter(self, topic_filter: str, existing: Iterable[str]) -> set[str]:
        """Kafka topics whose records could reach a subscriber of ``topic_filter`` (none
        for the broker's ``$SYS`` tree, which is no Kafka topic)."""
        if is_sys(topic_filter):
            return set()
        found = {
            r.kafka_topic for r in self.rules if filters_may_overlap(r.topic_filter, topic_filter)
        }
        first = topic_filter.split("/", 1)[0]
        if first in ("+", "#"):
            found.update(t for t in existing if not t.startswith(INTERNAL_PREFIX))
        elif valid_kafka_topic(first) and not first.startswith(INTERNAL_PREFIX):
            found.add(first)
        else:
            found.add(self.default_topic)
        return found


def plain_properties(props: Properties) -> bool:
    """Whether ``props`` adds nothing to a record's headers beyond QoS, retain and client."""
    return (
        not props.user_properties
        and props.content_type is None
        and props.message_expiry_interval is None
        and not props.payload_format_indicator
        and props.response_topic is None
        and props.correlation_data is None
    )


def headers_for(
    props: Properties, qos: int, retain: bool, client_id: str
) -> list[tuple[str, bytes | None]]:
    """Kafka headers for an MQTT PUBLISH: user properties first, then MQTT metadata.

    A user property named like one of the ``mqtt.*`` headers Bayou reserves is dropped: kept,
    it would be read back as that metadata (a ``mqtt.retain`` property turning into the flag).
    """
    headers: list[tuple[str, bytes | None]] = [
        (k, v.encode()) for k, v in props.user_properties if k not in RESERVED_HEADERS
    ]
    if props.content_type is not None:
        headers.append((H_CONTENT_TYPE, props.content_type.encode()))
    headers.append((H_QOS, _QOS_BYTES[qos]))
    if retain:
        headers.append((H_RETAIN, b"1"))
    if props.message_expiry_interval is not None:
        headers.append((H_EXPIRY, str(props.message_expiry_interval).encode()))
    if props.payload_format_indicator:
        headers.append((H_FORMAT, b"1"))
    if props.response_topic is not None:
        headers.append((H_RESPONSE_TOPIC, props.response_topic.encode()))
    if props.correlation_data is not None:
        headers.append((H_CORRELATION, props.correlation_data))
    headers.append((H_CLIENT, client_id.encode()))
    return headers


@dataclass
class RecordMeta:
    """What the MQTT side needs from a record's headers."""

    qos: int  # the QoS it was published with (2 for records from Kafka producers)
    retain: bool
    origin: str | None
    expiry_s: int | None
    props: Properties  # user properties, content type, response topic ... (no expiry)


def meta_from_headers(headers: Sequence[tuple[str, bytes | None]]) -> RecordMeta:
    props = empty_properties()
    qos, retain, origin, expiry = 2, False, None, None
    for name, value in headers:
        if name not in RESERVED_HEADERS:
            text = "" if value is None else value.decode("utf-8", "replace")
            props.user_properties.append((name, text.replace("\x00", "")))
            continue
        if value is None:
            continue
        if name == H_QOS:
            qos = min(2, max(0, value[0] - 48)) if value else 2
        elif name == H_RETAIN:
            retain = value == b"1"
        elif name == H_CLIENT:
            origin = value.decode("utf-8", "replace")
        elif name == H_EXPIRY:
            try:
                expiry = int(value)
            except ValueError:
                expiry = None
        elif name == H_CONTENT_TYPE:
            props.content_type = value.decode("utf-8", "replace")
        elif name == H_FORMAT:
            props.payload_format_indicator = 1
        elif name == H_RESPONSE_TOPIC:
            topic = value.decode("utf-8", "replace")
            props.response_topic = topic if valid_topic_name(topic) else None
        elif name == H_CORRELATION:
            props.correlation_data = value
    return RecordMeta(qos, retain, origin, expiry, props)
