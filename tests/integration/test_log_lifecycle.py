"""Log lifecycle with confluent-kafka's consumer and admin client against a real broker:
timestamps, retention, compaction, configs, DeleteRecords, crash during compaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from tests.integration.test_confluent_kafka import create_topic, produce_all
from tests.support.broker import BrokerProcess
from tests.support.kafka import Sent, unique_topic
from tests.support.wait import wait_until

CHECK_MS = 100  # the broker's retention/cleaner interval in these tests
WAIT_S = 30


@pytest.fixture(scope="module")
def lifecycle_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("lifecycle") / "data",
        env={"BAYOU_LOG_RETENTION_CHECK_INTERVAL_MS": str(CHECK_MS)},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def keyed(
    count: int, keys: int, *, ts: int | None = None, tombstone_every: int = 0, size: int = 50
) -> list[Sent]:
    base = ts if ts is not None else int(time.time() * 1000)
    out = []
    for i in range(count):
        value = (
            b""
            if tombstone_every and i % tombstone_every == tombstone_every - 1
            else (f"v{i}-".encode() + b"x" * size)
        )
        out.append(Sent(0, f"k{i % keys}".encode(), value, (), base + i))
    return out


def produce_keyed(bootstrap: str, topic: str, messages: list[Sent]) -> None:
    """Like produce_all, but an empty value is sent as a tombstone (None)."""
    # Batches stay below the tests' small segment.bytes (a produce payload must fit one).
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1500})
    errors: list[KafkaError] = []
    for msg in messages:
        producer.produce(
            topic,
            key=msg.key,
            value=msg.value or None,
            partition=0,
            timestamp=msg.timestamp_ms,
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors


def read_partition(
    bootstrap: str, topic: str, start: int | str = "earliest"
) -> list[tuple[int, bytes | None, bytes | None]]:
    """Everything from ``start`` to the end of partition 0: (offset, key, value)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("g"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    offset = start if isinstance(start, int) else -2
    consumer.assign([TopicPartition(topic, 0, offset)])
    out: list[tuple[int, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise KafkaException(msg.error())
            out.append((msg.offset(), msg.key(), msg.value()))
    finally:
        consumer.close()
    raise AssertionError("did not reach the end of the partition")


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g")})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def last_per_key(messages: list[Sent], drop_tombstones: bool) -> dict[bytes, bytes | None]:
    last: dict[bytes, bytes | None] = {}
    for m in messages:
        assert m.key is not None
        last[m.key] = m.value or None
    return {k: v for k, v in last.items() if v is not None or not drop_tombstones}


def source(entry: ConfigEntry) -> ConfigSource:
    return ConfigSource(entry.source)


def describe(admin: AdminClient, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return dict(admin.describe_configs([resource])[resource].result(15))


# --------------------------------------------------------------------------- timestamps


def test_replay_from_a_timestamp_lands_on_the_exact_offset(
    lifecycle_broker: BrokerProcess,
) -> None:
    bootstrap = lifecycle_broker.bootstrap
    topic = unique_topic("ts")
    create_topic(bootstrap, topic, 1, **{"segment.bytes": "4096"})
    base = int(time.time() * 1000) - 500_000
    sent = [Sent(0, b"k%d" % i, b"v%d" % i, (), base + 10 * i) for i in range(1000)]
    produce_all(bootstrap, topic, sent, **{"batch.num.messages": 13})
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique_topic("g"), "enable.auto.commit": False}
    )
    try:
        for target in (base, base + 1, base + 4321, base + 9990):
            found = consumer.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
            want = next(i for i, m in enumerate(sent) if m.timestamp_ms >= target)
            assert found[0].offset == want
        # Replay from a timestamp: the first message is exactly that record.
        start = consumer.offsets_for_times([TopicPartition(topic, 0, base + 5005)], timeout=10)
        consumer.assign(start)
        msg = None
        for _ in range(50):
            msg = consumer.poll(1.0)
            if msg is not None:
                break
        assert msg is not None and not msg.error()
        assert (msg.offset(), msg.timestamp()[1]) == (501, base + 5010)
    finally:
        consumer.close()


def test_log_append_time_is_stamped_by_the_broker(lifecycle_broker: BrokerProcess) -> None:
    bootstrap = lifecycle_broker.bootstrap
    topic = unique_topic("lat")
    create_topic(bootstrap, topic, 1, **{"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    produce_all(bootstrap, topic, [Sent(0, b"k", b"v", (), 1000)])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g")})
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        msg = next(m for m in iter(lambda: consumer.poll(1.0), "stop") if m is not None)
        kind, ts = msg.timestamp()
        assert kind == 2 and before - 1000 <= ts <= int(time.time() * 1000) + 1000  # LogAppendTime
    finally:
        consumer.close()


# --------------------------------------------------------------------------- retention


def test_retention_trims_and_consumers_reset(lifecycle_broker: BrokerProcess) -> None:
    bootstrap = lifecycle_broker.bootstrap
    topic = unique_topic("ret")
    create_topic(bootstrap, topic, 1, **{"segment.bytes": "2000"})
    now = int(time.time() * 1000)
    old = keyed(200, 200, ts=now - 3_600_000)
    fresh = keyed(50, 50, ts=now)
    produce_keyed(bootstrap, topic, old)
    produce_keyed(bootstrap, topic, fresh)
    assert watermarks(bootstrap, topic) == (0, 250)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "600000"})
    with pytest.warns(DeprecationWarning):  # the legacy AlterConfigs API (key 33), on purpose
        futures = admin.alter_configs([resource])
    futures[resource].result(15)  # no restart: applies live
    wait_until("retention", lambda: watermarks(bootstrap, topic)[0] >= 150)
    low, high = watermarks(bootstrap, topic)
    assert low <= 200 and high == 250
    # A consumer positioned below the log start gets OFFSET_OUT_OF_RANGE and resets.
    for policy, first in (("earliest", low), ("latest", None)):
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": unique_topic("g"),
                "auto.offset.reset": policy,
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition(topic, 0, 10)])
        got: list[int] = []
        try:
            for _ in range(400):
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        if first is None or (got and got[-1] == 249):
                            break
                        continue
                    raise KafkaException(msg.error())
                got.append(msg.offset())
        finally:
            consumer.close()
        if first is None:
            assert got == []  # reset to the end
        else:
            assert got[0] == first and got[-1] == 249
    # "error" policy: the client surfaces the out-of-range error.
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("g"),
            "auto.offset.reset": "error",
        }
    )
    consumer.assign([TopicPartition(topic, 0, 10)])
    try:
        codes = set()
        for _ in range(40):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error():
                codes.add(msg.error().code())
                break
        assert KafkaError._AUTO_OFFSET_RESET in codes or KafkaError.OFFSET_OUT_OF_RANGE in codes
    finally:
        consumer.close()


def test_delete_records_and_log_dirs(lifecycle_broker: BrokerProcess) -> None:
    bootstrap = lifecycle_broker.bootstrap
    topic = unique_topic("del")
    create_topic(bootstrap, topic, 1, **{"segment.bytes": "2000"})
    produce_keyed(bootstrap, topic, keyed(300, 300))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_records([TopicPartition(topic, 0, 120)])
    result = futures[TopicPartition(topic, 0, 120)].result(15)
    assert result.low_watermark == 120
    assert watermarks(bootstrap, topic) == (120, 300)
    assert read_partition(bootstrap, topic)[0][0] == 120
    with pytest.raises(KafkaException) as beyond:
        admin.delete_records([TopicPartition(topic, 0, 301)])[TopicPartition(topic, 0, 301)].result(
            15
        )
    assert beyond.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    topic_dir = lifecycle_broker.data_dir / "topics" / topic / "0"
    assert min(int(p.name[:20]) for p in topic_dir.glob("*.log")) > 0  # segments deleted


def test_describe_log_dirs_reports_partition_sizes(lifecycle_broker: BrokerProcess) -> None:
    from kafka.admin import KafkaAdminClient  # confluent-kafka has no DescribeLogDirs

    bootstrap = lifecycle_broker.bootstrap
    topic = unique_topic("dirs")
    create_topic(bootstrap, topic, 2)
    now = int(time.time() * 1000)  # (an old timestamp would be retention.ms-deleted at once)
    produce_all(bootstrap, topic, [Sent(p, b"k", b"x" * 500, (), now) for p in (0, 0, 1)])
    client = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        result = client.describe_log_dirs({topic: [0, 1]})
    finally:
        client.close()
    (only_broker,) = result
    (log_dir,) = only_broker["log_dirs"]
    assert log_dir["error_code"] == 0
    assert Path(log_dir["log_dir"]) == lifecycle_broker.data_dir.resolve()
    (described,) = log_dir["topics"]
    sizes = {p["partition_index"]: p["partition_size"] for p in described["partitions"]}
    on_disk = {
        p: sum(
            f.stat().st_size
            for f in (lifecycle_broker.data_dir / "topics" / topic / str(p)).glob("*.log")
        )
        for p in (0, 1)
    }
    assert sizes == on_disk and sizes[0] > sizes[1] > 500


# --------------------------------------------------------------------------- configs


def test_describe_and_alter_configs_with_sources(lifecycle_broker: BrokerProcess) -> None:
    bootstrap = lifecycle_broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = unique_topic("cfg")
    create_topic(bootstrap, topic, 1, **{"retention.ms": "3600000"})
    entries = describe(admin, topic)
    assert entries["retention.ms"].value == "3600000"
    assert source(entries["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert source(entries["cleanup.policy"]) == ConfigSource.DEFAULT_CONFIG
    synonyms = {s.name: source(s) for s in entries["retention.ms"].synonyms.values()}
    assert synonyms.get("log.retention.ms") == ConfigSource.DEFAULT_CONFIG

    # Incremental: SET, APPEND to a list, DELETE back to the default.
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(
                "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND
            ),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ConfigEntry(
                "min.cleanable.dirty.ratio", "0.1", incremental_operation=AlterConfigOpType.SET
            ),
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(15)
    entries = describe(admin, topic)
    assert entries["cleanup.policy"].value == "delete,compact"
    assert source(entries["retention.ms"]) == ConfigSource.DEFAULT_CONFIG
    assert entries["min.cleanable.dirty.ratio"].value == "0.1"

    # Every value is validated; the error names the config; nothing changes.
    for key, bad in (
        ("retention.ms", "soon"),
        ("cleanup.policy", "shred"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("no.such.config", "1"),
    ):
        bad_res = ConfigResource(
            ResourceType.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(key, bad, incremental_operation=AlterConfigOpType.SET)
            ],
        )
        with pytest.raises(KafkaException) as err:
            admin.incremental_alter_configs([bad_res])[bad_res].result(15)
        assert err.value.args[0].code() == KafkaError.INVALID_CONFIG
        assert key in err.value.args[0].str()
    assert describe(admin, topic)["cleanup.policy"].value == "delete,compact"

    # Broker-level dynamic default: every topic without its own value follows, live.
    # (librdkafka addresses broker resources by id; the cluster-wide "" works the same way.)
    default = ConfigResource(
        ResourceType.BROKER,
        "0",
        incremental_configs=[
            ConfigEntry("log.retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([default])[default].result(15)
    try:
        entry = describe(admin, topic)["retention.ms"]
        assert entry.value == "7200000"
        assert source(entry) == ConfigSource.DYNAMIC_BROKER_CONFIG
        broker = ConfigResource(ResourceType.BROKER, "0")
        broker_entries = admin.describe_configs([broker])[broker].result(15)
        assert broker_entries["log.retention.ms"].value == "7200000"
        assert source(broker_entries["log.retention.ms"]) == ConfigSource.DYNAMIC_BROKER_CONFIG
        bad = ConfigResource(
            ResourceType.BROKER,
            "0",
            incremental_configs=[
                ConfigEntry("log.retention.ms", "-5", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        with pytest.raises(KafkaException) as err:
            admin.incremental_alter_configs([bad])[bad].result(15)
        assert "log.retention.ms" in err.value.args[0].str()
    finally:
        reset = ConfigResource(
            ResourceType.BROKER,
            "0",
            incremental_configs=[
                ConfigEntry(
                    "log.retention.ms", None, incremental_operation=AlterConfigOpType.DELETE
                )
            ],
        )
        admin.incremental_alter_configs([reset])[reset].result(15)
    assert source(describe(admin, topic)["retention.ms"]) == ConfigSource.DEFAULT_CONFIG


# --------------------------------------------------------------------------- compaction

COMPACT = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "86400000",
}


def test_compaction_keeps_the_last_value_per_key_and_then_drops_tombstones(
    lifecycle_broker: BrokerProcess,
) -> None:
    bootstrap = lifecycle_broker.bootstrap
    topic = unique_topic("cmp")
    create_topic(bootstrap, topic, 1, **COMPACT)
    sent = keyed(3000, 40, tombstone_every=7)
    produce_keyed(bootstrap, topic, sent)
    # Several segments of other records (~15 KB against segment.bytes 4096), so every keyed
    # one leaves the active segment: 200 one-byte values (2.7 KB) could share it with the
    # last keyed batch, which then stayed uncleaned (41 keyed records, not 40).
    tail = Sent(0, b"tail", b"t" * 50, (), int(time.time() * 1000))
    produce_keyed(bootstrap, topic, [tail] * 200)

    seen: list[int] = []  # keyed records read, check by check

    def compacted() -> bool:
        seen.append(len([k for _o, k, _v in read_partition(bootstrap, topic) if k != b"tail"]))
        return seen[-1] == 40

    def explain() -> str:
        tail = "\n".join(lifecycle_broker.log_text().splitlines()[-20:])
        return f"keyed records read: {seen[-10:]}; the end of the broker's log:\n{tail}"

    wait_until("compaction", compacted, explain=explain)
    got = read_partition(bootstrap, topic)
    cleaned = [(o, k, v) for o, k, v in got if k != b"tail"]
    assert {k: v for _o, k, v in cleaned} == last_per_key(sent, drop_tombstones=False)
    assert len(cleaned) == 40  # one record per key, tombstones included
    offsets = {m.key: i for i, m in enumerate(sent)}
    assert all(o == offsets[k] for o, k, _v in cleaned), "offsets are kept"
    assert watermarks(bootstrap, topic)[1] == 3200
    # Timestamps stay exact after compaction: the first surviving record at or after t.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g")})
    try:
        for i in (0, 1234, 2900):
            t = sent[i].timestamp_ms
            want = min(o for o, k, _v in got if k != b"tail" and sent[o].timestamp_ms >= t)
            found = consumer.offsets_for_times([TopicPartition(topic, 0, t)], timeout=10)
            assert found[0].offset == want
    finally:
        consumer.close()

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("delete.retention.ms", "0", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(15)
    survivors = last_per_key(sent, drop_tombstones=True)
    wait_until(
        "tombstones to go",
        lambda: (
            {k for _o, k, _v in read_partition(bootstrap, topic) if k != b"tail"} == set(survivors)
        ),
    )
    assert {k: v for _o, k, v in read_partition(bootstrap, topic) if k != b"tail"} == survivors


def test_produce_keeps_going_while_the_cleaner_runs(lifecycle_broker: BrokerProcess) -> None:
    bootstrap = lifecycle_broker.bootstrap
    topic = unique_topic("busy")
    create_topic(bootstrap, topic, 1, **COMPACT)
    stop = threading.Event()
    produced: list[Sent] = []

    def keep_producing() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "batch.size": 3000})
        i = 0
        while not stop.is_set() and i < 200_000:
            msg = Sent(0, f"k{i % 300}".encode(), f"v{i}".encode() + b"y" * 100, (), 0)
            producer.produce(topic, key=msg.key, value=msg.value, partition=0)
            produced.append(msg)
            i += 1
            if i % 500 == 0:
                producer.flush(10)
        assert producer.flush(30) == 0

    worker = threading.Thread(target=keep_producing)
    worker.start()
    try:
        topic_dir = lifecycle_broker.data_dir / "topics" / topic / "0"
        wait_until(
            "a cleaning pass during produce",
            lambda: (topic_dir / "cleaner.json").exists() and len(produced) > 20_000,
        )
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()
    wait_until("compaction to catch up", lambda: len(read_partition(bootstrap, topic)) < 5000)
    got = read_partition(bootstrap, topic)
    latest = {k: v for _o, k, v in got}
    assert latest == last_per_key(produced, drop_tombstones=False)
    assert watermarks(bootstrap, topic)[1] == len(produced)


def test_kill_9_during_compaction_keeps_every_latest_value(tmp_path: Path) -> None:
    broker = BrokerProcess(
        tmp_path / "data", env={"BAYOU_LOG_RETENTION_CHECK_INTERVAL_MS": "20"}
    ).start()
    try:
        topic = unique_topic("crash")
        # Hold the cleaner back while producing, then let one big pass start.
        create_topic(
            broker.bootstrap, topic, 1, **{**COMPACT, "min.compaction.lag.ms": str(3_600_000)}
        )
        sent = keyed(20_000, 500, size=200)
        produce_keyed(broker.bootstrap, topic, sent)
        topic_dir = broker.data_dir / "topics" / topic / "0"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        release = ConfigResource(
            ResourceType.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(
                    "min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET
                )
            ],
        )
        admin.incremental_alter_configs([release])[release].result(15)

        def mid_pass() -> bool:
            names = [p.name for p in topic_dir.iterdir()]
            return any(n.endswith((".cleaned", ".swap", ".deleted")) for n in names)

        wait_until("a pass in progress", mid_pass, timeout=60)  # polled every 50 ms
        broker.kill()
        broker.start()
        latest = last_per_key(sent, drop_tombstones=False)
        got = read_partition(broker.bootstrap, topic)
        assert {k: v for _o, k, v in got} == latest
        offsets = [o for o, _k, _v in got]
        assert offsets == sorted(set(offsets))
        assert watermarks(broker.bootstrap, topic)[1] == len(sent)
        wait_until(
            "compaction to finish after the restart",
            lambda: len(read_partition(broker.bootstrap, topic)) <= 500 + 60,
        )
    finally:
        broker.kill()


# --------------------------------------------------------------------------- CLI


def test_cli_alter_trim_and_describe(lifecycle_broker: BrokerProcess) -> None:
    from tests.integration.test_cli import bayou

    bootstrap = lifecycle_broker.bootstrap
    topic = unique_topic("cli")
    create_topic(bootstrap, topic, 1)
    now = int(time.time() * 1000)
    produce_keyed(
        bootstrap,
        topic,
        [Sent(0, b"k", b"v%d" % i, (), now - 100_000 + 1000 * i) for i in range(100)],
    )
    done = bayou(
        "-b",
        bootstrap,
        "topic",
        "alter",
        topic,
        "--config",
        "retention.bytes=1000000",
        "--config",
        "cleanup.policy=compact,delete",
    )
    assert done.returncode == 0, done.stderr
    bad = bayou("-b", bootstrap, "topic", "alter", topic, "--config", "retention.bytes=lots")
    assert bad.returncode == 1 and b"retention.bytes" in bad.stderr
    done = bayou("-b", bootstrap, "topic", "trim", topic, "--offset", "10")
    assert done.returncode == 0 and b"earliest offset is now 10" in done.stdout
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((now - 100_000 + 42_000) / 1000))
    done = bayou("-b", bootstrap, "topic", "trim", topic, "--before", iso + "Z")
    assert done.returncode == 0 and b"earliest offset is now 42" in done.stdout, done.stdout
    shown = bayou("-b", bootstrap, "topic", "describe", topic, "--format", "json")
    import json

    info = json.loads(shown.stdout)
    assert (info["partitions"][0]["earliest_offset"], info["partitions"][0]["latest_offset"]) == (
        42,
        100,
    )
    assert info["configs"]["retention.bytes"]["value"] == "1000000"
    assert info["configs"]["cleanup.policy"]["value"] == "compact,delete"
