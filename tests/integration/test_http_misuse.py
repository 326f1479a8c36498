"""What a client can do wrong to the HTTP door costs the broker's log a line, not a flood:
bodies cut short, and clients that do not speak HTTP (a Kafka client on the wrong port)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.integration.test_bad_input import api_versions_v0
from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until

GONE = "went away before sending its whole body"
INVALID = "Invalid HTTP request received"


@pytest.fixture(scope="module")
def debug_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("misuse") / "data",
        extra_args=["--log-level", "DEBUG"],
        doors=("http",),
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def _log_since(broker: BrokerProcess, mark: int) -> str:
    return broker.log_text()[mark:]


def test_a_body_cut_short_is_one_debug_line(debug_broker: BrokerProcess) -> None:
    mark = len(debug_broker.log_text())
    requests = [
        b"POST /topics/cut HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"records": [',
        b"POST /consumers/cut HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 500\r\n\r\n{"name":',
        b"POST /topics/cut HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n100\r\n{"records"',
    ]
    for request in requests:
        with socket.create_connection(("127.0.0.1", debug_broker.http_port), timeout=10) as s:
            s.sendall(request)
    wait_until(
        "a log line for each request cut short",
        lambda: (
            _log_since(debug_broker, mark).count(GONE)
            + _log_since(debug_broker, mark).count("Traceback")
            >= len(requests)
        ),
    )
    log = _log_since(debug_broker, mark)
    assert log.count(GONE) == len(requests), log
    assert "Traceback" not in log and " ERROR " not in log, log
    assert all(" DEBUG " in line for line in log.splitlines() if GONE in line)


def test_a_kafka_client_on_the_http_port_is_one_warning(debug_broker: BrokerProcess) -> None:
    """A Kafka client reconnects in a loop: each attempt is answered 400, and logged once."""
    mark = len(debug_broker.log_text())
    for i in range(25):
        with socket.create_connection(("127.0.0.1", debug_broker.http_port), timeout=10) as s:
            s.sendall(api_versions_v0(i))
            assert s.recv(12, socket.MSG_WAITALL) == b"HTTP/1.1 400"
    log = _log_since(debug_broker, mark)
    warnings = [line for line in log.splitlines() if INVALID in line]
    assert len(warnings) == 1, log
    assert " WARNING " in warnings[0] and "127.0.0.1" in warnings[0]
    assert "Kafka" in warnings[0]  # says what probably happened
