"""Tiered storage with a real broker, a real S3 (SeaweedFS) and confluent-kafka: segments
copied to the store, local copies trimmed, everything read back from offset 0 and by time,
retention deleting remote objects, a kill -9 mid-upload, the store down for a while."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from bayou.protocol.kafka import messages as m
from bayou.storage.objects import ObjectStore
from tests.integration.test_confluent_kafka import (
    check_received,
    consume_all,
    create_topic,
    produce_all,
)
from tests.support.broker import BrokerProcess
from tests.support.fault_proxy import FaultProxy
from tests.support.http import BINARY_V2, V2, create_instance, read_records
from tests.support.http import client as http_client
from tests.support.kafka import Sent, make_messages, unique_topic
from tests.support.ports import free_port
from tests.support.raw_kafka import RawKafka
from tests.support.seaweedfs import SeaweedFS
from tests.support.wait import wait_until

CHECK_MS = "100"  # retention rounds
SEGMENT = 100_000
LOCAL = 150_000
TIERED = {"remote.storage.enable": "true", "segment.bytes": str(SEGMENT)}
PRODUCER = {"acks": "all", "batch.size": 16384}  # batches well under segment.bytes
# small chunks and a cache of 4 of them: batches cross chunk boundaries, reads evict
# generous timeouts: a loaded machine may be slow, never wrong (the fault tests set theirs)
TIER_PARAMS = {
    "interval_ms": 100,
    "chunk_bytes": 65536,
    "cache_bytes": 262144,
    "retries": 3,
    "backoff_ms": 20,
    "timeout_ms": 5000,
    "read_timeout_ms": 20000,
}


def tiered_broker_process(
    data: Path, url: str, s3: SeaweedFS, doors: tuple[str, ...] = ()
) -> BrokerProcess:
    return BrokerProcess(
        data,
        extra_args=["--tiered-storage", url],
        env={**s3.env, "BAYOU_LOG_RETENTION_CHECK_INTERVAL_MS": CHECK_MS},
        doors=doors,
    )


@pytest.fixture(scope="module")
def tiered(
    tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFS
) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("tiered") / "data"
    url = seaweedfs.url("shared", **TIER_PARAMS)
    proc = tiered_broker_process(data, url, seaweedfs, doors=("http",))
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


def partition_dir(broker: BrokerProcess, topic: str, p: int) -> Path:
    return broker.data_dir / "topics" / topic / str(p)


def local_bases(broker: BrokerProcess, topic: str, p: int) -> list[int]:
    return sorted(int(f.name[:20]) for f in partition_dir(broker, topic, p).glob("*.log"))


def local_bytes(broker: BrokerProcess, topic: str, p: int) -> int:
    total = 0
    for f in partition_dir(broker, topic, p).glob("*.log"):
        with contextlib.suppress(FileNotFoundError):  # trimmed since the listing
            total += f.stat().st_size
    return total


def remote_entries(broker: BrokerProcess, topic: str, p: int) -> list[dict]:
    try:
        doc = json.loads((partition_dir(broker, topic, p) / "remote.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return list(doc["segments"])


def bucket_keys(s3: SeaweedFS, prefix: str) -> list[str]:
    store = ObjectStore.from_url(s3.url(prefix), environ={**os.environ, **s3.env})
    return sorted(o.key for o in asyncio.run(store.list("")))


def segment_objects(keys: list[str]) -> dict[tuple[int, int], list[str]]:
    """The ``.log`` objects in ``keys`` by (partition, base offset)."""
    out: dict[tuple[int, int], list[str]] = {}
    for key in keys:
        if key.endswith(".log"):
            partition, name = key.rsplit("/", 2)[1:]
            out.setdefault((int(partition), int(name[:20])), []).append(key)
    return out


def wait_trimmed(broker: BrokerProcess, topic: str, partitions: int, limit: int = LOCAL) -> None:
    """Until every partition's local copy is within local.retention.bytes (plus the active
    segment) and starts above offset 0."""
    for p in range(partitions):
        wait_until(
            f"local copies of {topic}-{p} trimmed",
            lambda p=p: (
                local_bases(broker, topic, p)[0] > 0  # type: ignore[misc]
                and local_bytes(broker, topic, p) <= limit + SEGMENT
            ),
            60,
        )


def wait_all_copied(broker: BrokerProcess, topic: str, partitions: int) -> None:
    """Until every closed segment is copied (no upload under way: the remote record reaches
    the active segment)."""

    def done(p: int) -> bool:
        entries = remote_entries(broker, topic, p)
        return (
            bool(entries)
            and all(e["state"] == "copied" for e in entries)
            and entries[-1]["next_offset"] == local_bases(broker, topic, p)[-1]
        )

    for p in range(partitions):
        wait_until(f"every closed segment of {topic}-{p} copied", lambda p=p: done(p), 60)  # type: ignore[misc]


def watermarks(bootstrap: str, topic: str, p: int) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("w")})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def consume_from(bootstrap: str, topic: str, offset: int, count: int) -> list:
    """``count`` records of partition 0 from ``offset`` (bounded in time)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g")})
    consumer.assign([TopicPartition(topic, 0, offset)])
    got: list = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg)
    finally:
        consumer.close()
    return got


def test_segments_go_remote_and_everything_reads_back_from_offset_zero(
    tiered: BrokerProcess, seaweedfs: SeaweedFS
) -> None:
    topic = unique_topic("tier")
    create_topic(tiered.bootstrap, topic, 2, **TIERED, **{"local.retention.bytes": str(LOCAL)})
    sent = make_messages(20_000, 2)
    produce_all(tiered.bootstrap, topic, sent, **PRODUCER)
    wait_trimmed(tiered, topic, 2)
    keys = bucket_keys(seaweedfs, "shared")
    for p in range(2):
        # the first segments are only in the store now; the log still starts at 0
        assert 0 not in local_bases(tiered, topic, p)
        assert any(f"/{p}/00000000000000000000-" in k and k.endswith(".log") for k in keys)
        copied = [e for e in remote_entries(tiered, topic, p) if e["state"] == "copied"]
        assert copied[0]["base_offset"] == 0
        assert watermarks(tiered.bootstrap, topic, p) == (0, 10_000)
    check_received(sent, consume_all(tiered.bootstrap, topic, 2, len(sent)))


def test_http_consumer_reads_remote_segments_through_the_core(tiered: BrokerProcess) -> None:
    """The other doors read through the core's Cursor: a REST Proxy consumer from the
    beginning gets every record — remote ones first — with key, headers and timestamp."""
    topic = unique_topic("tier-http")
    create_topic(tiered.bootstrap, topic, 1, **TIERED, **{"local.retention.bytes": str(LOCAL)})
    sent = make_messages(4_000, 1)
    produce_all(tiered.bootstrap, topic, sent, **PRODUCER)
    wait_trimmed(tiered, topic, 1)
    with http_client(tiered.http_url) as http:
        base = create_instance(
            http, unique_topic("g"), "c1", format="binary", **{"auto.offset.reset": "earliest"}
        )
        r = http.post(
            f"{base}/subscription", json={"topics": [topic]}, headers={"Content-Type": V2}
        )
        assert r.status_code == 204, r.text
        got = read_records(http, base, BINARY_V2, len(sent), timeout=60)
    assert [r["offset"] for r in got] == list(range(len(sent)))
    for want, record in zip(sent, got, strict=True):
        assert base64.b64decode(record["key"]) == want.key
        assert base64.b64decode(record["value"]) == want.value
        assert record["timestamp"] == want.timestamp_ms
        assert [(h["name"], base64.b64decode(h["value"])) for h in record["headers"]] == list(
            want.headers
        )


def test_offsets_for_times_find_records_in_remote_and_local_segments(
    tiered: BrokerProcess,
) -> None:
    topic = unique_topic("tier-time")
    create_topic(tiered.bootstrap, topic, 1, **TIERED, **{"local.retention.bytes": str(LOCAL)})
    base = int(time.time() * 1000) - 3_600_000
    sent = make_messages(8_000, 1, base_ts=base)  # record i has timestamp base + i
    produce_all(tiered.bootstrap, topic, sent, **PRODUCER)
    wait_trimmed(tiered, topic, 1)
    local_start = local_bases(tiered, topic, 0)[0]
    remote_i, local_i = local_start // 2, (local_start + 8_000) // 2
    consumer = Consumer({"bootstrap.servers": tiered.bootstrap, "group.id": unique_topic("g")})
    try:
        found = [
            consumer.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=15)[0].offset
            for ts in (base + remote_i, base + local_i, base - 1, base + 9_000)
        ]
        assert found == [remote_i, local_i, 0, -1]
        # reading by time: from the offset found, the records are the ones sent
        consumer.assign([TopicPartition(topic, 0, remote_i)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 50 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                got.append(msg)
        assert [(g.offset(), g.timestamp()[1], g.value()) for g in got] == [
            (remote_i + j, base + remote_i + j, sent[remote_i + j].value) for j in range(50)
        ]
    finally:
        consumer.close()


def test_retention_deletes_remote_segments_too(tiered: BrokerProcess, seaweedfs: SeaweedFS) -> None:
    """retention.ms decides when data is gone everywhere: the old segments' objects leave
    the bucket and the log start offset moves past them."""
    topic = unique_topic("tier-ret")
    create_topic(tiered.bootstrap, topic, 1, **TIERED, **{"local.retention.bytes": str(LOCAL)})
    now = int(time.time() * 1000)
    old = make_messages(6_000, 1, base_ts=now - 3_600_000)
    new = [
        Sent(0, m.key, m.value, m.headers, now - 60_000 + i)
        for i, m in enumerate(make_messages(2_000, 1))
    ]
    produce_all(tiered.bootstrap, topic, [*old, *new], **PRODUCER)
    wait_trimmed(tiered, topic, 1)
    before = [k for k in bucket_keys(seaweedfs, "shared") if k.startswith(topic + "-")]
    assert before

    admin = AdminClient({"bootstrap.servers": tiered.bootstrap})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(15)
    wait_until("the old segments expire", lambda: watermarks(tiered.bootstrap, topic, 0)[0] > 0, 60)
    low = watermarks(tiered.bootstrap, topic, 0)[0]
    assert 0 < low <= 6_000  # the segment holding the first new record stays

    def old_objects_gone() -> bool:
        entries = remote_entries(tiered, topic, 0)
        return all(e["next_offset"] > low for e in entries) and not any(
            int(k.rsplit("/", 1)[1][:20]) < low and k.endswith(".log")
            for k in bucket_keys(seaweedfs, "shared")
            if k.startswith(topic + "-")
        )

    wait_until("the expired remote objects are deleted", old_objects_gone, 60)
    remaining = [*old, *new][low:]
    got = consume_from(tiered.bootstrap, topic, OFFSET_BEGINNING, len(remaining))
    assert [g.offset() for g in got] == list(range(low, 8_000))
    assert [g.value() for g in got] == [s.value for s in remaining]


def test_read_committed_skips_aborted_transactions_in_remote_segments(
    tiered: BrokerProcess,
) -> None:
    topic = unique_topic("tier-txn")
    create_topic(tiered.bootstrap, topic, 1, **TIERED, **{"local.retention.bytes": str(LOCAL)})
    producer = Producer(
        {"bootstrap.servers": tiered.bootstrap, "transactional.id": topic, **PRODUCER}
    )
    producer.init_transactions(15)
    committed: list[bytes] = []
    for t in range(40):
        producer.begin_transaction()
        values = [f"t{t}-{i}-".encode() + b"x" * 200 for i in range(100)]
        for v in values:
            producer.produce(topic, value=v, partition=0)
        if t % 3 == 1:
            producer.abort_transaction(15)
        else:
            producer.commit_transaction(15)
            committed += values
    wait_trimmed(tiered, topic, 1)
    consumer = Consumer(
        {
            "bootstrap.servers": tiered.bootstrap,
            "group.id": unique_topic("g"),
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    break
                raise KafkaException(msg.error())
            got.append(msg.value())
    finally:
        consumer.close()
    assert got == committed


def test_tiering_needs_the_broker_option_and_kafkas_config_rules(
    tiered: BrokerProcess, shared_broker: BrokerProcess
) -> None:
    def refused(bootstrap: str, **config: str) -> str:
        with pytest.raises(KafkaException) as err:
            create_topic(bootstrap, unique_topic("bad"), 1, **config)
        return str(err.value.args[0].str())

    assert "not enabled on this broker" in refused(
        shared_broker.bootstrap, **{"remote.storage.enable": "true"}
    )
    assert "compacted" in refused(
        tiered.bootstrap, **{"remote.storage.enable": "true", "cleanup.policy": "compact"}
    )
    assert "retention.ms" in refused(
        tiered.bootstrap,
        **{"remote.storage.enable": "true", "retention.ms": "1000", "local.retention.ms": "2000"},
    )


# ---------------------------------------------------------------------------- faults


def test_kill_9_mid_upload_leaves_nothing_behind(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """The broker dies after a segment's .log is in the bucket but before its upload is
    complete: after the restart that orphan's objects are deleted, the segment is copied
    again under a new id, and every record reads back."""
    proxy = FaultProxy(seaweedfs.host, seaweedfs.s3_port, free_port()).start()
    prefix = "crash-" + unique_topic("p")
    try:
        # the held request outlives the client's patience: the upload hangs until the kill
        params = {**TIER_PARAMS, "endpoint": proxy.endpoint, "timeout_ms": 120_000}
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"s3://{seaweedfs.bucket}/{prefix}?{query}"
        broker = tiered_broker_process(tmp_path / "data", url, seaweedfs).start()
        proxy.delay(1, 60, methods=("PUT",), suffix=".index", forward=False)
        topic = unique_topic("tier-crash")
        create_topic(broker.bootstrap, topic, 1, **TIERED, **{"local.retention.bytes": str(LOCAL)})
        sent = make_messages(3_000, 1)
        produce_all(broker.bootstrap, topic, sent, **PRODUCER)
        wait_until("an upload to hang", lambda: "held 60s" in proxy.outcomes("PUT"), 60)
        orphan = [e for e in remote_entries(broker, topic, 0) if e["state"] == "copying"]
        assert len(orphan) == 1
        orphan_id = orphan[0]["id"]
        assert any(orphan_id in k for k in bucket_keys(seaweedfs, prefix))  # its .log is up
        broker.kill()
        broker.proc.wait(10)  # type: ignore[union-attr]

        proxy.clear()
        broker.start()
        try:

            def orphan_gone() -> bool:
                ids = {e["id"] for e in remote_entries(broker, topic, 0)}
                return orphan_id not in ids and not any(
                    orphan_id in k for k in bucket_keys(seaweedfs, prefix)
                )

            wait_until("the orphan's objects to be deleted", orphan_gone)
            wait_trimmed(broker, topic, 1)
            copied = [e for e in remote_entries(broker, topic, 0) if e["state"] == "copied"]
            assert copied[0]["base_offset"] == orphan[0]["base_offset"] == 0
            check_received(sent, consume_all(broker.bootstrap, topic, 1, len(sent)))
        finally:
            broker.kill()
    finally:
        proxy.stop()


def fetch_error(bootstrap: str, topic: str, offset: int) -> int:
    request = m.FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        topics=[
            m.FetchRequestFetchTopic(
                topic=topic,
                partitions=[
                    m.FetchRequestFetchPartition(
                        partition=0, fetch_offset=offset, partition_max_bytes=1 << 20
                    )
                ],
            )
        ],
    )
    with RawKafka(bootstrap) as client:
        response = client.call(1, 11, request)
    return int(response.responses[0].partitions[0].error_code)


def test_store_down_reads_fail_retriably_and_produce_goes_on(tmp_path: Path) -> None:
    s3 = SeaweedFS(tmp_path / "s3").start()
    broker = None
    try:
        url = s3.url("outage", **TIER_PARAMS)
        broker = tiered_broker_process(tmp_path / "data", url, s3).start()
        topic = unique_topic("tier-down")
        create_topic(broker.bootstrap, topic, 1, **TIERED, **{"local.retention.bytes": str(LOCAL)})
        first = make_messages(6_000, 1)
        produce_all(broker.bootstrap, topic, first, **PRODUCER)
        wait_trimmed(broker, topic, 1)

        s3.stop()
        assert fetch_error(broker.bootstrap, topic, 0) == 56  # KAFKA_STORAGE_ERROR: retriable
        later = [
            Sent(0, m.key, m.value, m.headers, m.timestamp_ms)
            for m in make_messages(6_000, 1, base_ts=first[-1].timestamp_ms + 1)
        ]
        produce_all(broker.bootstrap, topic, later, **PRODUCER)  # the store is not needed
        assert watermarks(broker.bootstrap, topic, 0) == (0, 12_000)

        s3.start()
        wait_trimmed(broker, topic, 1)  # uploads resumed: what came meanwhile is copied too
        check_received([*first, *later], consume_all(broker.bootstrap, topic, 1, 12_000))
    finally:
        if broker is not None:
            broker.kill()
        s3.stop()


def test_restarts_keep_the_remote_log(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """A graceful restart and a kill -9 both keep what is only in the store: the record of
    remote segments survives (nothing is copied again), the local copy stays trimmed, the
    chunk cache starts empty, and every record reads back from offset 0 — from the store."""
    prefix = "restart-" + unique_topic("p")
    broker = tiered_broker_process(
        tmp_path / "data", seaweedfs.url(prefix, **TIER_PARAMS), seaweedfs
    ).start()
    try:
        topic = unique_topic("tier-restart")
        create_topic(broker.bootstrap, topic, 2, **TIERED, **{"local.retention.bytes": str(LOCAL)})
        sent = make_messages(8_000, 2)
        produce_all(broker.bootstrap, topic, sent, **PRODUCER)
        wait_trimmed(broker, topic, 2)
        wait_all_copied(broker, topic, 2)
        copied_before = {
            p: [e["id"] for e in remote_entries(broker, topic, p) if e["state"] == "copied"]
            for p in range(2)
        }
        keys_before = bucket_keys(seaweedfs, prefix)
        assert len(segment_objects(keys_before)) == sum(map(len, copied_before.values()))

        assert broker.stop() == 0
        broker.start()
        for p in range(2):
            assert local_bases(broker, topic, p)[0] > 0  # nothing fetched back to the log
            ids = [e["id"] for e in remote_entries(broker, topic, p)]
            assert ids[: len(copied_before[p])] == copied_before[p]
            assert watermarks(broker.bootstrap, topic, p) == (0, 4_000)
        cache = broker.data_dir / "tiered-cache"
        assert not [f for f in cache.rglob("*") if f.is_file()]  # reads below are remote
        check_received(sent, consume_all(broker.bootstrap, topic, 2, len(sent)))

        later = make_messages(4_000, 2, base_ts=sent[-1].timestamp_ms + 1)
        produce_all(broker.bootstrap, topic, later, **PRODUCER)
        wait_all_copied(broker, topic, 2)
        assert all(remote_entries(broker, topic, p)[-1]["next_offset"] > 4_000 for p in range(2))
        broker.kill()
        broker.start()
        for p in range(2):
            assert watermarks(broker.bootstrap, topic, p) == (0, 6_000)
        # the segments copied before the restarts were not copied again
        after = segment_objects(bucket_keys(seaweedfs, prefix))
        before = segment_objects(keys_before)
        assert {k: after[k] for k in before} == before
        assert all(len(ks) == 1 for ks in after.values())
        check_received([*sent, *later], consume_all(broker.bootstrap, topic, 2, 12_000))
    finally:
        broker.kill()


def test_store_errors_and_slow_responses_are_retried_without_loss(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    """The store answers 500s and 503s and holds requests past the client's timeout, on
    uploads and on reads: the client retries them, so no upload fails, every segment is
    copied once, a Fetch of remote data succeeds through the faults, and every record reads
    back."""
    proxy = FaultProxy(seaweedfs.host, seaweedfs.s3_port, free_port()).start()
    prefix = "faults-" + unique_topic("p")
    try:
        params = {
            **TIER_PARAMS,
            "endpoint": proxy.endpoint,
            "retries": 10,  # more than the faults injected at once: the client absorbs them
            "timeout_ms": 2000,
            "read_timeout_ms": 30000,
        }
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"s3://{seaweedfs.bucket}/{prefix}?{query}"
        broker = tiered_broker_process(tmp_path / "data", url, seaweedfs).start()
        try:
            topic = unique_topic("tier-faults")
            create_topic(
                broker.bootstrap, topic, 2, **TIERED, **{"local.retention.bytes": str(LOCAL)}
            )
            proxy.fail(3, methods=("PUT",))
            proxy.delay(2, 6, methods=("PUT",))
            proxy.fail(3, methods=("PUT",), status=503)
            sent = make_messages(8_000, 2)
            produce_all(broker.bootstrap, topic, sent, **PRODUCER)
            wait_trimmed(broker, topic, 2)
            wait_all_copied(broker, topic, 2)
            puts = proxy.outcomes("PUT")
            assert (puts.count("answered 500"), puts.count("answered 503")) == (3, 3)
            assert puts.count("held 6s") == 2
            assert "tiered storage: copying" not in broker.log_text()  # no upload gave up
            objects = segment_objects(bucket_keys(seaweedfs, prefix))
            assert all(len(keys) == 1 for keys in objects.values())
            assert len(objects) == sum(len(remote_entries(broker, topic, p)) for p in range(2))

            # one Fetch of the first (remote) records, through 500s and a slow response
            proxy.fail(3, methods=("GET",))
            proxy.delay(1, 6, methods=("GET",))
            assert fetch_error(broker.bootstrap, topic, 0) == 0
            gets = proxy.outcomes("GET")
            assert (gets.count("answered 500"), gets.count("held 6s")) == (3, 1)

            proxy.fail(3, methods=("GET",), status=503)
            proxy.delay(1, 6, methods=("GET",))
            check_received(sent, consume_all(broker.bootstrap, topic, 2, len(sent)))
            gets = proxy.outcomes("GET")
            assert (gets.count("answered 503"), gets.count("held 6s")) == (3, 2)
        finally:
            broker.kill()
    finally:
        proxy.stop()
