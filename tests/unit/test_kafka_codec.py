"""Kafka message codec: round trips of every message at every version, headers, golden bytes."""

from __future__ import annotations

import random
import struct
import uuid
from typing import Any

import pytest

from bayou.errors import ProtocolViolation
from bayou.protocol.kafka import (
    API_KEYS,
    DATA,
    RequestHeader,
    UnsupportedApi,
    UnsupportedVersionError,
    decode_data,
    decode_request_body,
    decode_request_header,
    decode_response,
    encode_data,
    encode_request,
    encode_response,
    messages,
)
from bayou.protocol.kafka.codegen import OUTPUT, generate
from bayou.protocol.kafka.schema import Field, Message, load_all
from tests.unit.test_kafka_codec_schema import DEFINED_API_KEYS

SCHEMAS = {m.name: m for m in load_all()}
INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def _value(f: Field, el: str, version: int, rng: random.Random, cls: Any, msg: Message) -> Any:
    if el in INT_RANGES:
        lo, hi = INT_RANGES[el]
        return rng.choice([lo, hi, -1, 1, rng.randint(lo, hi)])
    if el == "bool":
        return True
    if el == "float64":
        return rng.choice([0.5, -1e300, 3.25])
    if el == "string":
        return rng.choice(["", "topic-é", "x" * rng.randint(1, 200), "ü✓"])
    if el in ("bytes", "records"):
        return rng.randbytes(rng.choice([0, 1, 130]))
    if el == "uuid":
        return uuid.UUID(int=rng.getrandbits(128))
    struct_cls = getattr(cls, el.removeprefix(msg.name) or el)
    fields = f.fields or msg.common[el][1]
    return _fill(struct_cls(), fields, version, rng, cls, msg)


def _fill(
    obj: Any, fields: list[Field], version: int, rng: random.Random, top: Any, msg: Message
) -> Any:
    for f in fields:
        if version not in f.versions:
            continue
        if version in f.nullable and rng.random() < 0.2:
            setattr(obj, f.attr, None)
        elif f.is_array:
            n = rng.choice([0, 1, 2, 3])
            setattr(obj, f.attr, [_value(f, f.element, version, rng, top, msg) for _ in range(n)])
        else:
            setattr(obj, f.attr, _value(f, f.type, version, rng, top, msg))
    return obj


def sample(name: str, version: int, seed: int = 0) -> Any:
    """A message instance with random non-default values in every field of ``version``."""
    msg = SCHEMAS[name]
    cls = getattr(messages, name)
    return _fill(cls(), msg.fields, version, random.Random(seed), cls, msg)


CASES = [
    (key, info.request.NAME, info.response.NAME, v)
    for key, info in sorted(API_KEYS.items())
    for v in range(info.min_version, info.max_version + 1)
]


@pytest.mark.parametrize(
    ("key", "req", "resp", "version"), CASES, ids=[f"{c[1][:-7]}-v{c[3]}" for c in CASES]
)
def test_round_trip_every_message_and_version(key: int, req: str, resp: str, version: int) -> None:
    for seed in range(4):
        request = sample(req, version, seed)
        header = RequestHeader(key, version, seed * 1000 + 7, "client" if seed % 2 else None)
        frame = encode_request(header, request)
        assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
        body = memoryview(frame)[4:]
        got_header, offset = decode_request_header(body)
        assert got_header == header
        decoded = decode_request_body(got_header, body, offset)
        assert decoded == request
        assert encode_request(header, decoded) == frame

        response = sample(resp, version, seed)
        out = encode_response(header, response)
        assert struct.unpack(">i", out[:4])[0] == len(out) - 4
        corr, back = decode_response(key, version, memoryview(out)[4:])
        assert corr == header.correlation_id
        assert back == response
        assert encode_response(header, back) == out


@pytest.mark.parametrize("name", sorted(DATA))
def test_round_trip_data_messages(name: str) -> None:
    cls = DATA[name]
    for version in range(cls.MIN_VERSION, cls.MAX_VERSION + 1):
        for seed in range(4):
            msg = sample(name, version, seed)
            data = encode_data(msg, version)
            assert decode_data(cls, data) == (version, msg)


def test_defaults_follow_the_json() -> None:
    r = messages.ProduceResponse.PartitionProduceResponse(error_code=3)
    assert r.error_code == 3
    assert r.log_append_time_ms == -1
    assert r.error_message is None
    assert r.record_errors == []
    assert r.current_leader == messages.ProduceResponse.LeaderIdAndEpoch(-1, -1)
    a, b = messages.FetchRequest(), messages.FetchRequest()
    assert a.topics is not b.topics  # no shared mutable default
    assert a.max_bytes == 0x7FFFFFFF and a.replica_id == -1 and a.rack_id == ""
    assert messages.MetadataRequest().allow_auto_topic_creation is True
    assert messages.MetadataRequest(topics=None).topics is None
    assert messages.FetchRequest.FetchTopic().topic_id == uuid.UUID(int=0)
    assert messages.ConsumerGroupHeartbeatResponse().assignment is None
    assert "error_code=3" in repr(r)
    assert r.to_dict()["current_leader"] == {"leader_id": -1, "leader_epoch": -1}


def test_records_decode_as_zero_copy_memoryview() -> None:
    batch = bytes(range(61)) * 3
    req = messages.ProduceRequest(
        acks=-1,
        timeout_ms=1000,
        topic_data=[
            messages.ProduceRequest.TopicProduceData(
                name="t",
                partition_data=[
                    messages.ProduceRequest.PartitionProduceData(index=0, records=memoryview(batch))
                ],
            )
        ],
    )
    for version in (3, 9, 11):
        frame = bytearray(encode_request(RequestHeader(0, version, 1, "c"), req))
        body = memoryview(frame)[4:]
        header, off = decode_request_header(body)
        got = decode_request_body(header, body, off).topic_data[0].partition_data[0].records
        assert isinstance(got, memoryview) and got == batch and got.obj is frame


def test_api_registry() -> None:
    info = API_KEYS[0]
    assert info.name == "Produce" and info.request is messages.ProduceRequest
    assert (info.min_version, info.max_version, info.flexible_from) == (0, 11, 9)
    assert API_KEYS[17].flexible_from is None
    assert set(API_KEYS) == DEFINED_API_KEYS


def test_codegen_is_reproducible() -> None:
    assert OUTPUT.read_text(encoding="utf-8") == generate()
    assert OUTPUT.read_text(encoding="utf-8").startswith("# DO NOT EDIT: generated by ")


# ---------------------------------------------------------------- golden bytes, by hand


def _kstr(s: bytes) -> bytes:
    return struct.pack(">h", len(s)) + s


def test_golden_api_versions_v3_request_as_librdkafka_sends_it() -> None:
    body = (
        b"\x00\x12\x00\x03\x00\x00\x00\x01"  # api_key 18, version 3, correlation id 1
        + _kstr(b"rdkafka")  # client_id: classic int16 string even in header v2
        + b"\x00"  # header tagged fields: none
        + b"\x0blibrdkafka"  # client_software_name: compact string, length+1 = 11
        + b"\x062.6.0"  # client_software_version: length+1 = 6
        + b"\x00"  # body tagged fields: none
    )
    header, off = decode_request_header(memoryview(body))
    assert header == RequestHeader(18, 3, 1, "rdkafka")
    assert off == 8 + 9 + 1
    req = decode_request_body(header, memoryview(body), off)
    assert req == messages.ApiVersionsRequest("librdkafka", "2.6.0")
    assert encode_request(header, req) == struct.pack(">i", len(body)) + body


def test_golden_api_versions_v3_response_uses_header_v0() -> None:
    resp = messages.ApiVersionsResponse(
        error_code=0,
        api_keys=[
            messages.ApiVersionsResponse.ApiVersion(api_key=18, min_version=0, max_version=4)
        ],
    )
    out = encode_response(RequestHeader(18, 3, 9, "x"), resp)
    assert out == (
        b"\x00\x00\x00\x13"  # size 19
        b"\x00\x00\x00\x09"  # correlation id; no header tagged fields for ApiVersions
        b"\x00\x00"  # error_code
        b"\x02"  # compact array of 1 element
        b"\x00\x12\x00\x00\x00\x04\x00"  # key 18, min 0, max 4, no tags
        b"\x00\x00\x00\x00"  # throttle_time_ms
        b"\x00"  # tagged fields: none (finalized_features_epoch -1 is the default)
    )


def test_golden_metadata_v0_request_and_v9_response_header() -> None:
    body = b"\x00\x03\x00\x00\x00\x00\x00\x05" + _kstr(b"c") + b"\x00\x00\x00\x01" + _kstr(b"t")
    header, off = decode_request_header(memoryview(body))
    req = decode_request_body(header, memoryview(body), off)
    assert req.topics == [messages.MetadataRequest.Topic(name="t")]
    out = encode_response(RequestHeader(3, 9, 5, None), messages.MetadataResponse())
    # size, correlation id, header tagged fields (v1), throttle, brokers [], cluster_id null,
    # controller_id -1, topics [], cluster_authorized_operations INT32_MIN (v8-10), tags
    assert out[4:] == (
        b"\x00\x00\x00\x05\x00"
        + b"\x00\x00\x00\x00"
        + b"\x01"
        + b"\x00"
        + b"\xff\xff\xff\xff"
        + b"\x01"
        + b"\x80\x00\x00\x00"
        + b"\x00"
    )


def test_golden_produce_response_tagged_current_leader() -> None:
    resp = messages.ProduceResponse(
        responses=[
            messages.ProduceResponse.TopicProduceResponse(
                name="t",
                partition_responses=[
                    messages.ProduceResponse.PartitionProduceResponse(
                        index=0,
                        error_code=6,
                        current_leader=messages.ProduceResponse.LeaderIdAndEpoch(2, 7),
                    )
                ],
            )
        ]
    )
    out = encode_response(RequestHeader(0, 10, 1, None), resp)
    part = out[4 + 5 + 1 + 2 + 1 :]
    assert part[: 4 + 2 + 8 + 8 + 8] == struct.pack(">ihqqq", 0, 6, 0, -1, -1)
    rest = part[30:]
    # record_errors [], error_message null, then 1 tagged field: tag 0, size 9, leader 2, epoch 7
    assert rest[:3] == b"\x01\x00\x01"
    assert rest[3:14] == b"\x00\x09" + struct.pack(">ii", 2, 7) + b"\x00"


# ---------------------------------------------------------------- header errors


def test_unknown_api_key_raises_with_header() -> None:
    frame = memoryview(struct.pack(">hhi", 9999, 0, 42) + _kstr(b"cli"))
    with pytest.raises(UnsupportedApi) as exc:
        decode_request_header(frame)
    assert exc.value.header == RequestHeader(9999, 0, 42, "cli")
    assert isinstance(exc.value, ProtocolViolation)


def test_too_new_version_raises_with_header() -> None:
    frame = memoryview(struct.pack(">hhi", 0, 99, 42) + _kstr(b"cli") + b"\x00")
    with pytest.raises(UnsupportedVersionError) as exc:
        decode_request_header(frame)
    assert exc.value.header.api_version == 99 and exc.value.header.correlation_id == 42


def test_api_versions_too_new_parses_header_as_v1() -> None:
    frame = memoryview(struct.pack(">hhi", 18, 127, 3) + _kstr(b"kcat") + b"\x00\x07junk!")
    with pytest.raises(UnsupportedVersionError) as exc:
        decode_request_header(frame)
    assert exc.value.header == RequestHeader(18, 127, 3, "kcat")
    # the broker answers with a v0 body; the header is always v0 for ApiVersions
    out = encode_response(
        RequestHeader(18, 0, 3, None), messages.ApiVersionsResponse(error_code=35)
    )
    assert out == b"\x00\x00\x00\x0a\x00\x00\x00\x03\x00\x23\x00\x00\x00\x00"


@pytest.mark.parametrize(
    "bad",
    [
        b"",  # empty
        b"\x00\x12\x00\x03",  # shorter than the fixed header
        b"\x00\x12\x00\x03\x00\x00\x00\x01\x00\x09ab",  # client id past the end
        b"\x00\x12\x00\x03\x00\x00\x00\x01\xff\xfe",  # negative client id length
        b"\x00\x12\x00\x03\x00\x00\x00\x01\xff\xff\x80\x80\x80\x80\x80\x01",  # over-long varint
    ],
)
def test_malformed_headers(bad: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        decode_request_header(memoryview(bad))


def test_trailing_bytes_are_ignored_and_truncation_is_a_violation() -> None:
    frame = encode_request(
        RequestHeader(3, 1, 1, "c"),
        messages.MetadataRequest(topics=[messages.MetadataRequest.Topic(name="t")]),
    )
    body = memoryview(frame + b"\x00")[4:]
    header, off = decode_request_header(body)
    # Kafka ignores bytes after the body (librdkafka sends some on Metadata v12)
    assert decode_request_body(header, body, off).topics[0].name == "t"
    for cut in range(off, len(frame) - 4):
        with pytest.raises(ProtocolViolation):
            decode_request_body(header, memoryview(frame)[4 : 4 + cut], off)


def test_null_in_non_nullable_field_is_a_violation() -> None:
    # Metadata v0: topics is not nullable
    body = memoryview(b"\x00\x03\x00\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff")
    header, off = decode_request_header(body)
    with pytest.raises(ProtocolViolation):
        decode_request_body(header, body, off)
    with pytest.raises(ValueError):
        encode_request(RequestHeader(3, 0, 1, None), messages.MetadataRequest(topics=None))
