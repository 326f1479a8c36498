"""Storage hardening against real brokers: batches with a missing max timestamp (old Sarama),
two brokers on one data directory, many partitions under a low file-descriptor limit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka import records as R
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.raw_kafka import RawKafka
from tests.support.wait import wait_until

CHECK_MS = 100  # the broker's retention interval in these tests
WAIT_S = 30


@pytest.fixture(scope="module")
def retention_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("hardening") / "data",
        env={"BAYOU_LOG_RETENTION_CHECK_INTERVAL_MS": str(CHECK_MS)},
        doors=(),
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g")})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def produce_raw(bootstrap: str, topic: str, batch: bytes) -> int:
    """Produce v7 with acks=1 of one hand-built batch; returns the base offset."""
    request = m.ProduceRequest(
        acks=1,
        timeout_ms=10_000,
        topic_data=[
            m.ProduceRequestTopicProduceData(
                name=topic,
                partition_data=[m.ProduceRequestPartitionProduceData(index=0, records=batch)],
            )
        ],
    )
    with RawKafka(bootstrap) as client:
        response = client.call(0, 7, request)
    part = response.responses[0].partition_responses[0]
    assert part.error_code == 0, part
    return int(part.base_offset)


def read_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(offset, timestamp, key, value) of every record of partition 0."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("g"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, -2)])
    out: list[tuple[int, int, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise KafkaException(msg.error())
            out.append((msg.offset(), msg.timestamp()[1], msg.key(), msg.value()))
    finally:
        consumer.close()
    raise AssertionError("did not reach the end of the partition")


def offset_for_time(bootstrap: str, topic: str, ts: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g")})
    try:
        [found] = consumer.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
        return int(found.offset)
    finally:
        consumer.close()


def test_batches_without_a_max_timestamp_survive_retention_and_are_found_by_time(
    retention_broker: BrokerProcess,
) -> None:
    bootstrap = retention_broker.bootstrap
    topic, witness = unique_topic("sarama"), unique_topic("witness")
    create_topic(bootstrap, topic, 1, **{"retention.ms": str(24 * 3_600_000)})
    create_topic(bootstrap, witness, 1, **{"retention.ms": "1000"})
    now = int(time.time() * 1000)
    stamps = [now - 3000, now - 1000, now - 2000]
    records = [R.Record(ts, b"k%d" % i, b"v%d" % i) for i, ts in enumerate(stamps)]
    # What an older Sarama sends: the header's max timestamp is -1.
    assert produce_raw(bootstrap, topic, R.build_batch(records, max_timestamp=-1)) == 0
    assert (
        produce_raw(
            bootstrap,
            topic,
            R.build_batch(
                [R.Record(now - 500, b"k3", b"v3")],
                max_timestamp=-1,
                compression=R.COMPRESSION_LZ4,
            ),
        )
        == 3
    )

    # Two retention rounds that started after the produce: the witness topic's expired
    # records are deleted by each of them.
    producer = Producer({"bootstrap.servers": bootstrap})
    for expected_low in (1, 2):
        producer.produce(witness, b"old", partition=0, timestamp=now - 60_000)
        assert producer.flush(10) == 0
        wait_until(
            "a retention round",
            lambda n=expected_low: watermarks(bootstrap, witness)[0] == n,
            WAIT_S,
        )

    assert watermarks(bootstrap, topic) == (0, 4)
    assert read_all(bootstrap, topic) == [
        (0, now - 3000, b"k0", b"v0"),
        (1, now - 1000, b"k1", b"v1"),
        (2, now - 2000, b"k2", b"v2"),
        (3, now - 500, b"k3", b"v3"),
    ]
    assert offset_for_time(bootstrap, topic, now - 2500) == 1
    assert offset_for_time(bootstrap, topic, now - 900) == 3
    assert offset_for_time(bootstrap, topic, now + 1000) == -1  # none: the log end


def test_a_second_broker_on_the_same_data_directory_refuses_to_start(tmp_path: Path) -> None:
    first = BrokerProcess(tmp_path / "data", doors=()).start()
    try:
        second = BrokerProcess(tmp_path / "data", doors=())
        done = subprocess.run(second.command(), capture_output=True, timeout=20)
        assert done.returncode == 1
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert str(tmp_path / "data") in lines[0] and f"pid {first.pid}" in lines[0]
        assert first.proc is not None and first.proc.poll() is None  # the holder goes on
    finally:
        first.stop()
    # Once the holder has stopped, the directory is free again.
    again = BrokerProcess(tmp_path / "data", doors=()).start()
    again.stop()


# Sets the open-files limit of the broker process, then execs it (``resource`` in the child).
LIMIT_AND_EXEC = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


class LimitedBroker(BrokerProcess):
    """A broker started under ``ulimit -n`` soft/hard limits."""

    def __init__(self, data_dir: Path, soft: int, hard: int) -> None:
        super().__init__(data_dir, doors=())
        self.limits = (soft, hard)

    def command(self) -> list[str]:
        soft, hard = self.limits
        return [sys.executable, "-c", LIMIT_AND_EXEC, str(soft), str(hard), *super().command()]


def open_files_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-files limit")


def test_many_partitions_under_a_low_open_files_limit(tmp_path: Path) -> None:
    partitions = 150  # three descriptors each would be 450: over the hard limit
    broker = LimitedBroker(tmp_path / "data", soft=100, hard=300).start()
    try:
        assert open_files_limit(broker.pid) == 300  # the soft limit was raised to the hard
        bootstrap = broker.bootstrap
        topic = unique_topic("wide")
        create_topic(bootstrap, topic, partitions)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for p in range(partitions):
            producer.produce(topic, f"v{p}".encode(), key=f"k{p}".encode(), partition=p)
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": unique_topic("g"),
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: dict[int, bytes | None] = {}
        eof: set[int] = set()
        deadline = time.monotonic() + WAIT_S
        try:
            while time.monotonic() < deadline and len(eof) < partitions:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    eof.add(msg.partition())
                    continue
                got[msg.partition()] = msg.value()
        finally:
            consumer.close()
        assert got == {p: f"v{p}".encode() for p in range(partitions)}
        assert len(os.listdir(f"/proc/{broker.pid}/fd")) < 300
        wait_until(
            "the open-files warning",
            lambda: "near this process's limit" in broker.log_text(),
            WAIT_S,
        )
        assert broker.log_text().count("near this process's limit") == 1
        assert "Too many open files" not in broker.log_text()
    finally:
        broker.stop()
