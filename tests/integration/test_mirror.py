"""``bayou mirror`` between two real ``bayou serve`` processes: records copied at the same
offsets with keys, headers and timestamps; configs, partition counts and committed group
offsets carried over; a mirror killed with -9 mid-copy resumes with no loss and no
duplicate; a consumer group fails over to the target at the position it committed on the
source; gaps in the source offsets (transaction markers, aborted records) are handled."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.mirror import (
    MirrorProcess,
    Stored,
    end_offset,
    end_offsets,
    read_partition,
)
from tests.support.ports import free_port
from tests.support.quota_admin import QuotaAdmin
from tests.support.security import SecureBroker
from tests.support.wait import wait_until

WAIT_S = 90.0


@pytest.fixture(scope="module")
def clusters(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """Two separate clusters (one broker each): the source site and the target site."""
    base = tmp_path_factory.mktemp("mirror")
    source = BrokerProcess(base / "source", doors=()).start()
    try:
        target = BrokerProcess(base / "target", doors=()).start()
        try:
            yield source, target
        finally:
            target.kill()
    finally:
        source.kill()


@pytest.fixture
def mirrors(tmp_path: Path) -> Iterator[list[MirrorProcess]]:
    started: list[MirrorProcess] = []
    yield started
    for m in started:
        m.kill()


def _admin(bootstrap: str) -> Any:
    return AdminClient({"bootstrap.servers": bootstrap})


def _create(
    bootstrap: str, topic: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    admin = _admin(bootstrap)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=configs or {})]
    )
    futures[topic].result(timeout=30)


def _configs(bootstrap: str, topic: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = _admin(bootstrap)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {name: e.value for name, e in entries.items() if not e.is_default}


def _produce(bootstrap: str, topic: str, partitions: int, count: int, seed: int) -> None:
    """``count`` records with keys (some absent), values (some tombstones), headers (repeated
    keys, binary, absent values) and timestamps of their own, spread over partitions."""
    rng = random.Random(seed)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    errors: list[KafkaError] = []
    base = 1_700_000_000_000 + seed * 10_000_000
    for i in range(count):
        key = None if i % 7 == 0 else f"key-{rng.randrange(50)}".encode()
        value = None if i % 11 == 0 else rng.randbytes(rng.randrange(0, 200))
        headers = [("seq", str(i).encode()), ("bin", bytes([i % 256, 0, 255]))]
        if i % 5 == 0:
            headers += [("seq", b"again"), ("empty", None)]
        producer.produce(
            topic,
            value=value,
            key=key,
            partition=i % partitions,
            timestamp=base + rng.randrange(0, 1_000_000),
            headers=headers,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors


def _ends(bootstrap: str, topic: str, partitions: int) -> list[int]:
    return end_offsets(bootstrap, topic, partitions)


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        reader.close()


def _consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> None:
    """A member of ``group`` on the source reads ``count`` records and commits them."""
    member = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        member.subscribe([topic])
        seen = 0
        for _ in range(600):
            for m in member.consume(num_messages=min(500, count - seen), timeout=0.5):
                assert m.error() is None
                seen += 1
            if seen >= count:
                break
        assert seen == count
        member.commit(asynchronous=False)
    finally:
        member.close()


def _same_records(source: str, target: str, topic: str, partitions: int) -> None:
    for p in range(partitions):
        src = read_partition(source, topic, p)
        dst = read_partition(target, topic, p)
        assert len(dst) == len(src), f"partition {p}: {len(dst)} records, source has {len(src)}"
        assert dst == src, f"partition {p} differs"


def test_mirror_copies_records_configs_partitions_and_group_offsets(
    clusters: tuple[BrokerProcess, BrokerProcess], mirrors: list[MirrorProcess], tmp_path: Path
) -> None:
    source, target = clusters
    topic, group = unique_topic("orders"), unique_topic("billing")
    _create(
        source.bootstrap, topic, 3, {"retention.ms": "987654321", "max.message.bytes": "500000"}
    )
    _produce(source.bootstrap, topic, 3, 3000, seed=1)
    _consume_and_commit(source.bootstrap, topic, group, 1300)
    committed = _committed(source.bootstrap, group, topic, 3)
    assert sum(o for o in committed if o >= 0) == 1300

    mirror = MirrorProcess(
        source.bootstrap, target.bootstrap, "copy", tmp_path / "mirror.log", "--topics", topic
    ).start()
    mirrors.append(mirror)
    source_ends = _ends(source.bootstrap, topic, 3)
    wait_until(
        "every record copied",
        lambda: _ends(target.bootstrap, topic, 3) == source_ends,
        WAIT_S,
    )
    _same_records(source.bootstrap, target.bootstrap, topic, 3)
    wanted = {"retention.ms": "987654321", "max.message.bytes": "500000"}
    assert {k: v for k, v in _configs(target.bootstrap, topic).items() if k in wanted} == wanted
    wait_until(
        "the group's offsets committed in the target",
        lambda: _committed(target.bootstrap, group, topic, 3) == committed,
        WAIT_S,
    )

    # A config changed and partitions added on the source follow, and so do new records.
    admin = _admin(source.bootstrap)
    change = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "111111111", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([change])[change].result(timeout=30)
    admin.create_partitions([NewPartitions(topic, 5)])[topic].result(timeout=30)
    _produce(source.bootstrap, topic, 5, 500, seed=2)
    source_ends = _ends(source.bootstrap, topic, 5)
    wait_until(
        "the new partitions and records copied",
        lambda: _ends(target.bootstrap, topic, 5) == source_ends,
        WAIT_S,
    )
    wait_until(
        "the changed config copied",
        lambda: _configs(target.bootstrap, topic).get("retention.ms") == "111111111",
        WAIT_S,
    )
    _same_records(source.bootstrap, target.bootstrap, topic, 5)
    assert mirror.stop() == 0, mirror.log_text()


def _lag_metrics(port: int, topic: str) -> dict[int, float] | None:
    """``bayou_mirror_lag_records`` per partition of ``topic`` (None: not served yet)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    return {
        int(sample.labels["partition"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "bayou_mirror_lag_records" and sample.labels["topic"] == topic
    }


def test_kill_9_mid_copy_then_fail_the_group_over(
    clusters: tuple[BrokerProcess, BrokerProcess], mirrors: list[MirrorProcess], tmp_path: Path
) -> None:
    source, target = clusters
    topic, group = unique_topic("events"), unique_topic("app")
    _create(source.bootstrap, topic, 2)
    _produce(source.bootstrap, topic, 2, 60_000, seed=3)
    total = sum(_ends(source.bootstrap, topic, 2))

    metrics_port = free_port()

    def start() -> MirrorProcess:
        m = MirrorProcess(
            source.bootstrap, target.bootstrap, "crash", tmp_path / "mirror.log", "--topics", topic,
            "--metrics-port", str(metrics_port),
        ).start()  # fmt: skip
        mirrors.append(m)
        return m

    # a produce quota on the target keeps the first copy slow enough to be killed mid-way
    # (unthrottled, an idle machine copies all 60,000 records before the kill lands)
    quotas = QuotaAdmin(target.bootstrap)
    try:
        assert quotas.alter({"user": "ANONYMOUS"}, {"producer_byte_rate": 500_000}) == (0, None)
        first = start()
        wait_until(
            "the copy under way",
            lambda: sum(_ends(target.bootstrap, topic, 2)) >= 2000,
            WAIT_S,
        )
        first.kill()
        at_kill = sum(_ends(target.bootstrap, topic, 2))
        assert quotas.alter({"user": "ANONYMOUS"}, {"producer_byte_rate": None}) == (0, None)
    finally:
        quotas.close()
    assert at_kill < total, "the copy finished before the kill: nothing tested"

    # The source moves on while the mirror is down; its group commits there.
    _produce(source.bootstrap, topic, 2, 5000, seed=4)
    _consume_and_commit(source.bootstrap, topic, group, 40_000)
    committed = _committed(source.bootstrap, group, topic, 2)

    second = start()
    source_ends = _ends(source.bootstrap, topic, 2)
    wait_until(
        "the rest copied after the restart",
        lambda: _ends(target.bootstrap, topic, 2) == source_ends,
        WAIT_S * 2,
    )
    _same_records(source.bootstrap, target.bootstrap, topic, 2)  # no loss, no duplicate
    # the mirror's /metrics: no partition behind once everything is copied
    wait_until(
        "the mirror's lag at 0 in /metrics",
        lambda: _lag_metrics(metrics_port, topic) == {0: 0.0, 1: 0.0},
        WAIT_S,
    )
    wait_until(
        "the group's offsets committed in the target",
        lambda: _committed(target.bootstrap, group, topic, 2) == committed,
        WAIT_S,
    )
    assert second.stop() == 0, second.log_text()

    # Fail over: the same group, on the target, resumes exactly where it committed.
    expected = {p: read_partition(source.bootstrap, topic, p, start=committed[p]) for p in range(2)}
    member = Consumer(
        {
            "bootstrap.servers": target.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: dict[int, list[Stored]] = {0: [], 1: []}
    try:
        member.subscribe([topic])
        want = sum(len(v) for v in expected.values())
        for _ in range(600):
            for m in member.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None
                got[m.partition()].append(
                    Stored(
                        m.offset(), m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]
                    )
                )
            if sum(len(v) for v in got.values()) >= want:
                break
    finally:
        member.close()
    assert got == expected


def _read_group(bootstrap: str, topic: str, group: str, count: int) -> list[Stored]:
    """What a member of ``group`` reads first (``count`` records) from its committed offsets."""
    member = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    got: list[Stored] = []
    try:
        member.subscribe([topic])
        for _ in range(240):
            for m in member.consume(num_messages=count - len(got), timeout=0.5):
                assert m.error() is None
                got.append(
                    Stored(
                        m.offset(), m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]
                    )
                )
            if len(got) >= count:
                break
    finally:
        member.close()
    return got


def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        member.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        member.close()


def _without_offset(records: list[Stored]) -> list[tuple[Any, ...]]:
    return [(r.key, r.value, r.headers, r.timestamp) for r in records]


def test_gaps_from_transaction_markers_shift_offsets_and_groups_translate(
    clusters: tuple[BrokerProcess, BrokerProcess], mirrors: list[MirrorProcess], tmp_path: Path
) -> None:
    """Offsets a transaction marker or an aborted record takes in the source cannot be
    produced to the target: the records after them land earlier, an offset sync records
    the shift, and group offsets are translated so a consumer resumes at the same record."""
    source, target = clusters
    topic = unique_topic("txn")
    _create(source.bootstrap, topic, 1)
    plain = Producer({"bootstrap.servers": source.bootstrap})
    txn = Producer({"bootstrap.servers": source.bootstrap, "transactional.id": topic})
    txn.init_transactions(30)
    for i in range(5):  # offsets 0-4
        plain.produce(topic, value=f"plain-{i}".encode(), key=b"k", partition=0)
    assert plain.flush(30) == 0
    txn.begin_transaction()
    for i in range(3):  # offsets 5-7, commit marker at 8
        txn.produce(topic, value=f"committed-{i}".encode(), partition=0)
    txn.commit_transaction(30)
    txn.begin_transaction()
    for i in range(2):  # offsets 9-10, abort marker at 11
        txn.produce(topic, value=f"aborted-{i}".encode(), partition=0)
    assert txn.flush(30) == 0  # written, so the abort leaves them (and its marker) in the log
    txn.abort_transaction(30)
    for i in range(4):  # offsets 12-15
        plain.produce(topic, value=f"after-{i}".encode(), headers=[("n", b"%d" % i)], partition=0)
    assert plain.flush(30) == 0
    source_records = read_partition(source.bootstrap, topic, 0)
    assert [r.offset for r in source_records] == [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15]
    groups = {
        unique_topic("at-marker"): 8,
        unique_topic("in-aborted"): 10,
        unique_topic("after"): 13,
    }
    for group, offset in groups.items():
        _commit(source.bootstrap, group, topic, offset)

    mirror = MirrorProcess(
        source.bootstrap, target.bootstrap, "gaps", tmp_path / "mirror.log", "--topics", topic
    ).start()
    mirrors.append(mirror)
    wait_until(
        "the committed records copied", lambda: end_offset(target.bootstrap, topic, 0) == 12, WAIT_S
    )
    target_records = read_partition(target.bootstrap, topic, 0)
    assert [r.offset for r in target_records] == list(range(12))
    assert _without_offset(target_records) == _without_offset(source_records)
    wanted = {group: 8 if offset < 12 else offset - 4 for group, offset in groups.items()}
    for group, offset in wanted.items():
        wait_until(
            f"{group} committed in the target",
            lambda g=group, o=offset: _committed(target.bootstrap, g, topic, 1) == [o],  # type: ignore[misc]
            WAIT_S,
        )
    assert mirror.stop() == 0, mirror.log_text()
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayou",
            "mirror",
            "status",
            "--source",
            source.bootstrap,
            "--target",
            target.bootstrap,
            "--name",
            "gaps",
            "--format",
            "json",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert json.loads(status.stdout) == [
        {
            "topic": topic,
            "partition": 0,
            "mode": "shifted",
            "source_end": 16,
            "copied_to": 16,
            "records_behind": 0,
            "seconds_behind": 0.0,
        }
    ]
    # Each group resumes on the target at the record it would read next on the source.
    for group, offset in groups.items():
        expected = [r for r in source_records if r.offset >= offset]
        got = _read_group(target.bootstrap, topic, group, len(expected))
        assert _without_offset(got) == _without_offset(expected), group


def test_into_an_existing_topic_offsets_are_translated(
    clusters: tuple[BrokerProcess, BrokerProcess], mirrors: list[MirrorProcess], tmp_path: Path
) -> None:
    """A topic that exists in the target before the mirror may have other producers: the
    records are appended after theirs and the group's offsets translated."""
    source, target = clusters
    topic, group = unique_topic("shared"), unique_topic("reader")
    _create(source.bootstrap, topic, 1)
    _create(target.bootstrap, topic, 1)
    _produce(target.bootstrap, topic, 1, 3, seed=5)  # written at the target site
    _produce(source.bootstrap, topic, 1, 10, seed=6)
    _commit(source.bootstrap, group, topic, 6)

    mirror = MirrorProcess(
        source.bootstrap, target.bootstrap, "shared", tmp_path / "mirror.log", "--topics", topic
    ).start()
    mirrors.append(mirror)
    wait_until("the records copied", lambda: end_offset(target.bootstrap, topic, 0) == 13, WAIT_S)
    source_records = read_partition(source.bootstrap, topic, 0)
    assert _without_offset(read_partition(target.bootstrap, topic, 0, start=3)) == _without_offset(
        source_records
    )
    wait_until(
        "the group committed in the target",
        lambda: _committed(target.bootstrap, group, topic, 1) == [9],
        WAIT_S,
    )
    assert mirror.stop() == 0, mirror.log_text()
    got = _read_group(target.bootstrap, topic, group, 4)
    assert _without_offset(got) == _without_offset(source_records[6:])


def test_to_a_secured_target_over_tls_with_scram(
    clusters: tuple[BrokerProcess, BrokerProcess], mirrors: list[MirrorProcess], tmp_path: Path
) -> None:
    """The target's security options: TLS trusting its CA, a SCRAM login whose password comes
    from the environment."""
    source, _ = clusters
    secure = SecureBroker(tmp_path / "secure", {"admin": "admin-pw"}).start()
    try:
        topic = unique_topic("secured")
        _create(source.bootstrap, topic, 2)
        _produce(source.bootstrap, topic, 2, 200, seed=7)
        mirror = MirrorProcess(
            source.bootstrap,
            secure.tls_bootstrap,
            "secured",
            tmp_path / "mirror.log",
            *("--topics", topic, "--target-tls-ca", str(secure.pki.ca_path)),
            *("--target-sasl-user", "admin"),
            env={"BAYOU_TARGET_SASL_PASSWORD": "admin-pw"},
        ).start()
        mirrors.append(mirror)
        login = secure.kafka_config("admin", "admin-pw", **{"group.id": "check"})
        reader = Consumer(login)

        def copied() -> bool:
            try:
                return all(
                    reader.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                    == end_offset(source.bootstrap, topic, p)
                    for p in range(2)
                )
            except Exception:
                return False

        try:
            wait_until("the records copied to the secured target", copied, WAIT_S)
        finally:
            reader.close()
        assert mirror.stop() == 0, mirror.log_text()
    finally:
        secure.kill()


def test_a_foreign_write_to_a_mirror_only_topic_stops_the_mirror(
    clusters: tuple[BrokerProcess, BrokerProcess], mirrors: list[MirrorProcess], tmp_path: Path
) -> None:
    """Offsets can only be kept while the mirror is a mirror-only topic's one writer: a
    record written there by anyone else shifts the next copied record, and the mirror stops
    with exit 1 naming the partition instead of carrying on at other offsets."""
    source, target = clusters
    topic = unique_topic("mine")
    _create(source.bootstrap, topic, 1)
    _produce(source.bootstrap, topic, 1, 10, seed=8)
    mirror = MirrorProcess(
        source.bootstrap, target.bootstrap, "strict", tmp_path / "mirror.log", "--topics", topic
    ).start()
    mirrors.append(mirror)
    wait_until("the records copied", lambda: end_offset(target.bootstrap, topic, 0) == 10, WAIT_S)
    _produce(target.bootstrap, topic, 1, 1, seed=9)  # someone writes at the target site
    _produce(source.bootstrap, topic, 1, 1, seed=10)
    assert mirror.proc is not None
    assert mirror.proc.wait(WAIT_S) == 1
    assert f"{topic}-0: source offset 10 landed at target offset 11, not 10" in mirror.log_text()
