"""HTTP gateway pure parts: murmur2 partitioning, content types, cursors."""

from __future__ import annotations

import pytest

from bayou.gateways.http.errors import RestError
from bayou.gateways.http.partitioner import Partitioner, murmur2, partition_for_key
from bayou.gateways.http.payloads import Format, accept_format, produce_format
from bayou.gateways.http.streams import format_cursor, parse_cursor


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # the values Kafka's own tests pin for Utils.murmur2
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected


def test_keyed_and_round_robin_partitions() -> None:
    assert partition_for_key(b"21", 10) == (-973932308 & 0x7FFFFFFF) % 10
    p = Partitioner()
    assert [p.partition("t", None, 3) for _ in range(5)] == [0, 1, 2, 0, 1]
    assert p.partition("u", None, 3) == 0
    assert p.partition("t", b"abc", 3) == partition_for_key(b"abc", 3)


def test_content_types() -> None:
    assert produce_format("application/vnd.kafka.json.v2+json") == Format.JSON
    assert produce_format("Application/JSON; charset=utf-8") == Format.JSON
    assert produce_format("application/vnd.kafka.binary.v2+json") == Format.BINARY
    for bad in (None, "text/plain", "application/vnd.kafka.avro.v2+json"):
        with pytest.raises(RestError) as info:
            produce_format(bad)
        assert info.value.status == 415
    assert accept_format("*/*", Format.BINARY) == Format.BINARY
    assert accept_format("application/vnd.kafka.json.v2+json", Format.JSON) == Format.JSON
    with pytest.raises(RestError) as info:
        accept_format("application/vnd.kafka.json.v2+json", Format.BINARY)
    assert (info.value.status, info.value.error_code) == (406, 40601)


def test_cursor_round_trip() -> None:
    assert parse_cursor(format_cursor({1: 4, 0: 17}), 2) == {0: 17, 1: 4}
    for bad in ("", "0", "0:x", "2:1", "0:-1"):
        with pytest.raises(RestError):
            parse_cursor(bad, 2)
