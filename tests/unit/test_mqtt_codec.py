"""MQTT codec and server connection: round trips, malformed input, protocol rules."""

from __future__ import annotations

import random

import pytest

from bayou.protocol.mqtt import (
    FrameReader,
    MalformedPacket,
    MqttError,
    PacketTooLarge,
    ProtocolError,
    PublishRun,
    ServerConnection,
    State,
    decode,
    encode,
)
from bayou.protocol.mqtt.codec import encode_publish, encode_publish_parts
from bayou.protocol.mqtt.connection import MAX_NAMES
from bayou.protocol.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Reason,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from bayou.protocol.mqtt.topics import (
    filters_may_overlap,
    matches,
    parse_shared,
    valid_topic_filter,
)


def roundtrip(packet: Packet, version: int) -> Packet:
    data = encode(packet, version)
    reader = FrameReader()
    reader.feed(data)
    frame = reader.next_frame()
    assert frame is not None and reader.buffered() == 0
    return decode(frame[0], frame[1], version)


FULL_PROPS = Properties(
    payload_format_indicator=1,
    message_expiry_interval=60,
    content_type="text/plain",
    response_topic="r/t",
    correlation_data=b"\x00\x01",
    user_properties=[("a", "1"), ("a", "2"), ("ü", "∑")],
)

PACKETS_BOTH: list[Packet] = [
    Connect(
        "dev-1",
        MQTT_311,
        keep_alive=30,
        clean_start=False,
        will=Will("w/t", b"bye", 1, True),
        username="u",
        password=b"p",
    ),
    ConnAck(True, Reason.SUCCESS),
    Publish("a/b", b"payload", 0, False, False, None),
    Publish("a/b", b"x" * 300, 1, True, True, 7),
    Publish("a/b", b"", 2, False, False, 65535),
    PubAck(1),
    PubRec(2),
    PubRel(3),
    PubComp(4),
    Subscribe(9, [Subscription("a/+", 1), Subscription("#", 2)]),
    SubAck(9, [0, 1, 2, 0x80]),
    Unsubscribe(10, ["a/+", "#"]),
    PingReq(),
    PingResp(),
    Disconnect(),
]

PACKETS_5: list[Packet] = [
    Connect(
        "c",
        MQTT_5,
        properties=Properties(
            session_expiry_interval=300,
            receive_maximum=10,
            maximum_packet_size=4096,
            topic_alias_maximum=5,
        ),
        will=Will("w", b"", 2, False, Properties(will_delay_interval=5, content_type="x")),
    ),
    ConnAck(
        False,
        Reason.SUCCESS,
        Properties(assigned_client_identifier="id", retain_available=1, maximum_qos=1),
    ),
    Publish("a/b", b"p", 1, False, False, 3, FULL_PROPS),
    Publish("", b"p", 0, False, False, None, Properties(topic_alias=3)),
    PubAck(1, Reason.NO_MATCHING_SUBSCRIBERS),
    PubAck(1, Reason.IMPLEMENTATION_SPECIFIC_ERROR, Properties(reason_string="nope")),
    PubRec(2, Reason.QUOTA_EXCEEDED),
    PubRel(3, Reason.PACKET_IDENTIFIER_NOT_FOUND),
    Subscribe(
        5,
        [Subscription("$share/g/a/#", 2, False, True, 2)],
        Properties(subscription_identifiers=[42]),
    ),
    SubAck(5, [2, Reason.TOPIC_FILTER_INVALID]),
    UnsubAck(6, [0, Reason.NO_SUBSCRIPTION_EXISTED]),
    Disconnect(Reason.DISCONNECT_WITH_WILL, Properties(session_expiry_interval=0)),
    Auth(Reason.CONTINUE_AUTHENTICATION, Properties(authentication_method="SCRAM")),
]


@pytest.mark.parametrize("packet", PACKETS_BOTH, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_round_trip_both_versions(packet: Packet, version: int) -> None:
    if isinstance(packet, Connect):
        packet = Connect(**{**packet.__dict__, "protocol_level": version})
    assert roundtrip(packet, version) == packet


@pytest.mark.parametrize("packet", PACKETS_5, ids=lambda p: type(p).__name__)
def test_round_trip_mqtt5_properties_and_reasons(packet: Packet) -> None:
    assert roundtrip(packet, MQTT_5) == packet


def test_known_bytes() -> None:
    # CONNECT 3.1.1, client id "a", clean session, keep-alive 60
    wire = bytes.fromhex("100d00044d5154540402003c000161")
    packet = decode(wire[0], wire[2:])
    assert packet == Connect("a", MQTT_311, keep_alive=60, clean_start=True)
    assert encode(packet) == wire
    assert encode(PingResp()) == b"\xd0\x00"
    assert encode(ConnAck(False, Reason.NOT_AUTHORIZED), MQTT_311) == b"\x20\x02\x00\x05"
    assert encode(SubAck(1, [Reason.TOPIC_FILTER_INVALID]), MQTT_311)[-1] == 0x80


def test_remaining_length_varint_limits() -> None:
    reader = FrameReader()
    reader.feed(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(MalformedPacket):
        reader.next_frame()
    small = FrameReader(max_size=100)
    small.feed(b"\x30\xe8\x07")  # 1000 bytes announced: refused before the body arrives
    with pytest.raises(PacketTooLarge):
        small.next_frame()


def test_partial_frames_are_reassembled() -> None:
    data = encode(Publish("t", b"x" * 1000, 1, False, False, 5), MQTT_311) * 3
    reader = FrameReader()
    out = []
    for i in range(0, len(data), 7):
        reader.feed(data[i : i + 7])
        while (frame := reader.next_frame()) is not None:
            out.append(decode(*frame))
    assert len(out) == 3 and all(isinstance(p, Publish) and p.packet_id == 5 for p in out)


@pytest.mark.parametrize(
    "wire",
    [
        b"\x32\x05\x00\x01t\x00\x00",  # QoS 1 with packet id 0
        b"\x36\x03\x00\x01t",  # QoS 3
        b"\x38\x03\x00\x01t",  # DUP at QoS 0
        b"\x62\x01\x00",  # PUBREL cut short
        b"\x60\x02\x00\x01",  # PUBREL with wrong flags
        b"\x80\x06\x00\x01\x00\x01a\x00",  # SUBSCRIBE with flags 0
        b"\x82\x02\x00\x01",  # SUBSCRIBE without filters
        b"\x82\x06\x00\x01\x00\x01a\x03",  # subscription QoS 3
        b"\x82\x06\x00\x01\x00\x01a\x04",  # 3.1.1 reserved option bits
        b"\x30\x04\x00\x02\xc3\x28",  # invalid UTF-8 topic
        b"\x30\x03\x00\x01\x00",  # U+0000 in topic
        b"\x00\x00",  # reserved packet type
        b"\xc0\x01\x00",  # PINGREQ with a body
    ],
)
def test_malformed_packets_raise(wire: bytes) -> None:
    with pytest.raises(MqttError):
        decode(wire[0], wire[2:], MQTT_311)


def test_duplicate_and_misplaced_properties() -> None:
    body = b"\x00\x01t" + bytes.fromhex("0401000101")
    with pytest.raises(ProtocolError):
        decode(0x30, body, MQTT_5)  # payload format indicator twice
    body = b"\x00\x01t" + bytes.fromhex("03210001")  # receive maximum in a PUBLISH
    with pytest.raises(MalformedPacket):
        decode(0x30, body, MQTT_5)


# --------------------------------------------------------------------------- connection


def connected(version: int = MQTT_5, **kw: int) -> ServerConnection:
    conn = ServerConnection(**kw)
    packets = conn.receive_data(encode(Connect("c", version)))
    assert isinstance(packets[0], Connect) and conn.state is State.CONNECTED
    conn.connack(False)
    return conn


def test_first_packet_must_be_connect() -> None:
    conn = ServerConnection()
    with pytest.raises(ProtocolError):
        conn.receive_data(encode(PingReq()))
    assert conn.goodbye(ProtocolError("x")) == b""  # 3.1.1-style: just close


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_a_read_of_plain_pubacks_only_gives_their_packet_ids(version: int) -> None:
    """``receive_acks``: the packet ids, in order, exactly when ``receive_data`` would give
    nothing but success PUBACKs without properties; anything else is left to it."""
    conn = ServerConnection()
    acks = b"".join(encode(PubAck(pid), version) for pid in (7, 300, 65535))
    assert conn.receive_acks(acks) is None  # not connected yet
    conn.receive_data(encode(Connect("c", version)))
    conn.connack(False)
    assert conn.receive_acks(acks) == [7, 300, 65535]
    assert [p.packet_id for p in conn.receive_data(acks)] == [7, 300, 65535]  # the same
    for other in (
        acks + encode(PingReq(), version),  # another packet too
        acks[:-1],  # a PUBACK cut short
        encode(PubAck(8, Reason.NO_MATCHING_SUBSCRIBERS), MQTT_5),  # a reason
        encode(PubRec(9), version),
        b"",
    ):
        assert conn.receive_acks(other) is None
    assert conn.receive_data(acks[:-1]) and conn.receive_acks(acks) is None  # bytes buffered
    conn.receive_data(acks[-1:])
    with pytest.raises(ProtocolError):  # packet id 0: refused by receive_data
        assert conn.receive_acks(b"\x40\x02\x00\x00") is None
        conn.receive_data(b"\x40\x02\x00\x00")


def test_second_connect_is_a_protocol_error_with_disconnect_reason() -> None:
    conn = connected()
    with pytest.raises(ProtocolError) as err:
        conn.receive_data(encode(Connect("c", MQTT_5)))
    goodbye = conn.goodbye(err.value)
    packet = decode(goodbye[0], goodbye[2:], MQTT_5)
    assert isinstance(packet, Disconnect) and packet.reason_code == Reason.PROTOCOL_ERROR


def test_unsupported_protocol_level_gets_connack_1() -> None:
    conn = ServerConnection()
    wire = bytes.fromhex("100d00044d5154540602003c000161")  # level 6
    with pytest.raises(MqttError) as err:
        conn.receive_data(wire)
    assert conn.goodbye(err.value) == b"\x20\x02\x00\x01"


def test_topic_aliases_resolve_and_unknown_alias_fails() -> None:
    conn = connected(topic_alias_maximum=4)
    first = Publish("long/topic/name", b"1", 0, properties=Properties(topic_alias=2))
    second = Publish("", b"2", 0, properties=Properties(topic_alias=2))
    got = conn.receive_data(encode(first, MQTT_5) + encode(second, MQTT_5))
    assert [p.topic for p in got if isinstance(p, Publish)] == ["long/topic/name"] * 2
    with pytest.raises(MqttError) as err:
        conn.receive_data(encode(Publish("", b"", 0, properties=Properties(topic_alias=3)), MQTT_5))
    assert err.value.reason == Reason.PROTOCOL_ERROR
    conn = connected(topic_alias_maximum=4)
    with pytest.raises(MqttError) as err:
        conn.receive_data(
            encode(Publish("t", b"", 0, properties=Properties(topic_alias=9)), MQTT_5)
        )
    assert err.value.reason == Reason.TOPIC_ALIAS_INVALID


def test_receive_maximum_is_enforced_and_acks_give_quota_back() -> None:
    conn = connected(receive_maximum=2)
    conn.receive_data(
        encode(Publish("t", b"", 1, packet_id=1), MQTT_5)
        + encode(Publish("t", b"", 2, packet_id=2), MQTT_5)
    )
    conn.send(PubAck(1))
    conn.receive_data(encode(Publish("t", b"", 1, packet_id=3), MQTT_5))
    with pytest.raises(MqttError) as err:
        conn.receive_data(encode(Publish("t", b"", 1, packet_id=4), MQTT_5))
    assert err.value.reason == Reason.RECEIVE_MAXIMUM_EXCEEDED


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_pubacks_are_the_bytes_of_pubacks_and_give_their_quota_back(version: int) -> None:
    conn = connected(version, receive_maximum=3)
    conn.receive_data(
        b"".join(encode(Publish("t", b"", 1, packet_id=p), version) for p in (1, 258, 3))
    )
    assert conn.pubacks([1, 258]) == [encode(PubAck(1), version), encode(PubAck(258), version)]
    conn.receive_data(b"".join(encode(Publish("t", b"", 1, packet_id=p), version) for p in (4, 5)))
    with pytest.raises(MqttError) as err:
        conn.receive_data(encode(Publish("t", b"", 1, packet_id=6), version))
    assert err.value.reason == Reason.RECEIVE_MAXIMUM_EXCEEDED


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("properties", [None, b"\x00", b"\x02\x01\x01"])
def test_publish_parts_around_the_packet_id_make_the_publish(
    qos: int, properties: bytes | None
) -> None:
    for topic, payload in ((b"t", b""), (b"a/b" * 50, b"p" * 100), (b"x" * 300, b"q" * 200_000)):
        for retain in (False, True):
            whole = encode_publish(
                topic, payload, qos, retain, False, 517 if qos else None, properties
            )
            head, tail = encode_publish_parts(topic, payload, qos, retain, properties)
            assert head + (b"\x02\x05" if qos else b"") + tail == whole


def test_wildcard_topic_name_and_client_only_packets_are_refused() -> None:
    with pytest.raises(MqttError) as err:
        connected().receive_data(encode(Publish("a/+", b""), MQTT_5))
    assert err.value.reason == Reason.TOPIC_NAME_INVALID
    with pytest.raises(ProtocolError):
        connected(MQTT_311).receive_data(encode(SubAck(1, [0]), MQTT_311))


def test_oversized_packet_is_refused_with_reason() -> None:
    conn = connected(max_packet_size=64)
    with pytest.raises(PacketTooLarge) as err:
        conn.receive_data(encode(Publish("t", b"x" * 100), MQTT_5))
    goodbye = conn.goodbye(err.value)
    packet = decode(goodbye[0], goodbye[2:], MQTT_5)
    assert isinstance(packet, Disconnect) and packet.reason_code == Reason.PACKET_TOO_LARGE


def test_client_limits_are_read_from_connect() -> None:
    conn = ServerConnection()
    conn.receive_data(
        encode(
            Connect(
                "c",
                MQTT_5,
                keep_alive=7,
                properties=Properties(receive_maximum=3, maximum_packet_size=1000),
            )
        )
    )
    assert (conn.client_receive_maximum, conn.client_max_packet_size, conn.keep_alive) == (
        3,
        1000,
        7,
    )
    ack = conn.connack(False)
    packet = decode(ack[0], ack[2:], MQTT_5)
    assert isinstance(packet, ConnAck) and packet.properties.receive_maximum == 1024


# --------------------------------------------------------------------------- topics


def test_topic_filter_rules() -> None:
    assert matches("sport/tennis/#", "sport/tennis") and matches("#", "a/b")
    assert matches("+/+", "/finance") and not matches("+", "/finance")
    assert not matches("#", "$SYS/x") and matches("$SYS/#", "$SYS/x")
    assert not matches("a/+", "a/b/c") and matches("a/+/c", "a/b/c")
    for bad in ("a/#/b", "a#", "a/b+", ""):
        assert not valid_topic_filter(bad)
    assert parse_shared("$share/g/a/+") == ("g", "a/+")
    with pytest.raises(MqttError):
        parse_shared("$share/g")
    assert filters_may_overlap("a/+/c", "a/b/#") and not filters_may_overlap("a/b", "a/c")


def _flatten(got: list[Packet | PublishRun]) -> list[object]:
    """Packets as comparable values; a run's PUBLISHes as the ``Publish`` each stands for."""
    out: list[object] = []
    for packet in got:
        if isinstance(packet, PublishRun):
            for first, topic, payload, pid in packet.items:
                qos = (first >> 1) & 3
                out.append(
                    Publish(packet.names[topic], payload, qos, False, bool(first & 8), pid or None)
                )
        else:
            out.append(packet)
    return out


@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_runs_of_plain_publishes_are_the_publishes_in_order_however_the_reads_fall(
    version: int,
) -> None:
    """A publisher's usual packets come as ``PublishRun``s (no packet object each); what
    they stand for, with every other packet in between, is what decoding each frame gives,
    in order, for reads cut anywhere."""
    rng = random.Random(version)
    packets: list[Packet] = []
    for i in range(300):
        kind = rng.randrange(10)
        topic = rng.choice(["a", "a/b", "é/x", "t" * 200])
        payload = rng.randbytes(rng.choice([0, 1, 100, 200, 200, 200, 200, 200, 20_000]))
        pid = i + 1
        if kind < 5:
            packets.append(Publish(topic, payload, 0))
        elif kind < 7:
            packets.append(Publish(topic, payload, 1, dup=kind == 6, packet_id=pid))
        elif kind == 7:  # not plain: retained, QoS 2
            qos = rng.choice([0, 2])
            packets.append(
                Publish(topic, payload, qos, retain=True, packet_id=pid if qos else None)
            )
        elif kind == 8 and version == MQTT_5:
            packets.append(
                Publish(topic, payload, 1, packet_id=pid, properties=Properties(content_type="x"))
            )
        else:
            packets.append(rng.choice([PingReq(), PubAck(pid), PubComp(pid)]))
    expected: list[object] = []
    for packet in packets:
        frame = FrameReader()
        frame.feed(encode(packet, version))
        first_body = frame.next_frame()
        assert first_body is not None
        expected.append(decode(*first_body, version))
    wire = b"".join(encode(p, version) for p in packets)
    for cut in (1, 3, 97, 4096, 65536, len(wire)):
        conn = connected(version)
        got: list[object] = []
        runs = 0
        pos = 0
        while pos < len(wire):
            step = rng.randint(1, cut)
            read = conn.receive_data(wire[pos : pos + step])
            runs += sum(isinstance(p, PublishRun) for p in read)
            new = _flatten(read)
            # acknowledged at once: within the Receive Maximum
            conn.pubacks([p.packet_id for p in new if isinstance(p, Publish) and p.qos == 1])
            got += new
            pos += step
        assert conn.buffered() == 0
        assert got == expected
        assert runs  # the plain ones came as runs


@pytest.mark.parametrize(
    ("first", "topic", "pid", "error", "reason"),
    [
        (0x30, b"a/+x", b"", MqttError, Reason.TOPIC_NAME_INVALID),
        (0x30, b"\xc3\x28", b"", MalformedPacket, Reason.MALFORMED_PACKET),  # bad UTF-8
        (0x30, b"\x00", b"", MalformedPacket, Reason.MALFORMED_PACKET),  # U+0000
        (0x32, b"t", b"\x00\x00", ProtocolError, Reason.PROTOCOL_ERROR),  # packet id 0
        (0x30, b"", b"", MqttError, Reason.TOPIC_NAME_INVALID),  # empty topic, no alias
    ],
)
@pytest.mark.parametrize("version", [MQTT_311, MQTT_5])
def test_a_bad_publish_after_plain_ones_is_refused_as_alone(
    first: int, topic: bytes, pid: bytes, error: type[MqttError], reason: int, version: int
) -> None:
    body = len(topic).to_bytes(2, "big") + topic + pid + (b"\x00" if version == MQTT_5 else b"")
    wire = bytes((first, len(body) + 1)) + body + b"p"
    good = encode(Publish("ok", b"p", 0), version)
    for data in (wire, good * 3 + wire, good + wire + good):
        with pytest.raises(error) as err:
            connected(version).receive_data(data)
        assert err.value.reason == reason


def test_every_run_of_a_read_names_its_topics_past_the_names_bound() -> None:
    """Two runs of plain PUBLISHes in one read, the first over more distinct topics than a
    connection keeps names for: each run still names every topic it holds (the bound starts
    a new map for the second, the first keeps its own)."""
    conn = ServerConnection()
    conn.receive_data(encode(Connect("c", MQTT_5)))
    first = [Publish(f"t/{i}", b"x", 0) for i in range(MAX_NAMES + 1)]
    data = b"".join(encode(p, MQTT_5) for p in first)
    data += encode(PingReq(), MQTT_5) + encode(Publish("u", b"y", 0), MQTT_5)
    got = conn.receive_data(data)
    runs = [p for p in got if isinstance(p, PublishRun)]
    assert [len(r.items) for r in runs] == [MAX_NAMES + 1, 1]
    for run in runs:
        assert [run.names[topic] for _first, topic, _payload, _pid in run.items] == [
            topic.decode() for _first, topic, _payload, _pid in run.items
        ]
