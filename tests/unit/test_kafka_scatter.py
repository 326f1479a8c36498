"""Fetch responses go out in pieces: large record sets are never copied into the frame."""

from __future__ import annotations

import uuid

import pytest

from bayou.protocol.kafka import (
    RequestHeader,
    decode_response,
    encode_response,
    encode_response_parts,
)
from bayou.protocol.kafka import (
    messages as m,
)
from bayou.protocol.kafka.primitives import SCATTER_MIN


def fetch_response(records: list[bytes | None], version: int) -> m.FetchResponse:
    return m.FetchResponse(
        responses=[
            m.FetchResponseFetchableTopicResponse(
                topic="t",
                topic_id=uuid.uuid4(),
                partitions=[
                    m.FetchResponsePartitionData(partition_index=i, high_watermark=10, records=r)
                    for i, r in enumerate(records)
                ],
            )
        ]
    )


@pytest.mark.parametrize("version", [4, 11, 12, 16])
def test_parts_join_to_the_frame_and_large_records_are_their_own_piece(version: int) -> None:
    big = memoryview(bytes(range(256)) * (SCATTER_MIN // 128))
    small = b"x" * 100
    response = fetch_response([big, small, None, bytes(big)], version)
    header = RequestHeader(1, version, 77, "c")
    parts = encode_response_parts(header, response)
    frame = b"".join(parts)
    assert frame == encode_response(header, response)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert any(p is big for p in parts)  # sent as read, not copied
    assert not any(p is small for p in parts)  # small ones are cheaper to copy
    correlation_id, decoded = decode_response(1, version, memoryview(frame)[4:])
    assert correlation_id == 77
    got = [p.records for p in decoded.responses[0].partitions]
    assert [None if r is None else bytes(r) for r in got] == [bytes(big), small, None, bytes(big)]


def test_a_response_without_records_is_one_piece() -> None:
    parts = encode_response_parts(RequestHeader(18, 3, 1, None), m.ApiVersionsResponse())
    assert len(parts) == 1
