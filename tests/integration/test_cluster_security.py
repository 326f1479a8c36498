"""Users and ACLs of a cluster made before its first secured start: ``bayou user add`` and
``bayou acl add`` with ``--storage postgres://…`` write the shared engine (no broker running,
no data directory of a broker), ``list`` reads them back, and then every broker started on
that database logs those users in and applies those ACLs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.postgres import PostgresServer
from tests.support.security import bayou_cli

TIMEOUT_S = 30.0


def sasl(bootstrap: str, user: str, password: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        **extra,
    }


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
    threads = [threading.Thread(target=b.start) for b in brokers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
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
