"""Log-compaction benchmark: cleaner throughput, and produce throughput while it runs.

Theory of operation
-------------------
1. **Cleaner throughput** (storage only, no broker): a compacted partition of ``--log-mb`` MB
   is written with ``--keys`` distinct keys (values of ``--value-bytes``, batches of
   ``--batch`` records, codec ``--codec``), its segments are rolled and fsynced, then one
   cleaning pass (``bayou.storage.cleaner.clean``) is timed.  Reported: MB of log cleaned
   per second (segment bytes read by the pass / wall time) and the size after.
2. **Produce while cleaning**: a real ``bayou serve`` is started twice — once with the
   cleaner disabled (``BAYOU_LOG_CLEANER_ENABLE=false``), once with it enabled and a 100 ms
   check interval on a topic with ``min.cleanable.dirty.ratio=0.01``, so the cleaner runs
   back to back during the load.  A confluent-kafka producer (in this process) sends
   ``--messages`` keyed messages (acks=all); reported: msgs/s and MB/s of values, and how
   many cleaning passes ran during the enabled run.
3. **Appends while cleaning** (storage only, one process, no client in the way): the main
   thread appends 16 x 1 KB batches to a log as fast as it can for ``--append-seconds``
   while a worker thread runs one pass over a ``--append-log-mb`` MB compacted log —
   unpaced (``no_pace``) and paced as the broker paces it (``Pacer``, driven by the
   appends) — beside the same appends with no pass, interleaved ``--append-rounds`` times.
   Reported: appends/s, and each mode's median share of the no-pass rate: the GIL the
   cleaner takes from the event loop, without the load generator's noise.

Brokers are started on free loopback ports and stopped by PID.  Results are printed and
written to ``bench/results/compaction-<timestamp>.json``.  Run from the repository root::

    .venv/bin/python -m bench.compaction_bench            # defaults: 64 MB log, 300k msgs
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bayou.config import TopicConfig
from bayou.protocol.kafka.records import COMPRESSION_NAMES, Record, build_batch
from bayou.storage.cleaner import clean
from bayou.storage.log import PartitionLog
from bayou.storage.pacer import Activity, Pacer, no_pace
from tests.support.broker import BrokerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000


def cleaner_throughput(
    log_mb: int, keys: int, value_bytes: int, batch: int, codec: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TopicConfig.resolve(
            {}, {"cleanup.policy": "compact", "segment.bytes": 16 * 1024 * 1024}
        )
        log = PartitionLog("bench", 0, Path(tmp), cfg, lambda: 10**13)
        value = b"v" * value_bytes
        i = 0
        while log.size_bytes < log_mb * MB:
            records = [
                Record(1_000 + i + j, b"key-%08d" % ((i + j) % keys), value) for j in range(batch)
            ]
            log.append(build_batch(records, compression=COMPRESSION_NAMES[codec]))
            i += batch
        log.roll()
        log.flush()
        before = log.size_bytes
        start = time.perf_counter()
        stats = clean(log, 10**13, 128 * 1024 * 1024 // 24)
        elapsed = time.perf_counter() - start
        assert stats is not None
        result = {
            "log_bytes": before,
            "records": i,
            "keys": keys,
            "codec": codec,
            "seconds": round(elapsed, 3),
            "cleaned_mb_per_s": round(stats.bytes_read / MB / elapsed, 1),
            "records_per_s": round(stats.records_read / elapsed),
            "bytes_after": log.size_bytes,
            "records_kept": stats.records_kept,
        }
        log.close()
        return result


def _compacted_log(directory: Path, log_mb: int) -> PartitionLog:
    cfg = TopicConfig.resolve({}, {"cleanup.policy": "compact", "segment.bytes": 16 * 1024 * 1024})
    log = PartitionLog("bench", 0, directory, cfg, lambda: 10**13)
    value = b"v" * 200
    i = 0
    while log.size_bytes < log_mb * MB:
        records = [
            Record(1_000 + i + j, b"key-%08d" % ((i + j) % 10_000), value) for j in range(100)
        ]
        log.append(build_batch(records))
        i += 100
    log.roll()
    log.flush()
    return log


def _appends_for(seconds: float, activity: Activity) -> float:
    """Appends per second of 16 x 1 KB batches to a fresh log on this thread."""
    with tempfile.TemporaryDirectory() as tmp:
        log = PartitionLog("appends", 0, Path(tmp), TopicConfig.resolve({}, {}), lambda: 10**13)
        batch = build_batch([Record(1_000, None, b"x" * 1000) for _ in range(16)])
        n = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            log.append(batch)
            activity.count += 1
            n += 1
        log.close()
    return n / seconds


def appends_while_cleaning(log_mb: int, seconds: float, rounds: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"no pass": [], "unpaced": [], "paced": []}
    for _ in range(rounds):
        for mode in rates:
            with tempfile.TemporaryDirectory() as tmp:
                log = _compacted_log(Path(tmp), log_mb)
                activity = Activity()
                pace: Callable[[], None] = no_pace if mode == "unpaced" else Pacer(activity)
                worker = None
                if mode != "no pass":
                    worker = threading.Thread(target=clean, args=(log, 10**13, 10**7, pace))
                    worker.start()
                rates[mode].append(_appends_for(seconds, activity))
                if worker is not None:
                    worker.join()
                log.close()
    base = rates["no pass"]
    return {
        "log_mb": log_mb,
        "seconds": seconds,
        "appends_per_s": {m: [round(r) for r in rs] for m, rs in rates.items()},
        "share_of_no_pass": {
            m: round(statistics.median(r / b for r, b in zip(rs, base, strict=True)), 2)
            for m, rs in rates.items()
            if m != "no pass"
        },
    }


def _broker(data: Path, cleaner: bool) -> BrokerProcess:
    return BrokerProcess(
        data,
        doors=(),
        extra_args=["--log-level", "WARNING"],
        env={
            "BAYOU_LOG_CLEANER_ENABLE": "true" if cleaner else "false",
            "BAYOU_LOG_RETENTION_CHECK_INTERVAL_MS": "100",
        },
    )


def produce_run(cleaner: bool, messages: int, keys: int, value_bytes: int) -> dict[str, Any]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as tmp:
        broker = _broker(Path(tmp) / "data", cleaner).start()
        bootstrap = broker.bootstrap
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            config = {
                "cleanup.policy": "compact",
                "segment.bytes": str(4 * 1024 * 1024),
                "min.cleanable.dirty.ratio": "0.01",
            }
            admin.create_topics([NewTopic("bench", 1, 1, config=config)])["bench"].result(15)
            producer = Producer(
                {
                    "bootstrap.servers": bootstrap,
                    "linger.ms": 5,
                    "acks": "all",
                    "batch.size": 1_000_000,
                    "queue.buffering.max.messages": 1_000_000,
                }
            )
            value = b"v" * value_bytes
            start = time.perf_counter()
            for i in range(messages):
                while True:
                    try:
                        producer.produce(
                            "bench", key=b"key-%08d" % (i % keys), value=value, partition=0
                        )
                        break
                    except BufferError:
                        producer.poll(0.01)
                producer.poll(0)
            assert producer.flush(120) == 0
            elapsed = time.perf_counter() - start
            cleaned = Path(tmp) / "data" / "topics" / "bench" / "0" / "cleaner.json"
            passes = len(json.loads(cleaned.read_text())["passes"]) if cleaned.exists() else 0
            return {
                "cleaner": cleaner,
                "messages": messages,
                "seconds": round(elapsed, 2),
                "msgs_per_s": round(messages / elapsed),
                "mb_per_s": round(messages * value_bytes / MB / elapsed, 1),
                "cleaning_passes_during_run": passes,
            }
        finally:
            broker.stop(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log-mb", type=int, default=64)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--codec", default="none", choices=sorted(COMPRESSION_NAMES))
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--skip-produce", action="store_true")
    parser.add_argument("--append-log-mb", type=int, default=48)
    parser.add_argument("--append-seconds", type=float, default=2.0)
    parser.add_argument("--append-rounds", type=int, default=3)
    args = parser.parse_args()

    results: dict[str, Any] = {
        "cleaner": cleaner_throughput(
            args.log_mb, args.keys, args.value_bytes, args.batch, args.codec
        )
    }
    c = results["cleaner"]
    print(
        f"cleaner: {c['log_bytes'] / MB:.1f} MB ({c['records']} records, {c['keys']} keys, "
        f"{c['codec']}) cleaned in {c['seconds']} s = {c['cleaned_mb_per_s']} MB/s, "
        f"{c['records_per_s']} records/s; {c['bytes_after'] / MB:.2f} MB left"
    )
    if not args.skip_produce:
        runs = [
            produce_run(flag, args.messages, args.keys, args.value_bytes) for flag in (False, True)
        ]
        results["produce"] = runs
        for r in runs:
            print(
                f"produce, cleaner {'on ' if r['cleaner'] else 'off'}: {r['msgs_per_s']} "
                f"msgs/s, {r['mb_per_s']} MB/s ({r['messages']} msgs in {r['seconds']} s, "
                f"{r['cleaning_passes_during_run']} cleaning passes)"
            )
        off, on = runs
        print(
            f"produce throughput with the cleaner running: "
            f"{100 * on['msgs_per_s'] / off['msgs_per_s']:.0f}% of without"
        )
    a = results["appends_while_cleaning"] = appends_while_cleaning(
        args.append_log_mb, args.append_seconds, args.append_rounds
    )
    print(
        f"appends while cleaning a {a['log_mb']} MB log (appends/s per round): "
        + "; ".join(f"{m} {rs}" for m, rs in a["appends_per_s"].items())
        + " -> median share of the no-pass rate: "
        + ", ".join(f"{m} {v:.0%}" for m, v in a["share_of_no_pass"].items())
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"compaction-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
