"""HTTP gateway pure parts: content types, cursors."""

from __future__ import annotations

import pytest

from bayou.gateways.http.errors import RestError
from bayou.gateways.http.payloads import Format, accept_format, produce_format
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
