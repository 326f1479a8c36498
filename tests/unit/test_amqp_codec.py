"""AMQP 0-9-1 codec: round trips, the spec table against the reference JSON, the partitioner."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from bayou.protocol.amqp import Timestamp, decode_content_header, decode_method, method
from bayou.protocol.amqp import spec as s
from bayou.protocol.amqp.codec import (
    AmqpError,
    Reader,
    decode_table,
    encode_content_header,
    encode_method_payload,
    encode_table,
)

# The AMQP 0-9-1 spec as JSON, with RabbitMQ's extensions: amqp-rabbitmq-0.9.1.json of
# RabbitMQ's codegen (deps/rabbitmq_codegen in github.com/rabbitmq/rabbitmq-server); reference
# data the project reads but never ships.
REFERENCE = Path(
    os.environ.get("BAYOU_AMQP_SPEC_JSON")
    or Path(__file__).resolve().parents[3]
    / "shared"
    / "reference"
    / "amqp-0-9-1"
    / "amqp-rabbitmq-0.9.1.json"
)


def _zero(wire: str) -> object:
    return {
        "bit": True,
        "octet": 7,
        "short": 513,
        "long": 70000,
        "longlong": 2**40,
        "shortstr": "héllo",
        "longstr": b"\x00\xffbytes",
        "timestamp": 1_700_000_000,
        "table": {"k": "v", "n": 5, "nested": {"deep": [1, "two", None]}},
    }[wire]


@pytest.mark.parametrize("name", sorted(s.METHODS))
def test_every_method_round_trips(name: str) -> None:
    spec = s.METHODS[name]
    m = method(name, **{f: _zero(w) for f, w in spec.fields})
    assert decode_method(encode_method_payload(m)) == m


def test_consecutive_bits_share_an_octet() -> None:
    m = method(
        "queue.declare",
        queue="q",
        passive=False,
        durable=True,
        exclusive=False,
        auto_delete=True,
        nowait=False,
    )
    payload = encode_method_payload(m)
    # ids(4) ticket(2) shortstr(1+1) one octet of bits, then an empty table (4)
    assert len(payload) == 4 + 2 + 2 + 1 + 4
    assert payload[8] == 0b01010


def test_table_values_round_trip() -> None:
    table = {
        "s": "text",
        "b": b"\x80raw",
        "i": -5,
        "big": 2**40,
        "f": 1.5,
        "t": True,
        "d": Decimal("12.34"),
        "ts": Timestamp(1_700_000_000),
        "v": None,
        "a": [1, "x", [True]],
        "F": {"inner": {"x": 1}},
    }
    out = bytearray()
    encode_table(out, table)
    decoded = decode_table(Reader(out))
    assert decoded == table
    assert isinstance(decoded["ts"], Timestamp)


def test_rabbitmq_integer_letters_decode() -> None:
    body = b"\x01aB\xff" + b"\x01bs\xff\xfe" + b"\x01cl" + (2**62).to_bytes(8, "big")
    raw = len(body).to_bytes(4, "big") + body
    assert decode_table(Reader(raw)) == {"a": 255, "b": -2, "c": 2**62}


def test_content_header_properties_round_trip() -> None:
    props = {
        "content_type": "application/json",
        "headers": {"k": "v"},
        "delivery_mode": 2,
        "priority": 3,
        "correlation_id": "c-1",
        "message_id": "m-1",
        "timestamp": 1_700_000_000,
        "app_id": "tests",
    }
    class_id, size, decoded = decode_content_header(encode_content_header(42, props))
    assert (class_id, size, decoded) == (60, 42, props)


def test_no_properties_is_two_zero_octets_of_flags() -> None:
    assert bytes(encode_content_header(0, {}))[-2:] == b"\x00\x00"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x00", s.SYNTAX_ERROR),
        (b"\x00\x63\x00\x01", s.NOT_IMPLEMENTED),
        (b"\x00\x3c\x00\x28\x00", s.SYNTAX_ERROR),  # basic.publish cut short
        (b"\x00\x32\x00\x0a\x00\x00\x05ab", s.SYNTAX_ERROR),  # shortstr past the end
    ],
)
def test_malformed_methods_carry_reply_codes(payload: bytes, code: int) -> None:
    with pytest.raises(AmqpError) as info:
        decode_method(payload)
    assert info.value.code == code


def test_unknown_table_type_is_a_syntax_error() -> None:
    body = b"\x01kZ"
    with pytest.raises(AmqpError) as info:
        decode_table(Reader(len(body).to_bytes(4, "big") + body))
    assert info.value.code == s.SYNTAX_ERROR


@pytest.mark.skipif(
    not REFERENCE.exists(),
    reason=(
        f"the AMQP 0-9-1 spec JSON is not at {REFERENCE}: get amqp-rabbitmq-0.9.1.json from "
        "RabbitMQ's codegen (deps/rabbitmq_codegen in github.com/rabbitmq/rabbitmq-server) and "
        "set BAYOU_AMQP_SPEC_JSON to it to run this cross-check"
    ),
)
def test_definitions_match_the_reference_json() -> None:
    ref = json.loads(REFERENCE.read_text())
    domains = dict(ref["domains"])
    seen = set()
    for cls in ref["classes"]:
        for m in cls["methods"]:
            name = f"{cls['name']}.{m['name'].replace('-', '_')}"
            ours = s.METHODS[name]
            seen.add(name)
            assert (ours.class_id, ours.method_id) == (cls["id"], m["id"]), name
            assert ours.content == bool(m.get("content")), name
            assert ours.synchronous == bool(m.get("synchronous")), name
            fields = [
                (
                    a["name"].replace("-", "_"),
                    domains[a.get("domain", a.get("type"))] if a.get("domain") else a["type"],
                )
                for a in m["arguments"]
            ]
            fields = [("global_" if n == "global" else n, t) for n, t in fields]
            assert list(ours.fields) == fields, name
        if cls["name"] == "basic":
            props = [
                (p["name"].replace("-", "_"), domains.get(p["type"], p["type"]))
                for p in cls["properties"]
            ]
            assert list(s.PROPERTY_FIELDS) == props
    assert seen == set(s.METHODS)
    consts = {c["name"].replace("-", "_"): c["value"] for c in ref["constants"]}
    for name, value in consts.items():
        assert getattr(s, name) == value, name
