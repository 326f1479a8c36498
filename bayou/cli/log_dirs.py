"""Partition sizes on disk, asked of each leader with DescribeLogDirs.

The Kafka admin client the CLI uses has no DescribeLogDirs call, so this speaks the request
itself with Bayou's own codec over one short-lived socket per broker: DescribeLogDirs v1 (no
flexible encoding, served by Kafka since 1.1 and by Bayou).  Sizes are extra information for
``topic describe``: any failure yields "unknown", never an error.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from bayou.protocol.kafka import RequestHeader, decode_response, encode_request
from bayou.protocol.kafka import messages as m

DESCRIBE_LOG_DIRS = 35
VERSION = 1


def partition_sizes(
    host: str, port: int, topic: str, partitions: Iterable[int], timeout: float
) -> dict[int, int]:
    """Bytes on disk per partition of ``topic`` that the broker at ``host:port`` holds."""
    request = m.DescribeLogDirsRequest(
        topics=[
            m.DescribeLogDirsRequestDescribableLogDirTopic(
                topic=topic, partitions=sorted(partitions)
            )
        ]
    )
    frame = encode_request(RequestHeader(DESCRIBE_LOG_DIRS, VERSION, 1, "bayou-cli"), request)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(frame)
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            _, response = decode_response(DESCRIBE_LOG_DIRS, VERSION, _read_exactly(sock, size))
    except (OSError, ValueError, struct.error):
        return {}
    sizes: dict[int, int] = {}
    for result in response.results:
        for found in result.topics:
            if found.name == topic:
                for p in found.partitions:
                    sizes[p.partition_index] = sizes.get(p.partition_index, 0) + p.partition_size
    return sizes


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
