"""AMQP messages ↔ Kafka records, and where a stream consumer starts.

Publishing: the body is the record value; the record key is the routing key when the
message went through a named exchange (None through the default exchange); the record
timestamp is the broker's clock.  The ``headers`` table becomes Kafka headers one for one
(str → UTF-8, bytes as they are, numbers and booleans as text, nested tables and arrays as
JSON, void → a null header value).  The other content properties become Kafka headers named
``amqp-<property>`` (``amqp-content-type``, ``amqp-message-id``, ``amqp-correlation-id``,
``amqp-timestamp`` in seconds, ...).

Delivering reverses it: ``amqp-*`` headers become properties again, the rest the headers
table (UTF-8 values as str, others as bytes), plus ``x-stream-offset`` and
``x-stream-partition``; without an ``amqp-timestamp`` the record's timestamp (in seconds)
is the timestamp property, so Kafka-produced records carry one too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bayou.protocol.amqp import Timestamp
from bayou.protocol.kafka.records import DecodedRecord, Record

PREFIX = "amqp-"
_PROPS = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
          "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id",
          "cluster_id")
_INT_PROPS = frozenset({"delivery_mode", "priority", "timestamp"})
PROP_TO_HEADER = {p: PREFIX + p.replace("_", "-") for p in _PROPS}
HEADER_TO_PROP = {h: p for p, h in PROP_TO_HEADER.items()}


def header_value(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int | float | Decimal):
        return str(value).encode()
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode(errors="replace")
    return str(value)


def to_record(properties: dict[str, Any], body: bytes, key: bytes | None,
              timestamp_ms: int) -> Record:
    headers: list[tuple[str, bytes | None]] = []
    table = properties.get("headers")
    if table:
        for name, value in table.items():
            headers.append((name, header_value(value)))
    for prop, name in PROP_TO_HEADER.items():
        value = properties.get(prop)
        if value is not None:
            headers.append((name, str(value).encode() if prop in _INT_PROPS else
                            value.encode()))
    return Record(timestamp_ms, key, body, headers)


def delivery_properties(record: DecodedRecord, partition: int) -> dict[str, Any]:
    props: dict[str, Any] = {}
    table: dict[str, Any] = {}
    for name, value in record.headers:
        prop = HEADER_TO_PROP.get(name)
        if prop is not None and value is not None:
            text = value.decode(errors="replace")
            if prop in _INT_PROPS:
                try:
                    props[prop] = int(text)
                except ValueError:
                    table[name] = text
            else:
                props[prop] = text
            continue
        if value is None:
            table[name] = None
        else:
            try:
                table[name] = value.decode()
            except UnicodeDecodeError:
                table[name] = value
    table["x-stream-offset"] = record.offset
    table["x-stream-partition"] = partition
    props["headers"] = table
    if "timestamp" not in props and record.timestamp >= 0:
        props["timestamp"] = record.timestamp // 1000
    if "delivery_mode" in props and not 0 <= props["delivery_mode"] <= 255:
        del props["delivery_mode"]
    if "priority" in props and not 0 <= props["priority"] <= 255:
        del props["priority"]
    return props


# --------------------------------------------------------------------------- stream offsets


@dataclass(frozen=True)
class StartSpec:
    """Where a consumer starts in each partition: ``first``, ``last``, ``next``, an
    ``offset`` or a ``timestamp`` (milliseconds)."""

    kind: str
    value: int = 0


_INTERVAL = re.compile(r"^(\d+)([YMDhms])$")
_UNIT_S = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


def parse_stream_offset(value: Any, now_ms: int) -> StartSpec:
    """The ``x-stream-offset`` argument as RabbitMQ streams read it; ValueError if bad."""
    if isinstance(value, Timestamp):
        return StartSpec("timestamp", int(value) * 1000)
    if isinstance(value, bool):
        raise ValueError("x-stream-offset cannot be a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("x-stream-offset must not be negative")
        return StartSpec("offset", value)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        if value in ("first", "last", "next"):
            return StartSpec(value)
        match = _INTERVAL.match(value)
        if match:
            seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
            return StartSpec("timestamp", now_ms - seconds * 1000)
    raise ValueError(f"invalid x-stream-offset {value!r}")
