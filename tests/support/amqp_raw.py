"""A bare AMQP 0-9-1 client over a socket, for what real clients cannot do on purpose:
publish a hand-made headers table and read the delivered one byte for byte, or misbehave
(an oversized frame, bytes that keep coming).  Frames are built and parsed with pamqp."""

from __future__ import annotations

import socket
import struct
from typing import Any

from pamqp import commands, frame

from tests.support.broker import BrokerProcess

WAIT_S = 20.0


def longstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class RawClient:
    """Just enough AMQP over a socket to publish a hand-made headers table and read back the
    delivered one byte for byte (frames built and parsed with pamqp)."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.sock = socket.create_connection((broker.host, broker.amqp_port), timeout=WAIT_S)
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(commands.Connection.Start)
        self.send(
            0,
            commands.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response="\0guest\0guest", locale="en_US"
            ),
        )
        self.expect(commands.Connection.Tune)
        self.send(0, commands.Connection.TuneOk(channel_max=8, frame_max=131072, heartbeat=0))
        self.send(0, commands.Connection.Open(virtual_host="/"))
        self.expect(commands.Connection.OpenOk)
        self.send(1, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk)

    def send(self, channel: int, value: Any) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def raw_frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 7:
                ftype, _channel, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    whole, self.buf = self.buf[: 8 + size], self.buf[8 + size :]
                    return ftype, whole
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk

    def expect(self, kind: type) -> Any:
        _ftype, whole = self.raw_frame()
        _used, _channel, value = frame.unmarshal(whole)
        assert isinstance(value, kind), value
        return value

    def publish(self, queue: str, table: bytes, body: bytes) -> None:
        self.send(1, commands.Basic.Publish(exchange="", routing_key=queue))
        header = struct.pack(">HHQH", 60, 0, len(body), 0x2000) + longstr(table)
        self.sock.sendall(struct.pack(">BHI", 2, 1, len(header)) + header + b"\xce")
        self.sock.sendall(struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce")

    def get_table(self, queue: str) -> bytes:
        """basic.get one message; the raw bytes of its headers table."""
        self.send(1, commands.Basic.Get(queue=queue, no_ack=True))
        self.expect(commands.Basic.GetOk)
        ftype, whole = self.raw_frame()
        assert ftype == 2
        payload = whole[7:-1]
        (flags,) = struct.unpack(">H", payload[12:14])
        pos = 14
        for bit in (15, 14):  # content-type, content-encoding come before the headers
            if flags & (1 << bit):
                pos += 1 + payload[pos]
        assert flags & (1 << 13), "no headers table"
        (size,) = struct.unpack(">I", payload[pos : pos + 4])
        self.raw_frame()  # the body
        return payload[pos + 4 : pos + 4 + size]
