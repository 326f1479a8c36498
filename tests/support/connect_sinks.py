"""Helpers for the sink connector tests: JSON records produced to a real broker, read back
as ``SinkRecord``s with confluent-kafka, driven through a sink task the way the runtime
does (``open`` → seek → ``put`` → ``flush`` when due), and the check that a target holds
every record exactly once.

``python -m tests.support.connect_sinks CONFIG.json BOOTSTRAP TOPIC PARTITIONS`` runs that
loop in a process of its own (a kill -9 target): it prints ``flushed N`` after each flush and
``done`` when it has flushed up to the end of every partition.  With ``--kill-on-commit K``
it SIGKILLs itself in the middle of its K-th commit (after the data is written and before
it is committed: a file layer or a catalog that dies, fault injection around the target).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from bayou.connect.api import ConnectorConfig, SinkRecord, SinkTask
from bayou.connect.registry import task_class
from bayou.connect.runtime.errors import ErrorPolicy

DEADLINE_S = 120.0
BASE_TS_MS = 1_764_950_000_000  # 2025-12-05 15:53:20 UTC: records span several hours


def expected_value(i: int, total: int) -> dict[str, Any]:
    """Record ``i`` of ``total``: the second half brings a new field (schema evolution)."""
    value: dict[str, Any] = {
        "id": i,
        "name": f"order-{i}",
        "amount": i * 1.25,
        "ok": i % 3 == 0,
        "color": ("red", "green")[(i // 6) % 2],  # varies within every partition
    }
    if i >= total // 2:
        value["note"] = f"n{i % 7}"
    return value


def produce_json(
    bootstrap: str,
    topic: str,
    partitions: int,
    total: int,
    *,
    start: int = 0,
    stop: int | None = None,
) -> None:
    """Records ``start`` … ``stop`` - 1 of ``total`` (all of them by default)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    failures: list[Any] = []
    for i in range(start, total if stop is None else stop):
        producer.produce(
            topic,
            key=f"k{i}".encode(),
            value=json.dumps(expected_value(i, total)).encode(),
            partition=i % partitions,
            timestamp=BASE_TS_MS + i * 1000,  # 1 s apart
            on_delivery=lambda err, _msg: failures.append(err) if err else None,
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not failures, failures[:3]


def sink_record(msg: Any) -> SinkRecord:
    raw = msg.value()
    return SinkRecord(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp_ms=msg.timestamp()[1],
        key=None if msg.key() is None else msg.key().decode(),
        value=None if raw is None else json.loads(raw),
        headers=tuple(msg.headers() or ()),
    )


class Feed:
    """An assigned consumer yielding ``SinkRecord`` batches until every partition's end."""

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, start: Mapping[tuple[str, int], int]
    ) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"sink-test-{os.getpid()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        self.consumer.assign(
            [KafkaTopicPartition(topic, p, start.get((topic, p), 0)) for p in range(partitions)]
        )
        self.partitions = partitions
        self.at_end: set[int] = set()

    def batches(self, size: int) -> Any:
        deadline = time.monotonic() + DEADLINE_S
        while len(self.at_end) < self.partitions:
            assert time.monotonic() < deadline, "feed did not reach the end in time"
            batch: list[SinkRecord] = []
            for msg in self.consumer.consume(size, 0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        self.at_end.add(msg.partition())
                        continue
                    raise KafkaException(msg.error())
                self.at_end.discard(msg.partition())
                batch.append(sink_record(msg))
            if batch:
                yield batch

    def close(self) -> None:
        self.consumer.close()


def read_records(
    bootstrap: str, topic: str, partitions: int, start: Mapping[tuple[str, int], int] | None = None
) -> list[SinkRecord]:
    feed = Feed(bootstrap, topic, partitions, start or {})
    try:
        return [r for batch in feed.batches(500) for r in batch]
    finally:
        feed.close()


def drive(task: SinkTask, records: Sequence[SinkRecord], batch: int = 100) -> dict[Any, int]:
    """``put`` in batches, ``flush`` when the task says so and at the end."""
    covered: dict[Any, int] = {}
    for i in range(0, len(records), batch):
        task.put(records[i : i + batch])
        if task.flush_due(int(time.time() * 1000)):
            covered.update(task.flush())
    covered.update(task.flush())
    return covered


def start_at_once(tasks: Sequence[SinkTask]) -> list[BaseException]:
    """Start ``tasks`` in threads released together, as the runtime starts a connector's
    tasks (``start`` under the connector's retry policy); what they raised."""
    barrier = threading.Barrier(len(tasks))
    policy = ErrorPolicy.from_config(tasks[0].config)
    errors: list[BaseException] = []

    def start(task: SinkTask) -> None:
        barrier.wait()
        try:
            policy.retry("start", task.start, threading.Event())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    return errors


def assert_every_record_once(
    rows: Sequence[tuple[int, int, int]], total: int, partitions: int
) -> None:
    """``rows`` are (partition, offset, id) as the target holds them; ``total`` records were
    produced round-robin over the partitions, ``id`` i at partition i % n, offset i // n."""
    ids = sorted(r[2] for r in rows)
    duplicates = len(ids) - len(set(ids))
    missing = sorted(set(range(total)) - set(ids))
    assert (duplicates, missing[:10], len(ids)) == (0, [], total), (
        f"{duplicates} duplicates, missing {missing[:10]}, {len(ids)} rows of {total}"
    )
    for partition, offset, ident in rows:
        assert (partition, offset) == (ident % partitions, ident // partitions)


class Driver:
    """This module run as a process for one sink configuration (the kill -9 tests): once
    killing itself in its K-th commit, then again to the end of every partition."""

    def __init__(
        self, config_path: Path, config: Mapping[str, str], bootstrap: str, topic: str, n: int
    ) -> None:
        config_path.write_text(json.dumps(config))
        self.module = [sys.executable, "-m", "tests.support.connect_sinks"]
        self.args = [str(config_path), bootstrap, topic, str(n)]

    def killed_on_commit(self, k: int) -> str:
        """Its stdout; it died by SIGKILL before the end."""
        run = subprocess.run(
            [*self.module, "--kill-on-commit", str(k), *self.args],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert run.returncode == -signal.SIGKILL, run.stderr
        assert "done" not in run.stdout
        return run.stdout

    def to_the_end(self) -> None:
        run = subprocess.run(
            [*self.module, *self.args], capture_output=True, text=True, timeout=DEADLINE_S
        )
        assert run.returncode == 0, run.stderr
        assert "done" in run.stdout


def run_driver(argv: list[str]) -> int:
    kill_on_commit = 0
    if argv[:1] == ["--kill-on-commit"]:
        kill_on_commit = int(argv[1])
        argv = argv[2:]
    config_path, bootstrap, topic, partitions_text = argv
    values = json.loads(Path(config_path).read_text())
    config = ConnectorConfig(values.pop("name"), values)
    partitions = int(partitions_text)
    cls = task_class(config.connector_class)
    task = cls(config)
    assert isinstance(task, SinkTask)
    task.start()
    commits = 0

    def maybe_die() -> None:
        nonlocal commits
        commits += 1
        if commits == kill_on_commit:
            os.kill(os.getpid(), signal.SIGKILL)

    _arm(task, maybe_die)
    tps = [(topic, p) for p in range(partitions)]
    start = task.open(tps)
    feed = Feed(bootstrap, topic, partitions, start)
    flushes = 0
    for batch in feed.batches(50):
        task.put(batch)
        if task.flush_due(int(time.time() * 1000)):
            task.flush()
            flushes += 1
            print(f"flushed {flushes}", flush=True)
    task.flush()
    print("done", flush=True)
    feed.close()
    task.stop()
    return 0


def _arm(task: SinkTask, die: Any) -> None:
    """Make ``die`` run between writing a flush's data and committing it."""
    name = type(task).__name__
    if name == "ParquetSinkTask":
        files = task.files  # type: ignore[attr-defined]
        put = files.put_atomic

        def put_then_maybe_die(key: str, data: bytes) -> None:
            put(key, data)  # one file of a flush committed: the next one is not
            die()

        files.put_atomic = put_then_maybe_die
    elif name == "IcebergSinkTask":
        catalog = task.catalog  # type: ignore[attr-defined]
        commit = catalog.commit_table

        def commit_after_maybe_dying(*args: Any, **kwargs: Any) -> Any:
            die()  # data and manifest files are written; the catalog has not moved
            return commit(*args, **kwargs)

        catalog.commit_table = commit_after_maybe_dying
    elif name == "DuckDbSinkTask":
        append = task._append  # type: ignore[attr-defined]

        def append_then_maybe_die(*args: Any) -> None:
            append(*args)  # rows inserted in the open transaction, not committed
            die()

        task._append = append_then_maybe_die  # type: ignore[attr-defined]


if __name__ == "__main__":
    raise SystemExit(run_driver(sys.argv[1:]))
