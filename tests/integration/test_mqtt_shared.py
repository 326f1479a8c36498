"""MQTT shared subscriptions on Kafka share groups: members compete per message, and what a
member holds goes to the others when it dies (real paho-mqtt clients, a real broker)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from tests.support.broker import BrokerProcess
from tests.support.mqtt import MqttTestClient, Received, unique

DEADLINE_S = 60.0


def publish_all(port: int, topics_and_payloads: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 with paho's own window and wait for every PUBACK."""
    pub = MqttTestClient(port, unique("pub"))
    try:
        infos = [pub.client.publish(t, p, 1) for t, p in topics_and_payloads]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        pub.close()


def collect(clients: list[MqttTestClient], total: int) -> list[list[Received]]:
    """What each client receives until ``total`` messages came in all (bounded)."""
    got: list[list[Received]] = [[] for _ in clients]
    deadline = time.monotonic() + DEADLINE_S
    while sum(map(len, got)) < total and time.monotonic() < deadline:
        for i, c in enumerate(clients):
            got[i].extend(c.receive(total, timeout=0.05))
    return got


def test_two_members_share_every_message_once_and_a_plain_subscriber_gets_all(
    shared_broker: BrokerProcess,
) -> None:
    top = unique("sh")
    port = shared_broker.mqtt_port
    members = [
        MqttTestClient(port, unique("m5"), version=5),
        MqttTestClient(port, unique("m4")),
    ]
    plain = MqttTestClient(port, unique("plain"), version=5)
    try:
        for m in members:
            m.subscribe(f"$share/g/{top}/#", 1)
        plain.subscribe(f"{top}/#", 1)
        sent = [(f"{top}/dev/{i % 7}", f"m {i}".encode()) for i in range(1000)]
        publish_all(port, sent)
        got = collect(members, 1000)
        everything = sorted(x.payload for x in plain.receive(1000, timeout=DEADLINE_S))
        assert everything == sorted(p for _t, p in sent)
        counts = [len(g) for g in got]
        assert all(c > 0 for c in counts), counts
        shared = [x.payload for g in got for x in g]
        assert sorted(shared) == sorted(p for _t, p in sent), counts  # each exactly once
        assert all(x.qos == 1 and not x.dup for g in got for x in g)
        for m in members:
            assert m.receive(1, timeout=1.0) == []  # and nothing twice afterwards
    finally:
        plain.close()
        for m in members:
            m.close()


HOLDER = r"""
import sys
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

port, client_id, topic_filter = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                protocol=mqtt.MQTTv5, manual_ack=True)
c.on_subscribe = lambda *a: print("subscribed", flush=True)
c.on_message = lambda cl, u, msg: print(msg.payload.decode(), flush=True)  # never acked
props = Properties(PacketTypes.CONNECT)
props.ReceiveMaximum = 10
c.on_connect = lambda cl, u, f, r, p: cl.subscribe(topic_filter, 1)
c.connect("127.0.0.1", port, 30, properties=props)
c.loop_forever()
"""


class Lines:
    """The lines a child process prints, read by a thread (bounded waits)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.stream = proc.stdout
        self.lines: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.stream:
            self.lines.put(line.strip())

    def take(self, n: int, timeout: float) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                out.append(self.lines.get(timeout=left))
            except queue.Empty:
                break
        return out


def test_a_member_killed_holding_unacknowledged_messages_hands_them_to_the_other(
    shared_broker: BrokerProcess,
) -> None:
    top = unique("kill")
    port = shared_broker.mqtt_port
    share = f"$share/w/{top}/#"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(port), unique("holder"), share],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = Lines(holder)
    other = None
    try:
        assert lines.take(1, 15) == ["subscribed"]
        # the holder joins first and takes its window of 10, which it never acknowledges
        publish_all(port, [(f"{top}/a", f"first {i}".encode()) for i in range(10)])
        held = lines.take(10, 15)
        assert sorted(held) == sorted(f"first {i}" for i in range(10))
        other = MqttTestClient(port, unique("other"), version=5)
        other.subscribe(share, 1)
        sent = [(f"{top}/b/{i % 3}", f"then {i}".encode()) for i in range(100)]
        publish_all(port, sent)
        # the holder's window is full: the other member gets every later message
        later = other.receive(100, timeout=DEADLINE_S)
        assert sorted(x.payload for x in later) == sorted(p for _t, p in sent)
        assert lines.take(1, 0.5) == []
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        handed_over = other.receive(10, timeout=DEADLINE_S)
        assert sorted(x.payload.decode() for x in handed_over) == sorted(held)
        assert all(x.dup for x in handed_over)  # delivered before: DUP set
        assert other.receive(1, timeout=1.0) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        lines.thread.join(10)
        if holder.stdout is not None:
            holder.stdout.close()
        if other is not None:
            other.close()


def test_a_member_that_stops_acknowledging_loses_its_messages_to_the_other(
    shared_broker: BrokerProcess,
) -> None:
    top = unique("slow")
    port = shared_broker.mqtt_port
    share = f"$share/s/{top}/#"
    # the share group's lock duration, set through Kafka's admin API before it exists
    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    try:
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.GROUP,
                    f"mqtt-share:s/{top}/#",
                    {"share.record.lock.duration.ms": "1000"},
                )
            ],
            incremental=True,
        )
    finally:
        admin.close()
    slow = MqttTestClient(port, unique("slow"), version=5, receive_maximum=5, manual_ack=True)
    other = None
    try:
        slow.subscribe(share, 1)
        sent = [(f"{top}/a", f"job {i}".encode()) for i in range(10)]
        publish_all(port, sent)
        held = slow.receive(5)  # its window; it never acknowledges them
        assert len(held) == 5
        other = MqttTestClient(port, unique("other"), version=5)
        other.subscribe(share, 1)
        got = other.receive(10, timeout=DEADLINE_S)
        assert sorted(x.payload for x in got) == sorted(p for _t, p in sent)
        redelivered = sorted(x.payload for x in got if x.dup)
        assert redelivered == sorted(x.payload for x in held)  # once their locks ran out
        assert slow.receive(1, timeout=0.5) == []  # still connected, window still full
    finally:
        slow.close()
        if other is not None:
            other.close()
