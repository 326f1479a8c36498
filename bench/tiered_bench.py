"""Tiered-storage benchmark: upload and read-back throughput, and what tiering costs produce.

Theory of operation
-------------------
A SeaweedFS (``weed mini``, the S3 the tests use) and one ``bayou serve --tiered-storage``
run on loopback; a confluent-kafka producer and consumer in this process drive them.
1 KiB messages, acks=all, linger.ms=5, batch.size=1 MB, ``segment.bytes`` 8 MiB.

1. **client**: the object-store client alone (``bayou.storage.objects``): one ``--client-mb``
   file put (multipart, 8 MiB parts, 4 in flight), then read back in 4 MiB ranged GETs, one
   at a time and 4 at a time.
2. **produce**: ``--mb`` MB into a topic without tiering, then into one with
   ``remote.storage.enable`` and ``local.retention.bytes`` of one segment, so segments are
   uploaded and local copies deleted while the producer runs.  Reported: produce MB/s of
   each, and how long after the last ack the last closed segment was copied.
3. **upload**: a topic of ``--partitions`` partitions filled without tiering is switched to
   ``remote.storage.enable=true``: the time until every closed segment is copied gives the
   broker's upload MB/s (``upload_concurrency`` partitions at once).
4. **read-back**: the same topic's local copies are trimmed (``local.retention.bytes`` of
   one segment), and every partition is read from offset 0 — the broker's cache of remote
   data (64 MiB) is smaller than what is read, so every read finds it cold — by a
   confluent-kafka consumer (which, in Python, is itself the bottleneck near 100 MB/s) and by
   a raw Fetch loop (8 MiB per partition per request: the broker's own pace) — beside the
   same reads of the untiered topic of phase 2 (local, page cache warm).

The machine is shared: read the ratios one run prints rather than the absolutes.  Results
go to ``bench/results/tiered-<timestamp>.json``.  From the repository root::

    .venv/bin/python -m bench.tiered_bench                 # defaults: 256 MB per phase
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from bayou.storage.objects import ObjectStore
from tests.support.broker import BrokerProcess
from tests.support.seaweedfs import SeaweedFS

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000
MIB = 1024 * 1024
SEGMENT = 8 * MIB
VALUE = 1024
WAIT_S = 600
CACHE = 64 * MIB  # below what is read back: every read-back finds a cold cache


def client_phase(s3: SeaweedFS, tmp: Path, size_mb: int) -> dict[str, Any]:
    store = ObjectStore.from_url(s3.url("bench-client"), environ={**os.environ, **s3.env})
    path = tmp / "object"
    path.write_bytes(os.urandom(size_mb * MB))
    chunk = 4 * MIB

    async def run() -> dict[str, Any]:
        start = time.perf_counter()
        await store.put_file("object", path)
        put_s = time.perf_counter() - start
        ranges = [(p, min(p + chunk, size_mb * MB)) for p in range(0, size_mb * MB, chunk)]
        start = time.perf_counter()
        for a, b in ranges:
            await store.get_range("object", a, b)
        serial_s = time.perf_counter() - start
        start = time.perf_counter()
        gate = asyncio.Semaphore(4)

        async def one(a: int, b: int) -> None:
            async with gate:
                await store.get_range("object", a, b)

        await asyncio.gather(*(one(a, b) for a, b in ranges))
        parallel_s = time.perf_counter() - start
        await store.delete(["object"])
        return {
            "mb": size_mb,
            "put_mb_per_s": round(size_mb / put_s, 1),
            "get_serial_mb_per_s": round(size_mb / serial_s, 1),
            "get_4_parallel_mb_per_s": round(size_mb / parallel_s, 1),
        }

    try:
        return asyncio.run(run())
    finally:
        path.unlink()


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce(bootstrap: str, topic: str, partitions: int, total_mb: int) -> float:
    """Seconds to produce ``total_mb`` MB of 1 KiB values, acks=all, round-robin."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "acks": "all",
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    value = b"v" * VALUE
    count = total_mb * MB // VALUE
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(300) == 0
    return time.perf_counter() - start


def consume(bootstrap: str, topic: str, partitions: int, total_mb: int) -> float:
    """Seconds to read every message of the topic from offset 0."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{topic}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * MIB,
            "max.partition.fetch.bytes": 8 * MIB,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    want = total_mb * MB // VALUE
    got = 0
    start = time.perf_counter()
    deadline = time.monotonic() + WAIT_S
    try:
        while got < want and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 1.0):
                if msg.error() is None:
                    got += 1
    finally:
        consumer.close()
    assert got == want, (got, want)
    return time.perf_counter() - start


def fetch_all(bootstrap: str, topic: str, partitions: int) -> tuple[float, int]:
    """Seconds and bytes to fetch every partition from offset 0 with raw Fetch requests."""
    from bayou.protocol.kafka import messages as m
    from bayou.protocol.kafka.records import iter_batches
    from tests.support.raw_kafka import RawKafka

    total = 0
    start = time.perf_counter()
    with RawKafka(bootstrap, timeout=60) as client:
        for p in range(partitions):
            offset = 0
            while True:
                request = m.FetchRequest(
                    replica_id=-1,
                    max_wait_ms=0,
                    min_bytes=1,
                    max_bytes=64 * MIB,
                    isolation_level=0,
                    topics=[
                        m.FetchRequestFetchTopic(
                            topic=topic,
                            partitions=[
                                m.FetchRequestFetchPartition(
                                    partition=p, fetch_offset=offset, partition_max_bytes=8 * MIB
                                )
                            ],
                        )
                    ],
                )
                part = client.call(1, 11, request).responses[0].partitions[0]
                assert part.error_code == 0, part.error_code
                records = memoryview(part.records or b"")
                if not records:
                    break
                for _pos, header in iter_batches(records):
                    offset = header.last_offset + 1
                total += len(records)
                if offset >= part.high_watermark:
                    break
    return time.perf_counter() - start, total


def copied_bytes(data: Path, topic: str, partitions: int) -> tuple[int, int]:
    """(bytes copied, of which only remote now) over the topic's partitions."""
    copied = remote_only = 0
    for p in range(partitions):
        directory = data / "topics" / topic / str(p)
        local_start = min(int(f.name[:20]) for f in directory.glob("*.log"))
        try:
            entries = json.loads((directory / "remote.json").read_text())["segments"]
        except FileNotFoundError:
            continue
        for e in entries:
            if e["state"] == "copied":
                copied += e["size"]
                if e["base_offset"] < local_start:
                    remote_only += e["size"]
    return copied, remote_only


def all_copied(data: Path, topic: str, partitions: int) -> bool:
    """Every closed segment of every partition is copied."""
    for p in range(partitions):
        directory = data / "topics" / topic / str(p)
        active = max(int(f.name[:20]) for f in directory.glob("*.log"))
        if active == 0:
            continue  # nothing closed yet
        try:
            entries = json.loads((directory / "remote.json").read_text())["segments"]
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        ends = [e["next_offset"] for e in entries if e["state"] == "copied"]
        if not ends or max(ends) < active:
            return False
    return True


def local_bytes(data: Path, topic: str) -> int:
    total = 0
    for f in (data / "topics" / topic).glob("*/*.log"):
        with contextlib.suppress(FileNotFoundError):  # trimmed meanwhile
            total += f.stat().st_size
    return total


def wait(what: str, check: Any, timeout: float = WAIT_S) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(what)
        time.sleep(0.05)
    return time.perf_counter() - start


def alter(admin: AdminClient, topic: str, **configs: str) -> None:
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
            for k, v in configs.items()
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="MB per produce/upload phase")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--client-mb", type=int, default=128)
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": "shared 2-core VM; loopback SeaweedFS"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        s3 = SeaweedFS(tmp / "s3").start()
        broker: BrokerProcess | None = None
        try:
            results["client"] = client_phase(s3, tmp, args.client_mb)
            print("client:", results["client"])
            data = tmp / "data"
            broker = BrokerProcess(
                data,
                doors=(),
                extra_args=[
                    "--log-level",
                    "WARNING",
                    "--tiered-storage",
                    s3.url("bench", interval_ms=200, cache_bytes=CACHE),
                ],
                env={**s3.env, "BAYOU_LOG_RETENTION_CHECK_INTERVAL_MS": "200"},
            ).start()
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            seg = {"segment.bytes": str(SEGMENT)}
            topics = {
                "plain": seg,
                "tiered": {
                    **seg,
                    "remote.storage.enable": "true",
                    "local.retention.bytes": str(SEGMENT),
                },
                "later": seg,
            }
            for name, config in topics.items():
                admin.create_topics([NewTopic(name, args.partitions, 1, config=config)])[
                    name
                ].result(15)

            assert s3.proc is not None
            pids = (broker.pid, s3.proc.pid)
            before = [cpu_s(pid) for pid in pids]
            plain_s = produce(broker.bootstrap, "plain", args.partitions, args.mb)
            middle = [cpu_s(pid) for pid in pids]
            tiered_s = produce(broker.bootstrap, "tiered", args.partitions, args.mb)
            lag_s = wait("tiered uploads", lambda: all_copied(data, "tiered", args.partitions))
            after = [cpu_s(pid) for pid in pids]
            results["produce"] = {
                "mb": args.mb,
                "partitions": args.partitions,
                "without_tiering_mb_per_s": round(args.mb / plain_s, 1),
                "with_tiering_mb_per_s": round(args.mb / tiered_s, 1),
                "ratio": round(plain_s / tiered_s, 2),
                "last_copy_after_last_ack_s": round(lag_s, 2),
                "local_mb_left": round(local_bytes(data, "tiered") / MB, 1),
                "broker_cpu_s_without": round(middle[0] - before[0], 2),
                "broker_cpu_s_with": round(after[0] - middle[0], 2),
                "seaweedfs_cpu_s_without": round(middle[1] - before[1], 2),
                "seaweedfs_cpu_s_with": round(after[1] - middle[1], 2),
            }
            print("produce:", results["produce"])

            produce(broker.bootstrap, "later", args.partitions, args.mb)
            alter(admin, "later", remote_storage_enable="true")
            upload_s = wait("uploads", lambda: all_copied(data, "later", args.partitions))
            uploaded, _ = copied_bytes(data, "later", args.partitions)
            results["upload"] = {
                "mb": round(uploaded / MB, 1),
                "seconds": round(upload_s, 2),
                "mb_per_s": round(uploaded / MB / upload_s, 1),
            }
            print("upload:", results["upload"])

            alter(admin, "later", local_retention_bytes=str(SEGMENT))
            wait(
                "local copies trimmed",
                lambda: local_bytes(data, "later") <= args.partitions * 2 * SEGMENT,
            )
            _, remote_only = copied_bytes(data, "later", args.partitions)
            raw_remote_s, raw_bytes = fetch_all(broker.bootstrap, "later", args.partitions)
            raw_local_s, _ = fetch_all(broker.bootstrap, "plain", args.partitions)
            remote_s = consume(broker.bootstrap, "later", args.partitions, args.mb)
            local_s = consume(broker.bootstrap, "plain", args.partitions, args.mb)
            results["read_back"] = {
                "remote_only_mb": round(remote_only / MB, 1),
                "raw_fetch_remote_cold_cache_mb_per_s": round(raw_bytes / MB / raw_remote_s, 1),
                "raw_fetch_local_mb_per_s": round(raw_bytes / MB / raw_local_s, 1),
                "consumer_remote_mb_per_s": round(args.mb / remote_s, 1),
                "consumer_local_mb_per_s": round(args.mb / local_s, 1),
            }
            print("read-back:", results["read_back"])
        finally:
            if broker is not None:
                broker.stop(60)
            s3.stop()
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"tiered-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
