"""MQTT 5.0 behaviours the Eclipse Paho interoperability suite checks, in our own tests with
paho-mqtt's 5.0 client (and a bare socket where a test must hold back acknowledgements):
server topic aliases, overlapping subscriptions, subscription identifiers, retained messages
with their properties and subscribe options, will delay, session expiry and flow control.
Shared subscriptions and the basics are in test_mqtt.py."""

from __future__ import annotations

import socket
import time

import pytest
from confluent_kafka import Producer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

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
    SubAck,
    Subscribe,
    Subscription,
    Will,
)
from tests.support.broker import BrokerProcess
from tests.support.mqtt import MqttTestClient, PacketReader, Received, unique

pytestmark = pytest.mark.timeout(120)

QUIET_S = 0.5  # how long "nothing more arrives" is watched


class RawClient:
    """An MQTT 5.0 client on a bare socket, for what paho does for you (acknowledging)."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        clean: bool = True,
        properties: Properties | None = None,
        will: Will | None = None,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.sock.settimeout(5)
        self.reader = PacketReader(self.sock)
        self.sock.sendall(
            encode(
                Connect(
                    client_id,
                    MQTT_5,
                    clean_start=clean,
                    will=will,
                    properties=properties or Properties(),
                ),
                MQTT_5,
            )
        )
        connack = self.reader.next()
        assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
        self.connack = connack

    def send(self, *packets: object) -> None:
        self.sock.sendall(b"".join(encode(p, MQTT_5) for p in packets))  # type: ignore[arg-type]

    def next(self, timeout: float = 5.0) -> object:
        self.sock.settimeout(timeout)
        return self.reader.next()

    def nothing_within(self, seconds: float) -> bool:
        try:
            self.next(seconds)
        except TimeoutError:
            return True
        return False

    def reset(self) -> None:
        """Vanish without DISCONNECT (RST), as a crashed client or a pulled cable does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def resolve_aliases(messages: list[Received]) -> list[str]:
    """The topic of each message, resolving server topic aliases as a client must."""
    known: dict[int, str] = {}
    topics = []
    for m in messages:
        if m.topic_alias is not None:
            if m.topic:
                known[m.topic_alias] = m.topic
            else:
                assert m.topic_alias in known, f"alias {m.topic_alias} was never bound"
        topics.append(m.topic or known[m.topic_alias or 0])
    return topics


def test_server_topic_aliases(shared_broker: BrokerProcess) -> None:
    port = shared_broker.mqtt_port
    top = unique("alias")
    # A client allowing one alias, one topic: the first PUBLISH binds it, the rest use it.
    one = MqttTestClient(port, unique("one"), version=5, topic_alias_maximum=1)
    try:
        one.subscribe(f"{top}/a", 2)
        for qos in range(3):
            one.publish(f"{top}/a", f"qos {qos}", qos)
        got = one.receive(3)
        assert [(m.topic, m.topic_alias) for m in got] == [(f"{top}/a", 1), ("", 1), ("", 1)]
        assert sorted(m.payload for m in got) == [b"qos 0", b"qos 1", b"qos 2"]
    finally:
        one.close()

    # Two aliases, three busy topics: every message resolves to its topic, aliases stay
    # within the client's maximum, and most messages are sent without their name.
    two = MqttTestClient(port, unique("two"), version=5, topic_alias_maximum=2)
    none = MqttTestClient(port, unique("none"), version=5)  # allows no aliases
    pub = MqttTestClient(port, unique("p"), version=5)
    try:
        two.subscribe(f"{top}/busy/#", 1)
        none.subscribe(f"{top}/busy/#", 1)
        sent = [f"{top}/busy/{name}" for name in "abababccccaacb" * 3]
        for topic in sent:
            pub.publish(topic, topic.encode(), 1)
        got = two.receive(len(sent))
        assert resolve_aliases(got) == [m.payload.decode() for m in got]
        assert sorted(m.payload.decode() for m in got) == sorted(sent)
        assert {m.topic_alias for m in got} - {None} == {1, 2}
        assert sum(m.topic == "" for m in got) > len(sent) // 2
        plain = none.receive(len(sent))
        assert [m.topic for m in plain] == [m.payload.decode() for m in plain]
        assert all(m.topic_alias is None for m in plain)
    finally:
        for client in (two, none, pub):
            client.close()


def test_overlapping_subscriptions_deliver_once_at_the_highest_qos(
    shared_broker: BrokerProcess,
) -> None:
    top = unique("overlap")
    client = MqttTestClient(shared_broker.mqtt_port, unique("o"), version=5)
    try:
        client.subscribe(f"{top}/#", 2)
        client.subscribe(f"{top}/+", 1)
        client.publish(f"{top}/C", b"overlapping topic filters", 2)
        got = client.receive(1)
        assert [(m.payload, m.qos) for m in got] == [(b"overlapping topic filters", 2)]
        assert client.receive(1, timeout=QUIET_S) == []  # one message, not one per filter
    finally:
        client.close()


def test_subscription_identifiers(shared_broker: BrokerProcess) -> None:
    port = shared_broker.mqtt_port
    top = unique("subid")
    a = MqttTestClient(port, unique("a"), version=5)
    b = MqttTestClient(port, unique("b"), version=5)
    plain = MqttTestClient(port, unique("c"), version=5)
    try:
        a.subscribe(top, 2, sub_id=456789)
        b.subscribe(top, 2, sub_id=2)
        b.subscribe(f"{top}/#", 2, sub_id=3)  # also matches the parent topic itself
        plain.subscribe(top, 2)
        b.publish(top, b"sub identifier test", 1)
        [got_a] = a.receive(1)
        assert got_a.subscription_ids == [456789]
        [got_b] = b.receive(1)
        assert sorted(got_b.subscription_ids) == [2, 3]  # one message naming both
        assert b.receive(1, timeout=QUIET_S) == []
        [got_plain] = plain.receive(1)
        assert got_plain.subscription_ids == []
    finally:
        for client in (a, b, plain):
            client.close()


def test_retained_messages_keep_properties_and_honour_subscribe_options(
    shared_broker: BrokerProcess,
) -> None:
    port = shared_broker.mqtt_port
    top = unique("retprops")
    props = PahoProperties(PacketTypes.PUBLISH)
    props.UserProperty = [("a", "2"), ("c", "3")]
    pub = MqttTestClient(port, unique("p"), version=5)
    sub = MqttTestClient(port, unique("s"), version=5)
    try:
        for qos in range(3):
            pub.publish(f"{top}/q{qos}", f"qos {qos}", qos, retain=True, properties=props)

        def retained(options: SubscribeOptions, expect: int) -> list[Received]:
            sub.subscribe(f"{top}/+", options=options)
            got = sub.receive(expect, timeout=5.0 if expect else QUIET_S)
            assert len(got) == expect, got
            assert sub.receive(1, timeout=QUIET_S if expect else 0.0) == []
            return got

        got = retained(SubscribeOptions(2, retainHandling=0), 3)
        assert sorted((m.payload, m.qos, m.retain) for m in got) == [
            (b"qos 0", 0, True),
            (b"qos 1", 1, True),
            (b"qos 2", 2, True),
        ]
        assert all(m.user_properties == [("a", "2"), ("c", "3")] for m in got)
        retained(SubscribeOptions(2, retainHandling=0), 3)  # 0: on every subscribe
        retained(SubscribeOptions(2, retainHandling=1), 0)  # 1: only on a new subscription
        retained(SubscribeOptions(2, retainHandling=2), 0)  # 2: never
        sub.client.unsubscribe(f"{top}/+")
        retained(SubscribeOptions(2, retainHandling=1), 3)  # new again after UNSUBSCRIBE

        # Retain As Published: live messages keep their RETAIN flag only when asked
        keep = MqttTestClient(port, unique("rap"), version=5)
        try:
            keep.subscribe(f"{top}/live", options=SubscribeOptions(1, retainAsPublished=True))
            sub.subscribe(f"{top}/live", 1)
            pub.publish(f"{top}/live", b"retain as published false", 1)
            pub.publish(f"{top}/live", b"retain as published true", 1, retain=True)
            assert [(m.payload, m.retain) for m in keep.receive(2)] == [
                (b"retain as published false", False),
                (b"retain as published true", True),
            ]
            assert [m.retain for m in sub.receive(2)] == [False, False]
        finally:
            keep.close()
    finally:
        pub.close()
        sub.close()


def test_retain_as_published_for_records_delivered_together(shared_broker: BrokerProcess) -> None:
    """Retain As Published holds for a QoS 0 subscription taking many records of one batch
    (the tailer offers them together): each keeps its RETAIN flag."""
    port = shared_broker.mqtt_port
    top = unique("raprun")
    sub = MqttTestClient(port, unique("s"), version=5)
    pub = MqttTestClient(port, unique("p"), version=5)
    try:
        sub.subscribe(f"{top}/live", options=SubscribeOptions(0, retainAsPublished=True))
        pub.publish(f"{top}/live", b"first", 1)  # creates the topic; the tailer is live
        assert [(m.payload, m.retain) for m in sub.receive(1)] == [(b"first", False)]
        producer = Producer({"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 100})
        for i in range(20):  # one batch: one read of the tailer
            retain = b"1" if i % 2 else b"0"
            headers = [("mqtt.qos", b"0"), ("mqtt.retain", retain)]
            producer.produce(top, f"m{i}".encode(), f"{top}/live".encode(), headers=headers)
        assert producer.flush(30) == 0
        assert [(m.payload, m.retain) for m in sub.receive(20)] == [
            (f"m{i}".encode(), bool(i % 2)) for i in range(20)
        ]
    finally:
        pub.close()
        sub.close()


def test_will_delay(shared_broker: BrokerProcess) -> None:
    """A will with a delay goes out that long after the connection is lost, unless the
    client is back in time; its user properties travel with it."""
    port = shared_broker.mqtt_port
    top = unique("willdelay")
    delay_s = 2
    watcher = MqttTestClient(port, unique("w"), version=5)
    try:
        watcher.subscribe(f"{top}/#", 1)

        def dying(name: str) -> RawClient:
            will = Will(
                f"{top}/{name}",
                f"{name} is gone".encode(),
                1,
                False,
                Properties(will_delay_interval=delay_s, user_properties=[("k", "v")]),
            )
            return RawClient(
                port, f"{top}-{name}", will=will, properties=Properties(session_expiry_interval=60)
            )

        late, back = dying("late"), dying("back")
        late.reset()
        back.reset()
        lost_at = time.monotonic()
        RawClient(port, f"{top}-back", clean=False).close()  # back in time: no will
        assert watcher.receive(1, timeout=delay_s - 0.5) == []  # not before the delay
        got = watcher.receive(1, timeout=10.0)
        assert time.monotonic() - lost_at >= delay_s - 0.2
        assert [(m.topic, m.payload, m.user_properties) for m in got] == [
            (f"{top}/late", b"late is gone", [("k", "v")])
        ]
        assert watcher.receive(1, timeout=QUIET_S) == []
    finally:
        watcher.close()


def test_session_expiry(shared_broker: BrokerProcess) -> None:
    port = shared_broker.mqtt_port
    top = unique("expiry")

    def session(name: str, expiry: int | None, clean: bool = False) -> MqttTestClient:
        return MqttTestClient(port, f"{top}-{name}", version=5, clean=clean, session_expiry=expiry)

    # no Session Expiry Interval: the session ends with the connection
    c = session("zero", None, clean=True)
    c.subscribe(top, 2)
    c.close()
    c = session("zero", None)
    assert not c.session_present
    c.close()

    # 2 s: there right after a disconnect, gone after the interval
    short = session("short", 2, clean=True)
    short.subscribe(top, 2)
    short.close()
    # 1 s at CONNECT, raised to 60 s at DISCONNECT
    raised = session("raised", 1, clean=True)
    raised.subscribe(top, 2)
    raised.close(session_expiry=60)
    c = session("short", 2)
    assert c.session_present
    c.close()
    time.sleep(3.5)  # the interval, plus up to a second for the expiry sweep
    c = session("short", 2)
    assert not c.session_present
    c.close()
    c = session("raised", 1)
    assert c.session_present
    c.close(session_expiry=0)  # lowered to 0 at DISCONNECT: gone at once
    c = session("raised", 1)
    assert not c.session_present
    c.close()


def test_server_keeps_within_the_clients_receive_maximum(shared_broker: BrokerProcess) -> None:
    top = unique("flow")
    client = RawClient(
        shared_broker.mqtt_port, unique("slow"), properties=Properties(receive_maximum=3)
    )
    pub = MqttTestClient(shared_broker.mqtt_port, unique("p"), version=5)
    try:
        client.send(Subscribe(1, [Subscription(top, 1)]))
        assert isinstance(client.next(), SubAck)
        for i in range(10):
            pub.publish(top, f"m{i}", 1)
        window = [client.next() for _ in range(3)]
        assert all(isinstance(p, Publish) for p in window)
        assert client.nothing_within(QUIET_S)  # three in flight, none acknowledged
        received: list[Publish] = window  # type: ignore[assignment]
        client.send(PubAck(received[0].packet_id or 0))  # one slot back: one more
        received.append(client.next())  # type: ignore[arg-type]
        assert client.nothing_within(QUIET_S)
        while len(received) < 10:
            client.send(*(PubAck(p.packet_id or 0) for p in received[-3:]))
            for _ in range(min(3, 10 - len(received))):
                received.append(client.next())  # type: ignore[arg-type]
        assert [p.payload for p in received] == [f"m{i}".encode() for i in range(10)]
    finally:
        pub.close()
        client.close()


def test_client_over_the_servers_receive_maximum_is_told_0x93(
    shared_broker: BrokerProcess,
) -> None:
    """QoS 2 PUBLISHes hold a slot until PUBCOMP; a client that sends more than the server's
    Receive Maximum without completing any gets DISCONNECT 0x93, and reads it."""
    top = unique("flood")
    client = RawClient(shared_broker.mqtt_port, unique("greedy"))
    try:
        limit = client.connack.properties.receive_maximum
        assert limit is not None
        client.send(*(Publish(f"{top}/x", b"q2", 2, False, False, i + 1) for i in range(limit + 5)))
        packets = []
        for _ in range(limit + 10):  # PUBRECs for what was taken, then the DISCONNECT
            packet = client.next()
            packets.append(packet)
            if not isinstance(packet, PubRec):
                break
        assert isinstance(packets[-1], Disconnect), packets[-1]
        assert packets[-1].reason_code == Reason.RECEIVE_MAXIMUM_EXCEEDED
        assert client.next() is None
    finally:
        client.close()
