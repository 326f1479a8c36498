"""Headers tables keep their AMQP types through the broker (pika, aio-pika and the raw wire),
while Kafka consumers read each value as text."""

from __future__ import annotations

import asyncio
import datetime
import json
import struct
from decimal import Decimal
from typing import Any

import aio_pika
import pika
import pika.data

from tests.support.amqp import Collector, connect, kafka_read, unique
from tests.support.amqp_raw import RawClient, longstr
from tests.support.broker import BrokerProcess

WAIT_S = 20.0
STAMP = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same Python types, recursively (1 is not True, 1.0 is not 1)."""
    if isinstance(a, bytes | bytearray) and isinstance(b, bytes | bytearray):
        return bytes(a) == bytes(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _without_stream_keys(headers: dict[str, Any]) -> dict[str, Any]:
    out = dict(headers)
    assert isinstance(out.pop("x-stream-offset"), int)
    assert isinstance(out.pop("x-stream-partition"), int)
    return out


def test_aio_pika_table_comes_back_with_its_types(shared_broker: BrokerProcess) -> None:
    """pamqp encodes ints in the smallest type (b s u I i l), floats as f, bytearray as x."""
    name = unique("hdr-aio")
    table: dict[str, Any] = {
        "retries": 0,
        "int16": -3000,
        "uint16": 60000,
        "int32": -100_000,
        "uint32": 3_000_000_000,
        "int64": 2**40,
        "float": 1.5,
        "decimal": Decimal("3.14"),
        "flag": False,
        "text": "héllo",
        "stamp": STAMP,
        "void": None,
        "bytes": bytearray(b"\x00\xff"),
        "timelimit": [None, None],
        "nested": {"eta": None, "ids": [1, "two", 3.25, True], "deeper": {"n": -1000}},
    }

    async def main() -> dict[str, Any]:
        url = f"amqp://guest:guest@{shared_broker.host}:{shared_broker.amqp_port}/"
        async with await aio_pika.connect(url) as conn:
            ch = await conn.channel(publisher_confirms=True)
            queue = await ch.declare_queue(name)
            await ch.default_exchange.publish(
                aio_pika.Message(b"x", headers=table), routing_key=name
            )
            message = await queue.get(timeout=WAIT_S, no_ack=True)
            assert message is not None
            return dict(message.headers)

    got = _without_stream_keys(asyncio.run(main()))
    assert _same(got, table), got

    (record,) = kafka_read(shared_broker, name, 1, 1)
    kafka = dict(record.headers())
    assert kafka["retries"] == b"0" and kafka["flag"] == b"false" and kafka["float"] == b"1.5"
    assert kafka["decimal"] == b"3.14" and kafka["text"] == "héllo".encode()
    assert kafka["stamp"] == str(int(STAMP.timestamp())).encode()
    assert kafka["timelimit"] == b"[null,null]" and kafka["void"] is None
    assert json.loads(kafka["nested"]) == {
        "eta": None,
        "ids": [1, "two", 3.25, True],
        "deeper": {"n": -1000},
    }
    assert json.loads(kafka["amqp-header-types"])["retries"] == "b"


def test_pika_table_comes_back_with_its_types(shared_broker: BrokerProcess) -> None:
    """pika encodes ints as I (l beyond 32 bits), bytes as x, datetimes as T."""
    name = unique("hdr-pika")
    table: dict[str, Any] = {
        "n": 7,
        "big": -(2**50),
        "yes": True,
        "raw": b"\x00\xfe",
        "price": Decimal("9.5"),
        "when": STAMP,
        "nothing": None,
        "list": [1, [2, {"k": "v"}], b"\x01"],
        "t": "text",
    }
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(name)
    ch.confirm_delivery()
    ch.basic_publish("", name, b"x", pika.BasicProperties(headers=table))
    got = Collector(conn, ch, name, auto_ack=True, arguments={"x-stream-offset": "first"}).wait_for(
        1
    )[0]
    conn.close()
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, table)
    as_sent, _size = pika.data.decode_table(b"".join(pieces), 0)  # e.g. "big" is pika's long
    assert _same(_without_stream_keys(got.props.headers), as_sent), got.props.headers


# ------------------------------------------------------------------ the exact bytes, every type


def _entry(name: str, letter: str, payload: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + letter.encode() + payload


EVERY_LETTER = b"".join(
    [
        _entry("b", "b", struct.pack(">b", -7)),
        _entry("B", "B", struct.pack(">B", 200)),
        _entry("s", "s", struct.pack(">h", -300)),
        _entry("u", "u", struct.pack(">H", 65000)),
        _entry("I", "I", struct.pack(">i", 5)),
        _entry("i", "i", struct.pack(">I", 4_000_000_000)),
        _entry("l", "l", struct.pack(">q", 5)),  # small, yet a 64-bit field
        _entry("f", "f", struct.pack(">f", 0.1)),
        _entry("d", "d", struct.pack(">d", 0.1)),
        _entry("D", "D", struct.pack(">Bi", 3, -1500)),  # -1.500
        _entry("S", "S", longstr("é".encode())),
        _entry("S-raw", "S", longstr(b"\xff\x00")),  # a long string that is not UTF-8
        _entry("x", "x", longstr(b"\x00\x01")),
        _entry("t", "t", b"\x01"),
        _entry("T", "T", struct.pack(">Q", 1_700_000_000)),
        _entry("V", "V", b""),
        _entry("F", "F", longstr(_entry("inner", "b", b"\x01") + _entry("v", "V", b""))),
        _entry("A", "A", longstr(b"V" + b"s\x00\x02" + b"A" + longstr(b"t\x00"))),
    ]
)


def test_every_field_type_is_delivered_byte_for_byte(shared_broker: BrokerProcess) -> None:
    name = unique("hdr-wire")
    conn = connect(shared_broker)
    conn.channel().queue_declare(name)
    conn.close()
    client = RawClient(shared_broker)
    try:
        client.publish(name, EVERY_LETTER, b"payload")
        delivered = client.get_table(name)
    finally:
        client.sock.close()
    # the published entries, in order, then the two the broker adds
    assert delivered.startswith(EVERY_LETTER), (delivered, EVERY_LETTER)
    rest = delivered[len(EVERY_LETTER) :]
    assert rest.startswith(bytes([15]) + b"x-stream-offset") and b"x-stream-partition" in rest

    (record,) = kafka_read(shared_broker, name, 1, 1)
    kafka = dict(record.headers())
    assert [kafka[k] for k in ("b", "B", "s", "u", "I", "i", "l", "t", "T")] == [
        b"-7",
        b"200",
        b"-300",
        b"65000",
        b"5",
        b"4000000000",
        b"5",
        b"true",
        b"1700000000",
    ]
    assert kafka["D"] == b"-1.500" and kafka["d"] == b"0.1" and kafka["S"] == "é".encode()
    assert kafka["F"] == b'{"inner":1,"v":null}' and kafka["A"] == b"[null,2,[false]]"
    assert kafka["V"] is None and kafka["x"] == b"\x00\x01"
