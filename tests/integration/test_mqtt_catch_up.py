"""The MQTT catch-up path with real paho clients against a real broker.

A subscriber that falls behind — its queue of ``MAX_QUEUED`` messages is full, because it
reads slowly or not at all — is no longer fed by the tailer: it records where it stopped and
later reads the rest of each partition from the log itself, sharing decoded reads with other
sessions, until it reaches the tailer and goes live again (docs/design/mqtt.md, "Flow
control").  What the design promises, and what these tests assert:

- *The log is the queue*: a slow subscriber that stays connected loses nothing, whatever its
  QoS — the catch-up reads the log, so QoS 0 messages that did not fit in its queue are read
  back too, not dropped (QoS 0 is "dropped" only for a client that is offline).
- Order per MQTT topic: one MQTT topic is one Kafka record key, so one partition, and a
  session never sends a record of a partition before an earlier one of that partition.
- No redelivery within one connection: the broker resends a QoS 1 PUBLISH (DUP) only after a
  reconnect, and none happens here, so every message arrives exactly once — not only
  "at least once with distinct payloads complete".
- Publishers never wait for subscribers: a subscriber on the same filter that keeps up gets
  everything while the slow one sits stalled on its first message.

The Kafka topic has several partitions and the MQTT topics are chosen to cover all of them,
so catch-up runs on several partitions at once.  Every wait is bounded and waits on a
condition set by the paho callbacks; the only deliberate pauses are the stalls themselves
(an ``on_message`` blocked on an event the test sets) and a 0.3 s check that nothing more
arrives after the last expected message.

Found by the persistent-session test: a session that disconnected while both queued and
behind on a partition resumed from the catch-up offset, losing what its queue held (up to
``MAX_QUEUED`` messages) — fixed in ``Session.go_offline``.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import defaultdict
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from bayou.gateways.mqtt.delivery import MAX_QUEUED
from bayou.gateways.mqtt.inflight import DEFAULT_INFLIGHT
from bayou.gateways.mqtt.mapping import partition_for
from bayou.protocol.mqtt import encode
from bayou.protocol.mqtt.packets import (
    MQTT_311,
    ConnAck,
    Connect,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from tests.support.broker import BrokerProcess
from tests.support.mqtt import PacketReader, unique

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 3
TOPICS = 4  # MQTT topics, covering every partition
PER_TOPIC = 1500
TOTAL = TOPICS * PER_TOPIC
WAIT_S = 20.0  # bound of every wait for messages
SMALL_RCVBUF = 32 * 1024
STALL_MAX_S = 30.0  # a stalled callback gives up after this even if a test forgets it


class Subscriber:
    """A paho subscriber that records every message its ``on_message`` sees, in order.

    The callbacks are installed before CONNECT, so what a persistent session gets right
    after reconnecting is recorded too.  They run in paho's network thread.  With a
    ``gate`` the first message blocks that thread until the gate opens: the client stops
    reading its socket and, at QoS 1, acknowledging — how a slow client looks to the
    broker.  With ``drop_on_release`` it then disconnects instead of reading on.
    """

    def __init__(
        self,
        broker: BrokerProcess,
        client_id: str,
        *,
        version: int = 4,
        clean: bool = True,
        gate: threading.Event | None = None,
        drop_on_release: bool = False,
    ) -> None:
        self._cond = threading.Condition()
        self.arrivals: list[tuple[str, bytes, int, bool]] = []  # topic, payload, qos, dup
        self.distinct: set[bytes] = set()
        self.gate = gate
        self.drop_on_release = drop_on_release
        self.stalled = threading.Event()  # the gate holds the first message
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.subscribed = threading.Event()
        self.session_present = False
        v5 = version == 5
        kwargs: dict[str, Any] = {} if v5 else {"clean_session": clean}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            **kwargs,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async(
            "127.0.0.1",
            broker.mqtt_port,
            30,
            clean_start=clean if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        )
        self.client.loop_start()
        if not self.connected.wait(WAIT_S):
            self.close()
            raise TimeoutError("no CONNACK")

    def _on_connect(
        self, _client: Any, _userdata: Any, flags: Any, _reason: Any, _props: Any
    ) -> None:
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_message(self, client: Any, _userdata: Any, msg: Any) -> None:
        with self._cond:
            self.arrivals.append((msg.topic, msg.payload, msg.qos, bool(msg.dup)))
            self.distinct.add(msg.payload)
            self._cond.notify_all()
        gate = self.gate
        if gate is not None and not self.stalled.is_set():
            self.stalled.set()
            gate.wait(STALL_MAX_S)
            if self.drop_on_release:
                client.disconnect()

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self.subscribed.clear()
        result, _mid = self.client.subscribe(topic_filter, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert self.subscribed.wait(WAIT_S), "no SUBACK"

    def wait_distinct(self, n: int, timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.distinct) >= n, timeout)

    def wait_all_of(self, wanted: set[bytes], timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: wanted <= self.distinct, timeout)

    def wait_arrivals_over(self, n: int, timeout: float) -> bool:
        """True if more than ``n`` messages arrive within ``timeout`` (expected: False)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.arrivals) > n, timeout)

    def snapshot(self) -> list[tuple[str, bytes, int, bool]]:
        with self._cond:
            return list(self.arrivals)

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.client.disconnect()
        self.client.loop_stop()


def create_topic(broker: BrokerProcess, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(15)


def spread_topics(prefix: str, count: int, partitions: int) -> list[str]:
    """``count`` MQTT topics under ``prefix`` whose records land on every partition."""
    chosen: list[str] = []
    covered: set[int] = set()
    i = 0
    while len(chosen) < count:
        topic = f"{prefix}/dev{i}"
        p = partition_for(topic.encode(), partitions)
        if p not in covered or len(covered) == partitions:
            chosen.append(topic)
            covered.add(p)
        i += 1
    return chosen


def payload(topic_index: int, seq: int, size: int) -> bytes:
    head = f"{topic_index}:{seq:06d}:".encode()
    return head + b"x" * max(0, size - len(head))


class Publisher:
    """A paho 3.1.1 publisher with many QoS 1 PUBLISHes in flight (paho allows 20 by default,
    and the limit can only be set before connecting)."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("pub"))
        self.client.max_inflight_messages_set(200)
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.connect_async("127.0.0.1", broker.mqtt_port, 30)
        self.client.loop_start()
        if not self.connected.wait(WAIT_S):
            self.close()
            raise TimeoutError("no CONNACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_range(pub: Publisher, topics: list[str], start: int, stop: int, size: int) -> None:
    """Sequence numbers ``start``..``stop - 1`` on every topic, interleaved, at QoS 1 with
    many in flight; returns once every PUBACK is in (the records are in the log)."""
    infos = []
    for seq in range(start, stop):
        for t, topic in enumerate(topics):
            info = pub.client.publish(topic, payload(t, seq, size), 1)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
            infos.append(info)
    deadline = time.monotonic() + WAIT_S
    for info in infos:
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        assert info.is_published(), "PUBACK missing"


def sequence_problems(
    arrivals: list[tuple[str, bytes, int, bool]], topics: list[str], per_topic: int
) -> list[str]:
    """What is wrong with the arrivals against "every message once, in order per topic"."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for topic, data, _qos, _dup in arrivals:
        t, seq, _rest = data.split(b":", 2)
        assert topics[int(t)] == topic, f"payload of {topics[int(t)]} arrived on {topic}"
        seqs[topic].append(int(seq))
    problems = []
    for topic in topics:
        got = seqs[topic]
        if got == list(range(per_topic)):
            continue
        dups = len(got) - len(set(got))
        missing = per_topic - len(set(got) & set(range(per_topic)))
        first_bad = next((i for i, s in enumerate(got) if s != i), len(got))
        problems.append(
            f"{topic}: {len(got)} arrivals, {dups} duplicates, {missing} missing, "
            f"first out of place at #{first_bad}: {got[first_bad : first_bad + 5]}"
        )
    return problems


def per_topic(arrivals: list[tuple[str, bytes, int, bool]]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for topic, data, _qos, _dup in arrivals:
        seqs[topic].append(int(data.split(b":", 2)[1]))
    return seqs


def all_payloads(count: int, size: int) -> set[bytes]:
    return {payload(t, seq, size) for t in range(TOPICS) for seq in range(count)}


@pytest.mark.parametrize("qos", [1, 0])
def test_slow_subscriber_catches_up_from_the_log_and_a_fast_one_is_not_held_back(
    shared_broker: BrokerProcess,
    qos: int,
) -> None:
    """A subscriber stalls on its first message while half the stream is published, then
    reads on while the second half is published; one on the same filter keeps up.

    At QoS 1 the stalled 3.1.1 client has 20 PUBLISHes in flight and a full queue of
    ``MAX_QUEUED``; at QoS 0 nothing bounds what the broker sends but TCP, so the messages
    are 1 KiB (several MB in all, more than the socket buffers hold) and the broker's
    writes pause first.  Either way most of the first half reaches it only by catch-up,
    on every partition, and it goes live again while the second half is being published.
    """
    top = unique(f"cu{qos}")
    create_topic(shared_broker, top, PARTITIONS)
    topics = spread_topics(top, TOPICS, PARTITIONS)
    half = PER_TOPIC // 2
    size = 64 if qos else 4096
    assert TOPICS * half > MAX_QUEUED + DEFAULT_INFLIGHT + 1
    gate = threading.Event()
    clients: list[Subscriber | Publisher] = []
    try:
        fast = Subscriber(shared_broker, unique("fast"), version=5)
        clients.append(fast)
        slow = Subscriber(shared_broker, unique("slow"), gate=gate)
        clients.append(slow)
        pub = Publisher(shared_broker)
        clients.append(pub)
        # A small receive buffer (it also turns off the kernel's autotuning, which lets a
        # loopback socket buffer many MB): MBs of QoS 0 messages are then certain to back
        # up into the broker, whatever the machine's limits.
        sock = slow.client.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
        fast.subscribe(f"{top}/#", qos)
        slow.subscribe(f"{top}/#", qos)

        publish_range(pub, topics, 0, half, size)
        # the fast one gets the whole first half while the slow one sits on its first
        # message: the slow one holds nobody back
        assert fast.wait_distinct(TOPICS * half), f"fast got {len(fast.distinct)}"
        assert slow.stalled.wait(WAIT_S), "the slow subscriber got nothing"
        assert len(slow.snapshot()) == 1
        gate.set()
        publish_range(pub, topics, half, PER_TOPIC, size)
        assert fast.wait_distinct(TOTAL), f"fast got {len(fast.distinct)} of {TOTAL}"
        assert slow.wait_distinct(TOTAL), f"slow got {len(slow.distinct)} of {TOTAL}"
        # and nothing more: a redelivery would be an arrival beyond TOTAL
        assert not slow.wait_arrivals_over(TOTAL, 0.3)
        assert not fast.wait_arrivals_over(TOTAL, 0.0)
        assert not slow.disconnected.is_set() and not fast.disconnected.is_set()
    finally:
        for client in clients:
            client.close()
    # Every message exactly once, in publish order per topic, at the subscribed QoS and
    # never flagged DUP (one connection: nothing is resent).  At QoS 0 this is the same
    # promise: the log is the queue, so a connected QoS 0 subscriber that falls behind
    # loses nothing either.
    for name, sub in (("fast", fast), ("slow", slow)):
        arrivals = sub.snapshot()
        assert sequence_problems(arrivals, topics, PER_TOPIC) == [], name
        assert {q for _t, _p, q, _d in arrivals} == {qos}, name
        assert not any(dup for _t, _p, _q, dup in arrivals), name


def test_persistent_session_that_leaves_while_behind_resumes_where_it_was(
    shared_broker: BrokerProcess,
) -> None:
    """A QoS 1 persistent session falls behind (20 in flight, a full queue, the rest in the
    log), disconnects, misses more while offline, and reconnects while publishing goes on.

    Asserted: with what the first connection got, the second gets every message; in
    order per topic on each connection; the only duplicates are resends (DUP) of messages
    the first connection had in flight without acknowledging them, at most 20.
    """
    top = unique("cup")
    create_topic(shared_broker, top, PARTITIONS)
    topics = spread_topics(top, TOPICS, PARTITIONS)
    quarter = PER_TOPIC // 4
    size = 64
    client_id = unique("pers")
    gate = threading.Event()
    clients: list[Subscriber | Publisher] = []
    try:
        first = Subscriber(shared_broker, client_id, clean=False, gate=gate, drop_on_release=True)
        clients.append(first)
        pub = Publisher(shared_broker)
        clients.append(pub)
        first.subscribe(f"{top}/#", 1)
        publish_range(pub, topics, 0, 2 * quarter, size)
        assert first.stalled.wait(WAIT_S), "the subscriber got nothing"
        gate.set()  # it disconnects from its stalled callback (a normal DISCONNECT)
        assert first.disconnected.wait(WAIT_S)
        first.close()
        publish_range(pub, topics, 2 * quarter, 3 * quarter, size)  # while it is away
        second = Subscriber(shared_broker, client_id, clean=False)
        clients.append(second)
        assert second.session_present
        publish_range(pub, topics, 3 * quarter, PER_TOPIC, size)  # while it catches up
        missing = all_payloads(PER_TOPIC, size) - first.distinct
        complete = second.wait_all_of(missing)
        assert complete, (
            f"second connection: {len(missing - second.distinct)} of {len(missing)} still missing"
        )
        assert not second.wait_arrivals_over(len(second.snapshot()), 0.3)
    finally:
        for client in clients:
            client.close()
        Subscriber(shared_broker, client_id, clean=True).close()  # drops the session
    before, after = first.snapshot(), second.snapshot()
    assert len(before) < TOPICS * 2 * quarter  # it really was behind when it left
    for seqs in (per_topic(before), per_topic(after)):
        for topic in topics:
            assert seqs[topic] == sorted(set(seqs[topic])), f"{topic}: out of order or repeated"
    again = [(t, p, dup) for t, p, _q, dup in after if p in first.distinct]
    assert len(again) <= DEFAULT_INFLIGHT
    assert all(dup for _t, _p, dup in again), "a redelivery without DUP"
    for topic in topics:  # each connection saw a contiguous stretch, the second to the end
        got_before, got_after = per_topic(before)[topic], per_topic(after)[topic]
        assert got_before == list(range(len(got_before)))
        assert got_after == list(range(got_after[0], PER_TOPIC))
        assert got_after[0] <= len(got_before)


def test_acknowledgements_sent_together_free_their_slots_and_never_widen_the_window(
    shared_broker: BrokerProcess,
) -> None:
    """A raw 3.1.1 QoS 1 subscriber that acknowledges in bursts — up to 20 PUBACKs in one
    write, the broker reads them as one chunk and refills the window once — while its
    session catches up from the log on several partitions.

    Asserted: never more than 20 PUBLISHes unacknowledged (nothing beyond the window waits
    on the socket once 20 are in); every message exactly once, none with DUP, in order per
    topic; the packet ids in flight are distinct."""
    top = unique("burst")
    create_topic(shared_broker, top, PARTITIONS)
    topics = spread_topics(top, TOPICS, PARTITIONS)
    per = 600  # 2,400 messages: more than a queue, so the session reads from the log
    size = 32
    sock = socket.create_connection(("127.0.0.1", shared_broker.mqtt_port), WAIT_S)
    sock.settimeout(WAIT_S)
    reader = PacketReader(sock, MQTT_311)
    pub: Publisher | None = None
    arrivals: list[tuple[str, bytes, int, bool]] = []
    try:
        sock.sendall(encode(Connect(unique("burst"), MQTT_311, keep_alive=60), MQTT_311))
        assert isinstance(reader.next(), ConnAck)
        sock.sendall(encode(Subscribe(1, [Subscription(f"{top}/#", 1)]), MQTT_311))
        assert isinstance(reader.next(), SubAck)
        pub = Publisher(shared_broker)
        publish_range(pub, topics, 0, per, size)  # all in the log before the first ack
        in_flight: list[Publish] = []
        burst = 0
        while len(arrivals) < TOPICS * per:
            while len(in_flight) < DEFAULT_INFLIGHT and len(arrivals) < TOPICS * per:
                packet = reader.next()
                assert isinstance(packet, Publish), packet
                in_flight.append(packet)
                arrivals.append((packet.topic, packet.payload, packet.qos, packet.dup))
            pids = [p.packet_id for p in in_flight]
            assert len(set(pids)) == len(pids), f"packet ids reused while in flight: {pids}"
            if len(arrivals) < TOPICS * per:
                readable, _, _ = select.select([sock], [], [], 0.02)
                assert not readable, "a PUBLISH beyond the 20 in flight"
            burst = burst % DEFAULT_INFLIGHT + 1  # 1, 2, ... 20 PUBACKs in one write
            acked, in_flight = in_flight[:burst], in_flight[burst:]
            sock.sendall(b"".join(encode(PubAck(p.packet_id or 0), MQTT_311) for p in acked))
    finally:
        if pub is not None:
            pub.close()
        sock.close()
    assert not sequence_problems(arrivals, topics, per)
    assert all(qos == 1 and not dup for _t, _p, qos, dup in arrivals)
