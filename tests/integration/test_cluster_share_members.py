"""Share groups (KIP-932) whose members reach brokers that do not coordinate the group:
Java ``KafkaShareConsumer``s (which send ShareFetch to each partition's leader) get every
record of a topic led by all three brokers exactly once, and the doors' share members — AMQP
consumers of a classic queue (pika), MQTT shared subscribers (paho-mqtt) — connected to a
broker that does not coordinate their group receive their share, exactly once across
members on different brokers, and what a member held goes to the others when its broker
is killed with kill -9."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from bayou.storage.cluster import partition_key, rendezvous
from tests.integration.test_cluster import NODES, Cluster
from tests.integration.test_cluster_doors import group_coordinated_by, produce, serves
from tests.integration.test_confluent_kafka import create_topic
from tests.support.kafka import unique_topic
from tests.support.kafka_java import ShareClients, records, why_not
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
    for n in NODES:  # each coordinator has loaded its groups (the cluster settled)
        group = group_coordinated_by(n, "settle-")
        wait_until(f"node {n} to serve its groups", lambda n=n, g=group: serves(c, n, g))  # type: ignore[misc]
    try:
        yield c
    finally:
        c.kill_all()


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
