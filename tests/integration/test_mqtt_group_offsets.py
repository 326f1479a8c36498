"""MQTT persistent sessions as consumer groups: their positions are the committed offsets of
the group ``mqtt:<client id>``, so Kafka's tools see MQTT subscribers and their lag
(docs/design/mqtt.md, "Sessions").  Real paho clients, the ``bayou`` CLI and
confluent-kafka's admin client against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bayou.config import internal_log_config
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.log import PartitionLog
from tests.support.broker import BrokerProcess
from tests.support.mqtt import MqttTestClient, unique
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 15.0


def bayou_json(broker: BrokerProcess, *args: str) -> Any:
    """``bayou -b … ARGS --format json``, parsed (None when it fails)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BAYOU_BOOTSTRAP", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bayou", "-b", broker.bootstrap, *args, "--format", "json"],
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def bayou_lines(broker: BrokerProcess, *args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BAYOU_BOOTSTRAP", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bayou", "-b", broker.bootstrap, *args],
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=True,
    )
    return proc.stdout.decode().splitlines()


def committed(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT_S
    )
    result = futures[group].result(TIMEOUT_S)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def groups(admin: AdminClient) -> set[str]:
    listed = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    return {g.group_id for g in listed.valid}


def create_topic(broker: BrokerProcess, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(TIMEOUT_S)


def test_a_persistent_subscriber_behind_shows_its_lag_as_a_consumer_group(
    shared_broker: BrokerProcess,
) -> None:
    top = unique("lag")
    create_topic(shared_broker, top)
    client_id = unique("sub")
    group = f"mqtt:{client_id}"
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    sub = MqttTestClient(shared_broker.mqtt_port, client_id, clean=False)
    sub.subscribe(f"{top}/#", 1)
    sub.close()
    pub = MqttTestClient(shared_broker.mqtt_port, unique("pub"))
    try:
        for i in range(20):
            pub.publish(f"{top}/dev", f"m{i}".encode(), qos=1)
    finally:
        pub.close()

    # offline, the session holds offset 0 of the 20 records: a lag of 20 that every tool sees
    def described() -> Any:
        return bayou_json(shared_broker, "group", "describe", group)

    wait_until(
        "the group to show the session's lag",
        lambda: (
            (d := described()) is not None and d["partitions"] and d["partitions"][0]["lag"] == 20
        ),
    )
    info = described()
    assert info["state"] == "Empty" and info["members"] == []
    assert info["partitions"] == [
        {"topic": top, "partition": 0, "committed": 0, "log_end": 20, "lag": 20, "member": None}
    ]
    assert committed(admin, group) == {(top, 0): 0}
    listed = [line.split() for line in bayou_lines(shared_broker, "group", "list")]
    assert [group, "Empty", "classic", "20"] in listed

    # back online, it gets the 20 messages; once acknowledged its offset is the log end
    sub = MqttTestClient(shared_broker.mqtt_port, client_id, clean=False)
    try:
        assert sub.session_present
        assert [m.payload for m in sub.receive(20)] == [f"m{i}".encode() for i in range(20)]
        wait_until(
            "the acknowledged messages to be committed",
            lambda: committed(admin, group) == {(top, 0): 20},
        )
    finally:
        sub.close()
    assert described()["partitions"][0]["lag"] == 0

    # a clean start ends the session, and its group with it
    MqttTestClient(shared_broker.mqtt_port, client_id, clean=True).close()
    wait_until("the session's group to be deleted", lambda: group not in groups(admin))


def test_sessions_stored_before_positions_were_group_offsets_resume_where_they_were(
    tmp_path: Path,
) -> None:
    """A data directory written by the previous version: the session document holds the
    positions (format 1) and the retained log its message; both load unchanged, the session
    resumes at its position (its in-flight message first), and its positions move to the
    group."""
    data = tmp_path / "data"
    broker = BrokerProcess(data).start()
    top = unique("old")
    try:
        create_topic(broker, top)
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for i in range(10):
            producer.produce(top, f"m{i}".encode(), key=f"{top}/dev".encode())
        assert producer.flush(TIMEOUT_S) == 0
    finally:
        assert broker.stop() == 0

    client_id = unique("old")
    now = int(time.time() * 1000)
    document = {
        "v": 1,
        "expiry": 0xFFFFFFFF,
        "disconnected_at": now,
        "subs": {f"{top}/#": [1, False, False, 0, None]},
        "positions": [[top, 0, 4]],
        "inflight": [[top, 0, 3, 7, 1, False, []]],  # m3 sent as packet 7, not acknowledged
        "pubrel": [],
    }
    retained_headers = [("mqtt.qos", b"1"), ("mqtt.retain", b"1"), ("mqtt.client-id", b"x")]
    for name, key, value, headers in (
        ("__mqtt_sessions", client_id.encode(), json.dumps(document).encode(), []),
        ("__mqtt_retained", f"{top}/status".encode(), b"online", retained_headers),
    ):
        log = PartitionLog(
            name, 0, data / "internal" / name / "0", internal_log_config(), lambda: now
        )
        log.append(build_batch([Record(now, key, value, headers)]))
        log.flush()
        log.close()

    broker.start()
    try:
        sub = MqttTestClient(broker.mqtt_port, client_id, clean=False)
        try:
            assert sub.session_present
            got = [m.payload for m in sub.receive(7)]
            assert got == [f"m{i}".encode() for i in range(3, 10)]
        finally:
            sub.close()
        late = MqttTestClient(broker.mqtt_port, unique("late"))
        try:
            late.subscribe(f"{top}/status", 1)
            [status] = late.receive(1)
            assert (status.topic, status.payload, status.retain) == (
                f"{top}/status",
                b"online",
                True,
            )
        finally:
            late.close()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        wait_until(
            "the positions to be committed to the group",
            lambda: committed(admin, f"mqtt:{client_id}") == {(top, 0): 10},
        )
    finally:
        broker.kill()
