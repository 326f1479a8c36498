"""The server side of one AMQP 0-9-1 connection, as a sans-I/O state machine.

Theory of operation
-------------------
Bytes in (``receive_data``), events out (``next_event``), bytes to write (``data_to_send``);
no socket, clock or event loop.  The driver feeds what it reads, drains events until
``next_event`` returns None, acts on them, and writes ``data_to_send()``.

Negotiation is handled here without the driver: protocol header → ``connection.start`` →
``start-ok`` (PLAIN or AMQPLAIN, checked with the injected ``authenticate`` hook) →
``connection.tune`` → ``tune-ok`` (channel-max, frame-max and heartbeat settle on the lower
of ours and the client's) → ``connection.open`` → ``open-ok`` and an ``Opened`` event.

Connection states::

    AWAIT_HEADER → AWAIT_START_OK → AWAIT_TUNE_OK → AWAIT_OPEN → OPEN → CLOSING → CLOSED

Each channel is ``open``, ``closing_us`` (we sent channel.close; everything but close/close-ok
is discarded until close-ok) or ``closing_peer`` (the client sent channel.close; the driver
cleans up and calls ``channel_close_ok``).  An open channel assembles content: a
``basic.publish`` method, then a header frame, then body frames up to the header's size,
delivered as one ``MessageReceived``.

Errors follow the specification's split.  Hard errors (framing, syntax, unknown methods,
wrong channel states, unexpected frames) send ``connection.close`` with the reply code, emit
``ConnectionFailed`` and discard everything until the client's close-ok (then
``ConnectionClosed``); after a framing error nothing more can be read, so the driver just
closes the socket after a grace period.  Soft errors the codec finds itself (a message over
the size limit) close the channel and emit ``ChannelFailed``; the driver closes channels for
its own soft errors with ``close_channel``.  ``channel.flow`` is answered here and reported as
``ChannelFlow``; heartbeat frames are consumed silently (the driver tracks activity).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bayou.protocol.amqp import spec
from bayou.protocol.amqp.codec import (
    HEARTBEAT_FRAME,
    AmqpError,
    Method,
    Reader,
    decode_content_header,
    decode_method,
    decode_table,
    encode_method,
    method,
    peek_frame,
    write_content,
)

# authenticate(mechanism, username, password) -> allowed
Authenticator = Callable[[str, str, str], bool]


class State(enum.Enum):
    AWAIT_HEADER = "await-header"
    AWAIT_START_OK = "await-start-ok"
    AWAIT_TUNE_OK = "await-tune-ok"
    AWAIT_OPEN = "await-open"
    OPEN = "open"
    CLOSING = "closing"  # we sent connection.close
    CLOSED = "closed"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Opened:
    virtual_host: str
    username: str
    client_properties: dict[str, Any]
    channel_max: int
    frame_max: int
    heartbeat: int


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    channel: int


@dataclass(frozen=True, slots=True)
class MethodReceived:
    channel: int
    method: Method


@dataclass(frozen=True, slots=True)
class MessageReceived:
    channel: int
    method: Method  # basic.publish
    properties: dict[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class ChannelFlow:
    channel: int
    active: bool


@dataclass(frozen=True, slots=True)
class ChannelCloseRequested:
    channel: int
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class ChannelFailed:
    channel: int
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class ConnectionCloseRequested:
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    reason: str


Event = (
    Opened
    | ChannelOpened
    | MethodReceived
    | MessageReceived
    | ChannelFlow
    | ChannelCloseRequested
    | ChannelFailed
    | ConnectionCloseRequested
    | ConnectionFailed
    | ConnectionClosed
)


class _Channel:
    __slots__ = ("body_size", "chunks", "pending", "props", "received", "state")

    def __init__(self) -> None:
        self.state = "open"
        self.pending: Method | None = None  # a content method waiting for its content
        self.props: dict[str, Any] | None = None
        self.body_size = 0
        self.received = 0
        self.chunks: list[bytes] = []

    def reset_content(self) -> None:
        self.pending = None
        self.props = None
        self.body_size = self.received = 0
        self.chunks = []


CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": False,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": False,
    "consumer_priorities": False,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": False,
}


class ServerConnection:
    def __init__(
        self,
        *,
        server_properties: Mapping[str, Any] | None = None,
        authenticate: Authenticator | None = None,
        channel_max: int = 2047,
        frame_max: int = 131072,
        heartbeat: int = 60,
        max_message_size: int = 128 * 1024 * 1024,
    ) -> None:
        self.state = State.AWAIT_HEADER
        self.server_properties = dict(server_properties or {})
        self.server_properties.setdefault("capabilities", dict(CAPABILITIES))
        self.authenticate = authenticate
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size
        self.username = ""
        self.client_properties: dict[str, Any] = {}
        self.channels: dict[int, _Channel] = {}
        self.peer_closing = False
        self._framing_lost = False
        self._in = bytearray()
        self._pos = 0
        self._out = bytearray()

    # ----------------------------------------------------------------- driver side

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self.state is not State.CLOSED and not self._framing_lost:
            self._in += data

    def unfinished(self) -> tuple[int, int]:
        """(bytes held, bytes announced) of what is not complete yet: buffered frame bytes
        plus the bodies of messages being assembled, and those bodies' announced sizes (the
        request-bytes budget counts them)."""
        held = len(self._in) - self._pos
        announced = held
        for ch in self.channels.values():
            if ch.props is not None:
                held += ch.received
                announced += ch.body_size
        return held, announced

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed (or the connection is over)."""
        while self.state is not State.CLOSED:
            try:
                event, progressed = self._step()
            except AmqpError as exc:
                return self._fail(exc)
            if event is not None:
                return event
            if not progressed:
                break
        if self._pos:
            del self._in[: self._pos]
            self._pos = 0
        return None

    def channel_open(self, channel: int) -> bool:
        ch = self.channels.get(channel)
        return ch is not None and ch.state == "open" and self.state is State.OPEN

    def send_method(self, channel: int, m: Method) -> bool:
        """Queue a method; False (and nothing sent) when the channel is no longer open."""
        if channel and not self.channel_open(channel):
            return False
        self._out += encode_method(channel, m)
        return True

    def send_content(
        self,
        channel: int,
        m: Method,
        properties: Mapping[str, Any],
        body: bytes | bytearray | memoryview,
    ) -> bool:
        if not self.channel_open(channel):
            return False
        write_content(self._out, channel, m, properties, body, self.frame_max)
        return True

    def send_heartbeat(self) -> None:
        if self.state in (State.OPEN, State.AWAIT_OPEN):
            self._out += HEARTBEAT_FRAME

    def close_channel(
        self, channel: int, code: int, text: str, class_id: int = 0, method_id: int = 0
    ) -> None:
        """Close a channel for a soft error (the driver has already dropped its state)."""
        ch = self.channels.get(channel)
        if ch is None or ch.state != "open":
            return
        self._out += encode_method(
            channel,
            method(
                "channel.close",
                reply_code=code,
                reply_text=_reply_text(code, text),
                class_id=class_id,
                method_id=method_id,
            ),
        )
        ch.state = "closing_us"
        ch.reset_content()

    def channel_close_ok(self, channel: int) -> None:
        """Answer the client's channel.close once the driver has cleaned the channel up."""
        ch = self.channels.get(channel)
        if ch is not None and ch.state == "closing_peer":
            del self.channels[channel]
            if self.state is State.OPEN:
                self._out += encode_method(channel, method("channel.close_ok"))

    def close_connection(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        if self.state in (State.CLOSING, State.CLOSED):
            return
        if self.state is State.AWAIT_HEADER:
            self.state = State.CLOSED
            return
        self._out += encode_method(
            0,
            method(
                "connection.close",
                reply_code=code,
                reply_text=_reply_text(code, text),
                class_id=class_id,
                method_id=method_id,
            ),
        )
        self.state = State.CLOSING
        self.channels.clear()

    def connection_close_ok(self) -> None:
        """Answer the client's connection.close once the driver has cleaned up."""
        if self.peer_closing and self.state is not State.CLOSED:
            self._out += encode_method(0, method("connection.close_ok"))
            self.state = State.CLOSED
            self.channels.clear()

    # ----------------------------------------------------------------- parsing

    def _fail(self, exc: AmqpError) -> Event:
        if self.state is State.CLOSING:  # an error while closing ends the connection
            self.state = State.CLOSED
            return ConnectionClosed(exc.text)
        self.close_connection(exc.code, exc.text, exc.class_id, exc.method_id)
        return ConnectionFailed(exc.code, exc.reply_text)

    def _step(self) -> tuple[Event | None, bool]:
        buf = self._in
        if self.state is State.AWAIT_HEADER:
            if len(buf) - self._pos < 8:
                return None, False
            header = bytes(buf[self._pos : self._pos + 8])
            self._pos += 8
            if header != spec.PROTOCOL_HEADER:
                self._out += spec.PROTOCOL_HEADER
                self.state = State.CLOSED
                return ConnectionClosed("unsupported protocol header"), True
            self._out += encode_method(
                0,
                method(
                    "connection.start",
                    version_major=0,
                    version_minor=9,
                    server_properties=self.server_properties,
                    mechanisms=b"PLAIN AMQPLAIN",
                    locales=b"en_US",
                ),
            )
            self.state = State.AWAIT_START_OK
            return None, True
        limit = (
            self.frame_max if self.state is State.OPEN else max(self.frame_max, spec.FRAME_MIN_SIZE)
        )
        try:
            found = peek_frame(buf, self._pos, limit)
        except AmqpError:
            # framing is lost: nothing after this point can be read, not even a close-ok
            self._in.clear()
            self._pos = 0
            self._framing_lost = True
            raise
        if found is None:
            return None, False
        frame_type, channel, start, end = found
        self._pos = end + 1
        payload = memoryview(buf)[start:end]
        try:
            return self._frame(frame_type, channel, payload), True
        finally:
            payload.release()

    def _frame(self, frame_type: int, channel: int, payload: memoryview) -> Event | None:
        if self.state is State.CLOSING:
            return self._while_closing(frame_type, channel, payload)
        if self.peer_closing:
            return None
        if frame_type == spec.FRAME_HEARTBEAT:
            if channel != 0:
                raise AmqpError(spec.FRAME_ERROR, "heartbeat frame on a channel")
            return None
        if frame_type == spec.FRAME_METHOD:
            m = decode_method(payload)
            if self.state is not State.OPEN:
                return self._negotiate(channel, m)
            if channel == 0:
                return self._connection_method(m)
            return self._channel_method(channel, m)
        if frame_type in (spec.FRAME_HEADER, spec.FRAME_BODY):
            if self.state is not State.OPEN or channel == 0:
                raise AmqpError(spec.UNEXPECTED_FRAME, "content frame outside a channel")
            return self._content(frame_type, channel, payload)
        raise AmqpError(spec.FRAME_ERROR, f"unknown frame type {frame_type}")

    def _while_closing(self, frame_type: int, channel: int, payload: memoryview) -> Event | None:
        if frame_type != spec.FRAME_METHOD or channel != 0:
            return None
        m = decode_method(payload)
        if m.name == "connection.close":
            self._out += encode_method(0, method("connection.close_ok"))
        elif m.name != "connection.close_ok":
            return None
        self.state = State.CLOSED
        return ConnectionClosed("closed")

    # ----------------------------------------------------------------- negotiation

    def _negotiate(self, channel: int, m: Method) -> Event | None:
        if channel != 0:
            raise AmqpError(
                spec.CHANNEL_ERROR, "channel used before the connection is open", *m.spec.key
            )
        expected = {
            State.AWAIT_START_OK: "connection.start_ok",
            State.AWAIT_TUNE_OK: "connection.tune_ok",
            State.AWAIT_OPEN: "connection.open",
        }[self.state]
        if m.name == "connection.close":
            self.peer_closing = True
            return ConnectionCloseRequested(m.reply_code, m.reply_text)
        if m.name != expected:
            raise AmqpError(spec.COMMAND_INVALID, f"expected {expected}, got {m.name}", *m.spec.key)
        if self.state is State.AWAIT_START_OK:
            self._start_ok(m)
        elif self.state is State.AWAIT_TUNE_OK:
            self._tune_ok(m)
        else:
            self._out += encode_method(0, method("connection.open_ok"))
            self.state = State.OPEN
            return Opened(
                m.virtual_host,
                self.username,
                self.client_properties,
                self.channel_max,
                self.frame_max,
                self.heartbeat,
            )
        return None

    def _start_ok(self, m: Method) -> None:
        self.client_properties = m.client_properties
        response: bytes = m.response
        if m.mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) != 3:
                raise AmqpError(spec.ACCESS_REFUSED, "malformed PLAIN response", *m.spec.key)
            user, password = parts[1], parts[2]
        elif m.mechanism == "AMQPLAIN":
            table = decode_table(Reader(len(response).to_bytes(4, "big") + response))
            user, password = _as_bytes(table.get("LOGIN")), _as_bytes(table.get("PASSWORD"))
        else:
            raise AmqpError(
                spec.ACCESS_REFUSED, f"unsupported mechanism {m.mechanism}", *m.spec.key
            )
        username = user.decode(errors="replace")
        if self.authenticate is not None and not self.authenticate(
            m.mechanism, username, password.decode(errors="replace")
        ):
            raise AmqpError(
                spec.ACCESS_REFUSED,
                f"Login was refused using authentication mechanism {m.mechanism}",
                *m.spec.key,
            )
        self.username = username
        self._out += encode_method(
            0,
            method(
                "connection.tune",
                channel_max=self.channel_max,
                frame_max=self.frame_max,
                heartbeat=self.heartbeat,
            ),
        )
        self.state = State.AWAIT_TUNE_OK

    def _tune_ok(self, m: Method) -> None:
        if m.channel_max:
            self.channel_max = min(self.channel_max, m.channel_max)
        if m.frame_max:
            if m.frame_max < spec.FRAME_MIN_SIZE:
                raise AmqpError(
                    spec.NOT_ALLOWED, f"frame_max {m.frame_max} below 4096", *m.spec.key
                )
            self.frame_max = min(self.frame_max, m.frame_max)
        self.heartbeat = m.heartbeat
        self.state = State.AWAIT_OPEN

    # ----------------------------------------------------------------- open connection

    def _connection_method(self, m: Method) -> Event | None:
        if m.name == "connection.close":
            self.peer_closing = True
            return ConnectionCloseRequested(m.reply_code, m.reply_text)
        if m.spec.class_id != spec.CLASS_IDS["connection"]:
            raise AmqpError(spec.COMMAND_INVALID, f"{m.name} on channel 0", *m.spec.key)
        if m.name == "connection.close_ok":
            return None
        raise AmqpError(
            spec.NOT_IMPLEMENTED if m.spec.from_client else spec.COMMAND_INVALID,
            f"{m.name} is not served",
            *m.spec.key,
        )

    def _channel_method(self, channel: int, m: Method) -> Event | None:
        key = m.spec.key
        if m.spec.class_id == spec.CLASS_IDS["connection"]:
            raise AmqpError(spec.COMMAND_INVALID, f"{m.name} on channel {channel}", *key)
        if channel > self.channel_max:
            raise AmqpError(
                spec.CHANNEL_ERROR, f"channel {channel} over channel_max {self.channel_max}", *key
            )
        ch = self.channels.get(channel)
        if ch is None:
            if m.name != "channel.open":
                raise AmqpError(
                    spec.CHANNEL_ERROR,
                    f"expected 'channel.open' on channel {channel}, got {m.name}",
                    *key,
                )
            self.channels[channel] = _Channel()
            self._out += encode_method(channel, method("channel.open_ok"))
            return ChannelOpened(channel)
        if ch.state == "closing_us":
            if m.name == "channel.close":
                self._out += encode_method(channel, method("channel.close_ok"))
                del self.channels[channel]
            elif m.name == "channel.close_ok":
                del self.channels[channel]
            return None
        if ch.state == "closing_peer":
            return None
        if ch.pending is not None:
            raise AmqpError(
                spec.UNEXPECTED_FRAME, f"expected content for {ch.pending.name}, got {m.name}", *key
            )
        if not m.spec.from_client:
            raise AmqpError(spec.COMMAND_INVALID, f"{m.name} is sent by servers only", *key)
        name = m.name
        if name == "channel.open":
            raise AmqpError(spec.CHANNEL_ERROR, f"channel {channel} is already open", *key)
        if name == "channel.close":
            ch.state = "closing_peer"
            return ChannelCloseRequested(channel, m.reply_code, m.reply_text)
        if name == "channel.flow":
            self._out += encode_method(channel, method("channel.flow_ok", active=m.active))
            return ChannelFlow(channel, m.active)
        if name in ("channel.flow_ok", "channel.close_ok"):
            return None
        if m.spec.content:
            ch.pending = m
            return None
        return MethodReceived(channel, m)

    def _content(self, frame_type: int, channel: int, payload: memoryview) -> Event | None:
        ch = self.channels.get(channel)
        if ch is None:
            raise AmqpError(spec.CHANNEL_ERROR, f"content on channel {channel}, not open")
        if ch.state != "open":
            return None
        pending = ch.pending
        if pending is None:
            raise AmqpError(spec.UNEXPECTED_FRAME, "content frame without a content method")
        if frame_type == spec.FRAME_HEADER:
            if ch.props is not None:
                raise AmqpError(spec.UNEXPECTED_FRAME, "second content header")
            class_id, size, props = decode_content_header(payload)
            if class_id != pending.spec.class_id:
                raise AmqpError(spec.FRAME_ERROR, f"content header for class {class_id}")
            if size > self.max_message_size:
                self.close_channel(
                    channel,
                    spec.PRECONDITION_FAILED,
                    f"message size {size} is larger than configured max size "
                    f"{self.max_message_size}",
                    *pending.spec.key,
                )
                return ChannelFailed(channel, spec.PRECONDITION_FAILED, "message too large")
            ch.props = props
            ch.body_size = size
            if size == 0:
                return self._message(channel, ch)
            return None
        if ch.props is None:
            raise AmqpError(spec.UNEXPECTED_FRAME, "body frame before the content header")
        ch.received += len(payload)
        if ch.received > ch.body_size:
            raise AmqpError(spec.FRAME_ERROR, "more body than the content header announced")
        ch.chunks.append(bytes(payload))
        if ch.received == ch.body_size:
            return self._message(channel, ch)
        return None

    def _message(self, channel: int, ch: _Channel) -> MessageReceived:
        assert ch.pending is not None and ch.props is not None
        body = ch.chunks[0] if len(ch.chunks) == 1 else b"".join(ch.chunks)
        event = MessageReceived(channel, ch.pending, ch.props, body)
        ch.reset_content()
        return event


def _reply_text(code: int, text: str) -> str:
    name = spec.REPLY_NAMES.get(code, str(code))
    full = text if text.startswith(name) else f"{name} - {text}"
    return full.encode()[:255].decode(errors="ignore")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value if value is not None else "").encode()
