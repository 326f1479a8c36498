"""KIP-152/KIP-368 re-authentication over TLS + SASL: with ``--connections-max-reauth-ms`` a
SaslAuthenticate answer tells the client how long its session lasts; a confluent-kafka
producer logs in again on its open connection before then and keeps producing without a
disconnect, while a client that lets its session lapse has its connection closed at its next
request (and one that logs in again on the same socket is served)."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer

from bayou.cli.raw import RawSecurity, _exchange, _login
from bayou.protocol.kafka import messages as m
from tests.support.security import SecureBroker

LIFETIME_MS = 1500
USERS = {"admin": "admin-pw", "alice": "alice-pw"}
METADATA = 3


@pytest.fixture(scope="module")
def reauth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = SecureBroker(
        tmp_path_factory.mktemp("reauth"),
        USERS,
        extra=["--connections-max-reauth-ms", str(LIFETIME_MS), "--allow-everyone-if-no-acl-found"],
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_producer_re_authenticates_on_its_connection_and_is_never_disconnected(
    reauth_broker: SecureBroker,
) -> None:
    errors: list[KafkaError] = []
    producer = Producer(reauth_broker.kafka_config("alice", USERS["alice"], error_cb=errors.append))
    delivered: list[Any] = []
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 3 * LIFETIME_MS / 1000:  # three session lifetimes
        producer.produce("reauth", b"%d" % sent, on_delivery=lambda e, _m: delivered.append(e))
        sent += 1
        producer.flush(10)  # one at a time: each is a request on the same connection
        producer.poll(0.1)
    assert delivered == [None] * sent
    assert errors == [], errors
    assert "expired without re-authentication" not in reauth_broker.log_text()


def _raw_login(broker: SecureBroker) -> tuple[socket.socket, int]:
    """A TLS socket logged in as alice with SCRAM-SHA-512; the next correlation id."""
    plain = socket.create_connection((broker.host, broker.kafka_tls_port), 10)
    context = ssl.create_default_context(cafile=str(broker.pki.ca_path))
    sock = context.wrap_socket(plain, server_hostname="localhost")
    security = RawSecurity(str(broker.pki.ca_path), "alice", USERS["alice"], "SCRAM-SHA-512")
    return sock, _login(sock, security)


def _metadata(sock: socket.socket, correlation: int) -> Any:
    return _exchange(sock, correlation, METADATA, 9, m.MetadataRequest(topics=[]))


def test_a_lapsed_session_is_closed_and_a_renewed_one_is_served(
    reauth_broker: SecureBroker,
) -> None:
    sock, correlation = _raw_login(reauth_broker)
    with sock:
        assert _metadata(sock, correlation).brokers  # within its session: served
        time.sleep(LIFETIME_MS / 1000 + 0.3)  # the session's end is a time, not an event
        with pytest.raises((OSError, struct.error)):
            _metadata(sock, correlation + 1)
    sock, correlation = _raw_login(reauth_broker)
    with sock:
        time.sleep(LIFETIME_MS / 1000 + 0.3)
        security = RawSecurity(None, "alice", USERS["alice"], "SCRAM-SHA-512")
        _login(sock, security)  # SaslHandshake + SaslAuthenticate again, same socket
        assert _metadata(sock, 10).brokers
    assert "expired without re-authentication" in reauth_broker.log_text()
