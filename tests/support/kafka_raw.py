"""Kafka requests as raw frames over one socket, for answers no client library exposes
(the request is encoded by Bayou's codec, which is cross-checked against Kafka's JSON)."""

from __future__ import annotations

import itertools
import socket
import struct
from typing import Any

from bayou.protocol.kafka import RequestHeader, decode_response, encode_request
from bayou.protocol.kafka import messages as m

TIMEOUT_S = 10


def fetch_request(
    topic: str, partition: int = 0, offset: int = 0, *, isolation: int = 0
) -> m.FetchRequest:
    """A Fetch of one partition from ``offset`` that never waits (1 MiB at most)."""
    return m.FetchRequest(
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=isolation,
        topics=[
            m.FetchRequestFetchTopic(
                topic=topic,
                partitions=[
                    m.FetchRequestFetchPartition(
                        partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20
                    )
                ],
            )
        ],
    )


def produce_request(
    topic: str, records: bytes, partition: int = 0, *, acks: int = -1, timeout_ms: int = 30_000
) -> m.ProduceRequest:
    """A Produce of ``records`` (whole batches) to one partition."""
    return m.ProduceRequest(
        acks=acks,
        timeout_ms=timeout_ms,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[
                    m.ProduceRequest.PartitionProduceData(index=partition, records=records)
                ],
            )
        ],
    )


class RawKafka:
    """One connection; ``call`` sends a request and returns the decoded response."""

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        self._ids = itertools.count(1)

    def call(self, request: Any, version: int) -> Any:
        correlation_id = next(self._ids)
        header = RequestHeader(request.API_KEY, version, correlation_id, "raw-test")
        self.sock.sendall(encode_request(header, request))
        head = self._read(4)
        frame = self._read(struct.unpack(">i", head)[0])
        got, response = decode_response(request.API_KEY, version, frame)
        assert got == correlation_id
        return response

    def metadata_ok(self) -> bool:
        """The connection still serves: a Metadata request gets its answer."""
        response = self.call(m.MetadataRequest(topics=None), 9)
        return bool(response.brokers)

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawKafka:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
