"""Share-group benchmark phase (KIP-932): records/s through Kafka share consumers.

Theory of operation
-------------------
One Bayou broker (started here on a free port with a temporary data directory, or an already
running one given with ``--bootstrap``), one topic of ``--partitions`` partitions holding
``--messages`` records of ``--size`` bytes, produced first.  Then, for each consumer count
in ``--consumers`` (default 1 and 2), a fresh share group (``share.auto.offset.reset`` =
earliest, set through IncrementalAlterConfigs on the group) of that many librdkafka share
consumers (confluent-kafka's ``ShareConsumer``, implicit acknowledgement: every record
polled is accepted on the next poll) — each in its own child process
(``python -m bench.share_bench --member ...``) reporting counts every 50 ms — consumes the
whole topic.  Records/s = records / (last record received - first record received), so
joining the group is not counted; the figure includes acquiring, delivering and
acknowledging every record (one state-log write per ShareFetch and per acknowledgement).

Results print as a table and go to ``bench/results/share-<timestamp>.json``.
Run ``python -m bench.share_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.broker import BrokerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def member_main(bootstrap: str, topic: str, group: str) -> None:
    """Consume as a share-group member; every 50 ms print how many records arrived."""
    from confluent_kafka import ShareConsumer

    consumer = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.subscribe([topic])
    count = 0
    last = time.monotonic()
    while True:
        for msg in consumer.poll(0.05) or []:
            if msg.error() is None:
                count += 1
        now = time.monotonic()
        if count and now - last >= 0.05:
            print(json.dumps({"n": count, "t": time.time()}), flush=True)
            count = 0
            last = now


class Member:
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.share_bench", "--member", bootstrap, topic, group],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def produce(bootstrap: str, topic: str, count: int, size: int, partitions: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000})
    value = os.urandom(size)
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("produce did not complete")


def start_at_earliest(bootstrap: str, group: str) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.GROUP, group, {"share.auto.offset.reset": "earliest"}
                )
            ],
            incremental=True,
        )
    finally:
        admin.close()


def consume_phase(
    bootstrap: str, topic: str, consumers: int, total: int, timeout_s: float
) -> dict[str, Any]:
    group = f"share-bench-{consumers}-{time.time_ns()}"
    start_at_earliest(bootstrap, group)
    members = [Member(bootstrap, topic, group) for _ in range(consumers)]
    got = [0] * consumers
    first = last = None
    deadline = time.monotonic() + timeout_s
    try:
        while sum(got) < total and time.monotonic() < deadline:
            for i, m in enumerate(members):
                while True:
                    try:
                        event = m.events.get(timeout=0.01)
                    except queue.Empty:
                        break
                    got[i] += event["n"]
                    t = event["t"]
                    first = t if first is None else min(first, t)
                    last = t if last is None else max(last, t)
    finally:
        for m in members:
            m.stop()
    seconds = (last - first) if first is not None and last is not None else 0.0
    return {
        "consumers": consumers,
        "records": sum(got),
        "per_consumer": got,
        "seconds": round(seconds, 3),
        "records_per_s": round(sum(got) / seconds) if seconds > 0 else None,
        "complete": sum(got) >= total,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient, NewTopic

    broker: BrokerProcess | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        tmp = tempfile.TemporaryDirectory(prefix="bayou-share-bench-")
        broker = BrokerProcess(Path(tmp.name) / "data", doors=()).start()
        bootstrap = broker.bootstrap
    try:
        topic = f"share-bench-{time.time_ns()}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
        produce(bootstrap, topic, args.messages, args.size, args.partitions)
        phases = [
            consume_phase(bootstrap, topic, n, args.messages, args.timeout) for n in args.consumers
        ]
    finally:
        if broker is not None:
            broker.stop()
        if tmp is not None:
            tmp.cleanup()
    return {
        "messages": args.messages,
        "size": args.size,
        "partitions": args.partitions,
        "phases": phases,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--member":
        member_main(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", help="a running broker (default: start one here)")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100, help="record value bytes")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase, seconds")
    args = parser.parse_args()
    result = run(args)
    print(f"{'consumers':>9} {'records':>9} {'seconds':>8} {'records/s':>10}  per consumer")
    for p in result["phases"]:
        print(
            f"{p['consumers']:>9} {p['records']:>9} {p['seconds']:>8} "
            f"{p['records_per_s'] or '-':>10}  {p['per_consumer']}"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"share-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
