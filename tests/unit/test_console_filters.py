"""The message browser's filter language (``bayou/console/filters.py``)."""

from __future__ import annotations

import json

import pytest

from bayou.console.filters import FilterError, parse_filter
from bayou.protocol.kafka.records import DecodedRecord


def record(value: object, key: bytes | None = b"k1", **headers: bytes) -> DecodedRecord:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return DecodedRecord(0, 0, key, raw, list(headers.items()))


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("$.temp > 20", {"temp": 21}, True),
        ("$.temp > 20", {"temp": 20}, False),
        ("$.temp >= 20", {"temp": 20.0}, True),
        ("$.temp < 20", {"temp": "cold"}, False),  # text is not ordered against a number
        ('$.site == "north"', {"site": "north"}, True),
        ("$.site == north", {"site": "north"}, True),  # a bare word is text
        ("$.a.b != 1", {"a": {"b": 2}}, True),
        ("$.a.b == 1", {"a": {}}, False),  # missing: no match
        ("$.list.1 == 5", {"list": [4, 5]}, True),
        ("$.ok == true", {"ok": True}, True),
        ("$.ok > 0", {"ok": True}, False),
        ("$.name ~ orth", {"name": "north"}, True),
        ("value ~ orth", {"name": "north"}, True),
        ("$.x == 1", b"not json", False),
    ],
)
def test_json_and_value_conditions(text: str, value: object, expected: bool) -> None:
    predicate = parse_filter(text)
    assert predicate is not None
    assert predicate(record(value)) is expected


def test_key_and_headers() -> None:
    r = record({}, key=b"device-7", source=b"mqtt")
    assert parse_filter("key ~ ice-")(r)  # type: ignore[misc]
    assert not parse_filter("key == device")(r)  # type: ignore[misc]
    assert parse_filter("header.source == mqtt")(r)  # type: ignore[misc]
    assert parse_filter("header.source")(r)  # type: ignore[misc]
    assert not parse_filter("header.other")(r)  # type: ignore[misc]
    assert parse_filter("header.other != x")(r)  # type: ignore[misc]
    assert not parse_filter("key ~ x")(record({}, key=None))  # type: ignore[misc]


@pytest.mark.parametrize("text", ["$.temp >", "temp > 3", "key", "key > 3", "$ == 1", "$.a = 1"])
def test_what_does_not_parse_is_explained(text: str) -> None:
    with pytest.raises(FilterError) as raised:
        parse_filter(text)
    assert str(raised.value)


def test_empty_filter_is_none() -> None:
    assert parse_filter("  ") is None
