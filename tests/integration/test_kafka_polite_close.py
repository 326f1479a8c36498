"""Closing a Kafka connection on bad input: politely, and logged once per source a minute.

A client older than the versions Bayou serves reconnects in a loop; every attempt used to
log a WARNING (about ten lines a second).  And a close with unread client bytes in the
socket makes the kernel answer with a reset, so the client loses even the responses it had
not read yet: the broker now shuts down its side, drains, then closes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from bayou.protocol.kafka import RequestHeader, encode_request
from bayou.protocol.kafka import messages as m
from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until

TIMEOUT_S = 10


@pytest.fixture(scope="module")
def quiet_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("polite") / "data", doors=()).start()
    try:
        yield proc
    finally:
        proc.kill()


def old_fetch() -> bytes:
    """Fetch v0: what a client from before Kafka 0.10 sends first (Bayou serves v4+)."""
    return encode_request(
        RequestHeader(1, 0, 1, "ancient"),
        m.FetchRequest(
            replica_id=-1,
            max_wait_ms=100,
            min_bytes=1,
            topics=[
                m.FetchRequestFetchTopic(
                    topic="t",
                    partitions=[
                        m.FetchRequestFetchPartition(
                            partition=0, fetch_offset=0, partition_max_bytes=1024
                        )
                    ],
                )
            ],
        ),
    )


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the broker's end of stream; a reset fails the test."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_an_old_client_reconnecting_in_a_loop_is_logged_once(
    quiet_broker: BrokerProcess,
) -> None:
    host, port = quiet_broker.bootstrap.split(":")
    for _ in range(50):
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
            sock.sendall(old_fetch())
            assert read_to_end(sock) == b""  # closed, cleanly
    wait_until(
        "the first close logged",
        lambda: "unsupported API 1 v0" in quiet_broker.log_text(),
        TIMEOUT_S,
    )
    lines = [
        line
        for line in quiet_broker.log_text().splitlines()
        if "closing connection from 127.0.0.1" in line
    ]
    assert len(lines) == 1, lines
    assert "WARNING" in lines[0] and "unsupported API 1 v0" in lines[0]


def test_bad_input_closes_without_a_reset(quiet_broker: BrokerProcess) -> None:
    host, port = quiet_broker.bootstrap.split(":")
    good = encode_request(
        RequestHeader(18, 3, 42, "polite"),
        m.ApiVersionsRequest(client_software_name="t", client_software_version="1"),
    )
    junk = struct.pack(">i", -1) + b"\xab" * (2 * 1024 * 1024)  # a bad length, then more
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(good + junk)  # the broker reads the bytes after the bad frame away
        received = read_to_end(sock)  # ConnectionResetError here is the bug
    size = struct.unpack_from(">i", received)[0]
    assert len(received) == 4 + size  # the answer to the request before the bad frame
    assert struct.unpack_from(">ih", received, 4) == (42, 0)
