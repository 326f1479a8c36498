"""Kafka transactions on a three-broker cluster sharing one PostgreSQL, where the
transactional id's coordinator, the group's coordinator and the partitions' leaders are
different brokers: confluent-kafka's transactional producer commits and aborts across
partitions led by every broker (read_committed readers get exactly the committed records, in
order, with keys and headers; read_uncommitted ones the aborted too), a consume-transform-
produce loop's offsets become the group's at commit and stay put at abort, and kill -9 of the
coordinator — after a commit returned (also with markers still pending for a dead leader's
partitions), or in the middle of a transaction — or of a leader in the middle of one loses no
marker and leaves nothing of an aborted transaction visible."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from bayou.storage.cluster import coordinator_key, rendezvous
from tests.integration.test_cluster import MOVE_S, NODES, Cluster
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import start_all
from tests.support.kafka import unique_topic
from tests.support.kafka_raw import RawKafka
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

TIMEOUT_S = 30.0
GROUP, TRANSACTION = 0, 1
PARTITIONS = 6
ENV = {"BAYOU_TRANSACTION_ABORT_CHECK_INTERVAL_MS": "500"}

Seen = tuple[int, bytes, bytes, list[tuple[str, bytes]]]  # partition, key, value, headers


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("txn-cluster"),
        postgres_server.create_database(),
        doors=(),
        env=ENV,
    )
    c.start()
    settle(c)
    try:
        yield c
    finally:
        c.kill_all()


def key_owned_by(key_type: int, node: int, prefix: str, nodes: tuple[int, ...] = NODES) -> str:
    """A fresh group or transactional id that hashes to ``node`` among ``nodes``."""
    return next(
        k
        for k in (unique_topic(prefix) for _ in itertools.count())
        if rendezvous(coordinator_key(key_type, k), nodes) == node
    )


def serves_transactions(cluster: Cluster, node: int, tid: str) -> bool:
    """Whether ``node`` answers for ``tid`` from its coordinator (not NOT_COORDINATOR nor
    COORDINATOR_LOAD_IN_PROGRESS: it has taken over the live set it sees)."""
    with RawKafka(cluster.brokers[node].bootstrap) as raw:
        answer = raw.call(m.DescribeTransactionsRequest(transactional_ids=[tid]), 0)
    [state] = answer.transaction_states
    return bool(state.error_code == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND)


def settle(cluster: Cluster, nodes: tuple[int, ...] = NODES) -> None:
    """Every broker of ``nodes`` live and serving the transactional ids it owns — only then
    does a test produce (a broker that just saw the live set change answers
    COORDINATOR_LOAD_IN_PROGRESS, and its leaders NOT_ENOUGH_REPLICAS, until it settles)."""
    cluster.wait_live(set(nodes))
    for n in nodes:
        tid = key_owned_by(TRANSACTION, n, "settle-", nodes)
        wait_until(
            f"node {n} to serve its transactional ids",
            lambda n=n, t=tid: serves_transactions(cluster, n, t),  # type: ignore[misc]
            MOVE_S,
        )


def spread_topic(cluster: Cluster, prefix: str, nodes: set[int] | None = None) -> str:
    """A topic of ``PARTITIONS`` partitions with leaders on every broker of ``nodes``."""
    nodes = nodes or set(NODES)
    for _ in range(20):
        topic = unique_topic(prefix)
        create_topic(cluster.brokers[min(nodes)].bootstrap, topic, PARTITIONS)
        if set(cluster.wait_led(topic, nodes).values()) == nodes:
            return topic
    raise AssertionError("no topic spread over every broker")


def transactional(cluster: Cluster, tid: str, **extra: object) -> Producer:
    p = Producer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "transactional.id": tid,
            "linger.ms": 5,
            "transaction.timeout.ms": 60_000,
            **extra,
        }
    )
    p.init_transactions(TIMEOUT_S)
    return p


def produce_all(p: Producer, topic: str, tag: str, count: int) -> list[Seen]:
    """``count`` records spread over every partition; what a reader should see of them."""
    sent: list[Seen] = []
    for i in range(count):
        part = i % PARTITIONS
        key, value = f"{tag}-{i}".encode(), f"value of {tag} {i}".encode()
        headers = [("tag", tag.encode()), ("i", str(i).encode())]
        p.produce(topic, key=key, value=value, partition=part, headers=headers)
        sent.append((part, key, value, headers))
    return sent


def read(cluster: Cluster, topic: str, isolation: str, expect: int) -> list[Seen]:
    """What a fresh consumer at ``isolation`` reads: ``expect`` records, then 1 s more
    to catch any extra one (bounded by ``TIMEOUT_S``)."""
    c = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "group.id": unique_topic("reader"),
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: list[Seen] = []
    deadline = time.monotonic() + TIMEOUT_S
    extra_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if extra_until is None and len(out) >= expect:
                extra_until = time.monotonic() + 1.0
            if extra_until is not None and time.monotonic() > extra_until:
                break
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            out.append(
                (msg.partition(), msg.key() or b"", msg.value() or b"", list(msg.headers() or []))
            )
    finally:
        c.close()
    return out


def per_partition(records: list[Seen]) -> dict[int, list[Seen]]:
    out: dict[int, list[Seen]] = {}
    for r in records:
        out.setdefault(r[0], []).append(r)
    return out


def restart(cluster: Cluster, *nodes: int) -> None:
    """Start killed brokers again (once their leases lapsed) and wait for the full cluster."""
    start_all(cluster.brokers[n] for n in nodes)
    cluster.wait_live(set(NODES), timeout=MOVE_S + 10)
    settle(cluster)


def test_commits_and_aborts_across_leaders_on_every_broker(cluster: Cluster) -> None:
    for coordinator in NODES:  # the transactional id's coordinator leads only some partitions
        topic = spread_topic(cluster, f"ctx{coordinator}-")
        p = transactional(cluster, key_owned_by(TRANSACTION, coordinator, "tid"))
        p.begin_transaction()
        first = produce_all(p, topic, "c1", 30)
        p.commit_transaction(TIMEOUT_S)
        p.begin_transaction()
        aborted = produce_all(p, topic, "a", 18)
        assert p.flush(TIMEOUT_S) == 0
        p.abort_transaction(TIMEOUT_S)
        p.begin_transaction()
        second = produce_all(p, topic, "c2", 12)
        p.commit_transaction(TIMEOUT_S)

        committed = read(cluster, topic, "read_committed", 42)
        assert per_partition(committed) == per_partition(first + second)
        everything = read(cluster, topic, "read_uncommitted", 60)
        assert per_partition(everything) == per_partition(first + aborted + second)


def group_offsets(cluster: Cluster, group: str, topic: str) -> dict[int, int]:
    c = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        found = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], TIMEOUT_S)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in found}


def test_transformed_offsets_are_the_groups_at_commit_and_unchanged_at_abort(
    cluster: Cluster,
) -> None:
    # three different brokers: the group's coordinator, the transactional id's, and the
    # leaders (every broker leads some partitions of both topics)
    group_node, txn_node = 1, 2
    group = key_owned_by(GROUP, group_node, "ctp-g")
    tid = key_owned_by(TRANSACTION, txn_node, "ctp-tid")
    source, sink = spread_topic(cluster, "ctp-in"), spread_topic(cluster, "ctp-out")
    plain = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(60):
        plain.produce(source, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % 6)
    assert plain.flush(TIMEOUT_S) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(source, p, 0) for p in range(PARTITIONS)])
    p = transactional(cluster, tid)
    transformed: list[list[bytes]] = []

    def transform(count: int) -> list[TopicPartition]:
        """Consume ``count`` records, produce them transformed; the positions reached."""
        got: list[bytes] = []
        positions: dict[int, int] = {}
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            key = msg.key() or b""
            p.produce(sink, key=key, value=(msg.value() or b"").upper(), partition=len(got) % 6)
            got.append(key)
            positions[msg.partition()] = msg.offset() + 1
        assert len(got) == count
        transformed.append(got)
        return [TopicPartition(source, i, o) for i, o in sorted(positions.items())]

    unset = dict.fromkeys(range(PARTITIONS), -1001)  # OFFSET_INVALID: nothing committed
    try:
        assert group_offsets(cluster, group, source) == unset
        p.begin_transaction()
        positions = transform(30)
        p.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), TIMEOUT_S)
        p.commit_transaction(TIMEOUT_S)
        after_commit = unset | {tp.partition: tp.offset for tp in positions}
        assert group_offsets(cluster, group, source) == after_commit

        p.begin_transaction()
        positions = transform(30)
        p.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), TIMEOUT_S)
        p.abort_transaction(TIMEOUT_S)
        assert group_offsets(cluster, group, source) == after_commit
    finally:
        consumer.close()
    # the sink holds exactly the committed transaction's output
    out = read(cluster, sink, "read_committed", 30)
    assert sorted(r[1] for r in out) == sorted(transformed[0])
    assert all(r[2] == b"V" + r[1][1:] for r in out)


def test_kill_coordinator_after_commit_keeps_every_committed_record(cluster: Cluster) -> None:
    coordinator = 3
    topic = spread_topic(cluster, "kc")
    p = transactional(cluster, key_owned_by(TRANSACTION, coordinator, "kc-tid"))
    p.begin_transaction()
    sent = produce_all(p, topic, "kc", 60)
    p.commit_transaction(TIMEOUT_S)
    cluster.brokers[coordinator].kill()
    try:
        survivors = set(NODES) - {coordinator}
        cluster.wait_live(survivors)
        cluster.wait_led(topic, survivors)
        got = read(cluster, topic, "read_committed", len(sent))
        assert per_partition(got) == per_partition(sent)
    finally:
        restart(cluster, coordinator)


def test_kill_coordinator_with_markers_pending_the_next_one_writes_them(
    cluster: Cluster,
) -> None:
    """The commit is decided (PrepareCommit durable, commit_transaction returned) but the
    markers of a dead leader's partitions are still being retried when the coordinator dies
    too: the broker left takes both over and writes every marker."""
    leader, coordinator, survivor = 2, 3, 1
    topic = spread_topic(cluster, "kp")
    p = transactional(cluster, key_owned_by(TRANSACTION, coordinator, "kp-tid"))
    p.begin_transaction()
    sent = produce_all(p, topic, "kp", 60)
    assert p.flush(TIMEOUT_S) == 0
    cluster.brokers[leader].kill()
    try:
        p.commit_transaction(TIMEOUT_S)  # answered once the first attempt at the markers ended
        cluster.brokers[coordinator].kill()  # well before the dead leader's partitions move
        cluster.wait_live({survivor})
        cluster.wait_led(topic, {survivor})
        got = read(cluster, topic, "read_committed", len(sent))
        assert per_partition(got) == per_partition(sent)
    finally:
        restart(cluster, leader, coordinator)


def test_kill_coordinator_mid_transaction_aborts_it(cluster: Cluster) -> None:
    victim = 2
    topic = spread_topic(cluster, "km")
    tid = key_owned_by(TRANSACTION, victim, "km-tid")
    abandoned_tid = key_owned_by(TRANSACTION, victim, "km-abandoned")
    p = transactional(cluster, tid)
    abandoned = transactional(cluster, abandoned_tid, **{"transaction.timeout.ms": 4000})
    for producer, tag in ((p, "lost"), (abandoned, "timed-out")):
        producer.begin_transaction()
        produce_all(producer, topic, tag, 30)
        assert producer.flush(TIMEOUT_S) == 0  # appended on every leader, the transaction open
    cluster.brokers[victim].kill()
    try:
        survivors = set(NODES) - {victim}
        settle(cluster, tuple(sorted(survivors)))
        # one producer's successor: InitProducerId at the new coordinator fences the open
        # transaction and aborts it (its markers reach every partition's leader)
        successor = transactional(cluster, tid)
        successor.begin_transaction()
        kept = produce_all(successor, topic, "kept", 24)
        successor.commit_transaction(TIMEOUT_S)
        # the other is never heard of again: the new coordinator aborts it on its timeout,
        # after which read_committed readers get past it (its records hold the LSO until then)
        plain = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        after = produce_all(plain, topic, "after", PARTITIONS)
        assert plain.flush(TIMEOUT_S) == 0
        got = read(cluster, topic, "read_committed", len(kept) + len(after))
        assert per_partition(got) == per_partition(kept + after)
    finally:
        restart(cluster, victim)


def test_kill_a_leader_mid_transaction_its_marker_is_written_by_the_next(
    cluster: Cluster,
) -> None:
    txn_node, victim = 1, 3
    topic = spread_topic(cluster, "kl")
    p = transactional(cluster, key_owned_by(TRANSACTION, txn_node, "kl-tid"))
    p.begin_transaction()
    sent = produce_all(p, topic, "kl", 60)
    assert p.flush(TIMEOUT_S) == 0
    cluster.brokers[victim].kill()
    try:
        # the coordinator keeps retrying the markers of the victim's partitions until their
        # new leaders (claimed once its lease lapsed) write them
        p.commit_transaction(TIMEOUT_S)
        wait_until(
            "the victim's partitions to move",
            lambda: victim not in cluster.leaders(txn_node, topic).values(),
            MOVE_S,
        )
        got = read(cluster, topic, "read_committed", len(sent))
        assert per_partition(got) == per_partition(sent)
    finally:
        restart(cluster, victim)
