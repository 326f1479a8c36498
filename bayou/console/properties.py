"""MQTT and AMQP message properties, read back by name from the Kafka headers their doors
store them as, for the message browser.

The MQTT door writes every PUBLISH's QoS as ``mqtt.qos`` (and the retain flag, the client
id, the MQTT 5 properties as the other ``mqtt.*`` headers and ``content-type``; its user
properties as plain headers): a record with ``mqtt.qos`` came through it, and
``mapping.meta_from_headers`` — what the door itself reads back when it delivers — names
the rest.  The AMQP door writes content properties as ``amqp-<property>`` headers (and the
types of its headers table as ``amqp-header-types``), its headers table as plain headers: a
record with any of those came through it.  Records with neither show their headers only.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bayou.gateways.amqp.mapping import HEADER_TO_PROP, TYPES_HEADER
from bayou.gateways.mqtt.mapping import H_QOS, meta_from_headers

Headers = Sequence[tuple[str, bytes | None]]

#: AMQP's names for the content properties (as RabbitMQ's tools show them)
_AMQP_NAMES = {prop: header.removeprefix("amqp-") for header, prop in HEADER_TO_PROP.items()}
_DELIVERY_MODES = {"1": "1 (transient)", "2": "2 (persistent)"}


@dataclass(frozen=True)
class Properties:
    """One protocol's properties of a record: ``protocol`` ("MQTT", "AMQP") and the named
    items, each a short phrase ("QoS 1", "reply-to replies")."""

    protocol: str
    items: tuple[str, ...]


def _text(value: bytes | None) -> str:
    if value is None:
        return "null"
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return binascii.hexlify(value, " ").decode()


def mqtt_properties(headers: Headers) -> Properties | None:
    if not any(name == H_QOS for name, _ in headers):
        return None
    meta = meta_from_headers(headers)
    props = meta.props
    items = [f"QoS {meta.qos}"]
    if meta.retain:
        items.append("retain")
    if props.content_type is not None:
        items.append(f"content type {props.content_type}")
    if props.payload_format_indicator:
        items.append("payload format UTF-8")
    if meta.expiry_s is not None:
        items.append(f"message expiry {meta.expiry_s} s")
    if props.response_topic is not None:
        items.append(f"response topic {props.response_topic}")
    if props.correlation_data is not None:
        items.append(f"correlation data {_text(props.correlation_data)}")
    if props.user_properties:
        pairs = ", ".join(f"{k}={v}" for k, v in props.user_properties)
        items.append(f"user properties {pairs}")
    if meta.origin is not None:
        items.append(f"client id {meta.origin}")
    return Properties("MQTT", tuple(items))


def amqp_properties(headers: Headers) -> Properties | None:
    if not any(name in HEADER_TO_PROP or name == TYPES_HEADER for name, _ in headers):
        return None
    items: list[str] = []
    table: list[str] = []
    for name, value in headers:
        if name == TYPES_HEADER:
            continue
        prop = HEADER_TO_PROP.get(name)
        if prop is None:
            table.append(f"{name}={_text(value)}")
            continue
        text = _text(value)
        if prop == "delivery_mode":
            text = _DELIVERY_MODES.get(text, text)
        elif prop == "timestamp" and text.isdigit():
            moment = datetime.fromtimestamp(int(text), UTC)
            text = moment.isoformat().replace("+00:00", "Z")
        items.append(f"{_AMQP_NAMES[prop]} {text}")
    if table:
        items.append("headers " + ", ".join(table))
    return Properties("AMQP", tuple(items))


def protocol_properties(headers: Headers) -> list[Properties]:
    """The MQTT or AMQP properties a record's headers hold (none for other records)."""
    found = [mqtt_properties(headers), amqp_properties(headers)]
    return [p for p in found if p is not None]
