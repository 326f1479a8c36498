"""Share groups (KIP-932) whose members reach brokers that do not coordinate the group:
Java ``KafkaShareConsumer``s (which send ShareFetch to each partition's leader) get every
record of a topic led by all three brokers exactly once, what one killed while holding
records held goes to another at once, a consumer goes on when the coordinator is killed;
and the doors' share members — AMQP
consumers of a classic queue (pika), MQTT shared subscribers (paho-mqtt) — connected to a
broker that does not coordinate their group receive their share, exactly once across
members on different brokers, and what a member held goes to the others when its broker
is killed with kill -9."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import ShareConsumer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from bayou.gateways.mqtt.shared import share_group_id
from bayou.storage.cluster import coordinator_key, partition_key, rendezvous
from tests.integration.test_cluster import NODES, TIMEOUT_S, Cluster
from tests.integration.test_cluster_doors import group_coordinated_by, produce, serves
from tests.integration.test_confluent_kafka import create_topic
from tests.support.amqp import Collector, connect
from tests.support.kafka import unique_topic
from tests.support.kafka_java import JavaError, ShareClients, records, why_not
from tests.support.mqtt import MqttTestClient, Received
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

PARTITIONS = 6


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("share-members"),
        postgres_server.create_database(),
        doors=("mqtt", "amqp"),
    )
    c.start()
    settle(c)
    try:
        yield c
    finally:
        c.kill_all()


def settle(cluster: Cluster) -> None:
    """Every broker live and serving its groups (it claimed its partitions before)."""
    cluster.wait_live(set(NODES))
    for n in NODES:
        group = group_coordinated_by(n, "settle-")
        wait_until(f"node {n} to serve its groups", lambda n=n, g=group: serves(cluster, n, g))  # type: ignore[misc]


@pytest.fixture(scope="module")
def java(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareClients]:
    if why_not() is not None:
        pytest.skip(str(why_not()))
    clients = ShareClients(tmp_path_factory.mktemp("java") / "java.log")
    try:
        yield clients
    finally:
        clients.close()


def topic_led_by_all(cluster: Cluster, prefix: str) -> str:
    """A new topic of ``PARTITIONS`` partitions with partitions led by every broker."""
    topic = next(
        t
        for t in (unique_topic(prefix) for _ in itertools.count())
        if {rendezvous(partition_key(t, p), NODES) for p in range(PARTITIONS)} == set(NODES)
    )
    create_topic(cluster.brokers[1].bootstrap, topic, PARTITIONS)
    assert set(cluster.wait_led(topic, set(NODES)).values()) == set(NODES)
    return topic


def test_java_share_consumers_get_every_partition_whichever_broker_leads_it(
    cluster: Cluster, java: ShareClients
) -> None:
    """Two share consumers of one group, bootstrapped from different brokers, on a topic
    whose partitions every broker leads: every record comes once, acknowledged, nothing
    twice — the leaders that do not coordinate the group relay ShareFetch to it."""
    topic = topic_led_by_all(cluster, "shl")
    group = group_coordinated_by(2, "share-")
    values = [f"v{i}" for i in range(120)]
    produce(cluster.bootstrap, topic, PARTITIONS, [v.encode() for v in values])
    java.call("config", cluster.brokers[1].bootstrap, group, "share.auto.offset.reset=earliest")
    java.call("new", "a", cluster.brokers[1].bootstrap, group, topic)
    java.call("new", "b", cluster.brokers[3].bootstrap, group, topic)
    got: list[tuple[str, int, int, int, str]] = []
    for _ in range(30):  # bounded: each round polls both for up to 2 s
        if len(got) >= len(values):
            break
        want = len(values) - len(got)
        a = java.send("consume", "a", want, 2_000, "accept")
        b = java.send("consume", "b", want, 2_000, "accept")
        got += records(java.result(a)) + records(java.result(b))
    java.call("close", "a")
    java.call("close", "b")
    assert sorted(r[4] for r in got) == sorted(values)  # every one, none twice
    assert {r[1] for r in got} == set(range(PARTITIONS))
    assert {r[3] for r in got} == {1}  # delivered once each


def named_for(node: int, make: Callable[[str], str], prefix: str) -> str:
    """A new name whose share group (``make(name)``) the broker ``node`` coordinates."""
    return next(
        n
        for n in (unique_topic(prefix) for _ in itertools.count())
        if rendezvous(coordinator_key(0, make(n)), NODES) == node
    )


def pump(collectors: list[Collector], total: int) -> None:
    """Pump every pika connection until ``total`` deliveries wait unacknowledged (bounded)."""
    deadline = time.monotonic() + TIMEOUT_S
    while sum(len(c.got) for c in collectors) < total and time.monotonic() < deadline:
        for c in collectors:
            c.conn.process_data_events(time_limit=0.05)


def test_amqp_consumers_of_a_classic_queue_on_brokers_that_do_not_coordinate_it(
    cluster: Cluster,
) -> None:
    """A classic queue whose share group ``amqp:Q`` broker 1 coordinates, declared and fed
    through broker 2, consumed through brokers 2 and 3: every message once in all, and
    what one consumer requeues goes to the other."""
    queue = named_for(1, lambda q: f"amqp:{q}", "cq")
    conns = [connect(cluster.brokers[2]), connect(cluster.brokers[3])]
    try:
        ch = conns[0].channel()
        ch.queue_declare(queue, durable=True, arguments={"x-partitions": 3})
        ch.confirm_delivery()
        sent = [b"m%d" % i for i in range(60)]
        for body in sent[:30]:  # before any consumer: they wait for one
            ch.basic_publish("", queue, body)
        chans = [ch, conns[1].channel()]
        # declared again as a client of broker 3 would (an AMQP declaration reaches the
        # other brokers at their next start: cluster.md)
        chans[1].queue_declare(queue, durable=True, arguments={"x-partitions": 3})
        collectors = []
        for conn, c in zip(conns, chans, strict=True):
            c.basic_qos(prefetch_count=5)
            collectors.append(Collector(conn, c, queue))
        for body in sent[30:]:
            ch.basic_publish("", queue, body)
        acked: list[bytes] = []
        per_consumer = [0, 0]
        deadline = time.monotonic() + TIMEOUT_S
        while len(acked) < len(sent) and time.monotonic() < deadline:
            pump(collectors, 1)
            for c, chan in zip(collectors, chans, strict=True):
                for d in c.got:
                    chan.basic_ack(d.tag)
                    acked.append(d.body)
                per_consumer[collectors.index(c)] += len(c.got)
                c.got.clear()
        assert sorted(acked) == sorted(sent)  # every one, none twice
        assert all(per_consumer), per_consumer  # both brokers' consumers had a share
        for c in collectors:
            assert c.quiet_for(0.5) == 0
    finally:
        for conn in conns:
            conn.close()


def test_mqtt_shared_subscribers_on_brokers_that_do_not_coordinate_the_group(
    cluster: Cluster,
) -> None:
    """``$share/g/<top>/#`` subscribers on brokers 2 and 3, the group coordinated by broker
    1, the topic's partitions led by all three: every message reaches one of them, once."""
    top = named_for(1, lambda t: share_group_id("g", f"{t}/#"), "mqs")
    create_topic(cluster.brokers[1].bootstrap, top, 3)
    cluster.wait_led(top, set(NODES))
    members = [
        MqttTestClient(cluster.brokers[2].mqtt_port, unique_topic("m"), version=5),
        MqttTestClient(cluster.brokers[3].mqtt_port, unique_topic("m")),
    ]
    pub = MqttTestClient(cluster.brokers[1].mqtt_port, unique_topic("p"))
    try:
        for m in members:
            m.subscribe(f"$share/g/{top}/#", 1)
        sent = [(f"{top}/dev/{i % 7}", b"m %d" % i) for i in range(90)]
        for topic, payload in sent:
            pub.publish(topic, payload, qos=1)
        got: list[list[Received]] = [[], []]
        deadline = time.monotonic() + TIMEOUT_S
        while sum(map(len, got)) < len(sent) and time.monotonic() < deadline:
            for i, m in enumerate(members):
                got[i].extend(m.receive(len(sent), timeout=0.05))
        assert sorted(r.payload for g in got for r in g) == sorted(p for _t, p in sent)
        for m in members:
            assert m.receive(1, timeout=0.5) == []  # nothing twice
    finally:
        pub.close()
        for m in members:
            m.close()


def test_what_members_on_a_killed_broker_held_goes_to_members_on_the_others(
    cluster: Cluster,
) -> None:
    """An AMQP consumer and an MQTT shared subscriber on broker 3 hold messages they never
    acknowledge; their groups are coordinated by broker 1, their peers are on broker 2.
    Broker 3 is killed with kill -9: the peers get every held message, flagged redelivered
    (AMQP) and DUP (MQTT), without waiting for a session or lock to expire — the
    coordinator saw the members' connections close."""
    victim, peer = 3, 2
    queue = named_for(1, lambda q: f"amqp:{q}", "kq")
    top = named_for(1, lambda t: share_group_id("g", f"{t}/#"), "kmq")
    create_topic(cluster.brokers[1].bootstrap, top, 2)
    cluster.wait_led(top, set(NODES))
    held_conn = connect(cluster.brokers[victim])
    held_mqtt = MqttTestClient(
        cluster.brokers[victim].mqtt_port, unique_topic("h"), version=5, manual_ack=True
    )
    peer_conn = connect(cluster.brokers[peer])
    peer_mqtt = MqttTestClient(cluster.brokers[peer].mqtt_port, unique_topic("q"), version=5)
    try:
        ch = held_conn.channel()
        ch.queue_declare(queue, durable=True, arguments={"x-partitions": 2})
        ch.basic_qos(prefetch_count=50)
        holder = Collector(held_conn, ch, queue)
        held_mqtt.subscribe(f"$share/g/{top}/#", 1)
        pub = peer_conn.channel()
        pub.queue_declare(queue, durable=True, arguments={"x-partitions": 2})
        pub.confirm_delivery()
        sent = [b"k%d" % i for i in range(10)]
        for body in sent:
            pub.basic_publish("", queue, body)
        mqtt_sent = [(f"{top}/dev/{i % 3}", b"q %d" % i) for i in range(10)]
        for topic, payload in mqtt_sent:
            peer_mqtt.publish(topic, payload, qos=1)
        assert sorted(d.body for d in holder.wait_for(10, timeout=TIMEOUT_S)) == sorted(sent)
        mqtt_held = held_mqtt.receive(10, timeout=TIMEOUT_S)
        assert sorted(r.payload for r in mqtt_held) == sorted(p for _t, p in mqtt_sent)
        # the peers join; nothing is left for them while the holders live
        pub.basic_qos(prefetch_count=50)
        taker = Collector(peer_conn, pub, queue)
        peer_mqtt.subscribe(f"$share/g/{top}/#", 1)
        assert taker.quiet_for(1.0) == 0
        assert peer_mqtt.receive(1, timeout=0.5) == []
        cluster.brokers[victim].kill()
        got = taker.wait_for(10, timeout=TIMEOUT_S)
        assert sorted(d.body for d in got) == sorted(sent)
        assert all(d.redelivered for d in got)
        for d in got:
            pub.basic_ack(d.tag)
        again = peer_mqtt.receive(10, timeout=TIMEOUT_S)
        assert sorted(r.payload for r in again) == sorted(p for _t, p in mqtt_sent)
        assert all(r.dup for r in again)
    finally:
        held_mqtt.client.loop_stop()
        for conn in (held_conn, peer_conn):
            with contextlib.suppress(Exception):
                conn.close()
        peer_mqtt.close()
        if cluster.brokers[victim].proc is None or cluster.brokers[victim].proc.poll() is not None:
            cluster.brokers[victim].start()
        settle(cluster)


def test_a_java_share_consumer_keeps_consuming_when_the_coordinator_is_killed(
    cluster: Cluster, java: ShareClients
) -> None:
    """The group's coordinator — also the leader of some of the topic's partitions — is
    killed with kill -9 while a share consumer bootstrapped from the other brokers reads:
    the consumer goes on through the relaying leaders and the new coordinator, and gets
    every record; a record it sees twice was delivered again (its acquisition was lost with
    the coordinator), never one it had acknowledged."""
    victim = 2
    survivors = set(NODES) - {victim}
    topic = topic_led_by_all(cluster, "shk")
    group = group_coordinated_by(victim, "share-")
    values = [f"w{i}" for i in range(120)]
    produce(cluster.bootstrap, topic, PARTITIONS, [v.encode() for v in values])
    java.call("config", cluster.brokers[1].bootstrap, group, "share.auto.offset.reset=earliest")
    alive = ",".join(cluster.brokers[n].bootstrap for n in sorted(survivors))
    java.call("new", "k", alive, group, topic)
    try:
        before = records(java.call("consume", "k", 40, 20_000, "accept"))
        assert len(before) >= 40
        cluster.brokers[victim].kill()
        cluster.wait_live(survivors)
        after: list[tuple[str, int, int, int, str]] = []
        for _ in range(40):  # bounded: each round polls for up to 2 s
            seen = {r[4] for r in before + after}
            if seen >= set(values):
                break
            after += records(java.call("consume", "k", len(values), 2_000, "accept"))
        with contextlib.suppress(JavaError):
            java.call("close", "k", timeout=30)
    finally:
        cluster.brokers[victim].start()
        settle(cluster)
    counts: dict[str, list[int]] = {}
    for r in before + after:
        counts.setdefault(r[4], []).append(r[3])
    assert set(counts) == set(values)
    assert {v for v, c in counts.items() if len(c) > 1 and max(c) < 2} == set()
    assert {r[4] for r in before}.isdisjoint(r[4] for r in after)  # acknowledged: never again


def test_a_share_consumer_killed_holding_relayed_records_hands_them_over(
    cluster: Cluster, java: ShareClients, tmp_path: Path
) -> None:
    """A share consumer holds records of a partition whose leader (broker 3) relays to the
    group's coordinator (broker 1), and is killed with kill -9: its connection to the
    leader drops, the leader closes the relaying connection and the coordinator releases
    them at once — another consumer gets them, delivered a second time, long before their
    locks (5 minutes here) would have expired."""
    topic = next(
        t
        for t in (unique_topic("shh") for _ in itertools.count())
        if rendezvous(partition_key(t, 0), NODES) == 3
    )
    create_topic(cluster.brokers[1].bootstrap, topic, 1)
    assert cluster.wait_led(topic, set(NODES)) == {0: 3}
    group = group_coordinated_by(1, "share-")
    values = [f"h{i}" for i in range(20)]
    produce(cluster.bootstrap, topic, 1, [v.encode() for v in values])
    java.call(
        "config",
        cluster.brokers[1].bootstrap,
        group,
        "share.auto.offset.reset=earliest",
        "share.record.lock.duration.ms=300000",
    )
    doomed = ShareClients(tmp_path / "doomed.log")
    try:
        doomed.call("new", "holder", cluster.brokers[3].bootstrap, group, topic)
        held = records(doomed.call("consume", "holder", 20, 20_000, "hold"))
        assert held and {r[3] for r in held} == {1}
    finally:
        doomed.kill()  # its connections drop
    java.call("new", "taker", cluster.brokers[2].bootstrap, group, topic)
    taken = records(java.call("consume", "taker", 20, 30_000, "accept"))
    java.call("close", "taker")
    assert sorted(r[4] for r in taken) == sorted(values)
    counts = {r[4]: r[3] for r in taken}
    assert {counts[r[4]] for r in held} == {2}  # delivered a second time
    assert all(counts[v] == 1 for v in values if v not in {r[4] for r in held})


def test_a_librdkafka_share_consumer_gets_every_partition_whichever_broker_leads_it(
    cluster: Cluster,
) -> None:
    """confluent-kafka's ShareConsumer (librdkafka's, implicit acknowledgement) on a topic
    whose partitions every broker leads, its group coordinated by one of them: every record
    once."""
    topic = topic_led_by_all(cluster, "rkl")
    group = group_coordinated_by(3, "rk-share-")
    kadmin = KafkaAdminClient(bootstrap_servers=cluster.brokers[1].bootstrap)
    try:  # forwarded to the coordinator
        kadmin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.GROUP, group, {"share.auto.offset.reset": "earliest"}
                )
            ],
            incremental=True,
        )
    finally:
        kadmin.close()
    values = [f"r{i}" for i in range(120)]
    produce(cluster.bootstrap, topic, PARTITIONS, [v.encode() for v in values])
    consumer = ShareConsumer({"bootstrap.servers": cluster.brokers[1].bootstrap, "group.id": group})
    consumer.subscribe([topic])
    got: list[tuple[int, str, int]] = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while len(got) < len(values) and time.monotonic() < deadline:
            for msg in consumer.poll(0.2) or []:  # the next poll accepts these
                assert msg.error() is None
                got.append((msg.partition(), msg.value().decode(), msg.delivery_count()))
    finally:
        consumer.close()
    assert sorted(v for _p, v, _c in got) == sorted(values)  # every one, none twice
    assert {p for p, _v, _c in got} == set(range(PARTITIONS))
    assert {c for _p, _v, c in got} == {1}
