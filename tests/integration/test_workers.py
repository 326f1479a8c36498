"""``bayou serve --workers 3`` on PostgreSQL: one supervisor, three broker processes on one
host.  Metadata lists the three workers (node ids and Kafka ports + i), a topic's
partitions are led by all three, confluent-kafka producers and a consumer group get every
record back; MQTT clients on the shared port (SO_REUSEPORT) reach the workers; a worker
killed with kill -9 under load is restarted by the supervisor and every acknowledged record
is read back exactly once, in order; SIGTERM to the supervisor stops every worker.  The
local engine is refused with its reason."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.protocol.kafka import messages as m
from tests.integration.test_cluster import Load, end_offsets, read_partitions
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess
from tests.support.http import client
from tests.support.kafka import unique_topic
from tests.support.kafka_raw import RawKafka
from tests.support.mqtt import MqttTestClient
from tests.support.ports import free_port_run
from tests.support.postgres import PostgresServer
from tests.support.seaweedfs import SeaweedFS
from tests.support.wait import wait_until

WORKERS = 3
FIRST_NODE = 1
NODES = {FIRST_NODE + i for i in range(WORKERS)}
MOVE_S = 30.0  # a restarted worker waits for its old lease (6 s), then claims


class Workers(BrokerProcess):
    """The supervisor process; worker ``i`` serves Kafka on ``kafka_port + i``."""

    def __init__(self, root: Path, url: str, env: dict[str, str] | None = None) -> None:
        super().__init__(
            root / "data",
            extra_args=[
                "--workers",
                str(WORKERS),
                "--storage",
                url,
                "--node-id",
                str(FIRST_NODE),
                "--group-initial-rebalance-delay-ms",
                "0",
            ],
            doors=("http", "mqtt"),
            env=env,
        )
        self.kafka_port = free_port_run(WORKERS)
        self.http_port = free_port_run(WORKERS)

    def metadata(self, index: int) -> m.MetadataResponse:
        with RawKafka(f"{self.host}:{self.kafka_port + index}") as raw:
            answer: m.MetadataResponse = raw.call(m.MetadataRequest(topics=None), 12)
        return answer

    def brokers_seen(self, index: int) -> dict[int, int]:
        try:
            return {b.node_id: b.port for b in self.metadata(index).brokers}
        except OSError:
            return {}

    def wait_all_live(self, timeout: float = MOVE_S) -> None:
        expected = {FIRST_NODE + i: self.kafka_port + i for i in range(WORKERS)}
        for i in range(WORKERS):
            wait_until(
                f"worker {i} to list every worker",
                lambda i=i: self.brokers_seen(i) == expected,
                timeout,
            )

    def worker_pids(self) -> dict[int, int]:
        """Node id → pid of its latest start, from the supervisor's log."""
        found = re.findall(r"started: pid (\d+), node id (\d+)", self.log_text())
        return {int(node): int(pid) for pid, node in found}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def workers(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Workers]:
    w = Workers(tmp_path_factory.mktemp("workers"), postgres_server.create_database())
    w.start()
    try:
        w.wait_all_live()
        yield w
    finally:
        pids = w.worker_pids().values()
        w.kill()
        for pid in pids:  # the supervisor was killed: its workers are ours to end
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def leaders(bootstrap: str, topic: str) -> list[int]:
    with RawKafka(bootstrap) as raw:
        answer = raw.call(m.MetadataRequest(topics=[m.MetadataRequestTopic(name=topic)]), 12)
    return [p.leader_id for p in answer.topics[0].partitions]


def topic_led_by_every_worker(bootstrap: str) -> str:
    """A 6-partition topic whose partitions are led by all three workers (placement is by
    hash: a topic's six partitions miss one of three brokers about one time in four)."""
    for _ in range(10):
        topic = unique_topic()
        create_topic(bootstrap, topic, 6)
        wait_until(
            f"{topic}'s partitions to have leaders",
            lambda topic=topic: set(leaders(bootstrap, topic)) <= NODES,
            MOVE_S,
        )
        if set(leaders(bootstrap, topic)) == NODES:
            return topic
    raise AssertionError("ten topics in a row were not spread over every worker")


def produce_and_consume_everything(bootstrap: str) -> tuple[str, dict[int, int]]:
    """A topic led by every worker, an acks=all producer and a group of two: every record
    back; the topic and its end offsets."""
    topic = topic_led_by_every_worker(bootstrap)
    load = Load(bootstrap, topic, unique_topic("g"))
    load.start()
    try:
        load.wait_acked(3000)
    finally:
        load.stop_producing()
    assert load.failed == []
    ends = end_offsets(bootstrap, topic, 6)
    assert sum(ends.values()) == len(load.acked)
    wait_until("the group to consume everything", lambda: len(load.consumed) >= len(load.acked))
    load.stop_consuming()
    assert sorted(load.consumed) == sorted(load.acked)
    return topic, ends


def test_every_worker_leads_partitions_and_every_record_comes_back(workers: Workers) -> None:
    bootstrap = workers.bootstrap
    topic, ends = produce_and_consume_everything(bootstrap)
    # each worker's HTTP door on its own port (+ i), producing to partitions others lead
    for i in range(WORKERS):
        with client(f"http://{workers.host}:{workers.http_port + i}") as http:
            answer = http.post(
                f"/topics/{topic}",
                json={"records": [{"value": f"http{i}", "partition": p} for p in range(6)]},
                headers={"Content-Type": "application/vnd.kafka.json.v2+json"},
            )
            assert answer.status_code == 200, answer.text
            assert [o["error_code"] for o in answer.json()["offsets"]] == [None] * 6
    after = end_offsets(bootstrap, topic, 6)
    got = read_partitions(bootstrap, topic, after)
    for p in range(6):
        tail = [r.value() for r in got[p][ends[p] :]]
        assert tail == [b'"http%d"' % i for i in range(WORKERS)]
    # the same again from the shared port of the MQTT door, connections spread by the kernel
    top = unique_topic("mq")
    create_topic(bootstrap, top, 1)
    publishers = [MqttTestClient(workers.mqtt_port, unique_topic("p")) for _ in range(6)]
    try:
        for i, publisher in enumerate(publishers):
            publisher.publish(f"{top}/c{i}", b"%d" % i, qos=1)
    finally:
        for publisher in publishers:
            publisher.close()
    [records] = read_partitions(bootstrap, top, {0: 6}).values()
    assert sorted((r.key(), r.value()) for r in records) == [
        (f"{top}/c{i}".encode(), b"%d" % i) for i in range(6)
    ]


def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(workers: Workers) -> None:
    topic = unique_topic()
    bootstrap = workers.bootstrap
    create_topic(bootstrap, topic, 6)
    victim_node = FIRST_NODE + 1
    victim = workers.worker_pids()[victim_node]
    load = Load(bootstrap, topic, unique_topic("g"))
    load.start()
    try:
        load.wait_acked(500)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            "the supervisor to start the worker again",
            lambda: workers.worker_pids()[victim_node] != victim,
            MOVE_S,
        )
        assert alive(workers.worker_pids()[victim_node])
        workers.wait_all_live(timeout=MOVE_S)
        acked_before = len(load.acked)
        load.wait_acked(acked_before + 500, timeout=60)
    finally:
        load.stop_producing()
    assert load.failed == []
    ends = end_offsets(bootstrap, topic, 6)
    got = read_partitions(bootstrap, topic, ends)
    acked: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(6)}
    for partition, offset, value in sorted(load.acked):
        acked[partition].append((offset, value))
    for p in range(6):
        read = [(r.offset(), r.value()) for r in got[p]]
        assert len({v for _, v in read}) == len(read)  # exactly once
        assert [o for o, _ in read] == sorted(o for o, _ in read)
        assert set(acked[p]) <= set(read)
    load.stop_consuming()
    assert "worker 1 (node id 2) exited with code -9" in workers.log_text()


def test_sigterm_stops_every_worker(workers: Workers) -> None:
    pids = list(workers.worker_pids().values())
    assert len(pids) >= WORKERS
    assert workers.stop(timeout=90) == 0
    assert not any(alive(pid) for pid in pids)
    for i in range(WORKERS):  # nothing listens any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((workers.host, workers.kafka_port + i), timeout=5).close()


def test_workers_on_the_object_storage_engine(
    tmp_path: Path, postgres_server: PostgresServer, seaweedfs: SeaweedFS
) -> None:
    """``s3://`` is served by the same cluster of workers (batches in SeaweedFS)."""
    database = postgres_server.create_database()
    url = f"s3://{seaweedfs.bucket}/{unique_topic('workers')}?endpoint={seaweedfs.endpoint}"
    w = Workers(tmp_path, f"{url}&metadata={database}", env=seaweedfs.env)
    w.start()
    try:
        w.wait_all_live()
        produce_and_consume_everything(w.bootstrap)
        assert w.stop(timeout=90) == 0
    finally:
        pids = w.worker_pids().values()
        w.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_workers_end_when_their_supervisor_is_killed(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """kill -9 of the supervisor leaves no worker holding its ports and lease."""
    w = Workers(tmp_path, postgres_server.create_database())
    w.start()
    try:
        w.wait_all_live()
        pids = list(w.worker_pids().values())
        w.kill()
        wait_until("every worker to end", lambda: not any(alive(p) for p in pids), 60)
    finally:
        for pid in w.worker_pids().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_local_engine_is_refused_with_its_reason(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bayou", "serve", "--workers", "2", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers 2 needs a shared engine" in done.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was opened
