"""The MQTT door with real clients: paho-mqtt (3.1.1 and 5.0), mosquitto_pub/_sub and
confluent-kafka on the same topics."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from bayou.protocol.mqtt import encode
from bayou.protocol.mqtt.packets import (
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    Properties,
    PubAck,
    Publish,
    PubRec,
    Reason,
    Will,
)
from tests.support.broker import BrokerProcess
from tests.support.mqtt import MqttTestClient, PacketReader, unique

pytestmark = pytest.mark.timeout(120)


def kafka_records(bootstrap: str, topic: str, n: int, timeout: float = 15.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("g"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_mqtt5_publish_is_read_by_kafka_with_key_and_headers(
    shared_broker: BrokerProcess,
) -> None:
    top = unique("sensors")
    client = MqttTestClient(shared_broker.mqtt_port, unique("pub"), version=5)
    props = PahoProperties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "lab"), ("unit", "celsius")]
    props.ContentType = "text/plain"
    try:
        client.publish(f"{top}/room1/temp", b"21.5", qos=1, properties=props)
        client.publish(f"{top}/room2/temp", b"19.0", qos=2)
    finally:
        client.close()
    records = kafka_records(shared_broker.bootstrap, top, 2)
    assert [(r.key(), r.value()) for r in records] == [
        (f"{top}/room1/temp".encode(), b"21.5"),
        (f"{top}/room2/temp".encode(), b"19.0"),
    ]
    headers = dict(records[0].headers())
    assert headers["site"] == b"lab" and headers["unit"] == b"celsius"
    assert headers["content-type"] == b"text/plain" and headers["mqtt.qos"] == b"1"
    assert dict(records[1].headers())["mqtt.qos"] == b"2"


def test_a_burst_of_mixed_publishes_lands_in_order_with_its_headers(
    shared_broker: BrokerProcess,
) -> None:
    """Two writes of 600 PUBLISHes to three MQTT topics over two Kafka topics (the first
    creates them, the second finds them), mostly plain QoS 0/1 (which the door takes as
    runs) with retained, QoS 2 and 5.0-property ones in between: every record is in the log
    in publish order per MQTT topic, with its QoS, retain flag and content type; the
    acknowledgements come back in publish order; the retained one is retained."""
    top, other = unique("burst"), unique("burst2")
    topics = [f"{top}/a", f"{top}/b", f"{other}/c"]
    packets: list[Publish] = []
    for i in range(1200):
        topic = topics[(i // 7) % 3]  # stretches of one topic, then the next
        if i == 301:
            packets.append(Publish(topic, b"%d" % i, 1, retain=True, packet_id=i + 1))
        elif i % 50 == 13:
            packets.append(Publish(topic, b"%d" % i, 2, packet_id=i + 1))
        elif i % 50 == 29:
            props = Properties(content_type="text/plain")
            packets.append(Publish(topic, b"%d" % i, 1, packet_id=i + 1, properties=props))
        else:
            qos = i % 2
            packets.append(Publish(topic, b"%d" % i, qos, packet_id=i + 1 if qos else None))
    with socket.create_connection(("127.0.0.1", shared_broker.mqtt_port), 5) as sock:
        sock.settimeout(10)
        reader = PacketReader(sock)
        sock.sendall(encode(Connect(unique("burst"), MQTT_5)))
        assert isinstance(reader.next(), ConnAck)
        for burst in (packets[:600], packets[600:]):
            sock.sendall(b"".join(encode(p, MQTT_5) for p in burst))
            acks = []
            for _ in range(sum(1 for p in burst if p.qos)):
                ack = reader.next()
                assert isinstance(ack, PubAck | PubRec) and ack.reason_code == Reason.SUCCESS
                acks.append(ack.packet_id)
            assert acks == [p.packet_id for p in burst if p.qos]
    in_top = sum(1 for p in packets if p.topic.startswith(f"{top}/"))
    records = kafka_records(shared_broker.bootstrap, top, in_top) + kafka_records(
        shared_broker.bootstrap, other, len(packets) - in_top
    )
    got: dict[str, list[tuple[bytes, dict[str, bytes]]]] = {t: [] for t in topics}
    for r in records:
        got[r.key().decode()].append((r.value(), dict(r.headers())))
    for topic in topics:
        sent = [p for p in packets if p.topic == topic]
        assert [value for value, _ in got[topic]] == [p.payload for p in sent]
        for (_, headers), p in zip(got[topic], sent, strict=True):
            assert headers["mqtt.qos"] == b"%d" % p.qos
            assert ("mqtt.retain" in headers) == p.retain
            assert headers.get("content-type") == (
                b"text/plain" if p.properties.content_type else None
            )
    sub = MqttTestClient(shared_broker.mqtt_port, unique("s"))
    try:
        sub.subscribe(packets[301].topic, 1)
        assert [m.payload for m in sub.receive(1)] == [b"301"]
    finally:
        sub.close()


def test_kafka_records_reach_mqtt_subscribers_through_wildcards(
    shared_broker: BrokerProcess,
) -> None:
    top = unique("k")
    plus = MqttTestClient(shared_broker.mqtt_port, unique("s"), version=5)
    hash_ = MqttTestClient(shared_broker.mqtt_port, unique("s"))
    try:
        plus.subscribe(f"{top}/+/temp", 1)
        hash_.subscribe(f"{top}/#", 0)
        producer = Producer({"bootstrap.servers": shared_broker.bootstrap})
        producer.produce(
            top, b"t1", key=f"{top}/room1/temp".encode(), headers=[("origin", b"kafka")]
        )
        producer.produce(top, b"h1", key=f"{top}/room1/humidity".encode())
        producer.produce(top, b"nokey")
        assert producer.flush(15) == 0
        got = plus.receive(1)
        assert [(m.topic, m.payload) for m in got] == [(f"{top}/room1/temp", b"t1")]
        assert got[0].user_properties == [("origin", "kafka")]
        got = hash_.receive(3)
        assert sorted((m.topic, m.payload) for m in got) == sorted(
            [(f"{top}/room1/temp", b"t1"), (f"{top}/room1/humidity", b"h1"), (top, b"nokey")]
        )
        assert plus.receive(1, timeout=0.5) == []  # humidity and the keyless one don't match
    finally:
        plus.close()
        hash_.close()


@pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None and not os.environ.get("CI"),  # in CI: a failure
    reason="mosquitto-clients are installed by make test",
)
def test_mosquitto_clients_publish_and_subscribe(shared_broker: BrokerProcess) -> None:
    top = unique("mq")
    port = str(shared_broker.mqtt_port)
    sub = subprocess.Popen(  # line-buffered so that its SUBACK line can be waited for
        [
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-p",
            port,
            "-t",
            f"{top}/#",
            "-q",
            "1",
            "-C",
            "50",
            "-v",
            "-W",
            "30",
            "-d",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert sub.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # wait for its SUBACK in the debug output
            line = sub.stdout.readline()
            if "SUBACK" in line or not line:
                break
        lines = "".join(f"line {i}\n" for i in range(50))
        subprocess.run(
            ["mosquitto_pub", "-p", port, "-t", f"{top}/dev1", "-q", "1", "-l"],
            input=lines,
            text=True,
            check=True,
            timeout=30,
        )
        out, _ = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
    got = [line for line in out.splitlines() if line.startswith(f"{top}/dev1 ")]
    assert got == [f"{top}/dev1 line {i}" for i in range(50)]
    records = kafka_records(shared_broker.bootstrap, top, 50)
    assert [r.value() for r in records] == [f"line {i}".encode() for i in range(50)]


def test_retained_messages(shared_broker: BrokerProcess) -> None:
    top = unique("ret")
    pub = MqttTestClient(shared_broker.mqtt_port, unique("p"), version=5)
    try:
        pub.publish(f"{top}/a", b"first", qos=1, retain=True)
        pub.publish(f"{top}/a", b"second", qos=1, retain=True)
        pub.publish(f"{top}/b", b"bee", qos=0, retain=True)
        pub.publish(f"{top}/c", b"gone", qos=1, retain=True)
        pub.publish(f"{top}/c", b"", qos=1, retain=True)  # clears c
        late = MqttTestClient(shared_broker.mqtt_port, unique("s"))
        try:
            late.subscribe(f"{top}/#", 1)
            got = late.receive(2)
            assert sorted((m.topic, m.payload, m.retain) for m in got) == [
                (f"{top}/a", b"second", True),
                (f"{top}/b", b"bee", True),
            ]
            pub.publish(f"{top}/a", b"live", qos=1)  # a live message is not flagged retained
            live = late.receive(1)
            assert [(m.payload, m.retain) for m in live] == [(b"live", False)]
            assert late.receive(1, timeout=0.3) == []
        finally:
            late.close()
    finally:
        pub.close()


def test_will_is_published_when_a_client_vanishes(shared_broker: BrokerProcess) -> None:
    top = unique("will")
    watcher = MqttTestClient(shared_broker.mqtt_port, unique("w"))
    try:
        watcher.subscribe(f"{top}/#", 1)
        with socket.create_connection(("127.0.0.1", shared_broker.mqtt_port), 5) as sock:
            connect = Connect(
                unique("dying"),
                MQTT_5,
                keep_alive=30,
                will=Will(f"{top}/status", b"offline", 1, False),
            )
            sock.sendall(encode(connect))
            assert sock.recv(100)[:1] == b"\x20"  # CONNACK
        # closed without DISCONNECT → the will goes out
        got = watcher.receive(1)
        assert [(m.topic, m.payload) for m in got] == [(f"{top}/status", b"offline")]
        # a normal DISCONNECT discards the will
        with socket.create_connection(("127.0.0.1", shared_broker.mqtt_port), 5) as sock:
            sock.sendall(
                encode(
                    Connect(unique("polite"), MQTT_5, will=Will(f"{top}/status", b"nope", 1, False))
                )
            )
            sock.recv(100)
            sock.sendall(encode(Disconnect(), MQTT_5))
        assert watcher.receive(1, timeout=1.0) == []
    finally:
        watcher.close()


def test_shared_subscription_splits_the_load(shared_broker: BrokerProcess) -> None:
    top = unique("share")
    members = [MqttTestClient(shared_broker.mqtt_port, unique("m"), version=5) for _ in range(2)]
    pub = MqttTestClient(shared_broker.mqtt_port, unique("p"))
    try:
        for m in members:
            m.subscribe(f"$share/workers/{top}/jobs/#", 1)
        for i in range(100):
            pub.publish(f"{top}/jobs/{i % 5}", f"job {i}".encode(), qos=1)
        got = [m.receive(100, timeout=3.0) for m in members]
        assert all(len(g) >= 10 for g in got), [len(g) for g in got]
        payloads = sorted(x.payload for g in got for x in g)
        assert payloads == sorted(f"job {i}".encode() for i in range(100))
    finally:
        pub.close()
        for m in members:
            m.close()


def test_websocket_transport(shared_broker: BrokerProcess) -> None:
    top = unique("ws")
    sub = MqttTestClient(shared_broker.mqtt_port, unique("ws"), transport="websockets", version=5)
    pub = MqttTestClient(shared_broker.mqtt_port, unique("p"))
    try:
        sub.subscribe(f"{top}/#", 1)
        for i in range(20):
            pub.publish(f"{top}/x", b"y" * (i * 1000), qos=1)
        got = sub.receive(20)
        assert [len(m.payload) for m in got] == [i * 1000 for i in range(20)]
    finally:
        sub.close()
        pub.close()


def test_bad_input_closes_only_that_connection(shared_broker: BrokerProcess) -> None:
    top = unique("bad")
    good = MqttTestClient(shared_broker.mqtt_port, unique("g"))
    try:
        good.subscribe(f"{top}/#", 1)
        with socket.create_connection(("127.0.0.1", shared_broker.mqtt_port), 5) as sock:
            sock.sendall(b"\x30\x03\x00\x01t")  # PUBLISH before CONNECT: protocol violation
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed
        # The broker refuses the oversized PUBLISH from its length prefix, while the client
        # is still sending it: the broker must read on (and drop) the rest, not close with
        # unread bytes — the kernel would answer with RST, failing the client's send and
        # losing the DISCONNECT that tells it why.
        with socket.create_connection(("127.0.0.1", shared_broker.mqtt_port), 5) as sock:
            sock.settimeout(5)
            reader = PacketReader(sock)
            sock.sendall(encode(Connect(unique("big"), MQTT_5)))
            assert isinstance(reader.next(), ConnAck)
            sock.sendall(encode(Publish(f"{top}/x", b"x" * (2 * 1024 * 1024)), MQTT_5))
            packet = reader.next()
            assert isinstance(packet, Disconnect)
            assert packet.reason_code == Reason.PACKET_TOO_LARGE
            assert reader.next() is None  # then a clean end of stream
        with socket.create_connection(("127.0.0.1", shared_broker.mqtt_port), 5) as sock:
            sock.settimeout(5)
            reader = PacketReader(sock)
            sock.sendall(encode(Connect(unique("wild"), MQTT_5)))
            assert isinstance(reader.next(), ConnAck)
            sock.sendall(
                encode(Publish(f"{top}/+", b"x"), MQTT_5)
                + encode(Publish(f"{top}/y", b"sent after the bad one"), MQTT_5)
            )
            packet = reader.next()
            assert isinstance(packet, Disconnect)
            assert packet.reason_code == Reason.TOPIC_NAME_INVALID
            assert reader.next() is None
        pub = MqttTestClient(shared_broker.mqtt_port, unique("p"))
        try:
            pub.publish(f"{top}/ok", b"still here", qos=1)
        finally:
            pub.close()
        assert [m.payload for m in good.receive(1)] == [b"still here"]
    finally:
        good.close()
    assert "reason 0x95" in shared_broker.log_text()


def test_persistent_sessions_lose_nothing_across_reconnect_and_restart(
    broker: BrokerProcess,
) -> None:
    top = unique("persist")
    n = 200
    sub311 = unique("s311")
    sub5 = unique("s5")

    def connect_subscribers() -> tuple[MqttTestClient, MqttTestClient]:
        a = MqttTestClient(broker.mqtt_port, sub311, clean=False)
        b = MqttTestClient(broker.mqtt_port, sub5, version=5, clean=False, session_expiry=3600)
        return a, b

    a, b = connect_subscribers()
    a.subscribe(f"{top}/q1/#", 1)
    b.subscribe(f"{top}/q2/#", 2)
    a.close()
    b.close()

    def publish_batch(tag: str) -> None:
        pub = MqttTestClient(broker.mqtt_port, unique("p"), version=5)
        try:
            for i in range(n):
                pub.publish(f"{top}/q1/d{i % 7}", f"{tag}-{i}".encode(), qos=1)
                pub.publish(f"{top}/q2/d{i % 7}", f"{tag}-{i}".encode(), qos=2)
        finally:
            pub.close()

    def expect(client: MqttTestClient, tag: str, exactly_once: bool) -> None:
        got = client.receive(n, timeout=20)
        payloads = [m.payload for m in got]
        expected = [f"{tag}-{i}".encode() for i in range(n)]
        if exactly_once:
            assert payloads == expected
        else:
            assert sorted(set(payloads)) == sorted(expected)

    publish_batch("offline")  # subscribers are away: their sessions keep positions
    a, b = connect_subscribers()
    assert a.session_present and b.session_present
    expect(a, "offline", exactly_once=False)
    expect(b, "offline", exactly_once=True)
    a.close()
    b.close()
    time.sleep(0.2)  # let the DISCONNECTs land before the next batch (ordering only)
    publish_batch("restart")
    assert broker.stop() == 0
    broker.start()
    a, b = connect_subscribers()
    try:
        assert a.session_present and b.session_present
        expect(a, "restart", exactly_once=False)
        expect(b, "restart", exactly_once=True)
        assert b.receive(1, timeout=0.5) == []
    finally:
        a.close()
        b.close()
