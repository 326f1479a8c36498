"""Three ``bayou serve`` processes on one PostgreSQL as a cluster: Metadata and
DescribeCluster list the live brokers, partitions are spread over them and led by one
broker each (NOT_LEADER_OR_FOLLOWER and NOT_COORDINATOR elsewhere), a broker killed with
kill -9 under a producer's and a consumer group's load is gone from Metadata and its
partitions and groups move — every acknowledged record is read back exactly once per
partition, in order, and the group keeps consuming through the coordinator move —, all
brokers restarted keep data and offsets, and the HTTP door of a broker that does not lead a
partition produces to it and streams it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.cluster import coordinator_key, partition_key, rendezvous
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess, start_all
from tests.support.http import client
from tests.support.kafka import unique_topic
from tests.support.kafka_raw import RawKafka, fetch_request
from tests.support.mqtt import MqttTestClient
from tests.support.postgres import PostgresServer
from tests.support.raw_kafka import RawKafka as RawSocket
from tests.support.wait import wait_until

NODES = (1, 2, 3)
TIMEOUT_S = 30.0
MOVE_S = 20.0  # the claim is 10 s (a 6 s lease, 1 s heartbeats); slack for a loaded machine


class Cluster:
    """Three brokers on one database (node ids 1-3), each with Kafka and ``doors`` (HTTP
    and MQTT by default), with ``env``."""

    def __init__(
        self,
        root: Path,
        url: str,
        doors: tuple[str, ...] = ("http", "mqtt"),
        env: dict[str, str] | None = None,
    ) -> None:
        self.brokers = {
            n: BrokerProcess(
                root / f"node{n}",
                extra_args=[
                    "--storage",
                    url,
                    "--node-id",
                    str(n),
                    "--group-initial-rebalance-delay-ms",
                    "0",
                ],
                doors=doors,
                env=env,
            )
            for n in NODES
        }

    def start(self) -> None:
        start_all(self.brokers.values())
        self.wait_live(set(NODES))

    def kill_all(self) -> None:
        for b in self.brokers.values():
            b.kill()

    @property
    def bootstrap(self) -> str:
        return ",".join(
            b.bootstrap for b in self.brokers.values() if b.proc and b.proc.poll() is None
        )

    def metadata(self, node: int, topic: str | None = None) -> m.MetadataResponse:
        """This broker's own answer (a client library may ask any broker it knows)."""
        topics = None if topic is None else [m.MetadataRequestTopic(name=topic)]
        with RawKafka(self.brokers[node].bootstrap) as raw:
            answer: m.MetadataResponse = raw.call(m.MetadataRequest(topics=topics), 12)
        return answer

    def live_seen_by(self, node: int) -> set[int]:
        return {b.node_id for b in self.metadata(node).brokers}

    def wait_live(self, nodes: set[int], timeout: float = MOVE_S) -> None:
        for n in nodes:
            wait_until(
                f"node {n} to list brokers {sorted(nodes)}",
                lambda n=n: self.live_seen_by(n) == nodes,
                timeout,
            )

    def leaders(self, via: int, topic: str) -> dict[int, int]:
        [found] = self.metadata(via, topic).topics
        return {p.partition_index: p.leader_id for p in found.partitions}

    def wait_led(self, topic: str, nodes: set[int], timeout: float = MOVE_S) -> dict[int, int]:
        """Wait until every broker in ``nodes`` names the same leader for every partition:
        the one rendezvous hashing places it on among ``nodes`` (a broker that just joined
        claims its share at its next heartbeat); those leaders."""

        def agreed() -> bool:
            views = [self.leaders(n, topic) for n in nodes]
            placed = {p: rendezvous(partition_key(topic, p), nodes) for p in views[0]}
            return bool(placed) and all(v == placed for v in views)

        wait_until(f"brokers {sorted(nodes)} to agree on {topic}'s leaders", agreed, timeout)
        return self.leaders(min(nodes), topic)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"), postgres_server.create_database())
    c.start()
    try:
        yield c
    finally:
        c.kill_all()


def test_metadata_lists_the_live_brokers_and_spreads_the_leaders(cluster: Cluster) -> None:
    # a name whose 12 partitions rendezvous hashing places on every broker (a random name
    # leaves one broker without any in about 2 % of names: (2/3)^12, three ways)
    topic = next(
        name
        for name in (unique_topic() for _ in range(1000))
        if {rendezvous(partition_key(name, p), set(NODES)) for p in range(12)} == set(NODES)
    )
    create_topic(cluster.brokers[1].bootstrap, topic, 12)
    ports = {n: b.kafka_port for n, b in cluster.brokers.items()}
    leaders = cluster.wait_led(topic, set(NODES))
    assert set(leaders.values()) == set(NODES)  # spread over every broker
    for n, broker in cluster.brokers.items():
        answer = cluster.metadata(n, topic)
        assert {b.node_id: b.port for b in answer.brokers} == ports
        for p in answer.topics[0].partitions:
            assert p.replica_nodes[0] == p.leader_id and sorted(p.replica_nodes) == list(NODES)
            assert sorted(p.isr_nodes) == list(NODES)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        described = admin.describe_cluster().result(timeout=10)
        assert sorted(node.id for node in described.nodes) == list(NODES)
    index, leader = next(iter(leaders.items()))
    other = next(n for n in NODES if n != leader)
    batch = build_batch([Record(int(time.time() * 1000), b"k", b"v")])
    produce = m.ProduceRequest(
        acks=-1,
        timeout_ms=5000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[m.ProduceRequest.PartitionProduceData(index=index, records=batch)],
            )
        ],
    )
    fetch = fetch_request(topic, index)
    with RawKafka(cluster.brokers[other].bootstrap) as raw:
        answer = raw.call(produce, 9).responses[0].partition_responses[0]
        assert answer.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
        refused = raw.call(fetch, 12).responses[0].partitions[0]
        assert refused.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
        assert refused.records == b""  # a null set makes librdkafka drop the whole response
    with RawKafka(cluster.brokers[leader].bootstrap) as raw:
        assert raw.call(produce, 9).responses[0].partition_responses[0].error_code == 0
        assert raw.call(fetch, 12).responses[0].partitions[0].error_code == 0
    # a group is coordinated by one broker, named by all; the others answer NOT_COORDINATOR
    group = unique_topic("g")
    owners = set()
    for n in NODES:
        with RawKafka(cluster.brokers[n].bootstrap) as raw:
            found = raw.call(m.FindCoordinatorRequest(key_type=0, coordinator_keys=[group]), 4)
            owners.add(found.coordinators[0].node_id)
    assert len(owners) == 1 and owners <= set(NODES)
    commit = m.OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=-1,
        member_id="",
        topics=[
            m.OffsetCommitRequestTopic(
                name=topic,
                partitions=[
                    m.OffsetCommitRequestPartition(partition_index=index, committed_offset=1)
                ],
            )
        ],
    )

    def commit_at(node: int) -> int:
        with RawKafka(cluster.brokers[node].bootstrap) as raw:
            code: int = raw.call(commit, 8).topics[0].partitions[0].error_code
        return code

    for n in NODES:
        if n in owners:  # COORDINATOR_LOAD_IN_PROGRESS while the cluster settles
            wait_until("the owner to take the commit", lambda n=n: commit_at(n) == ErrorCode.NONE)
        else:
            assert commit_at(n) == ErrorCode.NOT_COORDINATOR


class Load:
    """Idempotent acks=all producers (one by default) and a consumer group of two, in
    threads, each recording what it got; the consumers commit as they go (``on_commit`` is
    told of each commit)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        *,
        producers: int = 1,
        on_commit: Any = None,
    ) -> None:
        self.topic, self.group, self.bootstrap = topic, group, bootstrap
        self.producers, self.on_commit = producers, on_commit
        # partition, offset, value; the offset is None when librdkafka acknowledges a
        # record implicitly (a request whose outcome it never learnt, a broker killed
        # mid-answer, followed by one that succeeded: rd_kafka_dr_implicit_ack)
        self.acked: list[tuple[int, int | None, bytes]] = []
        self.failed: list[str] = []
        self.consumed: list[tuple[int, int, bytes]] = []
        self.producing = threading.Event()
        self.consuming = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._produce, args=(b"%d-" % n,)) for n in range(producers)
        ] + [threading.Thread(target=self._consume) for _ in range(2)]

    def start(self) -> None:
        self.producing.set()
        self.consuming.set()
        for t in self.threads:
            t.start()

    def _produce(self, prefix: bytes) -> None:
        p = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            with self.lock:
                if err is not None:
                    self.failed.append(str(err))
                else:
                    self.acked.append((msg.partition(), msg.offset(), msg.value()))

        i = 0
        while self.producing.is_set() and i < 100_000:
            p.produce(
                self.topic, value=prefix + b"%d" % i, partition=i % 6, on_delivery=on_delivery
            )
            i += 1
            p.poll(0.01)
        assert p.flush(120) == 0

    def _consume(self) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 500,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1000,
            "topic.metadata.refresh.interval.ms": 1000,
        }
        if self.on_commit is not None:
            config["on_commit"] = self.on_commit
        c = Consumer(config)
        c.subscribe([self.topic])
        try:
            deadline = time.monotonic() + 300
            while self.consuming.is_set() and time.monotonic() < deadline:
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                with self.lock:
                    self.consumed.append((msg.partition(), msg.offset(), msg.value()))
        finally:
            c.close()  # commits the positions (enable.auto.commit)

    def wait_acked(self, count: int, timeout: float = TIMEOUT_S) -> None:
        wait_until(f"{count} acknowledged records", lambda: len(self.acked) >= count, timeout)

    def stop_producing(self) -> None:
        self.producing.clear()
        for t in self.threads[: self.producers]:
            t.join(150)

    def stop_consuming(self) -> None:
        self.consuming.clear()
        for t in self.threads[self.producers :]:
            t.join(60)


def read_partitions(bootstrap: str, topic: str, ends: dict[int, int]) -> dict[int, list[Any]]:
    """Every record of the topic up to ``ends``, per partition, by a fresh assign()."""
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique_topic("r"), "enable.auto.commit": False}
    )
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    got: dict[int, list[Any]] = {p: [] for p in ends}
    deadline = time.monotonic() + 60
    try:
        while any(len(got[p]) < ends[p] for p in ends) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                got[msg.partition()].append(msg)
    finally:
        c.close()
    return got


def assert_log_holds_exactly(
    got: dict[int, list[Any]], ends: dict[int, int], acked: list[tuple[int, int | None, bytes]]
) -> None:
    """Each partition read back (``got``, up to ``ends``) holds every acknowledged record
    once and nothing else, each producer's records (values ``b"<producer>-<n>"``) in the
    order produced, and each record whose offset was acknowledged at that offset."""
    for p, records in got.items():
        mine = [(o, v) for part, o, v in acked if part == p]
        assert [msg.offset() for msg in records] == list(range(ends[p]))
        values = [msg.value() for msg in records]
        assert sorted(values) == sorted(v for _o, v in mine)  # each acked one once, no more
        for o, v in mine:
            if o is not None:
                assert values[o] == v, (p, o, v)
        by_producer: dict[bytes, list[int]] = {}
        for v in values:
            producer, _, n = v.partition(b"-")
            by_producer.setdefault(producer, []).append(int(n))
        for producer, ns in by_producer.items():
            assert ns == sorted(ns), (p, producer)


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("w")})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        c.close()


def coordinator_of(bootstrap: str, group: str) -> int:
    with RawKafka(bootstrap.split(",")[0]) as raw:
        found = raw.call(m.FindCoordinatorRequest(key_type=0, coordinator_keys=[group]), 4)
    node: int = found.coordinators[0].node_id
    return node


def test_a_broker_killed_under_load_loses_nothing_and_the_group_follows(
    cluster: Cluster,
) -> None:
    topic = unique_topic()
    create_topic(cluster.brokers[1].bootstrap, topic, 6)
    victim = cluster.wait_led(topic, set(NODES))[0]
    # a group the victim coordinates: its partitions and the group move together
    group = next(
        g
        for g in (unique_topic("g") for _ in range(1000))
        if rendezvous(coordinator_key(0, g), NODES) == victim
    )
    load = Load(cluster.bootstrap, topic, group)
    load.start()
    try:
        load.wait_acked(300)
        wait_until("the group to consume", lambda: len(load.consumed) >= 100)
        assert coordinator_of(cluster.bootstrap, group) == victim
        acked_before = len(load.acked)
        cluster.brokers[victim].kill()
        killed = time.monotonic()
        survivors = set(NODES) - {victim}
        survivor = min(survivors)
        cluster.wait_live(survivors)
        cluster.wait_led(topic, survivors)
        moved_s = time.monotonic() - killed
        assert coordinator_of(cluster.brokers[survivor].bootstrap, group) in survivors
        # the producer and the group go on through the move
        load.wait_acked(acked_before + 300, 60)
        consumed_at_move = len(load.consumed)
        wait_until(
            "the group to consume after the move",
            lambda: len(load.consumed) > consumed_at_move + 100,
            60,
        )
        cluster.brokers[victim].start()
        cluster.wait_live(set(NODES))
        load.stop_producing()
        assert load.failed == []
        acked = list(load.acked)
        bootstrap = cluster.bootstrap
        ends = end_offsets(bootstrap, topic, 6)
        # the group reaches the end (what it consumed covers every acknowledged record)
        wait_until(
            "the group to consume every acknowledged record",
            lambda: {v for _p, _o, v in acked} <= {v for _p, _o, v in list(load.consumed)},
            60,
        )
        # and commits it (auto-commit every 500 ms, to whichever broker coordinates now)
        wait_until(
            "the group's commits to reach the end",
            lambda: committed(bootstrap, group, topic, 6) == ends,
            TIMEOUT_S,
        )
    finally:
        load.stop_producing()
        load.stop_consuming()
    print(f"partitions moved {moved_s:.1f} s after the kill")
    # every acknowledged record exactly once per partition, in the order acknowledged
    assert_log_holds_exactly(read_partitions(bootstrap, topic, ends), ends, acked)


def test_all_brokers_restarted_keep_data_and_offsets(cluster: Cluster) -> None:
    topic, group = unique_topic(), unique_topic("g")
    create_topic(cluster.brokers[2].bootstrap, topic, 3)
    p = Producer(
        {"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True}
    )
    for i in range(300):
        p.produce(topic, key=b"%d" % i, value=b"v%d" % i, partition=i % 3)
    assert p.flush(TIMEOUT_S) == 0
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    try:
        c.commit(
            offsets=[TopicPartition(topic, i, 10 * (i + 1)) for i in range(3)], asynchronous=False
        )
    finally:
        c.close()
    cluster.kill_all()
    cluster.start()
    bootstrap = cluster.bootstrap
    assert committed(bootstrap, group, topic, 3) == {0: 10, 1: 20, 2: 30}
    ends = end_offsets(bootstrap, topic, 3)
    assert ends == {0: 100, 1: 100, 2: 100}
    got = read_partitions(bootstrap, topic, ends)
    for part in range(3):
        assert [msg.value() for msg in got[part]] == [b"v%d" % i for i in range(part, 300, 3)]


def test_the_http_door_serves_partitions_led_elsewhere(cluster: Cluster) -> None:
    topic = unique_topic()
    create_topic(cluster.brokers[1].bootstrap, topic, 3)
    leaders = cluster.wait_led(topic, set(NODES))
    index, leader = next(iter(leaders.items()))
    door = next(b for n, b in cluster.brokers.items() if n != leader)
    reader = next(b for n, b in cluster.brokers.items() if n not in (leader,) and b is not door)
    with (
        client(reader.http_url, timeout=TIMEOUT_S) as http,
        http.stream(
            "GET", f"/topics/{topic}/stream", params={"from": "earliest", "format": "json"}
        ) as stream,
    ):
        assert stream.status_code == 200
        with client(door.http_url) as producer:
            answer = producer.post(
                f"/topics/{topic}/partitions/{index}",
                json={"records": [{"value": {"n": i}} for i in range(5)]},
            )
            assert answer.status_code == 200, answer.text
            assert [o["offset"] for o in answer.json()["offsets"]] == list(range(5))
        events = []
        for line in stream.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if len(events) == 5:
                    break
    assert [(e["partition"], e["offset"], e["value"]) for e in events] == [
        (index, i, {"n": i}) for i in range(5)
    ]
    with client(door.http_url) as http:
        info = http.get(f"/topics/{topic}/partitions/{index}").json()
    assert info["leader"] == leader


def test_a_stalled_broker_cannot_commit_once_its_partitions_moved(cluster: Cluster) -> None:
    """A broker stopped (SIGSTOP) past its lease, with a Produce waiting in its socket: the
    others take its partitions; resumed, it answers NOT_LEADER_OR_FOLLOWER and the record is
    nowhere — its own lease and the new epoch both refuse it."""
    topic = unique_topic()
    create_topic(cluster.brokers[1].bootstrap, topic, 3)
    leaders = cluster.wait_led(topic, set(NODES))
    index, stalled = next(iter(leaders.items()))
    others = set(NODES) - {stalled}
    proc = cluster.brokers[stalled]
    batch = build_batch([Record(int(time.time() * 1000), b"k", b"stalled")])
    produce = m.ProduceRequest(
        acks=-1,
        timeout_ms=30_000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[m.ProduceRequest.PartitionProduceData(index=index, records=batch)],
            )
        ],
    )
    with RawSocket(proc.bootstrap) as raw:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            raw.send(0, 9, produce)  # waits in the stopped broker's socket
            cluster.wait_live(others)
            cluster.wait_led(topic, others)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        answer = raw.receive(0, 9).responses[0].partition_responses[0]
    assert answer.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
    cluster.wait_live(set(NODES))  # it renews its lease and rejoins
    ends = end_offsets(cluster.bootstrap, topic, 3)
    got = read_partitions(cluster.bootstrap, topic, ends)
    assert all(msg.value() != b"stalled" for msgs in got.values() for msg in msgs)


def test_mqtt_clients_on_brokers_that_do_not_lead_the_partition(cluster: Cluster) -> None:
    """An MQTT publisher on one broker and a subscriber on another, neither leading the
    topic's partition: every message arrives, and Kafka reads them from the leader."""
    top = unique_topic("mq")
    create_topic(cluster.brokers[1].bootstrap, top, 1)
    leader = cluster.wait_led(top, set(NODES))[0]
    publisher_node, subscriber_node = (n for n in NODES if n != leader)
    subscriber = MqttTestClient(cluster.brokers[subscriber_node].mqtt_port, unique_topic("s"))
    publisher = MqttTestClient(cluster.brokers[publisher_node].mqtt_port, unique_topic("p"))
    try:
        subscriber.subscribe(f"{top}/#", 1)
        for i in range(5):
            publisher.publish(f"{top}/room{i}", b"%d" % i, qos=1)
        got = subscriber.receive(5)
    finally:
        publisher.close()
        subscriber.close()
    assert [(r.topic, r.payload) for r in got] == [(f"{top}/room{i}", b"%d" % i) for i in range(5)]
    [records] = read_partitions(cluster.brokers[leader].bootstrap, top, {0: 5}).values()
    assert [(r.offset(), r.key(), r.value()) for r in records] == [
        (i, f"{top}/room{i}".encode(), b"%d" % i) for i in range(5)
    ]
