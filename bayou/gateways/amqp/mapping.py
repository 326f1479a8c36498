"""AMQP messages ↔ Kafka records, and where a stream consumer starts.

Publishing: the body is the record value; the record key is the routing key when the
message went through a named exchange (None through the default exchange); the record
timestamp is the broker's clock.  The ``headers`` table becomes Kafka headers one for one,
each value as readable text (``header_text``): str as UTF-8, bytes as they are, integers
and timestamps (seconds) in decimal, booleans ``true``/``false``, floats and decimals as
Python writes them (``1.5``, ``nan``, ``1.00``), void a null header value, nested tables and
arrays as JSON (their bytes as base64, non-finite floats and decimals as JSON strings).
What text loses — the AMQP type of each value — goes into one more header,
``amqp-header-types``: a JSON object naming, for every entry that is not a plain string,
its type letter (``b B s u I i l f d D t T x V``, ``S`` for a string, ``Sb`` for a long
string that is not UTF-8), or for a table an object and for an array a list of its
members' types.  Celery's ``{"retries": 0, "timelimit": [None, None]}`` is stored as headers
``retries: 0``, ``timelimit: [null,null]`` and ``amqp-header-types:
{"retries":"b","timelimit":["V","V"]}`` (aio-pika sends 0 as ``b``).  The other content
properties become Kafka headers named ``amqp-<property>`` (``amqp-content-type``,
``amqp-message-id``, ``amqp-correlation-id``, ``amqp-timestamp`` in seconds, ...).

Delivering reverses it: ``amqp-*`` headers become properties again, the rest the headers
table — each value rebuilt with its recorded type, so the consumer gets the very table that
was published (same values, same wire types); a value without a type (a Kafka producer's
header) or whose type does not fit its text is a str when UTF-8, else bytes —, plus
``x-stream-offset`` and ``x-stream-partition``; without an ``amqp-timestamp`` the record's
timestamp (in seconds) is the timestamp property, so Kafka-produced records carry one too.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from decimal import Decimal
from typing import Any

from bayou.core import StartSpec
from bayou.protocol.amqp import LongStrBytes, Timestamp, field_type, typed
from bayou.protocol.kafka.records import DecodedRecord, Record

PREFIX = "amqp-"
_PROPS = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)
_INT_PROPS = frozenset({"delivery_mode", "priority", "timestamp"})
PROP_TO_HEADER = {p: PREFIX + p.replace("_", "-") for p in _PROPS}
HEADER_TO_PROP = {h: p for p, h in PROP_TO_HEADER.items()}
TYPES_HEADER = PREFIX + "header-types"
_BAD_TYPED = (ValueError, TypeError, KeyError, IndexError, AttributeError, binascii.Error)


def header_text(value: Any) -> bytes | None:
    """A headers-table value as a Kafka header value (readable text; bytes as they are)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return str(int(value)).encode()
    if isinstance(value, float | Decimal):
        return _number_text(value).encode()
    return json.dumps(_json_form(value), separators=(",", ":"), ensure_ascii=False).encode()


def _number_text(value: float | Decimal) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if math.isnan(value):  # the sign survives; other NaN payload bits do not
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return repr(float(value))


def _json_form(value: Any) -> Any:
    """A nested value as JSON: bytes as base64, non-finite floats and decimals as strings."""
    if isinstance(value, dict):
        return {str(k): _json_form(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_form(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Decimal) or not math.isfinite(value):
        return _number_text(value)
    return float(value)


def _signature(value: Any) -> Any:
    """The AMQP type of a value: its letter, or an object/list of its members' types."""
    if isinstance(value, dict):
        return {str(k): _signature(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_signature(v) for v in value]
    if isinstance(value, LongStrBytes):
        return "Sb"
    return field_type(value)


def _from_json(signature: Any, value: Any) -> Any:
    """Rebuild a nested value from its JSON form and its signature (raises _BAD_TYPED)."""
    if isinstance(signature, dict):
        if not isinstance(value, dict) or value.keys() != signature.keys():
            raise ValueError("table members differ from their types")
        return {k: _from_json(signature[k], v) for k, v in value.items()}
    if isinstance(signature, list):
        if not isinstance(value, list) or len(value) != len(signature):
            raise ValueError("array members differ from their types")
        return [_from_json(t, v) for t, v in zip(signature, value, strict=True)]
    if signature in ("x", "Sb"):
        raw = base64.b64decode(value, validate=True)
        return LongStrBytes(raw) if signature == "Sb" else raw
    if signature in ("f", "d") and isinstance(value, str):
        value = float(value)
    return typed(signature, value)


def _from_text(signature: Any, raw: bytes) -> Any:
    """Rebuild a top-level value from its Kafka header text (raises _BAD_TYPED)."""
    if isinstance(signature, dict | list):
        return _from_json(signature, json.loads(raw))
    if signature == "Sb":
        return LongStrBytes(raw)
    if signature in ("S", "x"):
        return typed(signature, raw)
    text = raw.decode()
    if signature == "t":
        if text not in ("true", "false"):
            raise ValueError(f"not a boolean: {text!r}")
        return text == "true"
    if signature in ("f", "d"):
        return typed(signature, float(text))
    if signature == "D":
        return typed("D", text)
    if not isinstance(signature, str) or signature == "V":
        raise ValueError(f"no value of type {signature!r}")
    return typed(signature, int(text))


def _plain_value(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def to_record(
    properties: dict[str, Any], body: bytes, key: bytes | None, timestamp_ms: int
) -> Record:
    headers: list[tuple[str, bytes | None]] = []
    types: dict[str, Any] = {}
    table = properties.get("headers")
    if table:
        for name, value in table.items():
            headers.append((name, header_text(value)))
            if value is not None and (not isinstance(value, str)):
                types[name] = _signature(value)
    for prop, name in PROP_TO_HEADER.items():
        value = properties.get(prop)
        if value is not None:
            headers.append((name, str(value).encode() if prop in _INT_PROPS else value.encode()))
    if types:
        headers.append(
            (TYPES_HEADER, json.dumps(types, separators=(",", ":"), ensure_ascii=False).encode())
        )
    return Record(timestamp_ms, key, body, headers)


def _header_types(record: DecodedRecord) -> dict[str, Any]:
    """The last ``amqp-header-types`` header (ours is written after the table's entries)."""
    for name, value in reversed(record.headers):
        if name == TYPES_HEADER and value is not None:
            try:
                types = json.loads(value)
            except ValueError:
                return {}
            return types if isinstance(types, dict) else {}
    return {}


def delivery_properties(record: DecodedRecord, partition: int) -> dict[str, Any]:
    props: dict[str, Any] = {}
    table: dict[str, Any] = {}
    types = _header_types(record)
    for name, value in record.headers:
        if name == TYPES_HEADER:
            continue
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
            continue
        signature = types.get(name)
        if signature is not None:
            try:
                table[name] = _from_text(signature, value)
                continue
            except _BAD_TYPED:
                pass  # a type that does not fit the text: deliver the text
        table[name] = _plain_value(value)
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


_INTERVAL = re.compile(r"^(\d+)([YMDhms])$")
_UNIT_S = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


def parse_stream_offset(value: Any, now_ms: int) -> StartSpec:
    """The ``x-stream-offset`` argument as RabbitMQ streams read it, as the core's
    ``StartSpec`` (``first`` is ``earliest``); ValueError if bad."""
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
        if value == "first":
            return StartSpec("earliest")
        if value == "last":
            return StartSpec("last")
        if value == "next":
            return StartSpec("next")
        match = _INTERVAL.match(value)
        if match:
            seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
            return StartSpec("timestamp", now_ms - seconds * 1000)
    raise ValueError(f"invalid x-stream-offset {value!r}")
