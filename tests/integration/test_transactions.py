"""Kafka transactions (KIP-98/447/890) with confluent-kafka against a real broker: commit and
abort seen by read_committed and read_uncommitted consumers, the last stable offset holding
readers back, zombie fencing, the broker's own abort of an abandoned transaction, and the
admin view (DescribeTransactions, ListTransactions)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import KafkaAdminClient

from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.wait import wait_until

TIMEOUT_S = 20.0
REPO = Path(__file__).resolve().parents[2]


def producer(bootstrap: str, tid: str, **extra: object) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5, **extra})
    p.init_transactions(TIMEOUT_S)
    return p


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(TIMEOUT_S)


def txn_state(bootstrap: str, tid: str) -> str:
    """The transactional id's state by Kafka's name, from DescribeTransactions."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return str(admin.describe_transactions([tid])[tid].state.value)
    finally:
        admin.close()


def read_all(
    bootstrap: str,
    topic: str,
    isolation: str,
    expect: int | None = None,
    partitions: int = 1,
    idle_s: float = 1.0,
) -> list[tuple[int, bytes, bytes]]:
    """Every record a fresh consumer at ``isolation`` sees: (partition, key, value), in
    partition order.  Stops after ``expect`` records, or after ``idle_s`` with nothing new."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("reader"),
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + TIMEOUT_S
    idle_until = time.monotonic() + idle_s
    try:
        while time.monotonic() < deadline:
            if expect is not None and len(out) >= expect:
                break
            if expect is None and time.monotonic() > idle_until:
                break
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            out.append((msg.partition(), msg.key() or b"", msg.value() or b""))
            idle_until = time.monotonic() + idle_s
    finally:
        c.close()
    return out


@pytest.fixture(scope="module")
def txn_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker that checks for timed-out transactions every 200 ms (Kafka: 10 s)."""
    proc = BrokerProcess(
        tmp_path_factory.mktemp("txn") / "data",
        extra_args=["--transaction-abort-check-interval-ms", "200"],
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def test_committed_records_seen_once_aborted_never_at_read_committed(
    txn_broker: BrokerProcess,
) -> None:
    bootstrap, topic = txn_broker.bootstrap, unique_topic("txn")
    create_topic(bootstrap, topic, 2)
    p = producer(bootstrap, unique_topic("tid"))
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=f"c1-{i}".encode(), value=b"commit-1", partition=i % 2)
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=f"a-{i}".encode(), value=b"abort", partition=i % 2)
    p.flush(TIMEOUT_S)
    p.abort_transaction(TIMEOUT_S)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=f"c2-{i}".encode(), value=b"commit-2", partition=i % 2)
    p.commit_transaction(TIMEOUT_S)

    committed = read_all(bootstrap, topic, "read_committed", expect=15, partitions=2)
    keys = sorted(k.decode() for _p, k, _v in committed)
    assert keys == sorted([f"c1-{i}" for i in range(10)] + [f"c2-{i}" for i in range(5)])
    assert all(v != b"abort" for _p, _k, v in committed)
    # in order within each partition: the first transaction's records, then the second's
    for part in (0, 1):
        values = [v for p_, _k, v in committed if p_ == part]
        assert values == sorted(values, key=lambda v: v != b"commit-1")
    # aborted records stay in the log: read_uncommitted readers see all 25
    everything = read_all(bootstrap, topic, "read_uncommitted", expect=25, partitions=2)
    assert len(everything) == 25
    assert sum(v == b"abort" for _p, _k, v in everything) == 10


def test_an_open_transaction_holds_read_committed_readers_at_the_lso(
    txn_broker: BrokerProcess,
) -> None:
    bootstrap, topic = txn_broker.bootstrap, unique_topic("lso")
    create_topic(bootstrap, topic)
    plain = Producer({"bootstrap.servers": bootstrap})
    plain.produce(topic, key=b"before", value=b"1")
    plain.flush(TIMEOUT_S)
    p = producer(bootstrap, unique_topic("tid"))
    p.begin_transaction()
    p.produce(topic, key=b"in-txn", value=b"2")
    p.flush(TIMEOUT_S)
    # a non-transactional record after the open transaction: held back too (below the LSO
    # only what came before the transaction's first record)
    plain.produce(topic, key=b"after", value=b"3")
    plain.flush(TIMEOUT_S)
    assert [k for _p, k, _v in read_all(bootstrap, topic, "read_committed")] == [b"before"]
    assert [k for _p, k, _v in read_all(bootstrap, topic, "read_uncommitted", expect=3)] == [
        b"before",
        b"in-txn",
        b"after",
    ]
    p.commit_transaction(TIMEOUT_S)
    assert [k for _p, k, _v in read_all(bootstrap, topic, "read_committed", expect=3)] == [
        b"before",
        b"in-txn",
        b"after",
    ]


def test_a_second_producer_with_the_same_id_fences_the_first(
    txn_broker: BrokerProcess,
) -> None:
    bootstrap, topic, tid = txn_broker.bootstrap, unique_topic("zombie"), unique_topic("tid")
    create_topic(bootstrap, topic)
    zombie = producer(bootstrap, tid)
    zombie.begin_transaction()
    zombie.produce(topic, key=b"zombie", value=b"1")
    zombie.flush(TIMEOUT_S)
    successor = producer(bootstrap, tid)  # aborts the zombie's transaction
    successor.begin_transaction()
    successor.produce(topic, key=b"successor", value=b"2")
    successor.commit_transaction(TIMEOUT_S)
    # the zombie can no longer commit: the client reports it fenced (fatal)
    zombie.produce(topic, key=b"zombie-late", value=b"3")
    with pytest.raises(KafkaException) as caught:
        zombie.commit_transaction(TIMEOUT_S)
    err: KafkaError = caught.value.args[0]
    assert err.fatal() or err.code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    )
    assert [k for _p, k, _v in read_all(bootstrap, topic, "read_committed", expect=1)] == [
        b"successor"
    ]
    assert not any(
        k.startswith(b"zombie") for _p, k, _v in read_all(bootstrap, topic, "read_committed")
    )


def test_an_abandoned_transaction_is_aborted_by_the_broker(
    txn_broker: BrokerProcess,
) -> None:
    bootstrap, topic, tid = txn_broker.bootstrap, unique_topic("abandon"), unique_topic("tid")
    create_topic(bootstrap, topic)
    p = producer(bootstrap, tid, **{"transaction.timeout.ms": 1000})
    p.begin_transaction()
    p.produce(topic, key=b"lost", value=b"1")
    p.flush(TIMEOUT_S)
    # the producer vanishes without ending its transaction
    del p
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert admin.describe_transactions([tid])[tid].state.value == "Ongoing"
        wait_until(
            "the broker aborting the timed-out transaction",
            lambda: admin.describe_transactions([tid])[tid].state.value == "CompleteAbort",
            10,
        )
        described = admin.describe_transactions([tid])[tid]
        assert described.producer_epoch == 1  # fenced: the vanished producer's epoch was 0
    finally:
        admin.close()
    plain = Producer({"bootstrap.servers": bootstrap})
    plain.produce(topic, key=b"later", value=b"2")
    plain.flush(TIMEOUT_S)
    # the LSO moved past the aborted transaction: later records are readable
    assert [k for _p, k, _v in read_all(bootstrap, topic, "read_committed", expect=1)] == [b"later"]


def test_commit_of_a_transaction_the_broker_aborted_fails(txn_broker: BrokerProcess) -> None:
    bootstrap, topic = txn_broker.bootstrap, unique_topic("late")
    create_topic(bootstrap, topic)
    tid = unique_topic("tid")
    p = producer(bootstrap, tid, **{"transaction.timeout.ms": 1000})
    p.begin_transaction()
    p.produce(topic, key=b"slow", value=b"1")
    p.flush(TIMEOUT_S)
    # the producer is too slow: its transaction times out on the broker meanwhile
    wait_until(
        "the broker aborting the timed-out transaction",
        lambda: txn_state(bootstrap, tid) == "CompleteAbort",
        10,
    )
    with pytest.raises(KafkaException):
        p.commit_transaction(TIMEOUT_S)
    assert read_all(bootstrap, topic, "read_committed") == []


def test_broker_restart_keeps_the_producer_going(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        bootstrap, topic, tid = broker.bootstrap, unique_topic("restart"), unique_topic("tid")
        create_topic(bootstrap, topic)
        p = producer(bootstrap, tid)
        p.begin_transaction()
        p.produce(topic, key=b"one", value=b"1")
        p.commit_transaction(TIMEOUT_S)
        broker.restart()
        p.begin_transaction()
        p.produce(topic, key=b"two", value=b"2")
        p.commit_transaction(TIMEOUT_S)
        assert [k for _p, k, _v in read_all(bootstrap, topic, "read_committed", expect=2)] == [
            b"one",
            b"two",
        ]
    finally:
        broker.kill()


def run_processor(bootstrap: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.txn_processor", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
    )


def test_consume_transform_produce_killed_mid_transaction_is_exactly_once(
    txn_broker: BrokerProcess,
) -> None:
    bootstrap = txn_broker.bootstrap
    source, sink = unique_topic("ctp-in"), unique_topic("ctp-out")
    group, tid = unique_topic("ctp-group"), unique_topic("ctp-tid")
    create_topic(bootstrap, source, 2)
    create_topic(bootstrap, sink, 2)
    plain = Producer({"bootstrap.servers": bootstrap})
    inputs = [f"k{i:03d}".encode() for i in range(120)]
    for i, key in enumerate(inputs):
        plain.produce(source, key=key, value=key, partition=i % 2)
    plain.flush(TIMEOUT_S)

    crashed = run_processor(bootstrap, [source, sink, group, tid, "3"])
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert crashed.stdout.split() == ["committed", "1", "committed", "2", "committed", "3"]
    finished = run_processor(bootstrap, [source, sink, group, tid])
    assert finished.returncode == 0, finished.stdout + finished.stderr

    out = read_all(bootstrap, sink, "read_committed", expect=len(inputs), partitions=2)
    assert sorted(k for _p, k, _v in out) == inputs  # every input once: none lost, none twice
    assert all(v == b"out:" + k for _p, k, v in out)
    assert read_all(bootstrap, sink, "read_committed", partitions=2, idle_s=0.5) == out
    # the crashed transaction's records are in the log, aborted: read_uncommitted sees them
    raw = read_all(bootstrap, sink, "read_uncommitted", partitions=2, idle_s=0.5)
    assert len(raw) > len(inputs)


def test_broker_killed_mid_transaction_ends_all_committed_or_all_aborted(
    tmp_path: Path,
) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        bootstrap, topic, tid = broker.bootstrap, unique_topic("crash"), unique_topic("tid")
        create_topic(bootstrap, topic, 2)
        p = producer(bootstrap, tid)
        p.begin_transaction()
        for i in range(6):
            p.produce(topic, key=f"done-{i}".encode(), value=b"1", partition=i % 2)
        p.commit_transaction(TIMEOUT_S)  # acknowledged: must survive the kill
        p.begin_transaction()
        for i in range(6):
            p.produce(topic, key=f"open-{i}".encode(), value=b"2", partition=i % 2)
        p.flush(TIMEOUT_S)
        broker.kill()
        broker.start()
        # the open transaction came back open: it holds read_committed readers, and the
        # committed one is whole
        assert txn_state(bootstrap, tid) == "Ongoing"
        assert sorted(
            k
            for _p, k, _v in read_all(bootstrap, topic, "read_committed", partitions=2, idle_s=0.5)
        ) == [f"done-{i}".encode() for i in range(6)]
        # the application restarts its producer: the open transaction is aborted whole
        successor = producer(bootstrap, tid)
        assert txn_state(bootstrap, tid) == "Empty"
        successor.begin_transaction()
        successor.produce(topic, key=b"after", value=b"3", partition=0)
        successor.commit_transaction(TIMEOUT_S)
        seen = read_all(bootstrap, topic, "read_committed", expect=7, partitions=2)
        assert sorted(k for _p, k, _v in seen) == sorted(
            [f"done-{i}".encode() for i in range(6)] + [b"after"]
        )
        assert len(read_all(bootstrap, topic, "read_uncommitted", partitions=2, idle_s=0.5)) == 13
    finally:
        broker.kill()


def bayou_cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bayou", *args, "-b", bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_cli_lists_describes_and_consumes_read_committed(txn_broker: BrokerProcess) -> None:
    bootstrap, topic, tid = txn_broker.bootstrap, unique_topic("cli"), unique_topic("cli-tid")
    create_topic(bootstrap, topic, 2)
    p = producer(bootstrap, tid)
    p.begin_transaction()
    p.produce(topic, value=b"kept", partition=0)
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    p.produce(topic, value=b"dropped", partition=0)
    p.flush(TIMEOUT_S)  # sent, then aborted (unsent records are purged by the client)
    p.abort_transaction(TIMEOUT_S)
    p.begin_transaction()
    p.produce(topic, value=b"pending", partition=0)
    p.produce(topic, value=b"pending", partition=1)
    p.flush(TIMEOUT_S)

    listed = bayou_cli(bootstrap, "txn", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = [ln for ln in listed.stdout.splitlines() if ln.startswith(tid + " ")]
    assert line.split() == [tid, "Ongoing", f"{topic}-0,{topic}-1"]
    described = bayou_cli(bootstrap, "txn", "describe", tid)
    assert described.returncode == 0, described.stderr
    rows = dict(
        ln.split(None, 1)
        if not ln.startswith(("transactional id", "producer id"))
        else ln.rsplit("  ", 1)
        for ln in described.stdout.splitlines()
    )
    assert rows["state"].strip() == "Ongoing"
    assert rows["partitions"].strip() == f"{topic}-0, {topic}-1"
    assert rows["age"].strip().endswith("Z)")
    missing = bayou_cli(bootstrap, "txn", "describe", "no-such-id")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "Transactional id 'no-such-id' does not exist.",
    )

    committed = bayou_cli(bootstrap, "consume", topic, "--isolation", "read_committed")
    assert committed.returncode == 0, committed.stderr
    assert committed.stdout.split() == ["kept"]  # the open transaction holds the rest back
    everything = bayou_cli(bootstrap, "consume", topic)
    assert sorted(everything.stdout.split()) == ["dropped", "kept", "pending", "pending"]
    p.commit_transaction(TIMEOUT_S)
    after = bayou_cli(bootstrap, "consume", topic, "--isolation", "read_committed")
    assert sorted(after.stdout.split()) == ["kept", "pending", "pending"]
    assert bayou_cli(bootstrap, "txn", "describe", tid).stdout.split("\n")[1].split() == [
        "state",
        "CompleteCommit",
    ]
