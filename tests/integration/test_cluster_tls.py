"""A cluster whose brokers have TLS listeners: a client bootstrapped on one broker's TLS
listener is sent to the others' TLS listeners (Metadata, FindCoordinator), as Kafka answers
each listener with its own addresses, so it produces to and consumes from partitions led
anywhere without ever reaching a plain port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bayou.storage.cluster import partition_key, rendezvous
from tests.support.broker import BrokerProcess, start_all, wait_for_port
from tests.support.kafka import unique_topic
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.security import Pki
from tests.support.wait import wait_until

NODES = (1, 2)
TIMEOUT_S = 30.0


class TlsCluster:
    def __init__(self, root: Path, url: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(root)
        cert, key, _serial = self.pki.issue("server", "localhost", server=True)
        self.tls_ports = {n: free_port() for n in NODES}
        self.brokers: dict[int, BrokerProcess] = {}
        for n in NODES:
            args = [
                "--storage", url, "--node-id", str(n),
                "--group-initial-rebalance-delay-ms", "0",
                "--tls-cert", str(cert), "--tls-key", str(key),
                "--kafka-tls-port", str(self.tls_ports[n]),
            ]  # fmt: skip
            self.brokers[n] = BrokerProcess(root / f"node{n}", extra_args=args, doors=())

    def start(self) -> None:
        start_all(self.brokers.values())
        for n, broker in self.brokers.items():
            wait_for_port(broker.host, self.tls_ports[n], broker.proc, 30)

    def stop(self) -> None:
        for broker in self.brokers.values():
            broker.stop()

    def client(self, node: int, **extra: Any) -> dict[str, Any]:
        """confluent-kafka settings for broker ``node``'s TLS listener only."""
        return {
            "bootstrap.servers": f"127.0.0.1:{self.tls_ports[node]}",
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.pki.ca_path),
            **extra,
        }


def spread_topic() -> str:
    """A new topic name whose four partitions are placed on both brokers (by the cluster's
    own rendezvous hashing: a name at random puts all four on one broker one time in 8)."""
    for _ in range(1000):
        topic = unique_topic("tls")
        if {rendezvous(partition_key(topic, p), set(NODES)) for p in range(4)} == set(NODES):
            return topic
    raise AssertionError("no topic name spreads four partitions over two brokers")


@pytest.fixture
def cluster(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[TlsCluster]:
    found = TlsCluster(tmp_path / "tls", postgres_server.create_database())
    found.start()
    try:
        yield found
    finally:
        found.stop()


def test_a_tls_client_reaches_every_broker_at_its_tls_listener(cluster: TlsCluster) -> None:
    admin = AdminClient(cluster.client(1))
    want = {n: ("127.0.0.1", port) for n, port in cluster.tls_ports.items()}

    def listed() -> dict[int, tuple[str, int]]:
        brokers = admin.list_topics(timeout=10).brokers
        return {b.id: (b.host, b.port) for b in brokers.values()}

    wait_until(f"the TLS listener to list {want}", lambda: listed() == want, TIMEOUT_S)
    topic = spread_topic()
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(15)
    placed = {p: rendezvous(partition_key(topic, p), set(NODES)) for p in range(4)}

    def leaders() -> dict[int, int]:
        found = admin.list_topics(topic, timeout=10).topics[topic].partitions
        return {p.id: p.leader for p in found.values()}

    wait_until(f"the leaders {placed}", lambda: leaders() == placed, TIMEOUT_S)
    producer = Producer(cluster.client(1, **{"linger.ms": 5}))
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    sent = {p: [b"%d-%d" % (p, i) for i in range(10)] for p in range(4)}
    for i in range(10):
        for p in range(4):
            producer.produce(topic, value=sent[p][i], partition=p, on_delivery=on_delivery)
    assert producer.flush(TIMEOUT_S) == 0
    assert errors == []
    consumer = Consumer(
        cluster.client(1, **{"group.id": unique_topic("g"), "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])  # the group's coordinator is found through the TLS listener
    got: dict[int, list[bytes]] = {p: [] for p in range(4)}
    deadline = time.monotonic() + 60
    try:
        while sum(map(len, got.values())) < 40 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got[msg.partition()].append(msg.value())
    finally:
        consumer.close()
    assert got == sent
