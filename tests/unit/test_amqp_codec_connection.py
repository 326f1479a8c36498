"""The sans-I/O AMQP server connection: negotiation, channels, content, errors, fuzz."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bayou.protocol.amqp import (
    ChannelCloseRequested,
    ChannelFailed,
    ChannelOpened,
    ConnectionClosed,
    ConnectionFailed,
    MessageReceived,
    MethodReceived,
    Opened,
    ServerConnection,
    State,
    method,
)
from bayou.protocol.amqp import spec as s
from bayou.protocol.amqp.codec import (
    Method,
    decode_content_header,
    decode_method,
    encode_content_header,
    encode_method,
    encode_method_payload,
    frame,
    peek_frame,
)


def frames_of(data: bytes) -> list[tuple[int, int, Any]]:
    """Decode what the server wrote: (type, channel, Method | header tuple | body)."""
    out = []
    pos = 0
    while pos < len(data):
        found = peek_frame(data, pos, 1 << 30)
        assert found is not None, "server wrote a partial frame"
        ftype, channel, start, end = found
        payload = data[start:end]
        if ftype == s.FRAME_METHOD:
            out.append((ftype, channel, decode_method(payload)))
        elif ftype == s.FRAME_HEADER:
            out.append((ftype, channel, decode_content_header(payload)))
        else:
            out.append((ftype, channel, bytes(payload)))
        pos = end + 1
    return out


def methods_of(data: bytes) -> list[tuple[int, Method]]:
    return [(ch, m) for t, ch, m in frames_of(data) if t == s.FRAME_METHOD]


def events(conn: ServerConnection, data: bytes = b"") -> list[Any]:
    if data:
        conn.receive_data(data)
    out = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


def m(channel: int, name: str, **args: Any) -> bytes:
    return bytes(encode_method(channel, method(name, **args)))


def publish(
    channel: int,
    body: bytes,
    props: dict[str, Any] | None = None,
    chunk: int = 1 << 20,
    routing_key: str = "q",
) -> bytes:
    out = m(channel, "basic.publish", routing_key=routing_key)
    out += bytes(frame(s.FRAME_HEADER, channel, encode_content_header(len(body), props or {})))
    for i in range(0, len(body), chunk):
        out += bytes(frame(s.FRAME_BODY, channel, body[i : i + chunk]))
    return out


HANDSHAKE = (
    s.PROTOCOL_HEADER
    + m(
        0,
        "connection.start_ok",
        client_properties={"product": "test"},
        mechanism="PLAIN",
        response=b"\x00guest\x00secret",
        locale="en_US",
    )
    + m(0, "connection.tune_ok", channel_max=100, frame_max=8192, heartbeat=30)
    + m(0, "connection.open", virtual_host="/")
)


def opened(**kwargs: Any) -> ServerConnection:
    conn = ServerConnection(**kwargs)
    evs = events(conn, HANDSHAKE + m(1, "channel.open"))
    assert isinstance(evs[0], Opened) and isinstance(evs[1], ChannelOpened)
    conn.data_to_send()
    return conn


def test_negotiation() -> None:
    seen: list[tuple[str, str, str]] = []
    conn = ServerConnection(authenticate=lambda *a: seen.append(a) or True, frame_max=131072)
    assert events(conn, s.PROTOCOL_HEADER) == []
    ((_, start),) = methods_of(conn.data_to_send())
    assert start.name == "connection.start" and b"PLAIN" in start.mechanisms
    assert start.server_properties["capabilities"]["publisher_confirms"] is True
    evs = events(conn, HANDSHAKE[8:])
    assert seen == [("PLAIN", "guest", "secret")]
    names = [x.name for _, x in methods_of(conn.data_to_send())]
    assert names == ["connection.tune", "connection.open_ok"]
    assert evs == [Opened("/", "guest", {"product": "test"}, 100, 8192, 30)]
    assert (conn.frame_max, conn.channel_max, conn.heartbeat) == (8192, 100, 30)


def test_wrong_protocol_header_gets_ours_and_a_close() -> None:
    conn = ServerConnection()
    evs = events(conn, b"AMQP\x01\x01\x00\x0a")
    assert isinstance(evs[0], ConnectionClosed)
    assert conn.data_to_send() == s.PROTOCOL_HEADER


def test_refused_login_is_access_refused() -> None:
    conn = ServerConnection(authenticate=lambda mech, user, pw: pw == "right")
    evs = events(conn, HANDSHAKE)
    assert isinstance(evs[0], ConnectionFailed) and evs[0].reply_code == s.ACCESS_REFUSED
    closes = [x for _, x in methods_of(conn.data_to_send()) if x.name == "connection.close"]
    assert closes[0].reply_code == s.ACCESS_REFUSED


def test_amqplain_login() -> None:
    seen = []
    conn = ServerConnection(authenticate=lambda *a: seen.append(a) or True)
    table = bytearray()
    from bayou.protocol.amqp.codec import encode_table

    encode_table(table, {"LOGIN": "bob", "PASSWORD": "pw"})
    events(
        conn,
        s.PROTOCOL_HEADER
        + m(0, "connection.start_ok", mechanism="AMQPLAIN", response=bytes(table[4:])),
    )
    assert seen == [("AMQPLAIN", "bob", "pw")]


def test_publish_assembled_from_several_body_frames() -> None:
    conn = opened()
    body = bytes(range(256)) * 100
    evs = events(conn, publish(1, body, {"content_type": "x/y"}, chunk=4000))
    assert len(evs) == 1 and isinstance(evs[0], MessageReceived)
    assert evs[0].body == body and evs[0].properties == {"content_type": "x/y"}
    assert evs[0].method.routing_key == "q"


def test_empty_body_needs_no_body_frame() -> None:
    conn = opened()
    (ev,) = events(conn, publish(1, b""))
    assert isinstance(ev, MessageReceived) and ev.body == b""


def test_byte_at_a_time_gives_the_same_events() -> None:
    data = (
        HANDSHAKE
        + m(1, "channel.open")
        + publish(1, b"hello", chunk=2)
        + m(1, "basic.qos", prefetch_count=5)
    )
    whole = events(ServerConnection(), data)
    conn = ServerConnection()
    split = []
    for i in range(len(data)):
        split += events(conn, data[i : i + 1])
    assert split == whole
    assert [type(e) for e in whole] == [Opened, ChannelOpened, MessageReceived, MethodReceived]


def _closed_with(conn: ServerConnection, data: bytes, code: int, framing: bool = False) -> None:
    evs = events(conn, data)
    assert isinstance(evs[-1], ConnectionFailed), evs
    assert evs[-1].reply_code == code
    close = methods_of(conn.data_to_send())[-1][1]
    assert close.name == "connection.close" and close.reply_code == code
    assert conn.state is State.CLOSING
    if framing:  # nothing more can be read: the driver drops the socket after a grace period
        assert events(conn, m(0, "connection.close_ok")) == []
        return
    # only close-ok ends it; anything else is discarded
    assert events(conn, m(1, "basic.qos")) == []
    assert isinstance(events(conn, m(0, "connection.close_ok"))[0], ConnectionClosed)
    assert conn.state is State.CLOSED


def test_oversized_frame_is_a_frame_error_before_it_is_buffered() -> None:
    conn = opened()
    header_only = bytes([1, 0, 1]) + (10_000_000).to_bytes(4, "big")
    _closed_with(conn, header_only, s.FRAME_ERROR, framing=True)


def test_bad_frame_end() -> None:
    bad = bytearray(m(1, "basic.qos"))
    bad[-1] = 0
    _closed_with(opened(), bytes(bad), s.FRAME_ERROR, framing=True)


def test_unknown_method_is_not_implemented() -> None:
    _closed_with(opened(), bytes(frame(1, 1, b"\x00\x63\x00\x07")), s.NOT_IMPLEMENTED)


def test_method_on_a_channel_not_opened() -> None:
    _closed_with(opened(), m(5, "basic.qos"), s.CHANNEL_ERROR)


def test_reopening_an_open_channel() -> None:
    _closed_with(opened(), m(1, "channel.open"), s.CHANNEL_ERROR)


def test_content_without_publish_is_unexpected() -> None:
    _closed_with(opened(), bytes(frame(s.FRAME_BODY, 1, b"xx")), s.UNEXPECTED_FRAME)


def test_method_in_the_middle_of_content_is_unexpected() -> None:
    data = m(1, "basic.publish") + m(1, "basic.qos")
    _closed_with(opened(), data, s.UNEXPECTED_FRAME)


def test_server_only_method_from_client() -> None:
    _closed_with(opened(), m(1, "basic.deliver", consumer_tag="x"), s.COMMAND_INVALID)


def test_channel_over_channel_max() -> None:
    conn = opened(channel_max=10)
    _closed_with(conn, m(11, "channel.open"), s.CHANNEL_ERROR)


def test_too_large_message_closes_only_its_channel() -> None:
    conn = opened(max_message_size=10)
    evs = events(conn, m(2, "channel.open") + publish(1, b"x" * 11) + publish(2, b"ok"))
    assert isinstance(evs[1], ChannelFailed) and evs[1].channel == 1
    assert isinstance(evs[2], MessageReceived) and evs[2].channel == 2
    out = methods_of(conn.data_to_send())
    assert (1, "channel.close") in [(ch, x.name) for ch, x in out]
    close = next(x for _ch, x in out if x.name == "channel.close")
    assert close.reply_code == s.PRECONDITION_FAILED
    # frames on the closing channel are dropped until close-ok frees it
    assert events(conn, publish(1, b"x")) == []
    assert events(conn, m(1, "channel.close_ok") + m(1, "channel.open")) == [ChannelOpened(1)]


def test_peer_channel_close_waits_for_the_driver() -> None:
    conn = opened()
    (ev,) = events(conn, m(1, "channel.close", reply_code=200, reply_text="bye"))
    assert ev == ChannelCloseRequested(1, 200, "bye")
    assert conn.data_to_send() == b""
    conn.channel_close_ok(1)
    assert methods_of(conn.data_to_send())[0][1].name == "channel.close_ok"


def test_sends_split_bodies_to_fit_frame_max() -> None:
    conn = opened()
    assert conn.frame_max == 8192
    conn.send_content(
        1,
        method("basic.deliver", consumer_tag="c", delivery_tag=1),
        {"message_id": "m"},
        b"z" * 20000,
    )
    frames = frames_of(conn.data_to_send())
    assert [t for t, _, _ in frames] == [1, 2, 3, 3, 3]
    assert all(len(p) <= 8192 - 8 for t, _, p in frames if t == 3)
    assert b"".join(p for t, _, p in frames if t == 3) == b"z" * 20000


def test_nothing_is_sent_on_a_closed_channel() -> None:
    conn = opened()
    conn.close_channel(1, s.NOT_FOUND, "no queue")
    conn.data_to_send()
    assert not conn.send_method(1, method("basic.qos_ok"))
    assert conn.data_to_send() == b""


# ----------------------------------------------------------------------------- fuzz

_names = sorted(n for n, sp in s.METHODS.items() if sp.from_client)


@st.composite
def client_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["method", "header", "body", "heartbeat", "garbage"]))
    channel = draw(st.sampled_from([0, 1, 2, 3]))
    if kind == "method":
        name = draw(st.sampled_from(_names))
        spec = s.METHODS[name]
        args: dict[str, Any] = {}
        for field, wire in spec.fields:
            if wire == "bit":
                args[field] = draw(st.booleans())
            elif wire == "shortstr":
                args[field] = draw(st.text(max_size=5))
            elif wire in ("octet",):
                args[field] = draw(st.integers(0, 255))
            elif wire == "short":
                args[field] = draw(st.integers(0, 65535))
        return bytes(encode_method(channel, method(name, **args)))
    if kind == "header":
        return bytes(frame(2, channel, encode_content_header(draw(st.integers(0, 20)), {})))
    if kind == "body":
        return bytes(frame(3, channel, draw(st.binary(max_size=20))))
    if kind == "heartbeat":
        return bytes(frame(8, channel, b""))
    return draw(st.binary(max_size=30))


@settings(max_examples=300, deadline=None)
@given(st.lists(client_frames(), max_size=25), st.integers(1, 50))
def test_fuzz_any_frames_give_events_or_a_clean_close(chunks: list[bytes], step: int) -> None:
    conn = ServerConnection(frame_max=4096, max_message_size=15)
    events(conn, HANDSHAKE)
    data = b"".join(chunks)
    for i in range(0, len(data), step):
        for ev in events(conn, data[i : i + step]):
            if isinstance(ev, ChannelCloseRequested):
                conn.channel_close_ok(ev.channel)
        out = conn.data_to_send()
        frames_of(out)  # whatever the server writes is well-formed
    assert conn.state in (State.OPEN, State.CLOSING, State.CLOSED)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_method_payloads_decode_or_raise_amqp_errors(payload: bytes) -> None:
    from bayou.protocol.amqp import AmqpError

    try:
        decoded = decode_method(payload)
    except AmqpError as exc:
        assert exc.code in (s.SYNTAX_ERROR, s.NOT_IMPLEMENTED)
    else:
        assert decode_method(encode_method_payload(decoded)).args.keys() == decoded.args.keys()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_fuzz_content_headers(payload: bytes) -> None:
    from bayou.protocol.amqp import AmqpError

    try:
        decode_content_header(payload)
    except AmqpError as exc:
        assert exc.code == s.SYNTAX_ERROR
