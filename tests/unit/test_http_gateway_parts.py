"""HTTP gateway pure parts: content types, cursors, integer fields."""

from __future__ import annotations

import json
import re

import pytest

from bayou.gateways.http.errors import RestError
from bayou.gateways.http.integers import Integer, numerals_up_to
from bayou.gateways.http.payloads import (
    CreateConsumer,
    Format,
    TopicPartitionBody,
    accept_format,
    parse,
    produce_format,
)
from bayou.gateways.http.streams import format_cursor, parse_cursor


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


@pytest.mark.parametrize("limit", [0, 1, 9, 10, 19, 20, 99, 100, 109, 60_000, 2**31 - 1])
def test_numerals_up_to_match_exactly_the_range(limit: int) -> None:
    numerals = re.compile(numerals_up_to(limit))
    for n in [*range(min(limit + 1200, 70_000)), limit + 1, limit * 10, limit + 10**9]:
        for text in (str(n), f"00{n}"):
            assert bool(numerals.fullmatch(text)) == (n <= limit), (limit, text)


def test_integer_fields_take_decimal_text_in_range() -> None:
    def partition(value: object) -> object:
        return parse(
            TopicPartitionBody, json.dumps({"topic": "t", "partition": value}).encode()
        ).partition

    for given, taken in (
        (3, 3),
        (3.0, 3),
        ("3", 3),
        ("+3", 3),
        ("003", 3),
        ("2147483647", 2**31 - 1),
    ):
        assert partition(given) == taken
    for refused in (
        "2147483648",
        "-1",
        "-0",
        " 3",
        "3 ",
        "3\n",
        "3.0",
        "3e0",
        "0x3",
        "",
        "٣",
        True,
        3.5,
        None,
        -1,
        2**31,
    ):
        with pytest.raises(RestError) as info:
            partition(refused)
        assert info.value.status == 422, refused
    fetch = Integer(-1)
    assert re.fullmatch(fetch.pattern, "-1") and not re.fullmatch(fetch.pattern, "-2")
    assert parse(CreateConsumer, b'{"fetch.min.bytes": "-1"}').fetch_min_bytes == -1
