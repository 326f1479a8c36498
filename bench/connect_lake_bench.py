"""Connect's lake sinks: records/s from one topic into Parquet, Iceberg and DuckDB, beside
a plain confluent-kafka consumer writing the same with pyarrow / pyiceberg by hand.

Theory of operation
-------------------
One ``bayou serve`` (Kafka door only) is started on a free loopback port and ``--records``
JSON records (five fields, ~110 B) are produced to one topic of ``--partitions``
partitions.  Then each phase reads the whole topic from offset 0 with confluent-kafka and
writes it into a fresh target; the clock runs from the task's (or consumer's) start to the last
durable write.  Phases:

- ``parquet``, ``iceberg``, ``duckdb``: the sink task (``bayou.connect.sinks.*``), driven
  as the runtime drives it: records converted to ``SinkRecord`` (JSON values), ``put`` in
  the consumer's batches, ``flush`` when ``flush_due`` says so (``--flush-records``) and at
  the end — every file or commit with its offsets, exactly once;
- ``run-parquet``, ``run-iceberg``: the same sinks through ``bayou connect run FILE.toml``
  (the runtime: consumer group ``connect-{name}``, converters, commits after each flush);
  the clock runs from the group's assignment (start-up and joining left out) until the group
  has committed the end of the topic;
- ``by-hand-parquet``: what a user would write instead: ``json.loads`` each value, collect
  dicts, every ``--flush-records`` one ``pa.Table.from_pylist`` + ``pq.write_table`` into
  a directory; no offsets kept (at most/least once, depending on when it commits);
- ``by-hand-iceberg``: the same into ``table.append`` of a pyiceberg SQLite-catalog table.

Each phase runs ``--repeat`` times, round by round (every phase once a round, so load that
drifts on a shared machine falls on all of them); the median and the spread are printed.
Beside records/s, the phases run in the benchmark's own process show records per CPU-second
of that process (consumer threads included), which load from other jobs disturbs less.
The machine is usually shared: compare phases of one run, not runs.  From the repository root::

    .venv/bin/python -m bench.connect_lake_bench                      # 200k records, 1 partition
    .venv/bin/python -m bench.connect_lake_bench --records 500000 --phases parquet,by-hand-parquet
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pyiceberg.catalog.sql import SqlCatalog

from bayou.connect.api import ConnectorConfig, SinkRecord, SinkTask
from bayou.connect.registry import task_class
from tests.support.broker import BrokerProcess

TOPIC = "connect-bench"
PHASES = (
    "parquet",
    "iceberg",
    "duckdb",
    "run-parquet",
    "run-iceberg",
    "by-hand-parquet",
    "by-hand-iceberg",
)


def produce(bootstrap: str, records: int, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, partitions, 1)])[TOPIC].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    colors = ("red", "green", "blue")
    for i in range(records):
        value = json.dumps(
            {
                "id": i,
                "name": f"order-{i}",
                "amount": i * 1.25,
                "ok": i % 3 == 0,
                "color": colors[i % 3],
            }
        ).encode()
        while True:
            try:
                producer.produce(TOPIC, key=b"k%d" % i, value=value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0


def consume(bootstrap: str, partitions: int, handle: Callable[[list[Any]], None]) -> int:
    """Read the topic from 0 to its end, handing each batch of messages to ``handle``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
    at_end: set[int] = set()
    count = 0
    try:
        while len(at_end) < partitions:
            batch = []
            for msg in consumer.consume(2000, 0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        continue
                    raise KafkaException(msg.error())
                at_end.discard(msg.partition())
                batch.append(msg)
            if batch:
                handle(batch)
                count += len(batch)
    finally:
        consumer.close()
    return count


def run_sink(
    phase: str, bootstrap: str, partitions: int, out: Path, flush_records: int
) -> tuple[int, float, float | None]:
    values = {"connector.class": f"{phase}-sink", "flush.records": str(flush_records)}
    if phase == "parquet":
        values["path"] = str(out)
    elif phase == "iceberg":
        values["warehouse"] = str(out)
    else:
        values["path"] = str(out / "bench.duckdb")
    out.mkdir(parents=True, exist_ok=True)
    started, cpu = time.monotonic(), time.process_time()
    task = task_class(values["connector.class"])(ConnectorConfig("bench", values))
    assert isinstance(task, SinkTask)
    task.start()
    task.open([(TOPIC, p) for p in range(partitions)])

    def handle(batch: list[Any]) -> None:
        task.put(
            [
                SinkRecord(
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.timestamp()[1],
                    m.key().decode(),
                    json.loads(m.value()),
                )
                for m in batch
            ]
        )
        if task.flush_due(int(time.time() * 1000)):
            task.flush()

    count = consume(bootstrap, partitions, handle)
    task.flush()
    task.stop()
    return count, time.monotonic() - started, time.process_time() - cpu


def run_connect(
    phase: str, bootstrap: str, partitions: int, out: Path, flush_records: int
) -> tuple[int, float, float | None]:
    """``bayou connect run`` in a child process: the records committed, and the time from
    the group's assignment to the last commit."""
    kind = phase.removeprefix("run-")
    name = f"bench-{kind}-{time.monotonic_ns()}"
    target = f'path = "{out}"' if kind == "parquet" else f'warehouse = "{out}"'
    config = out.with_suffix(".toml")
    config.write_text(
        f'[connectors.{name}]\n"connector.class" = "{kind}-sink"\ntopics = "{TOPIC}"\n'
        f'"value.converter" = "json"\n"flush.records" = "{flush_records}"\n{target}\n'
        '"offset.flush.interval.ms" = "1000"\n'
    )
    group = f"connect-{name}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bayou", "connect", "run", str(config), "-b", bootstrap],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            described = admin.describe_consumer_groups([group])[group].result(timeout=10)
            if described.state == ConsumerGroupState.STABLE and described.members:
                break
            time.sleep(0.05)
        started = time.monotonic()
        committed = 0
        while time.monotonic() < deadline:
            committed = sum(max(tp.offset, 0) for tp in reader.committed(tps, timeout=10))
            if committed >= sum(reader.get_watermark_offsets(tp)[1] for tp in tps):
                break
            time.sleep(0.1)
        return committed, time.monotonic() - started, None
    finally:
        proc.terminate()
        proc.wait(60)
        reader.close()


def run_by_hand(
    phase: str, bootstrap: str, partitions: int, out: Path, flush_records: int
) -> tuple[int, float, float | None]:
    out.mkdir(parents=True, exist_ok=True)
    started, cpu = time.monotonic(), time.process_time()
    rows: list[dict[str, Any]] = []
    files = 0
    table = None
    if phase == "by-hand-iceberg":
        catalog = SqlCatalog("bench", uri=f"sqlite:///{out / 'catalog.db'}", warehouse=out.as_uri())
        catalog.create_namespace_if_not_exists("bench")

    def write() -> None:
        nonlocal files, table
        if not rows:
            return
        data = pa.Table.from_pylist(rows)
        if phase == "by-hand-parquet":
            pq.write_table(data, out / f"part-{files:05d}.parquet", compression="zstd")
        else:
            if table is None:
                table = catalog.create_table(("bench", "t"), schema=data.schema)
            table.append(data)
        files += 1
        rows.clear()

    def handle(batch: list[Any]) -> None:
        for m in batch:
            row = json.loads(m.value())
            row["_key"] = m.key().decode()
            row["_offset"] = m.offset()
            rows.append(row)
        if len(rows) >= flush_records:
            write()

    count = consume(bootstrap, partitions, handle)
    write()
    if phase == "by-hand-iceberg":
        catalog.engine.dispose()
    return count, time.monotonic() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--flush-records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phases", default=",".join(PHASES))
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; known: {', '.join(PHASES)}")
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "broker", doors=()).start()
        try:
            produce(broker.bootstrap, args.records, args.partitions)
            print(
                f"{args.records} JSON records in {args.partitions} partition(s), flush every "
                f"{args.flush_records}; records/s (median of {args.repeat}, min-max):"
            )
            # round by round, every phase once a round: load that drifts (a shared machine)
            # spreads over all phases rather than falling on one
            rates: dict[str, list[float]] = {phase: [] for phase in phases}
            per_cpu: dict[str, list[float]] = {phase: [] for phase in phases}
            for attempt in range(args.repeat):
                for phase in phases:
                    out = Path(tmp) / f"{phase}-{attempt}"
                    run = run_sink
                    if phase.startswith("by-hand"):
                        run = run_by_hand
                    elif phase.startswith("run-"):
                        run = run_connect
                    count, elapsed, cpu = run(
                        phase, broker.bootstrap, args.partitions, out, args.flush_records
                    )
                    assert count == args.records, (phase, count)
                    rates[phase].append(count / elapsed)
                    if cpu:
                        per_cpu[phase].append(count / cpu)
            for phase in phases:
                cpu_text = "(a child process)"
                if per_cpu[phase]:
                    cpu_text = f"{statistics.median(per_cpu[phase]):>10,.0f} per CPU-second"
                print(
                    f"  {phase:<16} {statistics.median(rates[phase]):>10,.0f}   "
                    f"({min(rates[phase]):,.0f}-{max(rates[phase]):,.0f})   {cpu_text}"
                )
        finally:
            broker.kill()


if __name__ == "__main__":
    main()
