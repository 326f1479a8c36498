"""Share groups (KIP-932) in a cluster, with the Java ``KafkaShareConsumer``: a share
group's configs set through any broker reach its coordinator, and when that coordinator is
killed with kill -9 the broker the group moves to reloads the group's state from the engine
— acknowledged records stay acknowledged, records held by a consumer of the dead broker come
back with their delivery counts."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from bayou.storage.cluster import coordinator_key, partition_key, rendezvous
from tests.integration.test_cluster import NODES, TIMEOUT_S, Cluster
from tests.integration.test_cluster_doors import group_coordinated_by, serves
from tests.integration.test_confluent_kafka import create_topic
from tests.support.kafka import unique_topic
from tests.support.kafka_java import JavaError, ShareClients, records, why_not
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(why_not() is not None, reason=str(why_not()))


@pytest.fixture
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("shares"), postgres_server.create_database(), doors=())
    c.start()
    for n in NODES:
        group = group_coordinated_by(n, "settle-")
        wait_until(f"node {n} to serve its groups", lambda n=n, g=group: serves(c, n, g))  # type: ignore[misc]
    try:
        yield c
    finally:
        c.kill_all()


@pytest.fixture
def java(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareClients]:
    clients = ShareClients(tmp_path_factory.mktemp("java") / "java.log")
    try:
        yield clients
    finally:
        clients.close()


def produce(bootstrap: str, topic: str, values: list[str]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for v in values:
        p.produce(topic, value=v.encode())
    assert p.flush(TIMEOUT_S) == 0


def test_a_share_group_whose_coordinator_is_killed_keeps_its_state(
    cluster: Cluster, java: ShareClients
) -> None:
    victim = 2
    survivors = set(NODES) - {victim}
    # Kafka's share consumers fetch from each partition's leader, and only the group's
    # coordinator serves ShareFetch here (cluster.md, *Not built*): a topic the victim
    # leads and a group it coordinates, both moving to the same survivor
    topic = next(
        t
        for t in (unique_topic("sh") for _ in itertools.count())
        if rendezvous(partition_key(t, 0), NODES) == victim
    )
    heir = rendezvous(partition_key(topic, 0), survivors)
    group = next(
        g
        for g in (group_coordinated_by(victim, "share-") for _ in itertools.count())
        if rendezvous(coordinator_key(0, g), survivors) == heir
    )
    create_topic(cluster.brokers[1].bootstrap, topic, 1)
    assert cluster.wait_led(topic, set(NODES)) == {0: victim}
    bootstrap = cluster.bootstrap
    produce(bootstrap, topic, [f"done{i}" for i in range(10)])
    for n in NODES:  # whichever broker the admin client asks, the coordinator keeps it
        java.call("config", cluster.brokers[n].bootstrap, group, "share.auto.offset.reset=earliest")
    java.call("new", "before", bootstrap, group, topic)
    accepted = records(java.call("consume", "before", 10, 20_000, "accept"))
    assert sorted(r[4] for r in accepted) == sorted(f"done{i}" for i in range(10))
    produce(bootstrap, topic, [f"open{i}" for i in range(5)])
    held = records(java.call("consume", "before", 5, 20_000, "hold"))
    assert [(r[4], r[3]) for r in held] == [(f"open{i}", 1) for i in range(5)]
    cluster.brokers[victim].kill()
    cluster.wait_live(survivors)
    assert cluster.wait_led(topic, survivors) == {0: heir}
    with contextlib.suppress(JavaError):  # its coordinator is gone
        java.call("close", "before", timeout=30)
    alive = ",".join(cluster.brokers[n].bootstrap for n in sorted(survivors))
    java.call("new", "after", alive, group, topic)
    after = records(java.call("consume", "after", 5, 40_000, "accept", timeout=60))
    java.call("close", "after")
    # exactly the held records, delivered a second time; nothing acknowledged comes back
    assert [(r[4], r[3]) for r in after] == [(f"open{i}", 2) for i in range(5)]
