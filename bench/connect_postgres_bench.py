"""PostgreSQL connectors: records/s into PostgreSQL from one topic, and CDC rows/s out of it.

Theory of operation
-------------------
One ``bayou serve`` (Kafka door only) and one PostgreSQL (``wal_level=logical``, from the
test support) are started in a temp dir and stopped by PID / ``pg_ctl`` at the end.

``sink`` phases: ``--records`` JSON records (``{"id", "name", "qty", "price", "note"}``,
key ``{"id"}``) are produced to a topic of ``--partitions`` partitions first; then each
writer consumes the whole topic into a fresh table and the time from its start until the
table holds every record is measured (start-up included):

* ``baseline`` — what a user writes by hand: a confluent-kafka consumer, ``json.loads``,
  psycopg ``COPY`` per polled batch (5,000), ``commit``, then the consumer's offset commit;
* ``sink-insert`` / ``sink-upsert`` — ``bayou connect run`` with ``postgres-sink``
  (``insert.mode=insert``: COPY; ``upsert``: COPY into a temp table + ``INSERT … ON
  CONFLICT``), exactly once (offsets in the same transaction).

``cdc`` phases: ``pgbench -i`` creates its tables (``--scale``); ``cdc-snapshot`` times the
source task reading ``pgbench_accounts`` as its initial snapshot; then a slot is created,
``pgbench`` runs its TPC-B-like script for ``--pgbench-seconds`` (4 changes per
transaction: 3 updates, 1 insert), and ``cdc-task`` times the task decoding all of them
(poll + commit, no broker), ``cdc-runtime`` the same through ``bayou connect run`` into
topics (records and positions in Kafka transactions).  Run from the repository root::

    .venv/bin/python -m bench.connect_postgres_bench            # every phase
    .venv/bin/python -m bench.connect_postgres_bench --phases baseline,sink-insert
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bayou.connect.api import ConnectorConfig
from bayou.connect.sources.postgres_cdc import PostgresCdcSourceTask
from tests.support.broker import BrokerProcess
from tests.support.postgres import PostgresServer, started

TOPIC = "pg-bench"
PHASES = ("baseline", "sink-insert", "sink-upsert", "cdc-snapshot", "cdc-task", "cdc-runtime")
DEADLINE_S = 900


def produce(bootstrap: str, records: int, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, partitions, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(records):
        value = json.dumps(
            {"id": i, "name": f"item-{i}", "qty": i % 100, "price": i / 10, "note": "x" * 40}
        ).encode()
        while True:
            try:
                producer.produce(TOPIC, value=value, key=json.dumps({"id": i}).encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0


@dataclass(frozen=True)
class Timing:
    """A phase's time from its start, and the rate after the first rows arrived (start-up,
    group join and the first batch excluded)."""

    seconds: float
    steady_per_s: float

    def line(self, phase: str, count: int, unit: str, what: str = "") -> str:
        return (
            f"{phase:13} {count / self.seconds:10,.0f} {unit}/s  steady {self.steady_per_s:10,.0f}"
            f" {unit}/s  ({self.seconds:.1f} s{what})"
        )


def watch(count: Callable[[], int], expected: int, what: str) -> Timing:
    """Poll ``count`` every 100 ms until it reaches ``expected``."""
    start = time.monotonic()
    first: tuple[float, int] | None = None
    while time.monotonic() - start < DEADLINE_S:
        seen = count()
        now = time.monotonic()
        if seen > 0 and first is None:
            first = (now, seen)
        if seen >= expected:
            assert first is not None
            steady = (seen - first[1]) / (now - first[0]) if now > first[0] else 0.0
            return Timing(now - start, steady)
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not reach {expected} in {DEADLINE_S} s")


def wait_rows(url: str, table: str, expected: int) -> Timing:
    with psycopg.connect(url, autocommit=True) as conn:

        def rows() -> int:
            found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if not found or found[0] is None:
                return 0
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            return int(row[0]) if row else 0

        return watch(rows, expected, table)


def baseline(bootstrap: str, url: str, records: int) -> Timing:
    """A hand-written consumer: poll, json.loads, COPY, commit the database, then the group."""
    started_at = time.monotonic()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "pg-bench-baseline",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    written = 0
    first: tuple[float, int] | None = None
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE baseline (id bigint, name text, qty bigint, price double precision,"
            " note text)"
        )
        conn.commit()
        while written < records and time.monotonic() - started_at < DEADLINE_S:
            batch = consumer.consume(5000, 1.0)
            rows = [json.loads(m.value() or b"null") for m in batch if m.error() is None]
            if not rows:
                continue
            with conn.cursor().copy(
                "COPY baseline (id, name, qty, price, note) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row((row["id"], row["name"], row["qty"], row["price"], row["note"]))
            conn.commit()
            consumer.commit(asynchronous=False)
            written += len(rows)
            if first is None:
                first = (time.monotonic(), written)
    consumer.close()
    now = time.monotonic()
    assert first is not None
    return Timing(now - started_at, (written - first[1]) / max(now - first[0], 1e-9))


def run_connector(
    work: Path, bootstrap: str, name: str, keys: dict[str, object], until: Callable[[], Timing]
) -> Timing:
    """``bayou connect run`` with one connector; the time ``until`` takes; then SIGTERM."""
    lines = [f"[connectors.{name}]"]
    for key, value in keys.items():
        lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
    config = work / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bayou", "connect", "run", str(config), "--bootstrap", bootstrap],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        return until()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()


def sink(work: Path, bootstrap: str, url: str, records: int, mode: str) -> Timing:
    table = f"sink_{mode}"
    keys: dict[str, object] = {
        "connector.class": "postgres-sink",
        "topics": TOPIC,
        "connection.url": url,
        "table": table,
        "insert.mode": mode,
        "auto.create": True,
        "key.converter": "json",
        "value.converter": "json",
        "batch.size": 5000,
    }
    if mode == "upsert":
        keys["pk.mode"] = "record_key"
    return run_connector(work, bootstrap, table, keys, lambda: wait_rows(url, table, records))


def pgbench(server: PostgresServer, url: str, *args: str) -> str:
    dbname = url.rsplit("/", 1)[1]
    out = subprocess.run(
        [
            str(server.bin / "pgbench"),
            *("-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres"),
            *args,
            dbname,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    return out.stdout + out.stderr


def cdc_task(url: str, name: str, tables: str, snapshot: bool) -> PostgresCdcSourceTask:
    values = {
        "connector.class": "postgres-cdc-source",
        "connection.url": url,
        "tables": tables,
        "topic.prefix": "bench",
        "snapshot.mode": "initial" if snapshot else "never",
    }
    return PostgresCdcSourceTask(ConnectorConfig.from_mapping(name, values))


def drain(task: PostgresCdcSourceTask, expected: int) -> float:
    start = time.monotonic()
    seen = 0
    while seen < expected and time.monotonic() - start < DEADLINE_S:
        records = task.poll(1.0)
        if records:
            seen += len(records)
            task.commit(records[-1].position)
    if seen < expected:
        raise RuntimeError(f"the task produced {seen} of {expected} records")
    return time.monotonic() - start


def topic_total(bootstrap: str, prefix: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "pg-bench-count"})
    try:
        topics = consumer.list_topics(timeout=10).topics
        total = 0
        for name, meta in topics.items():
            if name.startswith(prefix):
                for partition in meta.partitions:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(name, partition), timeout=10
                    )
                    total += high - low
        return total
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--scale", type=int, default=5, help="pgbench -i scale (100k rows each)")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--phases", default=",".join(PHASES))
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    for phase in phases:
        if phase not in PHASES:
            parser.error(f"unknown phase {phase!r} (known: {', '.join(PHASES)})")
    results: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="bayou-pg-bench-"))
    work.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    server = started(work / "pg", logical=True)
    broker = BrokerProcess(work / "broker", doors=()).start()
    try:
        url = server.create_database("bench")
        if any(p.startswith(("baseline", "sink")) for p in phases):
            produce(broker.bootstrap, args.records, args.partitions)
        for phase in phases:
            timing: Timing
            if phase == "baseline":
                timing = baseline(broker.bootstrap, url, args.records)
            elif phase in ("sink-insert", "sink-upsert"):
                timing = sink(work, broker.bootstrap, url, args.records, phase[5:])
            else:
                continue
            results.append(timing.line(phase, args.records, "records"))
            print(results[-1], flush=True)
        if any(p.startswith("cdc") for p in phases):
            pgbench(server, url, "-i", "-q", "-s", str(args.scale))
            if "cdc-snapshot" in phases:
                rows = args.scale * 100_000
                task = cdc_task(url, "snap", "pgbench_accounts", snapshot=True)
                began = time.monotonic()
                task.start(None)
                drain(task, rows)
                seconds = time.monotonic() - began  # slot creation and export included
                task.stop()
                results.append(
                    f"{'cdc-snapshot':13} {rows / seconds:10,.0f} rows/s     ({seconds:.1f} s,"
                    f" {rows:,} rows of pgbench_accounts)"
                )
                print(results[-1], flush=True)
            tables = "pgbench_accounts,pgbench_tellers,pgbench_branches,pgbench_history"
            streaming = [p for p in phases if p in ("cdc-task", "cdc-runtime")]
            if streaming:
                tasks = {p: cdc_task(url, p.replace("-", "_"), tables, False) for p in streaming}
                for p in streaming:
                    tasks[p].start(None)  # creates the slot: it sees what pgbench does next
                    if p == "cdc-runtime":
                        tasks[p].stop()  # the runtime's own task takes the slot over
                report = pgbench(server, url, "-c", "2", "-j", "2", "-T", str(args.pgbench_seconds))
                found = re.search(r"number of transactions actually processed: (\d+)", report)
                assert found is not None, report
                changes = 4 * int(found.group(1))
                tps = re.search(r"tps = ([\d.]+)", report)
                print(f"pgbench: {found.group(1)} transactions, tps {tps and tps.group(1)}")
                for p in streaming:
                    if p == "cdc-task":
                        seconds = drain(tasks[p], changes)
                        tasks[p].stop()
                    else:
                        keys: dict[str, object] = {
                            "connector.class": "postgres-cdc-source",
                            "connection.url": url,
                            "tables": tables,
                            "topic.prefix": "cdcrt",
                            "snapshot.mode": "never",
                            "key.converter": "json",
                            "value.converter": "json",
                        }

                        def until() -> Timing:
                            return watch(
                                lambda: topic_total(broker.bootstrap, "cdcrt."),
                                changes,
                                "the CDC connector's topics",
                            )

                        timing = run_connector(work, broker.bootstrap, "cdc_runtime", keys, until)
                        results.append(timing.line(p, changes, "rows", f", {changes:,} changes"))
                        print(results[-1], flush=True)
                        continue
                    results.append(
                        f"{p:13} {changes / seconds:10,.0f} rows/s     ({seconds:.1f} s,"
                        f" {changes:,} changes)"
                    )
                    print(results[-1], flush=True)
    finally:
        broker.kill()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine: {os.cpu_count()} CPUs (shared with other work while measured)")
    print("\n".join(results))


if __name__ == "__main__":
    main()
