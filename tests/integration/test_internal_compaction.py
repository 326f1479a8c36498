"""The broker compacts its own internal logs: a confluent-kafka group commits many times, the
cleaner shrinks ``DATA/internal/__consumer_offsets/0`` (small segments and a 100 ms check
interval through the environment), and after a restart — graceful, then kill -9 — the group
resumes at its last commit while the coordinator replays only a few records.  The same for
MQTT retained messages in ``__mqtt_retained``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_confluent_kafka import create_topic, produce_all
from tests.support.broker import BrokerProcess
from tests.support.kafka import make_messages, unique_topic
from tests.support.mqtt import MqttTestClient, unique
from tests.support.wait import wait_until

SEGMENT = 8192
COMMITS = 1500
BATCH_HEADER = 61  # the smallest a record batch can be: every commit writes at least one
WAIT_S = 30
# What a restart may replay: the active (uncleaned) segment, plus about one record per key.
MAX_REPLAYED = SEGMENT // BATCH_HEADER + 10


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path / "data",
        env={
            "BAYOU_LOG_RETENTION_CHECK_INTERVAL_MS": "100",
            "BAYOU_INTERNAL_SEGMENT_BYTES": str(SEGMENT),
            "BAYOU_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        },
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def internal(broker: BrokerProcess, name: str) -> Path:
    return broker.data_dir / "internal" / name / "0"


def log_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.log"))


def clean_offset(directory: Path) -> int:
    try:
        return int(json.loads((directory / "cleaner.json").read_text())["clean_offset"])
    except (OSError, ValueError, KeyError):
        return 0


def compacted(directory: Path, writes: int) -> Callable[[], bool]:
    """A pass has run and the log is far below what ``writes`` uncompacted batches take."""
    return lambda: clean_offset(directory) > 0 and log_bytes(directory) < writes * BATCH_HEADER / 4


def replayed_on_start(broker: BrokerProcess) -> int:
    found = re.findall(r"group coordinator loaded (\d+) record", broker.log_text())
    assert found, "the broker logs how many records the coordinator replayed"
    return int(found[-1])


def resumes_at(broker: BrokerProcess, group: str, topic: str) -> tuple[int, int]:
    """(committed offset, offset of the first message a new group member gets)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=15)[0].offset
        consumer.subscribe([topic])
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                return committed, msg.offset()
        raise AssertionError("the group member got no message")
    finally:
        consumer.close()


def test_group_resumes_at_its_last_commit_after_compaction_and_restarts(
    broker: BrokerProcess,
) -> None:
    topic = unique_topic("ic")
    group = unique("g")
    create_topic(broker.bootstrap, topic, 1)
    produce_all(broker.bootstrap, topic, make_messages(50, 1))
    directory = internal(broker, "__consumer_offsets")
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + WAIT_S
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.1)
        assert consumer.assignment(), "joined the group"
        for i in range(COMMITS):  # a member of the generation commits, again and again
            consumer.commit(offsets=[TopicPartition(topic, 0, i % 49 + 1)], asynchronous=False)
        consumer.commit(offsets=[TopicPartition(topic, 0, 42)], asynchronous=False)
    finally:
        consumer.close()  # leaves: one more group record

    wait_until("the cleaner to compact __consumer_offsets", compacted(directory, COMMITS))
    shrunk = log_bytes(directory)
    assert shrunk < COMMITS * BATCH_HEADER / 4

    broker.stop()
    broker.start()
    assert replayed_on_start(broker) < MAX_REPLAYED  # not every commit again
    assert resumes_at(broker, group, topic) == (42, 42)

    broker.kill()  # kill -9: recovery of a compacted log (offset gaps below the clean point)
    broker.start()
    assert replayed_on_start(broker) < MAX_REPLAYED
    assert resumes_at(broker, group, topic) == (42, 42)
    assert log_bytes(directory) < COMMITS * BATCH_HEADER / 4


def test_mqtt_retained_messages_survive_compaction_and_a_restart(broker: BrokerProcess) -> None:
    top = unique("ret")
    directory = internal(broker, "__mqtt_retained")
    writes = 1000
    pub = MqttTestClient(broker.mqtt_port, unique("p"), version=5)
    try:
        for i in range(writes):
            pub.publish(f"{top}/{i % 5}", f"v{i}".encode(), qos=1, retain=True)
        pub.publish(f"{top}/4", b"", qos=1, retain=True)  # clears topic 4: a tombstone
    finally:
        pub.close()
    wait_until("the cleaner to compact __mqtt_retained", compacted(directory, writes))

    broker.kill()
    broker.start()
    late = MqttTestClient(broker.mqtt_port, unique("s"))
    try:
        late.subscribe(f"{top}/#", 1)
        got = late.receive(4)
        assert sorted((m.topic, m.payload, m.retain) for m in got) == [
            (f"{top}/{k}", f"v{writes - 5 + k}".encode(), True) for k in range(4)
        ]
        assert late.receive(1, timeout=0.3) == []
    finally:
        late.close()
