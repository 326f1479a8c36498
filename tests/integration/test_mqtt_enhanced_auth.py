"""MQTT 5.0 enhanced authentication (§4.12) with SCRAM-SHA-256/512 against the broker's user
store: CONNECT carries the client-first message, AUTH (Continue authentication) the
server-first and client-final, CONNACK the server-final; a wrong password is refused with
0x86, an unknown method with 0x8C, and a re-authentication (AUTH 0x19) keeps the connection.

The client side is ``scramp`` (an independent SCRAM implementation) over a raw socket, with
paho-mqtt's property codec: no MQTT client library drives AUTH exchanges.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import scramp
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.security import SecureBroker, bayou_cli
from tests.support.wait import wait_until

USERS = {"admin": "admin-pw", "erin": "erin-pw"}
TIMEOUT_S = 15.0
CONNACK, PUBLISH, PUBACK, AUTH = 2, 3, 4, 15


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = SecureBroker(tmp_path_factory.mktemp("mqtt-scram"), USERS).start()
    try:
        # a SCRAM-SHA-256 credential beside the SCRAM-SHA-512 one, through the running broker
        done = bayou_cli(
            "user", "add", "erin", "--mechanism", "SCRAM-SHA-256", "--password-stdin",
            "-b", broker.bootstrap, "--sasl-user", "admin",
            stdin=USERS["erin"] + "\n", env={"BAYOU_SASL_PASSWORD": USERS["admin"]},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield broker
    finally:
        broker.kill()


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def auth_props(kind: int, method: str, data: bytes) -> bytes:
    props = Properties(kind)
    props.AuthenticationMethod = method
    props.AuthenticationData = data
    return bytes(props.pack())


def connect_packet(client_id: str, method: str, data: bytes) -> bytes:
    header = utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 30)
    return packet(0x10, header + auth_props(PacketTypes.CONNECT, method, data) + utf8(client_id))


def auth_packet(reason: int, method: str, data: bytes) -> bytes:
    return packet(0xF0, bytes([reason]) + auth_props(PacketTypes.AUTH, method, data))


@dataclass
class Reply:
    kind: int
    reason: int
    props: Properties


class RawClient:
    """Packets over a socket; ``read`` decodes CONNACK and AUTH (reason + properties)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _take(self, n: int) -> bytes:
        deadline = time.monotonic() + TIMEOUT_S
        while len(self.buf) < n:
            assert time.monotonic() < deadline, "no reply in time"
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self) -> Reply:
        first = self._take(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._take(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = self._take(length)
        kind = first >> 4
        if kind == CONNACK:
            reason, rest, ptype = body[1], body[2:], PacketTypes.CONNACK
        elif kind == AUTH:
            reason, rest, ptype = body[0], body[1:], PacketTypes.AUTH
        elif kind == PUBACK:
            return Reply(kind, body[2] if len(body) > 2 else 0, Properties(PacketTypes.PUBACK))
        else:
            return Reply(kind, -1, Properties(PacketTypes.PUBLISH))
        props, _used = Properties(ptype).unpack(rest)
        return Reply(kind, reason, props)

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def scram_connect(
    broker: SecureBroker, user: str, password: str, mechanism: str
) -> tuple[RawClient, Reply, scramp.ScramClient]:
    """CONNECT + AUTH exchange; returns the client, the final reply and the SCRAM state."""
    scram = scramp.ScramClient([mechanism], user, password)
    client = RawClient(broker.mqtt_port)
    client.send(connect_packet(f"scram-{user}", mechanism, scram.get_client_first().encode()))
    challenge = client.read()
    if challenge.kind != AUTH:
        return client, challenge, scram
    assert challenge.reason == 0x18  # Continue authentication
    assert challenge.props.AuthenticationMethod == mechanism
    scram.set_server_first(challenge.props.AuthenticationData.decode())
    client.send(auth_packet(0x18, mechanism, scram.get_client_final().encode()))
    return client, client.read(), scram


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_login_then_the_acls_of_that_user_apply(secure: SecureBroker, mechanism: str) -> None:
    client, reply, scram = scram_connect(secure, "erin", USERS["erin"], mechanism)
    try:
        assert (reply.kind, reply.reason) == (CONNACK, 0)
        assert reply.props.AuthenticationMethod == mechanism
        scram.set_server_final(reply.props.AuthenticationData.decode())  # verifies the server
        # erin has no ACL: a QoS 1 PUBLISH is refused with 0x87, so the principal is erin's
        topic = b"scram-topic/x"
        publish = struct.pack("!H", len(topic)) + topic + struct.pack("!H", 1) + b"\x00" + b"hi"
        client.send(packet(0x32, publish))
        ack = client.read()
        assert (ack.kind, ack.reason) == (PUBACK, 0x87)
    finally:
        client.close()


def test_re_authentication_keeps_the_connection(secure: SecureBroker) -> None:
    mechanism = "SCRAM-SHA-512"
    client, reply, _scram = scram_connect(secure, "erin", USERS["erin"], mechanism)
    try:
        assert (reply.kind, reply.reason) == (CONNACK, 0)
        again = scramp.ScramClient([mechanism], "erin", USERS["erin"])
        client.send(auth_packet(0x19, mechanism, again.get_client_first().encode()))
        challenge = client.read()
        assert (challenge.kind, challenge.reason) == (AUTH, 0x18)
        again.set_server_first(challenge.props.AuthenticationData.decode())
        client.send(auth_packet(0x18, mechanism, again.get_client_final().encode()))
        done = client.read()
        assert (done.kind, done.reason) == (AUTH, 0x00)
        again.set_server_final(done.props.AuthenticationData.decode())
        client.send(packet(0xC0, b""))  # PINGREQ: still connected
        assert client._take(2) == b"\xd0\x00"
    finally:
        client.close()


def test_a_wrong_password_is_refused_and_the_connection_closed(secure: SecureBroker) -> None:
    client, reply, _scram = scram_connect(secure, "erin", "not-erins", "SCRAM-SHA-256")
    try:
        assert (reply.kind, reply.reason) == (CONNACK, 0x86)
        wait_until("connection closed", client.closed, TIMEOUT_S)
    finally:
        client.close()


def test_an_unknown_user_fails_only_at_the_proof(secure: SecureBroker) -> None:
    client, reply, _scram = scram_connect(secure, "nobody", "pw", "SCRAM-SHA-256")
    try:
        assert (reply.kind, reply.reason) == (CONNACK, 0x86)
    finally:
        client.close()


def test_an_unknown_method_is_refused_with_0x8c(secure: SecureBroker) -> None:
    client = RawClient(secure.mqtt_port)
    try:
        client.send(connect_packet("kerb", "GSSAPI", b"token"))
        reply = client.read()
        assert (reply.kind, reply.reason) == (CONNACK, 0x8C)
    finally:
        client.close()
