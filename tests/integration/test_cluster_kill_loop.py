"""Repeated failure: three brokers on one PostgreSQL, one of them killed with kill -9 every
few seconds for about a minute (and restarted each time), while two idempotent acks=all
producers and a consumer group of two run throughout.  Afterwards every acknowledged record
is read back exactly once per partition, in the order acknowledged; the group consumed and
committed everything; and no committed offset the cluster answered with was ever behind a
commit the group had been told succeeded (a coordinator that took a group over from a
killed broker must load every commit, not an older state)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from tests.integration.test_cluster import (
    NODES,
    TIMEOUT_S,
    Cluster,
    Load,
    assert_log_holds_exactly,
    committed,
    end_offsets,
    read_partitions,
)
from tests.integration.test_confluent_kafka import create_topic
from tests.support.kafka import unique_topic
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

PARTITIONS = 6
KILL_FOR_S = 60.0
DOWN_S = 1.0  # how long a killed broker stays down before it is restarted
UP_S = 2.0  # how long all three run between a restart and the next kill


@pytest.fixture
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("killloop"), postgres_server.create_database())
    c.start()
    try:
        yield c
    finally:
        c.kill_all()


class CommitWatch:
    """Records every commit the group was told succeeded (librdkafka's ``on_commit``) and,
    in a thread, samples the cluster's committed offsets: a sample below a commit that had
    succeeded before the sample was asked for is a lost commit."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.lock = threading.Lock()
        self.succeeded: dict[int, int] = {}  # partition -> highest offset committed
        self.behind: list[str] = []
        self.samples = 0
        self.running = threading.Event()
        self.thread = threading.Thread(target=self._watch)

    def on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        if err is not None:
            return
        with self.lock:
            for tp in partitions:
                if tp.error is None and tp.offset >= 0:
                    self.succeeded[tp.partition] = max(
                        self.succeeded.get(tp.partition, -1), tp.offset
                    )

    def start(self) -> None:
        self.running.set()
        self.thread.start()

    def stop(self) -> None:
        self.running.clear()
        self.thread.join(60)

    def _watch(self) -> None:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            while self.running.is_set():
                with self.lock:
                    floor = dict(self.succeeded)
                try:
                    found = c.committed(
                        [TopicPartition(self.topic, p) for p in range(PARTITIONS)], timeout=5
                    )
                except KafkaException:
                    continue  # the coordinator is moving: ask again
                self.samples += 1
                for tp in found:
                    if (
                        tp.error is None
                        and tp.partition in floor
                        and tp.offset < floor[tp.partition]
                    ):
                        self.behind.append(
                            f"partition {tp.partition}: {tp.offset} < {floor[tp.partition]}"
                        )
                time.sleep(0.2)
        finally:
            c.close()


def test_brokers_killed_again_and_again_lose_nothing(cluster: Cluster) -> None:
    topic = unique_topic()
    create_topic(cluster.brokers[1].bootstrap, topic, PARTITIONS)
    cluster.wait_led(topic, set(NODES))
    group = unique_topic("g")
    bootstrap = ",".join(b.bootstrap for b in cluster.brokers.values())
    watch = CommitWatch(bootstrap, group, topic)
    load = Load(bootstrap, topic, group, producers=2, on_commit=watch.on_commit)
    load.start()
    kills = 0
    try:
        load.wait_acked(300)
        wait_until("the group to consume", lambda: len(load.consumed) >= 100, TIMEOUT_S)
        watch.start()
        started = time.monotonic()
        while time.monotonic() - started < KILL_FOR_S:
            victim = cluster.brokers[NODES[kills % len(NODES)]]
            victim.kill()
            kills += 1
            time.sleep(DOWN_S)
            victim.start()  # waits for its old lease (at most one) before it listens
            time.sleep(UP_S)
        cluster.wait_live(set(NODES))
        acked_at_end = len(load.acked)
        load.wait_acked(acked_at_end + 100, 60)  # still producing once the kills stop
        load.stop_producing()
        assert load.failed == []
        acked = list(load.acked)
        ends = end_offsets(bootstrap, topic, PARTITIONS)
        wait_until(
            "the group to consume every acknowledged record",
            lambda: {v for _p, _o, v in acked} <= {v for _p, _o, v in list(load.consumed)},
            90,
        )
        wait_until(
            "the group's commits to reach the end",
            lambda: committed(bootstrap, group, topic, PARTITIONS) == ends,
            60,
        )
    finally:
        load.stop_producing()
        load.stop_consuming()
        watch.stop()
    print(f"{kills} kills, {len(acked)} acknowledged, {watch.samples} commit samples")
    assert kills >= 5
    assert watch.samples > 0 and watch.behind == []
    assert_log_holds_exactly(read_partitions(bootstrap, topic, ends), ends, acked)
