"""AMQP headers tables through Kafka headers: readable text for Kafka, the exact table back."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bayou.gateways.amqp.mapping import TYPES_HEADER, delivery_properties, to_record
from bayou.protocol.amqp import (
    Float32,
    Int8,
    Int16,
    Int64,
    LongStrBytes,
    Timestamp,
    UInt8,
    UInt16,
    UInt32,
)
from bayou.protocol.amqp.codec import Reader, decode_table, encode_table
from bayou.protocol.kafka.records import build_batch, iter_records

EVERY_TYPE: dict[str, Any] = {
    "text": "héllo",
    "not-utf8": LongStrBytes(b"\xff\xfe"),
    "bytes": b"\x00\x01\xff",
    "bool": True,
    "int8": Int8(-5),
    "uint8": UInt8(250),
    "int16": Int16(-30000),
    "uint16": UInt16(65000),
    "int32": -2_000_000_000,
    "uint32": UInt32(4_000_000_000),
    "int64": Int64(-(2**62)),
    "float32": Float32(1.5),
    "double": 0.1,
    "nan": float("nan"),
    "minus-nan": -float("nan"),
    "decimal": Decimal("-12.340"),
    "timestamp": Timestamp(1_700_000_000),
    "void": None,
    "timelimit": [None, None],
    "table": {
        "a": Int8(1),
        "b": [True, "x", b"\x00", Decimal("1.5"), float("-inf")],
        "c": {"deep": Timestamp(5)},
        "d": LongStrBytes(b"\x80"),
    },
    "empty-table": {},
    "empty-array": [],
}


def _through_kafka(table: dict[str, Any]) -> tuple[dict[str, bytes | None], dict[str, Any]]:
    record = to_record({"headers": table, "content_type": "text/plain"}, b"body", None, 1000)
    stored = next(iter_records(build_batch([record])))
    props = delivery_properties(stored, 0)
    return dict(stored.headers), props


def _wire(table: dict[str, Any]) -> bytes:
    out = bytearray()
    encode_table(out, table)
    return bytes(out)


def test_every_field_type_comes_back_exactly() -> None:
    wire = _wire(EVERY_TYPE)
    published = decode_table(Reader(wire))  # what the broker decodes from a client
    _kafka, props = _through_kafka(published)
    back = props["headers"]
    assert back.pop("x-stream-offset") == 0 and back.pop("x-stream-partition") == 0
    assert _wire(back) == wire  # same keys, order, values and wire types
    assert props["content_type"] == "text/plain"


def test_kafka_sees_readable_text() -> None:
    kafka, _props = _through_kafka(EVERY_TYPE)
    assert kafka["text"] == "héllo".encode()
    assert kafka["bytes"] == b"\x00\x01\xff"
    assert kafka["bool"] == b"true"
    assert kafka["int8"] == b"-5" and kafka["uint32"] == b"4000000000"
    assert kafka["float32"] == b"1.5" and kafka["double"] == b"0.1" and kafka["nan"] == b"nan"
    assert kafka["decimal"] == b"-12.340"
    assert kafka["timestamp"] == b"1700000000"
    assert kafka["void"] is None
    assert kafka["timelimit"] == b"[null,null]"
    assert json.loads(kafka["table"] or b"") == {
        "a": 1,
        "b": [True, "x", "AA==", "1.5", "-inf"],
        "c": {"deep": 5},
        "d": "gA==",
    }
    types = json.loads(kafka[TYPES_HEADER] or b"")
    assert types["timelimit"] == ["V", "V"] and types["int8"] == "b"
    assert "text" not in types and "void" not in types


def test_kafka_produced_headers_and_bad_types_stay_text() -> None:
    from bayou.protocol.kafka.records import Record

    record = Record(
        1000,
        None,
        b"v",
        [("n", b"7"), ("raw", b"\xff"), ("lie", b"abc"), (TYPES_HEADER, b'{"lie":"I","n":"b"}')],
    )
    stored = next(iter_records(build_batch([record])))
    table = delivery_properties(stored, 0)["headers"]
    assert table["n"] == 7 and type(table["n"]) is Int8
    assert table["raw"] == b"\xff" and table["lie"] == "abc"
    garbage = Record(1000, None, b"v", [("n", b"7"), (TYPES_HEADER, b"[not json")])
    assert delivery_properties(next(iter_records(build_batch([garbage]))), 0)["headers"]["n"] == "7"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.integers(-128, 127).map(Int8),
    st.integers(0, 255).map(UInt8),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    st.integers(0, 2**16 - 1).map(UInt16),
    st.integers(0, 2**32 - 1).map(UInt32),
    st.integers(0, 2**63).map(Timestamp),
    # NaN keeps its sign, not its payload bits
    st.floats(width=32, allow_nan=False).map(Float32),
    st.floats(allow_nan=False),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=3, min_value=-2_000_000, max_value=2_000_000
    ),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: not k.startswith(("amqp-", "x-stream-"))),
        values,
        max_size=6,
    )
)
def test_any_table_round_trips(table: dict[str, Any]) -> None:
    wire = _wire(table)
    _kafka, props = _through_kafka(decode_table(Reader(wire)))
    back = props["headers"]
    del back["x-stream-offset"], back["x-stream-partition"]
    assert _wire(back) == wire
