"""The doors' own group members on a broker that does not coordinate their group: HTTP
consumer instances, MQTT persistent sessions' positions and AMQP stream-queue consumers
(``x-consumer-group``) on one broker of three, their group coordinated by another — their
heartbeats, commits and offset reads are forwarded to the coordinating broker, so they
consume, commit and resume as they would on it."""

from __future__ import annotations

import base64
import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from bayou.storage.cluster import coordinator_key, rendezvous
from tests.integration.test_cluster import NODES, TIMEOUT_S, Cluster, committed, end_offsets
from tests.integration.test_confluent_kafka import create_topic
from tests.support.amqp import Collector, connect
from tests.support.broker import BrokerProcess, start_all
from tests.support.http import BINARY_V2, V2, client, create_instance, read_records
from tests.support.kafka import unique_topic
from tests.support.kafka_raw import RawKafka
from tests.support.mqtt import MqttTestClient
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

GROUP_ENV = {
    "BAYOU_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS": "300",
    "BAYOU_HTTP_CONSUMER_INSTANCE_TIMEOUT_MS": "5000",
}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("doors"),
        postgres_server.create_database(),
        doors=("http", "mqtt", "amqp"),
        env=GROUP_ENV,
    )
    c.start()
    for n in NODES:  # each coordinator has loaded its groups (the cluster settled)
        group = group_coordinated_by(n, "settle-")
        wait_until(f"node {n} to serve its groups", lambda n=n, g=group: serves(c, n, g))
    try:
        yield c
    finally:
        c.kill_all()


def serves(cluster: Cluster, node: int, group: str) -> bool:
    with RawKafka(cluster.brokers[node].bootstrap) as raw:
        answer = raw.call(m.OffsetFetchRequest(group_id=group, topics=None), 7)
    return bool(answer.error_code == ErrorCode.NONE)


def group_coordinated_by(node: int, prefix: str) -> str:
    return next(
        g
        for g in (f"{prefix}{unique_topic('g')}" for _ in itertools.count())
        if rendezvous(coordinator_key(0, g), NODES) == node
    )


def produce(bootstrap: str, topic: str, partitions: int, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % partitions)
    assert p.flush(TIMEOUT_S) == 0


def _post(http: httpx.Client, path: str, body: object | None = None) -> httpx.Response:
    return http.post(path, json=body, headers={"Content-Type": V2})


def test_http_consumers_on_brokers_that_do_not_coordinate_their_group(cluster: Cluster) -> None:
    """An instance on one non-coordinating broker reads and commits; a second instance on
    the other non-coordinating broker resumes at those commits; Kafka sees the offsets."""
    topic = unique_topic()
    create_topic(cluster.brokers[1].bootstrap, topic, 3)
    coordinator = 1
    group = group_coordinated_by(coordinator, "")
    first_node, second_node = (n for n in NODES if n != coordinator)
    bootstrap = cluster.bootstrap
    first = [b"a%d" % i for i in range(30)]
    produce(bootstrap, topic, 3, first)
    with client(cluster.brokers[first_node].http_url, timeout=TIMEOUT_S) as http:
        base = create_instance(
            http,
            group,
            "c1",
            format="binary",
            **{"auto.offset.reset": "earliest", "auto.commit.enable": "false"},
        )
        r = _post(http, f"{base}/subscription", {"topics": [topic]})
        assert r.status_code == 204, r.text
        got = read_records(http, base, BINARY_V2, 30)
        assert sorted(base64.b64decode(r["value"]) for r in got) == sorted(first)
        r = _post(http, f"{base}/offsets")
        assert r.status_code == 200, r.text
        wanted = {"partitions": [{"topic": topic, "partition": p} for p in range(3)]}
        found = http.request("GET", f"{base}/offsets", json=wanted)
        assert found.status_code == 200, found.text
        assert sorted((o["partition"], o["offset"]) for o in found.json()["offsets"]) == [
            (p, 10) for p in range(3)
        ]
        assert http.delete(base).status_code == 204  # leaves the group
    assert committed(bootstrap, group, topic, 3) == end_offsets(bootstrap, topic, 3)
    second = [b"b%d" % i for i in range(6)]
    produce(bootstrap, topic, 3, second)
    with client(cluster.brokers[second_node].http_url, timeout=TIMEOUT_S) as http:
        base = create_instance(
            http, group, "c2", format="binary", **{"auto.offset.reset": "earliest"}
        )
        r = _post(http, f"{base}/subscription", {"topics": [topic]})
        assert r.status_code == 204, r.text
        got = read_records(http, base, BINARY_V2, 6)
        assert sorted((r["partition"], r["offset"]) for r in got) == sorted(
            (p, 10 + i) for p in range(3) for i in range(2)
        )
        assert sorted(base64.b64decode(r["value"]) for r in got) == sorted(second)
        assert http.delete(base).status_code == 204


def test_two_http_instances_on_two_brokers_split_a_group(cluster: Cluster) -> None:
    """Members of one group on both non-coordinating brokers share its partitions: each
    record is read by exactly one of them."""
    topic = unique_topic()
    create_topic(cluster.brokers[1].bootstrap, topic, 4)
    coordinator = 2
    group = group_coordinated_by(coordinator, "")
    nodes = [n for n in NODES if n != coordinator]
    values = [b"v%d" % i for i in range(40)]
    https = {n: client(cluster.brokers[n].http_url, timeout=TIMEOUT_S) for n in nodes}
    bases: dict[int, str] = {}
    got: dict[int, list[bytes]] = {n: [] for n in nodes}

    def poll(node: int) -> None:
        r = https[node].get(
            f"{bases[node]}/records", params={"timeout": 200}, headers={"Accept": BINARY_V2}
        )
        assert r.status_code == 200, r.text
        got[node] += [base64.b64decode(rec["value"]) for rec in r.json()]

    def assigned(node: int) -> set[int]:
        poll(node)  # heartbeats
        r = https[node].get(f"{bases[node]}/assignments")
        assert r.status_code == 200, r.text
        return {p["partition"] for p in r.json()["partitions"]}

    try:
        for n in nodes:
            bases[n] = create_instance(
                https[n], group, f"m{n}", format="binary", **{"auto.offset.reset": "earliest"}
            )
            r = _post(https[n], f"{bases[n]}/subscription", {"topics": [topic]})
            assert r.status_code == 204, r.text
        wait_until(
            "the two members to split the partitions",
            lambda: (
                (a := assigned(nodes[0])) | (b := assigned(nodes[1])) == set(range(4))
                and not a & b
                and bool(a)
                and bool(b)
            ),
            TIMEOUT_S,
        )
        produce(cluster.bootstrap, topic, 4, values)
        deadline = time.monotonic() + TIMEOUT_S
        while sum(len(v) for v in got.values()) < len(values) and time.monotonic() < deadline:
            for n in nodes:
                poll(n)
        for n in nodes:
            assert https[n].delete(bases[n]).status_code == 204
    finally:
        for h in https.values():
            h.close()
    assert sorted(got[nodes[0]] + got[nodes[1]]) == sorted(values)  # each exactly once
    assert got[nodes[0]] and got[nodes[1]]  # both had partitions


def client_id_coordinated_by(node: int) -> str:
    """An MQTT client id whose session's group (``mqtt:<id>``) ``node`` coordinates."""
    return group_coordinated_by(node, "mqtt:").removeprefix("mqtt:")


def test_an_mqtt_session_on_a_broker_that_does_not_coordinate_its_positions(
    cluster: Cluster,
) -> None:
    """A persistent session on one broker, its positions' group coordinated by another: its
    acknowledged positions are committed there; its broker killed -9 and restarted reads them
    back, and the session gets exactly what was published while it was away."""
    top = unique_topic("mq")
    create_topic(cluster.brokers[1].bootstrap, top, 1)
    coordinator, home = 2, 3
    publisher_node = 1
    client_id = client_id_coordinated_by(coordinator)
    group = f"mqtt:{client_id}"
    bootstrap = cluster.bootstrap
    sub = MqttTestClient(cluster.brokers[home].mqtt_port, client_id, clean=False)
    pub = MqttTestClient(cluster.brokers[publisher_node].mqtt_port, unique_topic("p"))
    try:
        sub.subscribe(f"{top}/#", 1)
        for i in range(5):
            pub.publish(f"{top}/dev", b"m%d" % i, qos=1)
        assert [r.payload for r in sub.receive(5)] == [b"m%d" % i for i in range(5)]
        wait_until(
            "the session's positions to be committed on the coordinator",
            lambda: committed(bootstrap, group, top, 1) == {0: 5},
            TIMEOUT_S,
        )
        sub.close()
        cluster.brokers[home].kill()
        for i in range(5, 10):
            pub.publish(f"{top}/dev", b"m%d" % i, qos=1)
        cluster.brokers[home].start()
        sub = MqttTestClient(cluster.brokers[home].mqtt_port, client_id, clean=False)
        assert sub.session_present
        assert [r.payload for r in sub.receive(5)] == [b"m%d" % i for i in range(5, 10)]
        assert sub.receive(1, timeout=0.5) == []  # nothing delivered twice
    finally:
        pub.close()
        sub.close()
    cluster.wait_live(set(NODES))


def test_an_amqp_group_consumer_on_a_broker_that_does_not_coordinate_its_group(
    cluster: Cluster,
) -> None:
    """pika consumers with ``x-consumer-group`` on a broker that does not coordinate the
    group: the first gets every message and acks some; the next resumes at the first
    unacknowledged one."""
    coordinator, home = 3, 1
    group = group_coordinated_by(coordinator, "amqp-")
    queue = unique_topic("q")
    broker = cluster.brokers[home]
    conn = connect(broker)
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True, arguments={"x-partitions": 2})
        ch.confirm_delivery()
        for i in range(10):
            ch.basic_publish("", queue, b"m%d" % i)
        ch.basic_qos(prefetch_count=20)
        first = Collector(conn, ch, queue, arguments={"x-consumer-group": group})
        got = first.wait_for(10, timeout=TIMEOUT_S)
        assert sorted(d.body for d in got) == sorted(b"m%d" % i for i in range(10))
        for d in got[:6]:
            ch.basic_ack(d.tag)
        ch.basic_cancel(first.tag)  # commits what was acknowledged before it answers
    finally:
        conn.close()
    conn = connect(broker)
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=20)
        again = Collector(conn, ch, queue, arguments={"x-consumer-group": group})
        rest = again.wait_for(4, timeout=TIMEOUT_S)
        assert again.quiet_for(0.3) == 0
        assert sorted(d.body for d in rest) == sorted(d.body for d in got[6:])
    finally:
        conn.close()


def test_basic_get_on_a_broker_that_does_not_coordinate_the_queues_group(
    cluster: Cluster,
) -> None:
    """``basic.get`` on a stream (a topic, no declaration needed): what was acknowledged
    through one broker is committed to the group ``amqp:<queue>`` coordinated by another,
    and a third broker's first ``basic.get`` resumes after it."""
    queue = next(
        q
        for q in (unique_topic("get") for _ in itertools.count())
        if rendezvous(coordinator_key(0, f"amqp:{q}"), NODES) == 3
    )
    create_topic(cluster.brokers[1].bootstrap, queue, 1)
    produce(cluster.brokers[1].bootstrap, queue, 1, [b"v%d" % i for i in range(10)])
    conn = connect(cluster.brokers[1])
    try:
        ch = conn.channel()
        for i in range(4):
            method, _props, body = ch.basic_get(queue)
            assert method is not None and body == b"v%d" % i
            ch.basic_ack(method.delivery_tag)
        wait_until(
            "the acknowledged gets to be committed on the coordinator",
            lambda: committed(cluster.brokers[3].bootstrap, f"amqp:{queue}", queue, 1) == {0: 4},
            TIMEOUT_S,
        )
    finally:
        conn.close()
    conn = connect(cluster.brokers[2])
    try:
        method, _props, body = conn.channel().basic_get(queue, auto_ack=True)
        assert method is not None and body == b"v4"
    finally:
        conn.close()


def live(broker: BrokerProcess) -> set[int]:
    with RawKafka(broker.bootstrap) as raw:
        answer = raw.call(m.MetadataRequest(topics=[]), 12)
    return {b.node_id for b in answer.brokers}


def test_an_mqtt_session_restored_while_its_coordinator_hangs_waits_for_the_next_one(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """A broker restarted while the broker coordinating a stored session's group hangs
    (stopped, its lease still running: the forwarded OffsetFetch gets no answer) retries
    until the group has moved, and the session gets what was published while it was away
    (before: no positions, the session resumed at the end and lost those messages)."""
    url = postgres_server.create_database()
    env = {**GROUP_ENV, "BAYOU_CLUSTER_LEASE_MS": "12000"}  # outlasts the home broker's start
    home, coordinator = (
        BrokerProcess(
            tmp_path / f"node{n}",
            extra_args=["--storage", url, "--node-id", str(n)],
            doors=("mqtt",),
            env=env,
        )
        for n in (1, 2)
    )
    client_id = next(
        c
        for c in (unique_topic("c") for _ in itertools.count())
        if rendezvous(coordinator_key(0, f"mqtt:{c}"), (1, 2)) == 2
    )
    top = unique_topic("mq")
    try:
        start_all([home, coordinator])
        for broker in (home, coordinator):  # the group is placed on the coordinator
            wait_until("both brokers to be live", lambda b=broker: live(b) == {1, 2}, TIMEOUT_S)
        create_topic(coordinator.bootstrap, top, 1)
        sub = MqttTestClient(home.mqtt_port, client_id, clean=False)
        pub = MqttTestClient(coordinator.mqtt_port, unique_topic("p"))
        try:
            sub.subscribe(f"{top}/#", 1)
            for i in range(3):
                pub.publish(f"{top}/dev", b"m%d" % i, qos=1)
            assert [r.payload for r in sub.receive(3)] == [b"m0", b"m1", b"m2"]
            group = f"mqtt:{client_id}"
            wait_until(
                "the session's positions to be committed on the coordinator",
                lambda: committed(coordinator.bootstrap, group, top, 1) == {0: 3},
                TIMEOUT_S,
            )
            sub.close()
            assert home.stop() == 0  # leaves the cluster: nothing of it left to wait for
            for i in range(3, 6):
                pub.publish(f"{top}/dev", b"m%d" % i, qos=1)
        finally:
            pub.close()
        assert coordinator.proc is not None
        os.kill(coordinator.proc.pid, signal.SIGSTOP)
        try:
            home.start()
        finally:
            os.kill(coordinator.proc.pid, signal.SIGCONT)
        sub = MqttTestClient(home.mqtt_port, client_id, clean=False)
        try:
            assert sub.session_present
            assert [r.payload for r in sub.receive(3)] == [b"m3", b"m4", b"m5"]
        finally:
            sub.close()
    finally:
        home.kill()
        coordinator.kill()
