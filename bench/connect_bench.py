"""Connect's runtime: records per second through a sink task that does nothing (the
runtime's own cost: consume, convert, transform, put, flush, commit), beside a plain
confluent-kafka consumer decoding the same JSON; and file-source's records per second into a
topic (exactly once: a transaction per poll).

    .venv/bin/python -m bench.connect_bench [--records 200000] [--transforms]

One Bayou broker is started; N JSON records of about 100 bytes are produced to one
partition.  The sink runs in this process (``ConnectorRunner``, one task, json value
converter; ``--transforms`` adds ReplaceField and a Filter with a predicate); the rate is
counted from its first record to its last.  The plain consumer reads the same topic with
``json.loads`` per record.  The file-source reads N lines of one JSON-lines file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bayou.connect.api import ConnectorConfig, SinkRecord, SinkTask
from bayou.connect.api import TopicPartition as TP
from bayou.connect.runtime.connector import ConnectorRunner
from tests.support.broker import BrokerProcess


class CountingSink(SinkTask):
    """Counts; remembers when the first and the last of N came."""

    seen: ClassVar[dict[str, list[float]]] = {}
    target: ClassVar[int] = 0

    def open(self, partitions: Collection[TP]) -> Mapping[TP, int]:
        return {}

    def put(self, records: Sequence[SinkRecord]) -> None:
        marks = self.seen.setdefault(self.config.name, [0.0, 0.0, 0.0])
        if marks[2] == 0:
            marks[0] = time.perf_counter()
        marks[2] += len(records)
        if marks[2] >= self.target:
            marks[1] = time.perf_counter()
        self.next = {r.topic_partition: r.offset + 1 for r in records[-1:]}

    def flush(self) -> Mapping[TP, int]:
        return getattr(self, "next", {})


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def produce(bootstrap: str, topic: str, n: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        value = {"id": f"order-{i}", "amount": i % 1000, "env": "live", "note": "x" * 40}
        while True:
            try:
                producer.produce(topic, json.dumps(value).encode(), f"k{i % 100}".encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def run_sink(bootstrap: str, topic: str, n: int, transforms: bool) -> tuple[float, float]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    # the runtime imports the class by its module name: not this __main__'s copy
    sink_class = importlib.import_module("bench.connect_bench").CountingSink
    sink_class.target = n
    values: dict[str, Any] = {
        "connector.class": "bench.connect_bench:CountingSink",
        "topics": topic,
        "offset.flush.interval.ms": 1000,
    }
    if transforms:
        values |= {
            "transforms": "rename,drop",
            "transforms.rename.type": "ReplaceField$Value",
            "transforms.rename.renames": "amount:amt",
            "transforms.rename.exclude": "note",
            "transforms.drop.type": "Filter",
            "transforms.drop.predicate": "test",
            "predicates": "test",
            "predicates.test.type": "FieldValueMatches",
            "predicates.test.field": "env",
            "predicates.test.value": "test",
        }
    runner = ConnectorRunner(
        ConnectorConfig.from_mapping(name, values), {"bootstrap.servers": bootstrap}, "bench"
    )
    cpu0 = cpu_s()
    runner.start()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        marks = sink_class.seen.get(name)
        if marks is not None and marks[1]:
            break
        time.sleep(0.05)
    cpu = cpu_s() - cpu0
    runner.stop()
    first, last, _count = sink_class.seen[name]
    return n / (last - first), cpu


def run_plain(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"plain-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    count = 0
    first = 0.0
    cpu0 = cpu_s()
    while count < n:
        batch = consumer.consume(500, 1.0)
        if batch and not first:
            first = time.perf_counter()
        for msg in batch:
            if msg.error() is None:
                json.loads(msg.value() or b"null")
                count += 1
    rate = n / (time.perf_counter() - first)
    consumer.commit(asynchronous=False)
    consumer.close()
    return rate, cpu_s() - cpu0


def run_file_source(bootstrap: str, n: int, workdir: Path) -> float:
    inbox = workdir / "in"
    inbox.mkdir()
    with open(inbox / "a.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"order-{i}", "amount": i % 1000, "note": "x" * 40}) + "\n")
    topic = f"lines-{uuid.uuid4().hex[:6]}"
    runner = ConnectorRunner(
        ConnectorConfig.from_mapping(
            f"files-{topic}",
            {"connector.class": "file-source", "path": str(inbox), "topic": topic},
        ),
        {"bootstrap.servers": bootstrap},
        "bench",
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"w-{topic}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    started = time.perf_counter()
    runner.start()
    done = threading.Event()
    count = 0
    consumer.subscribe([topic])
    deadline = time.monotonic() + 600
    while count < n and time.monotonic() < deadline:
        count += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
    elapsed = time.perf_counter() - started
    done.set()
    consumer.close()
    runner.stop()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--transforms", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "data", doors=()).start()
        try:
            topic = "orders"
            produce(broker.bootstrap, topic, args.records)
            plain, plain_cpu = run_plain(broker.bootstrap, topic, args.records)
            sink, sink_cpu = run_sink(broker.bootstrap, topic, args.records, False)
            smt, smt_cpu = run_sink(broker.bootstrap, topic, args.records, True)
            source = run_file_source(broker.bootstrap, args.records, Path(tmp))
        finally:
            broker.stop()
    n = args.records
    print(f"records: {n} (~100 B JSON, one partition); machine shared")
    rows = [
        ("plain confluent-kafka consumer + json.loads", plain, plain_cpu),
        ("connect sink runtime, null sink", sink, sink_cpu),
        ("connect sink runtime + ReplaceField, Filter", smt, smt_cpu),
    ]
    for label, rate, cpu in rows:
        print(f"{label:<44} {rate:>10,.0f} rec/s  {cpu / n * 1e6:6.1f} µs CPU/rec")
    print(f"{'file-source into a topic (exactly once)':<44} {source:>10,.0f} rec/s (wall)")


if __name__ == "__main__":
    main()
