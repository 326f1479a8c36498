"""The ``$SYS/broker/...`` statistics tree, read the way monitoring tools read mosquitto's:
paho-mqtt and mosquitto_sub subscribed to ``$SYS/#``, watching the counters move."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from bayou.protocol.mqtt import encode
from bayou.protocol.mqtt.packets import MQTT_5, ConnAck, Connect, PubAck, Publish, Reason
from tests.support.broker import BrokerProcess
from tests.support.mqtt import MqttTestClient, PacketReader, unique

pytestmark = pytest.mark.timeout(120)

SYS_INTERVAL_S = 1  # mosquitto's default is 10 s; 1 s keeps the tests short


@pytest.fixture(scope="module")
def sys_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("sys") / "data",
        env={"BAYOU_MQTT_SYS_INTERVAL": str(SYS_INTERVAL_S)},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


class SysWatcher:
    """A paho subscriber of ``$SYS/#`` keeping the latest value of each topic."""

    def __init__(self, port: int) -> None:
        self.client = MqttTestClient(port, unique("sys"), version=5)
        self.values: dict[str, str] = {}
        self.client.subscribe("$SYS/#", 1)

    def wait_for(
        self, what: str, check: Callable[[dict[str, str]], bool], timeout: float = 15.0
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while not check(self.values):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}; last values: {self.values}"
            for msg in self.client.receive(1, timeout=min(left, 0.5)):
                assert msg.topic.startswith("$SYS/broker/"), msg.topic
                self.values[msg.topic] = msg.payload.decode()
        return dict(self.values)

    def close(self) -> None:
        self.client.close()


def number(values: dict[str, str], name: str) -> int:
    return int(values.get(f"$SYS/broker/{name}", "-1").split()[0])


def test_sys_counters_move_and_wildcards_do_not_see_them(sys_broker: BrokerProcess) -> None:
    top = unique("stats")
    everything = MqttTestClient(sys_broker.mqtt_port, unique("all"))
    everything.subscribe("#", 0)  # MQTT 4.7.2: '#' must not match $SYS topics
    watcher = SysWatcher(sys_broker.mqtt_port)
    try:
        # retained: the whole tree arrives on subscribe, without waiting for an update
        first = watcher.wait_for(
            "the retained tree",
            lambda v: "$SYS/broker/version" in v and "$SYS/broker/publish/messages/received" in v,
            5.0,
        )
        assert first["$SYS/broker/version"].startswith("bayou version ")
        assert first["$SYS/broker/uptime"].endswith(" seconds")
        for name in (
            "clients/connected",
            "clients/total",
            "messages/received",
            "messages/sent",
            "bytes/received",
            "bytes/sent",
            "subscriptions/count",
            "retained messages/count",
            "load/bytes/received/1min",
        ):
            assert f"$SYS/broker/{name}" in first, name
        received = number(first, "publish/messages/received")
        in_bytes = number(first, "bytes/received")
        retained = number(first, "retained messages/count")

        pub = MqttTestClient(sys_broker.mqtt_port, unique("pub"))
        try:
            for i in range(25):
                pub.publish(f"{top}/x", b"p" * 100, qos=1, retain=(i == 0))
            later = watcher.wait_for(
                "the counters to count 25 PUBLISHes",
                lambda v: (
                    number(v, "publish/messages/received") >= received + 25
                    and number(v, "clients/connected") >= 3
                ),
            )
        finally:
            pub.close()
        # a burst of plain PUBLISHes in one write (the door takes them as one run): each counts
        with socket.create_connection(("127.0.0.1", sys_broker.mqtt_port), 5) as sock:
            sock.settimeout(5)
            sock.sendall(encode(Connect(unique("burst"), MQTT_5)))
            assert isinstance(PacketReader(sock).next(), ConnAck)
            sock.sendall(encode(Publish(f"{top}/burst", b"b"), MQTT_5) * 50)
            watcher.wait_for(
                "the counters to count the burst's 50 PUBLISHes",
                lambda v: number(v, "publish/messages/received") >= received + 75,
            )
        assert number(later, "bytes/received") >= in_bytes + 25 * 100
        assert number(later, "retained messages/count") == retained + 1
        assert number(later, "subscriptions/count") >= 2
        assert number(later, "uptime") >= number(first, "uptime")
        watcher.wait_for(
            "the uptime to move", lambda v: number(v, "uptime") > number(first, "uptime")
        )

        got = everything.receive(25, timeout=10)
        assert [m.topic for m in got] == [f"{top}/x"] * 25  # its own messages, no $SYS
        assert [m for m in everything.receive(100, timeout=0.3) if m.topic.startswith("$")] == []
    finally:
        watcher.close()
        everything.close()


def test_sys_is_the_brokers_own_tree(sys_broker: BrokerProcess) -> None:
    """A client cannot publish into $SYS (5.0: PUBACK 0x87), and $SYS is no Kafka topic:
    neither subscribing to it nor publishing to it creates one."""
    with socket.create_connection(("127.0.0.1", sys_broker.mqtt_port), 5) as sock:
        sock.settimeout(5)
        reader = PacketReader(sock)
        sock.sendall(encode(Connect(unique("forger"), MQTT_5), MQTT_5))
        assert isinstance(reader.next(), ConnAck)
        sock.sendall(encode(Publish("$SYS/broker/version", b"forged", 1, True, False, 7), MQTT_5))
        ack = reader.next()
        assert isinstance(ack, PubAck) and ack.packet_id == 7
        assert ack.reason_code == Reason.NOT_AUTHORIZED
    watcher = SysWatcher(sys_broker.mqtt_port)
    try:
        values = watcher.wait_for("the version", lambda v: "$SYS/broker/version" in v, 5.0)
        assert values["$SYS/broker/version"].startswith("bayou version ")
    finally:
        watcher.close()
    admin = AdminClient({"bootstrap.servers": sys_broker.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert not [t for t in topics if t == "mqtt" or "SYS" in t], sorted(topics)


@pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None and not os.environ.get("CI"),  # in CI: a failure
    reason="mosquitto-clients are installed by make test",
)
def test_mosquitto_sub_reads_the_uptime(sys_broker: BrokerProcess) -> None:
    out = subprocess.run(
        [
            "mosquitto_sub",
            "-p",
            str(sys_broker.mqtt_port),
            "-t",
            "$SYS/broker/uptime",
            "-v",
            "-C",
            "2",
            "-W",
            "15",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    # the retained value, then the next update a second later
    assert len(out) == 2 and all(line.startswith("$SYS/broker/uptime ") for line in out)
    seconds = [int(line.split()[1]) for line in out]
    assert seconds[1] > seconds[0]


def test_sys_interval_zero_turns_the_tree_off(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", env={"BAYOU_MQTT_SYS_INTERVAL": "0"}).start()
    try:
        client = MqttTestClient(broker.mqtt_port, unique("s"))
        try:
            client.subscribe("$SYS/#", 0)
            assert client.receive(1, timeout=1.0) == []
        finally:
            client.close()
    finally:
        broker.kill()
