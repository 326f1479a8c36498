"""Bad input closes one connection — never the broker, never another client's work."""

from __future__ import annotations

import socket
import struct

from confluent_kafka.admin import AdminClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.broker import BrokerProcess
from tests.support.kafka_raw import RawKafka, fetch_request

TIMEOUT_S = 10


def api_versions_v0(correlation_id: int = 7) -> bytes:
    body = struct.pack(">hhi", 18, 0, correlation_id) + struct.pack(">h", 4) + b"test"
    return struct.pack(">i", len(body)) + body


def send_and_read_until_closed(bootstrap: str, payload: bytes) -> bytes:
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def assert_serving(broker: BrokerProcess) -> None:
    """A real client still gets metadata, and the process is alive."""
    assert broker.proc is not None and broker.proc.poll() is None
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert metadata.brokers


def test_api_versions_raw_round_trip(shared_broker: BrokerProcess) -> None:
    host, port = shared_broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(api_versions_v0(42))
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        body = sock.recv(size, socket.MSG_WAITALL)
    correlation_id, error_code, count = struct.unpack_from(">ihi", body)
    assert (correlation_id, error_code) == (42, 0)
    keys = {struct.unpack_from(">h", body, 10 + 6 * i)[0] for i in range(count)}
    assert {0, 1, 2, 3, 18, 19, 20, 22}.issubset(keys)


def test_a_refused_fetch_partition_carries_an_empty_record_set_not_a_null_one(
    shared_broker: BrokerProcess,
) -> None:
    """librdkafka reads a null record set as a parse failure and drops the whole response
    (the other partitions' records with it): an error partition carries an empty one."""
    fetch = fetch_request("no-such-topic")
    with RawKafka(shared_broker.bootstrap) as raw:
        for version in (4, 12):  # int32-sized and compact record sets
            answer = raw.call(fetch, version).responses[0].partitions[0]
            assert answer.error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
            assert answer.records == b"", version


def test_too_new_api_versions_gets_unsupported_version_in_v0_body(
    shared_broker: BrokerProcess,
) -> None:
    body = struct.pack(">hhi", 18, 99, 5) + struct.pack(">h", -1) + b"\x00garbage"
    reply = send_and_read_until_closed_or_reply(
        shared_broker.bootstrap, struct.pack(">i", len(body)) + body
    )
    correlation_id, error_code = struct.unpack_from(">ih", reply, 4)
    assert (correlation_id, error_code) == (5, 35)


def send_and_read_until_closed_or_reply(bootstrap: str, payload: bytes) -> bytes:
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(payload)
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        return struct.pack(">i", size) + sock.recv(size, socket.MSG_WAITALL)


def test_negative_length_closes_connection(shared_broker: BrokerProcess) -> None:
    assert send_and_read_until_closed(shared_broker.bootstrap, struct.pack(">i", -5)) == b""
    assert_serving(shared_broker)


def test_oversized_frame_closes_connection(shared_broker: BrokerProcess) -> None:
    payload = struct.pack(">i", 200 * 1024 * 1024) + b"\x00" * 100
    assert send_and_read_until_closed(shared_broker.bootstrap, payload) == b""
    assert_serving(shared_broker)


def test_unknown_api_key_closes_connection(shared_broker: BrokerProcess) -> None:
    body = struct.pack(">hhi", 9999, 0, 1) + struct.pack(">h", -1)
    assert (
        send_and_read_until_closed(shared_broker.bootstrap, struct.pack(">i", len(body)) + body)
        == b""
    )
    assert_serving(shared_broker)


def test_garbage_body_closes_connection(shared_broker: BrokerProcess) -> None:
    body = struct.pack(">hhi", 3, 1, 1) + struct.pack(">h", -1) + b"\xff\xff\xff\x7f"
    assert (
        send_and_read_until_closed(shared_broker.bootstrap, struct.pack(">i", len(body)) + body)
        == b""
    )
    assert_serving(shared_broker)


def test_stalled_half_frame_holds_only_its_own_connection(shared_broker: BrokerProcess) -> None:
    host, port = shared_broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as stalled:
        stalled.sendall(struct.pack(">i", 1000) + b"\x00\x03")  # promises 1000 bytes, sends 2
        assert_serving(shared_broker)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=0, max_size=200), st.integers(min_value=0, max_value=80))
def test_fuzzed_frames_never_break_the_broker(
    shared_broker: BrokerProcess, junk: bytes, api_key: int
) -> None:
    body = struct.pack(">hhi", api_key % 70, len(junk) % 13, 3) + junk
    host, port = shared_broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    assert shared_broker.proc is not None and shared_broker.proc.poll() is None


def test_broker_still_serves_after_fuzzing(shared_broker: BrokerProcess) -> None:
    assert_serving(shared_broker)
