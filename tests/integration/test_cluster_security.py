"""Users and ACLs of a cluster made before its first secured start: ``bayou user add`` and
``bayou acl add`` with ``--storage postgres://…`` write the shared engine (no broker running,
no data directory of a broker), ``list`` reads them back, and then every broker started on
that database logs those users in and applies those ACLs."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bayou.storage.cluster import coordinator_key, partition_key, rendezvous
from tests.support.amqp import Collector
from tests.support.broker import BrokerProcess, start_all
from tests.support.http import BINARY_V2, V2, client, create_instance, read_records
from tests.support.kafka import unique_topic
from tests.support.kafka_java import ShareClients, records, why_not
from tests.support.postgres import PostgresServer
from tests.support.security import bayou_cli, sasl
from tests.support.wait import wait_until

TIMEOUT_S = 30.0


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture
def brokers(tmp_path: Path, database: str) -> Iterator[list[BrokerProcess]]:
    secured = ["--authorizer", "acl", "--super-user", "admin"]
    started = [
        BrokerProcess(
            tmp_path / f"node{n}",
            extra_args=["--storage", database, "--node-id", str(n), *secured],
            doors=(),
        )
        for n in (1, 2)
    ]
    yield started
    for b in started:
        b.kill()


def cli(*args: str, stdin: str | None = None) -> str:
    done = bayou_cli(*args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


def produce(config: dict[str, Any], topic: str, value: bytes) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    p = Producer({"acks": "all", "message.timeout.ms": 15_000, **config})
    p.produce(topic, value=value, on_delivery=lambda err, _msg: errors.append(err))
    p.flush(TIMEOUT_S)
    assert len(errors) == 1
    return errors[0]


def test_users_and_acls_added_to_the_shared_engine_hold_on_every_broker(
    database: str, brokers: list[BrokerProcess]
) -> None:
    allowed, other = unique_topic(), unique_topic()
    cli("user", "add", "admin", "--password-stdin", "--storage", database, stdin="admin-pw\n")
    cli("user", "add", "alice", "--password-stdin", "--storage", database, stdin="alice-pw\n")
    cli("acl", "add", "--allow", "alice", "--operation", "WRITE", "--operation", "DESCRIBE",
        "--topic", allowed, "--storage", database)  # fmt: skip
    users = cli("user", "list", "--storage", database).splitlines()
    assert sorted(users) == ["admin\tSCRAM-SHA-512", "alice\tSCRAM-SHA-512"]
    acls = cli("acl", "list", "--storage", database).splitlines()
    assert sorted(acls) == [
        f"ALLOW\tUser:alice\tDESCRIBE\tTOPIC:{allowed}\tLITERAL\thost=*",
        f"ALLOW\tUser:alice\tWRITE\tTOPIC:{allowed}\tLITERAL\thost=*",
    ]
    start_all(brokers)
    admin = AdminClient(sasl(brokers[0].bootstrap, "admin", "admin-pw"))
    for future in admin.create_topics(
        [NewTopic(allowed, 1), NewTopic(other, 1)], operation_timeout=10
    ).values():
        future.result(TIMEOUT_S)
    for broker in brokers:  # each broker alone: its own login and ACL check
        alice = sasl(broker.bootstrap, "alice", "alice-pw")
        assert produce(alice, allowed, b"from alice") is None
        refused = produce(alice, other, b"not hers")
        assert refused is not None
        assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        wrong = produce(
            sasl(broker.bootstrap, "alice", "wrong", **{"message.timeout.ms": 5000}), allowed, b"x"
        )
        assert wrong is not None


def test_an_http_consumer_on_a_secured_broker_that_does_not_coordinate_its_group(
    tmp_path: Path, database: str
) -> None:
    """The forwarded heartbeats and commits log in to the coordinating broker as the
    brokers' internal user (before: NOT_COORDINATOR for ever under --authorizer acl)."""
    cli("user", "add", "admin", "--password-stdin", "--storage", database, stdin="admin-pw\n")
    secured = ["--authorizer", "acl", "--super-user", "admin"]
    brokers = {
        n: BrokerProcess(
            tmp_path / f"node{n}",
            extra_args=["--storage", database, "--node-id", str(n), *secured],
            doors=("http",),
        )
        for n in (1, 2)
    }
    try:
        start_all(brokers.values())
        topic = unique_topic()
        group = next(
            g for g in (unique_topic("g") for _ in range(1000))
            if rendezvous(coordinator_key(0, g), (1, 2)) == 1
        )  # fmt: skip
        admin = sasl(brokers[1].bootstrap, "admin", "admin-pw")
        admin_client = AdminClient(admin)  # kept: a collected client cancels its futures
        admin_client.create_topics([NewTopic(topic, 2)])[topic].result(TIMEOUT_S)
        values = [b"v%d" % i for i in range(10)]
        p = Producer({"acks": "all", **admin})
        for i, v in enumerate(values):
            p.produce(topic, value=v, partition=i % 2)
        assert p.flush(2 * TIMEOUT_S) == 0  # the new brokers may still be claiming partitions
        with client(brokers[2].http_url, timeout=TIMEOUT_S) as http:  # not the coordinator
            http.auth = httpx.BasicAuth("admin", "admin-pw")
            base = create_instance(
                http,
                group,
                "c1",
                format="binary",
                **{"auto.offset.reset": "earliest", "auto.commit.enable": "false"},
            )
            subscribe = {"json": {"topics": [topic]}, "headers": {"Content-Type": V2}}
            wait_until(  # 503 (retriable) while the cluster's brokers claim their groups
                "the subscription through a broker that does not coordinate the group",
                lambda: http.post(f"{base}/subscription", **subscribe).status_code == 204,
                timeout=60,
            )
            got = read_records(http, base, BINARY_V2, len(values))
            assert sorted(base64.b64decode(r["value"]) for r in got) == sorted(values)
            r = http.post(f"{base}/offsets", headers={"Content-Type": V2})
            assert r.status_code == 200, r.text
            assert http.delete(base).status_code == 204
        consumer = Consumer({**admin, "group.id": group})
        try:
            found = consumer.committed([TopicPartition(topic, q) for q in (0, 1)], timeout=10)
        finally:
            consumer.close()
        assert sorted((tp.partition, tp.offset) for tp in found) == [(0, 5), (1, 5)]
    finally:
        for b in brokers.values():
            b.kill()


def test_share_members_on_a_secured_broker_that_does_not_coordinate_their_group(
    tmp_path: Path, database: str
) -> None:
    """With --authorizer acl: pika consumers of a classic queue on a broker that does not
    coordinate the queue's share group, and a Java share consumer whose partition's leader
    does not coordinate its group — the members' calls and the relayed ShareFetch log in to
    the coordinator as the brokers' internal user, and every message comes once."""
    cli("user", "add", "admin", "--password-stdin", "--storage", database, stdin="admin-pw\n")
    secured = ["--authorizer", "acl", "--super-user", "admin"]
    nodes = (1, 2)
    brokers = {
        n: BrokerProcess(
            tmp_path / f"node{n}",
            extra_args=["--storage", database, "--node-id", str(n), *secured],
            doors=("amqp",),
        )
        for n in nodes
    }
    java = None
    try:
        start_all(brokers.values())
        queue = next(
            q for q in (unique_topic("q") for _ in range(1000))
            if rendezvous(coordinator_key(0, f"amqp:{q}"), nodes) == 1
        )  # fmt: skip
        conn = pika.BlockingConnection(
            pika.ConnectionParameters(
                brokers[2].host,
                brokers[2].amqp_port,
                credentials=pika.PlainCredentials("admin", "admin-pw"),
                connection_attempts=3,
                retry_delay=0.2,
            )
        )
        try:
            ch = conn.channel()
            ch.queue_declare(queue, durable=True)
            ch.confirm_delivery()
            sent = [b"m%d" % i for i in range(10)]
            for body in sent:
                ch.basic_publish("", queue, body)
            ch.basic_qos(prefetch_count=20)
            got = Collector(conn, ch, queue).wait_for(len(sent), timeout=60)
            assert sorted(d.body for d in got) == sorted(sent)
            for d in got:
                ch.basic_ack(d.tag)
        finally:
            conn.close()
        if why_not() is not None:
            return
        topic = next(
            t for t in (unique_topic("st") for _ in range(1000))
            if rendezvous(partition_key(t, 0), nodes) == 2
        )  # fmt: skip
        group = next(
            g for g in (unique_topic("sg") for _ in range(1000))
            if rendezvous(coordinator_key(0, g), nodes) == 1
        )  # fmt: skip
        admin = sasl(brokers[2].bootstrap, "admin", "admin-pw")
        admin_client = AdminClient(admin)
        admin_client.create_topics([NewTopic(topic, 1)])[topic].result(TIMEOUT_S)
        java = ShareClients(tmp_path / "java.log")
        login = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            'username="admin" password="admin-pw";'
        )
        java.call(
            "new", "s", brokers[2].bootstrap, group, topic,
            "security.protocol=SASL_PLAINTEXT", "sasl.mechanism=SCRAM-SHA-512",
            f"sasl.jaas.config={login}",
        )  # fmt: skip
        java.call("consume", "s", 1, 8_000, "accept")  # joined: its partition starts at the end
        values = [f"v{i}" for i in range(10)]
        p = Producer({"acks": "all", **admin})
        for v in values:
            p.produce(topic, value=v.encode())
        assert p.flush(2 * TIMEOUT_S) == 0
        records_got = records(java.call("consume", "s", len(values), 30_000, "accept"))
        java.call("close", "s")
        assert sorted(r[4] for r in records_got) == sorted(values)
    finally:
        if java is not None:
            java.close()
        for b in brokers.values():
            b.kill()


def test_a_transaction_across_secured_brokers(database: str, brokers: list[BrokerProcess]) -> None:
    """Under --authorizer acl the brokers' transaction calls to each other (verification,
    markers) log in as the internal user: a transaction whose coordinator, group coordinator
    and leaders are different brokers commits its records and offsets, and aborts."""
    cli("user", "add", "admin", "--password-stdin", "--storage", database, stdin="admin-pw\n")
    start_all(brokers)
    nodes = (1, 2)
    tid = next(
        t for t in (unique_topic("tid") for _ in range(1000))
        if rendezvous(coordinator_key(1, t), nodes) == 1
    )  # fmt: skip
    group = next(
        g for g in (unique_topic("g") for _ in range(1000))
        if rendezvous(coordinator_key(0, g), nodes) == 2
    )  # fmt: skip
    topic = next(  # partitions led by both brokers
        t for t in (unique_topic() for _ in range(1000))
        if {rendezvous(partition_key(t, q), nodes) for q in range(4)} == set(nodes)
    )  # fmt: skip
    admin = sasl(brokers[0].bootstrap + "," + brokers[1].bootstrap, "admin", "admin-pw")
    admin_client = AdminClient(admin)
    admin_client.create_topics([NewTopic(topic, 4)])[topic].result(TIMEOUT_S)
    p = Producer({**admin, "transactional.id": tid})
    p.init_transactions(2 * TIMEOUT_S)  # the new brokers may still be loading their ids
    consumer = Consumer({**admin, "group.id": group, "enable.auto.commit": False})
    try:
        for commit, tag in ((True, b"kept"), (False, b"dropped")):
            p.begin_transaction()
            for i in range(8):
                p.produce(topic, value=tag + b"%d" % i, partition=i % 4)
            offsets = [TopicPartition(topic, 0, 10 if commit else 20)]
            p.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), TIMEOUT_S)
            if commit:
                p.commit_transaction(TIMEOUT_S)
            else:
                assert p.flush(TIMEOUT_S) == 0
                p.abort_transaction(TIMEOUT_S)
        [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=TIMEOUT_S)
        assert committed.offset == 10
    finally:
        consumer.close()
    reader = Consumer({**admin, "group.id": unique_topic("r"), "isolation.level": "read_committed"})
    reader.assign([TopicPartition(topic, q, 0) for q in range(4)])
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 8 and time.monotonic() < deadline:
            msg = reader.poll(0.2)
            if msg is not None and not msg.error():
                got.append(msg.value() or b"")
    finally:
        reader.close()
    assert sorted(got) == sorted(b"kept%d" % i for i in range(8))
