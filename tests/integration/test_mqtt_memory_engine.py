"""The MQTT door on the in-memory engine (``bayou serve --storage memory://``): it sees the
broker only through the core, so its main flow works on any engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

from tests.support.broker import BrokerProcess
from tests.support.mqtt import MqttTestClient, unique
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(120)


def test_publish_subscribe_retained_and_a_persistent_session_on_the_memory_engine(
    tmp_path: Path,
) -> None:
    broker = BrokerProcess(
        tmp_path / "data", extra_args=["--storage", "memory://"], doors=("mqtt",)
    ).start()
    port = broker.mqtt_port
    top = unique("mem")
    persistent_id = unique("pers")
    clients: list[MqttTestClient] = []
    try:
        every = MqttTestClient(port, unique("all"))
        clients.append(every)
        every.subscribe(f"{top}/#", 0)
        temps = MqttTestClient(port, unique("temps"), version=5)
        clients.append(temps)
        temps.subscribe(f"{top}/+/temp", 1)
        away = MqttTestClient(port, persistent_id, clean=False)
        away.subscribe(f"{top}/#", 1)
        away.close()

        pub = MqttTestClient(port, unique("pub"), version=5)
        clients.append(pub)
        pub.publish(f"{top}/room1/temp", b"21.5", qos=1)
        pub.publish(f"{top}/room1/humidity", b"40", qos=0)
        pub.publish(f"{top}/status", b"online", qos=1, retain=True)

        sent = [
            (f"{top}/room1/temp", b"21.5"),
            (f"{top}/room1/humidity", b"40"),
            (f"{top}/status", b"online"),
        ]
        assert [(m.topic, m.payload) for m in every.receive(3)] == sent
        got = temps.receive(1)
        assert [(m.topic, m.payload, m.qos) for m in got] == [(f"{top}/room1/temp", b"21.5", 1)]
        assert temps.receive(1, timeout=0.5) == []

        late = MqttTestClient(port, unique("late"))
        clients.append(late)
        late.subscribe(f"{top}/status", 1)
        [status] = late.receive(1)
        assert (status.payload, status.retain) == (b"online", True)

        # the persistent session kept what was published while it was away
        back = MqttTestClient(port, persistent_id, clean=False)
        clients.append(back)
        assert back.session_present
        assert [(m.topic, m.payload) for m in back.receive(3)] == sent
        back.close()
        pub.publish(f"{top}/room2/temp", b"19.0", qos=1)
        again = MqttTestClient(port, persistent_id, clean=False)
        clients.append(again)
        assert again.session_present
        assert [m.payload for m in again.receive(1)] == [b"19.0"]
        assert again.receive(1, timeout=0.5) == []

        # and its positions are a consumer group's offsets, as on the local engine
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        group = f"mqtt:{persistent_id}"

        def committed() -> dict[tuple[str, int], int]:
            result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[
                group
            ].result(15)
            return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}

        wait_until("the session's positions in its group", lambda: committed() == {(top, 0): 4})
    finally:
        for client in clients:
            client.close()
        broker.kill()
