"""How the MQTT door treats connections that end badly or were never MQTT: clients that vanish
mid-conversation are no error, and clients of another protocol cannot flood the log."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from bayou.protocol.kafka.api import RequestHeader, encode_request
from bayou.protocol.kafka.messages import ApiVersionsRequest
from bayou.protocol.mqtt import encode
from bayou.protocol.mqtt.packets import (
    MQTT_5,
    ConnAck,
    Connect,
    Properties,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from tests.support.broker import BrokerProcess
from tests.support.mqtt import MqttTestClient, PacketReader, unique

pytestmark = pytest.mark.timeout(120)

RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, as a crash would


class RawClient:
    """An MQTT 5 client on a bare socket, connected; ``reset`` ends it with RST, as a crash
    or a pulled cable would."""

    def __init__(
        self, port: int, client_id: str, expiry: int = 0, rcvbuf: int | None = None
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        try:
            self.sock.settimeout(5)
            if rcvbuf is not None:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.reader = PacketReader(self.sock)
            self.sock.sendall(
                encode(
                    Connect(
                        client_id,
                        MQTT_5,
                        properties=Properties(session_expiry_interval=expiry or None),
                    ),
                    MQTT_5,
                )
            )
            assert isinstance(self.reader.next(), ConnAck)
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def reset(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            self.sock.close()


def error_lines(broker: BrokerProcess) -> list[str]:
    return [line for line in broker.log_text().splitlines() if " ERROR " in line]


def test_clients_that_vanish_mid_conversation_are_no_error(
    shared_broker: BrokerProcess,
) -> None:
    """Three ways to go away while the broker still has something to send: a persistent
    session's SUBACK waits for the sessions log to be fsynced; QoS 1 PUBACKs are queued; a
    subscriber is in the middle of a stream of deliveries.  Each client resets its
    connection (RST).  None of it is an ERROR in the broker's log, and the door works on."""
    port = shared_broker.mqtt_port
    top = unique("gone")
    for _ in range(20):
        with RawClient(port, unique("sub"), expiry=60) as client:
            client.sock.sendall(encode(Subscribe(1, [Subscription(f"{top}/#", 1)]), MQTT_5))
            # reset before the SUBACK, which waits for an fsync
    for _ in range(20):
        with RawClient(port, unique("pub")) as client:
            client.sock.sendall(
                b"".join(
                    encode(Publish(f"{top}/p", b"v" * 100, 1, False, False, i + 1), MQTT_5)
                    for i in range(50)
                )
            )

    stop = threading.Event()
    publisher = MqttTestClient(port, unique("flood"), version=5)

    def flood() -> None:
        for i in range(20_000):  # bounded; stopped sooner once the subscribers are gone
            if stop.is_set():
                return
            publisher.publish(f"{top}/stream", b"s" * 2000, qos=0)
            if i % 100 == 0:
                stop.wait(0.001)

    feeder = threading.Thread(target=flood)
    feeder.start()
    try:
        for _ in range(10):
            with RawClient(port, unique("reader"), rcvbuf=4096) as client:
                client.sock.sendall(
                    encode(Subscribe(1, [Subscription(f"{top}/stream", 1)]), MQTT_5)
                )
                assert isinstance(client.reader.next(), SubAck)
                assert isinstance(client.reader.next(), Publish)  # deliveries are flowing
    finally:
        stop.set()
        feeder.join(30)
        publisher.close()

    check = MqttTestClient(port, unique("after"), version=5)
    try:
        check.subscribe(f"{top}/after", 1)
        check.publish(f"{top}/after", b"still serving", qos=1)
        assert [m.payload for m in check.receive(1)] == [b"still serving"]
    finally:
        check.close()
    assert error_lines(shared_broker) == []


def test_kafka_client_at_the_mqtt_port_is_logged_once(shared_broker: BrokerProcess) -> None:
    """A Kafka client pointed at the MQTT port by mistake reconnects in a loop: one warning
    line names the peer and the likely cause; the other attempts are counted, not logged."""
    attempts = 50
    for i in range(attempts):
        request = encode_request(
            RequestHeader(18, 3, i, "rdkafka"), ApiVersionsRequest("librdkafka", "2.6.0")
        )
        with socket.create_connection(("127.0.0.1", shared_broker.mqtt_port), 5) as sock:
            sock.settimeout(5)
            sock.sendall(request)
            assert PacketReader(sock).next() is None  # closed, nothing sent back
    check = MqttTestClient(shared_broker.mqtt_port, unique("after"))  # the door works on
    check.close()
    lines = [line for line in shared_broker.log_text().splitlines() if "not an MQTT client" in line]
    assert len(lines) == 1, lines
    assert "127.0.0.1" in lines[0] and "Kafka" in lines[0]
    assert error_lines(shared_broker) == []
