"""A minimal server-side WebSocket (RFC 6455) for carrying a binary stream, sans-I/O.

Theory of operation
-------------------
``WebSocketServer`` is fed bytes with ``receive_data`` and returns ``(data, reply)``: ``data``
is the application bytes carried by binary (or text) frames, in order — the frame boundaries
do not matter to a stream protocol such as MQTT — and ``reply`` is what must be written back
(the 101 handshake answer, pongs, the closing frame).  ``send(data)`` wraps application bytes
in one unmasked binary frame.  ``closed`` turns true once a close frame was exchanged or the
peer broke the protocol (the reply then carries a close frame or a 400 answer).

Only what a browser or an MQTT client library sends is supported: one HTTP/1.1 GET upgrade,
masked client frames, fragmentation, ping/pong and close.  No extensions (permessage-deflate
is not offered, so clients do not use it).
"""

from __future__ import annotations

import base64
import hashlib
import struct

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE = 16 * 1024
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class WebSocketError(Exception):
    pass


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    reps = (len(payload) + 3) // 4
    key = int.from_bytes((mask * reps)[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


class WebSocketServer:
    def __init__(
        self,
        subprotocols: tuple[str, ...] = ("mqtt", "mqttv3.1"),
        max_message: int = 16 * 1024 * 1024,
    ) -> None:
        self.subprotocols = subprotocols
        self.max_message = max_message
        self.open = False
        self.closed = False
        self.path = ""
        self._buf = bytearray()

    def receive_data(self, data: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
        if self.closed:
            return b"", b""
        self._buf += data
        reply = bytearray()
        if not self.open:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HANDSHAKE:
                    self.closed = True
                    return b"", b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"
                return b"", b""
            request = bytes(self._buf[:end])
            del self._buf[: end + 4]
            try:
                reply += self._handshake(request)
            except WebSocketError as exc:
                self.closed = True
                body = str(exc).encode()
                return b"", (
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (len(body), body)
                )
            self.open = True
        out = bytearray()
        try:
            self._frames(out, reply)
        except WebSocketError:
            self.closed = True
            reply += frame(OP_CLOSE, struct.pack(">H", 1002))
        return bytes(out), bytes(reply)

    def _handshake(self, request: bytes) -> bytes:
        lines = request.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] != "GET" or not parts[2].startswith("HTTP/1.1"):
            raise WebSocketError("expected a GET HTTP/1.1 upgrade request")
        self.path = parts[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip().lower()
                headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            raise WebSocketError("not a WebSocket upgrade")
        if "upgrade" not in headers.get("connection", "").lower():
            raise WebSocketError("Connection header lacks upgrade")
        if headers.get("sec-websocket-version") != "13":
            raise WebSocketError("only WebSocket version 13 is supported")
        key = headers.get("sec-websocket-key", "")
        if not key:
            raise WebSocketError("missing Sec-WebSocket-Key")
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        chosen = next((p for p in offered if p in self.subprotocols), None)
        answer = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n"
        )
        if chosen:
            answer += f"Sec-WebSocket-Protocol: {chosen}\r\n"
        return (answer + "\r\n").encode()

    def _frames(self, out: bytearray, reply: bytearray) -> None:
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise WebSocketError("reserved bits set")
            if not b1 & 0x80:
                raise WebSocketError("client frames must be masked")
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from(">H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from(">Q", buf, pos + 2)[0]
                head = 10
            if n > self.max_message:
                raise WebSocketError("frame too large")
            if len(buf) - pos < head + 4 + n:
                break
            mask = bytes(buf[pos + head : pos + head + 4])
            payload = _unmask(bytes(buf[pos + head + 4 : pos + head + 4 + n]), mask)
            pos += head + 4 + n
            if opcode in (OP_CONT, OP_TEXT, OP_BINARY):
                out += payload
            elif opcode == OP_PING:
                reply += frame(OP_PONG, payload[:125])
            elif opcode == OP_CLOSE:
                self.closed = True
                reply += frame(OP_CLOSE, payload[:2])
                break
            elif opcode != OP_PONG:
                raise WebSocketError(f"unknown opcode {opcode}")
        del buf[:pos]

    def send(self, data: bytes) -> bytes:
        return frame(OP_BINARY, data)

    def close(self, code: int = 1000) -> bytes:
        self.closed = True
        return frame(OP_CLOSE, struct.pack(">H", code))
