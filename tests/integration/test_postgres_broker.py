"""Kafka clients against ``bayou serve --storage postgres://…``: every message back with its
key, headers and timestamp, a consumer group resuming from its commits, transactions at
read_committed; a broker started on an empty data directory serving all of it; two brokers
on one database seeing each other's topics and data; and PostgreSQL restarted under a
producer's load without losing an acknowledged record."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.integration import test_groups as groups
from tests.integration import test_log_lifecycle as lifecycle
from tests.integration import test_transactions as transactions
from tests.integration.test_confluent_kafka import (
    check_received,
    consume_all,
    create_topic,
    produce_all,
)
from tests.integration.test_transactions import producer as txn_producer
from tests.integration.test_transactions import read_all
from tests.support.broker import BrokerProcess
from tests.support.kafka import make_messages, unique_topic
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

TIMEOUT_S = 30.0


def pg_broker(data_dir: Path, url: str, node_id: int = 0) -> BrokerProcess:
    return BrokerProcess(
        data_dir,
        extra_args=[
            "--storage",
            url,
            "--node-id",
            str(node_id),
            "--group-initial-rebalance-delay-ms",
            "0",
        ],
        doors=(),
    )


@pytest.fixture(scope="module")
def pg(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[BrokerProcess]:
    url = postgres_server.create_database()
    proc = pg_broker(tmp_path_factory.mktemp("pg") / "data", url).start()
    try:
        yield proc
    finally:
        proc.kill()


def group_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )


def poll_values(consumer: Consumer, count: int) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(out) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            out.append(msg.value())
    return out


def fetch_parked(consumer: Consumer, stats: list[dict[str, Any]]) -> bool:
    """Whether librdkafka's latest statistics show a Fetch sent and not yet answered (the
    consumer is polled to deliver them; nothing has been produced yet)."""
    assert consumer.poll(0.1) is None
    return bool(stats) and any(
        b["nodeid"] >= 0 and b["req"].get("Fetch", 0) > 0 and b["waitresp_cnt"] > 0
        for b in stats[-1]["brokers"].values()
    )


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], TIMEOUT_S)
        return [tp.offset for tp in tps]
    finally:
        c.close()


def test_every_message_back_a_group_resumes_and_transactions_commit_or_abort(
    pg: BrokerProcess,
) -> None:
    bootstrap, topic = pg.bootstrap, unique_topic()
    create_topic(bootstrap, topic, 3)
    sent = make_messages(600, 3)
    produce_all(bootstrap, topic, sent, **{"enable.idempotence": True, "acks": "all"})
    check_received(sent, consume_all(bootstrap, topic, 3, len(sent)))
    # a group reads everything and commits; the next member resumes after the commit
    group = unique_topic("g")
    first = group_consumer(bootstrap, group)
    try:
        first.subscribe([topic])
        assert len(poll_values(first, len(sent))) == len(sent)
        first.commit(asynchronous=False)
    finally:
        first.close()
    assert sum(committed(bootstrap, group, topic, 3)) == len(sent)
    more = make_messages(30, 3)
    produce_all(bootstrap, topic, more)
    second = group_consumer(bootstrap, group)
    try:
        second.subscribe([topic])
        assert sorted(poll_values(second, len(more))) == sorted(m.value for m in more)
    finally:
        second.close()
    # transactions: a committed one is seen once at read_committed, an aborted one never
    txn_topic, tid = unique_topic("txn"), unique_topic("tid")
    create_topic(bootstrap, txn_topic, 1)
    p = txn_producer(bootstrap, tid)
    p.begin_transaction()
    for i in range(3):
        p.produce(txn_topic, key=b"c%d" % i, value=b"committed")
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    for i in range(2):
        p.produce(txn_topic, key=b"a%d" % i, value=b"aborted")
    p.flush(TIMEOUT_S)
    p.abort_transaction(TIMEOUT_S)
    assert [k for _p, k, _v in read_all(bootstrap, txn_topic, "read_committed")] == [
        b"c0",
        b"c1",
        b"c2",
    ]
    assert len(read_all(bootstrap, txn_topic, "read_uncommitted", expect=5)) == 5


def test_a_broker_on_an_empty_data_dir_serves_everything(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    first = pg_broker(tmp_path / "first", url).start()
    topic, txn_topic, group = unique_topic(), unique_topic("txn"), unique_topic("g")
    sent = make_messages(200, 2)
    try:
        create_topic(first.bootstrap, topic, 2, **{"retention.ms": "86400000"})
        produce_all(first.bootstrap, topic, sent, **{"enable.idempotence": True})
        c = Consumer({"bootstrap.servers": first.bootstrap, "group.id": group})
        try:
            c.commit(
                offsets=[TopicPartition(topic, 0, 40), TopicPartition(topic, 1, 60)],
                asynchronous=False,
            )
        finally:
            c.close()
        create_topic(first.bootstrap, txn_topic, 1)
        p = txn_producer(first.bootstrap, unique_topic("tid"))
        p.begin_transaction()
        p.produce(txn_topic, key=b"kept", value=b"1")
        p.commit_transaction(TIMEOUT_S)
        p.begin_transaction()
        p.produce(txn_topic, key=b"dropped", value=b"2")
        p.flush(TIMEOUT_S)
        p.abort_transaction(TIMEOUT_S)
        assert first.stop() == 0
    finally:
        first.kill()
    assert not any(p.is_file() for p in (tmp_path / "first").rglob("*"))  # nothing on disk
    second = pg_broker(tmp_path / "second", url).start()
    try:
        bootstrap = second.bootstrap
        check_received(sent, consume_all(bootstrap, topic, 2, len(sent)))
        assert committed(bootstrap, group, topic, 2) == [40, 60]
        assert [k for _p, k, _v in read_all(bootstrap, txn_topic, "read_committed")] == [b"kept"]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        assert len(admin.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions) == 2
        more = produce_all(bootstrap, topic, make_messages(1, 2))
        assert more[0].offset() == 100  # appends go on where the first broker stopped
    finally:
        second.kill()


def test_two_brokers_on_one_database_see_each_others_topics_and_data(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    a = pg_broker(tmp_path / "a", url, 1).start()
    b = pg_broker(tmp_path / "b", url, 2).start()
    try:
        topic = unique_topic()
        create_topic(a.bootstrap, topic, 2)
        admin_b = AdminClient({"bootstrap.servers": b.bootstrap})
        wait_until(
            "broker b to list the topic broker a created",
            lambda: topic in admin_b.list_topics(timeout=TIMEOUT_S).topics,
            TIMEOUT_S,
        )
        # a consumer long-polling broker b gets what is produced through broker a: its parked
        # Fetch (45 s) is woken, since poll_values gives up after TIMEOUT_S (30 s)
        first = [m for m in make_messages(2, 2) if m.partition == 1]
        stats: list[dict[str, Any]] = []
        tail = Consumer(
            {
                "bootstrap.servers": b.bootstrap,
                "group.id": unique_topic("g"),
                "fetch.wait.max.ms": 45_000,
                "enable.auto.commit": False,
                "statistics.interval.ms": 100,
                "stats_cb": lambda raw: stats.append(json.loads(raw)),
            }
        )
        try:
            tail.assign([TopicPartition(topic, 1, 0)])
            wait_until(
                "the consumer's Fetch to be parked on broker b", lambda: fetch_parked(tail, stats)
            )
            produce_all(a.bootstrap, topic, first)
            assert poll_values(tail, 1) == [first[0].value]
        finally:
            tail.close()
        # both brokers append to both partitions at once: one offset sequence per partition
        from_a = make_messages(300, 2)
        from_b = [replace(m, value=b"b-" + m.value) for m in make_messages(300, 2)]
        errors: list[Exception] = []

        def produce_b() -> None:
            try:
                produce_all(b.bootstrap, topic, from_b, **{"enable.idempotence": True})
            except Exception as exc:
                errors.append(exc)

        thread = threading.Thread(target=produce_b)
        thread.start()
        produce_all(a.bootstrap, topic, from_a, **{"enable.idempotence": True})
        thread.join(60)
        assert not errors, errors
        for bootstrap in (a.bootstrap, b.bootstrap):
            received = consume_all(bootstrap, topic, 2, len(first) + 600)
            for partition in (0, 1):
                mine = [m for m in received if m.partition() == partition]
                assert [m.offset() for m in mine] == list(range(len(mine)))
                values = [m.value() for m in mine]
                earlier = [m.value for m in first if m.partition == partition]
                # each broker's records in the order produced, interleaved with the other's
                assert [v for v in values if not v.startswith(b"b-")] == earlier + [
                    m.value for m in from_a if m.partition == partition
                ]
                assert [v for v in values if v.startswith(b"b-")] == [
                    m.value for m in from_b if m.partition == partition
                ]
    finally:
        a.kill()
        b.kill()


def test_acknowledged_records_survive_a_postgresql_restart_under_load(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    broker = pg_broker(tmp_path / "data", url).start()
    try:
        topic = unique_topic()
        create_topic(broker.bootstrap, topic, 2)
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
            }
        )
        acked: list[tuple[int, bytes]] = []
        failed: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, msg: object) -> None:
            if err is not None:
                failed.append(err)
            else:
                acked.append((msg.partition(), msg.value()))  # type: ignore[attr-defined]

        restart = threading.Thread(target=postgres_server.restart)
        total = 30_000
        for i in range(total):
            producer.produce(topic, value=b"m%06d" % i, partition=i % 2, on_delivery=on_delivery)
            producer.poll(0)
            if i == total // 3:
                producer.flush(TIMEOUT_S)
                restart.start()  # while the rest is being produced
            if i % 1000 == 999:
                time.sleep(0.05)  # a steady load over the restart, not one burst
        restart.join(60)
        assert producer.flush(120) == 0
        assert not failed, failed[:3]  # every error the broker gave was retriable
        assert len(acked) == total
        wait_until(  # the restart hit the broker's LISTEN connection
            "the broker to log the lost LISTEN connection",
            lambda: "change notifications interrupted" in broker.log_text(),
        )
        received = consume_all(broker.bootstrap, topic, 2, total)
        for partition in (0, 1):
            got = [m.value() for m in received if m.partition() == partition]
            want = [v for p, v in acked if p == partition]
            assert got == sorted(want)  # each exactly once (idempotence), in order
    finally:
        broker.kill()


@pytest.fixture(scope="module")
def pg_lifecycle(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[BrokerProcess]:
    """A broker whose retention and cleaner rounds run every 100 ms (the background task)."""
    url = postgres_server.create_database()
    proc = BrokerProcess(
        tmp_path_factory.mktemp("pg-lifecycle") / "data",
        extra_args=["--storage", url],
        env={"BAYOU_LOG_RETENTION_CHECK_INTERVAL_MS": str(lifecycle.CHECK_MS)},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.mark.parametrize(
    "check",
    [
        lifecycle.test_replay_from_a_timestamp_lands_on_the_exact_offset,
        lifecycle.test_log_append_time_is_stamped_by_the_broker,
        lifecycle.test_retention_trims_and_consumers_reset,
        lifecycle.test_describe_and_alter_configs_with_sources,
        lifecycle.test_compaction_keeps_the_last_value_per_key_and_then_drops_tombstones,
        lifecycle.test_cli_alter_trim_and_describe,
    ],
    ids=lambda check: check.__name__.removeprefix("test_"),
)
def test_the_log_lifecycle_tests_that_need_no_files(
    check: Callable[[BrokerProcess], None], pg_lifecycle: BrokerProcess
) -> None:
    """The local engine's lifecycle tests with real clients, on this engine: time lookups,
    LogAppendTime, retention by the background task, configs, compaction, the CLI."""
    check(pg_lifecycle)


@pytest.fixture(scope="module")
def pg_coordinators(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[BrokerProcess]:
    """A broker set up as the group and transaction tests' own (fast timers)."""
    url = postgres_server.create_database()
    proc = BrokerProcess(
        tmp_path_factory.mktemp("pg-coordinators") / "data",
        extra_args=["--storage", url, "--transaction-abort-check-interval-ms", "200"],
        env=groups.GROUP_ENV,
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.mark.parametrize(
    "check",
    [
        transactions.test_committed_records_seen_once_aborted_never_at_read_committed,
        transactions.test_an_open_transaction_holds_read_committed_readers_at_the_lso,
        transactions.test_a_second_producer_with_the_same_id_fences_the_first,
        transactions.test_an_abandoned_transaction_is_aborted_by_the_broker,
        transactions.test_cli_lists_describes_and_consumes_read_committed,
        groups.test_kafka_python_group_consumes_everything_and_commits,
        groups.test_kip848_consumer_protocol_with_librdkafka,
        groups.test_group_list_shows_lag,
    ],
    ids=lambda check: check.__name__.removeprefix("test_"),
)
def test_the_transaction_and_group_tests(
    check: Callable[[BrokerProcess], None], pg_coordinators: BrokerProcess
) -> None:
    """The transaction and consumer-group tests with real clients, on this engine (their
    coordinators' state logs, markers and the last stable offset all in PostgreSQL)."""
    check(pg_coordinators)
