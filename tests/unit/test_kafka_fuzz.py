"""Fuzz the request decoder: whatever the bytes, only ProtocolViolation (or success) comes out."""

from __future__ import annotations

import contextlib
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayou.errors import ProtocolViolation
from bayou.protocol.kafka import (
    API_KEYS,
    RequestHeader,
    decode_request_body,
    decode_request_header,
    decode_response,
    encode_request,
    encode_response,
)
from tests.unit.test_kafka_codec import sample

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

VALID_REQUESTS = [
    encode_request(RequestHeader(key, v, 1, "fuzz"), sample(info.request.NAME, v, seed))[4:]
    for key, info in sorted(API_KEYS.items())
    for v in range(info.min_version, info.max_version + 1)
    for seed in (1, 2)
]
VALID_RESPONSES = [
    (key, v, encode_response(RequestHeader(key, v, 1, None), sample(info.response.NAME, v, 3))[4:])
    for key, info in sorted(API_KEYS.items())
    for v in range(info.min_version, info.max_version + 1)
]


def _decode(frame: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        header, offset = decode_request_header(memoryview(frame))
        decode_request_body(header, memoryview(frame), offset)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _decode(data)


@FUZZ
@given(st.sampled_from(sorted(API_KEYS)), st.integers(0, 20), st.binary(max_size=200))
def test_random_bodies_behind_a_valid_header(key: int, version: int, body: bytes) -> None:
    _decode(struct.pack(">hhi", key, version, 1) + b"\x00\x01c" + body)
    _decode(struct.pack(">hhi", key, version, 1) + b"\x00\x01c\x00" + body)


mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
)


def _mutate(frame: bytes, edits: list[tuple[str, int, int]], cut: int | None) -> bytes:
    buf = bytearray(frame)
    for op, where, value in edits:
        i = where % (len(buf) + 1)
        if op == "insert":
            buf[i:i] = bytes((value,))
        elif i < len(buf):
            if op == "flip":
                buf[i] ^= 1 << (value % 8)
            elif op == "set":
                buf[i] = value
            else:
                del buf[i]
    if cut is not None:
        del buf[cut % (len(buf) + 1) :]
    return bytes(buf)


@FUZZ
@given(
    st.sampled_from(VALID_REQUESTS),
    st.lists(mutation, max_size=4),
    st.none() | st.integers(0, 10_000),
)
def test_mutated_valid_requests(
    frame: bytes, edits: list[tuple[str, int, int]], cut: int | None
) -> None:
    _decode(_mutate(frame, edits, cut))


@FUZZ
@given(
    st.sampled_from(VALID_RESPONSES),
    st.lists(mutation, max_size=4),
    st.none() | st.integers(0, 10_000),
)
def test_mutated_valid_responses(
    case: tuple[int, int, bytes], edits: list[tuple[str, int, int]], cut: int | None
) -> None:
    key, version, frame = case
    with contextlib.suppress(ProtocolViolation):
        decode_response(key, version, _mutate(frame, edits, cut))


def test_every_truncation_of_every_valid_request() -> None:
    for frame in VALID_REQUESTS[::2]:
        header, offset = decode_request_header(memoryview(frame))
        for cut in range(offset, len(frame)):
            try:
                decode_request_body(header, memoryview(frame)[:cut], offset)
            except ProtocolViolation:
                continue
            raise AssertionError(f"truncated {header} at {cut} decoded")
