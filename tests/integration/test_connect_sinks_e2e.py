"""The lake and OLAP sinks through ``bayou connect run``, as a user runs them: records
produced to a real broker, the connector process killed with SIGKILL while it has records
buffered, more records produced, the connector started again — every record is in the
target exactly once (Parquet read back with DuckDB, Iceberg through pyiceberg, the DuckDB
file), and the group ``connect-{name}`` has committed the end of every partition."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from bayou.connect.api import ConnectorConfig
from bayou.connect.sinks.iceberg import open_catalog
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess
from tests.support.connect_process import ConnectProcess
from tests.support.connect_sinks import assert_every_record_once, expected_value, produce_json
from tests.support.wait import wait_until

PARTITIONS = 3
TOTAL = 3000  # produced in two halves: before the kill and after it
FIRST_FLUSH_RECORDS = {"1": 1000, "3": 300}  # by tasks.max


@pytest.fixture
def runs() -> Iterator[list[ConnectProcess]]:
    started: list[ConnectProcess] = []
    yield started
    for run in started:
        run.kill()


def committed(broker: BrokerProcess, group: str, topic: str) -> int:
    """The sum over partitions of the group's committed offsets."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in tps)


def members_and_partitions(broker: BrokerProcess, group: str) -> tuple[int, int]:
    """How many members the group has and how many partitions they hold ((0, 0) while it
    is not stable)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if described.state != ConsumerGroupState.STABLE:
        return (0, 0)
    held = sum(len(m.assignment.topic_partitions) for m in described.members)
    return (len(described.members), held)


def toml_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_with_kill(
    broker: BrokerProcess,
    tmp_path: Path,
    runs: list[ConnectProcess],
    connector_class: str,
    keys: dict[str, str],
) -> tuple[str, str]:
    """Produce half, run, SIGKILL once a flush is committed (with records put and not
    flushed), produce the rest, run again until the group has committed everything, stop.
    Returns (connector name, topic)."""
    suffix = uuid.uuid4().hex[:8]
    name, topic = f"{connector_class}-{suffix}", f"e2e-{suffix}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    values = {
        "connector.class": connector_class,
        "topics": topic,
        "value.converter": "json",
        # The first run flushes only when a task has flush.records buffered: of the 1500
        # records (500 a task with 3 tasks) at most one flush's worth is ever flushed and the
        # rest stays put and unflushed until the SIGKILL.
        "flush.records": str(FIRST_FLUSH_RECORDS[keys.get("tasks.max", "1")]),
        "flush.ms": "600000",
        "offset.flush.interval.ms": "600000",
        **keys,
    }
    config = tmp_path / "pipeline.toml"

    def write_config(**more: str) -> None:
        config.write_text(
            f"[connectors.{name}]\n"
            + "".join(f"{toml_value(k)} = {toml_value(v)}\n" for k, v in {**values, **more}.items())
        )

    write_config()
    group = f"connect-{name}"
    log = tmp_path / "connect.log"
    first = ConnectProcess(broker, config, log).start()
    runs.append(first)
    # Every task a member before any record: a task joining later would take partitions
    # from another, whose revocation flushes everything it has put.
    tasks = int(values.get("tasks.max", "1"))
    wait_until(
        "every task a member and every partition assigned",
        lambda: members_and_partitions(broker, group) == (tasks, PARTITIONS) or not first.alive(),
        timeout=90,
    )
    assert first.alive(), log.read_text()[-3000:]
    # The first half in chunks of 30 (a producer and a flush each), so that the tasks take
    # small batches and none flushes exactly at the end of what it has.
    for start in range(0, TOTAL // 2, 30):
        produce_json(broker.bootstrap, topic, PARTITIONS, TOTAL, start=start, stop=start + 30)
    wait_until(
        "a first flush committed",
        lambda: committed(broker, group, topic) > 0 or not first.alive(),
        timeout=90,
    )
    assert first.alive(), log.read_text()[-3000:]
    first.kill()  # SIGKILL with records put and not flushed
    assert committed(broker, group, topic) < TOTAL // 2
    produce_json(broker.bootstrap, topic, PARTITIONS, TOTAL, start=TOTAL // 2, stop=TOTAL)

    # the second run flushes every 200 records and each second
    write_config(**{"flush.records": "200", "offset.flush.interval.ms": "1000"})
    second = ConnectProcess(broker, config, log).start()
    runs.append(second)
    wait_until(
        "the group committed every record",
        lambda: committed(broker, group, topic) == TOTAL or not second.alive(),
        timeout=120,
    )
    assert second.stop() == 0, log.read_text()[-3000:]
    return name, topic


def check(rows: list[dict[str, Any]]) -> None:
    assert_every_record_once(
        [(r["_partition"], r["_offset"], r["id"]) for r in rows], TOTAL, PARTITIONS
    )
    for row in rows:
        fields = ("id", "name", "amount", "ok", "color", "note")
        assert {k: row[k] for k in fields if row.get(k) is not None} == expected_value(
            row["id"], TOTAL
        )


def rows_of(result: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


SINKS: dict[str, Callable[[Path], dict[str, str]]] = {
    "parquet-sink": lambda out: {"path": str(out / "lake")},
    "iceberg-sink": lambda out: {"warehouse": str(out / "warehouse")},
    "duckdb-sink": lambda out: {"path": str(out / "olap.duckdb")},
}


@pytest.mark.parametrize(
    ("connector_class", "tasks"),
    [
        ("parquet-sink", 1),
        ("iceberg-sink", 1),
        ("iceberg-sink", 3),
        ("duckdb-sink", 1),
        ("duckdb-sink", 3),
    ],
)
def test_kill_9_mid_batch_and_restart_every_record_once(
    shared_broker: BrokerProcess,
    tmp_path: Path,
    runs: list[ConnectProcess],
    connector_class: str,
    tasks: int,
) -> None:
    """With 3 tasks, each has a partition and all write one table (Iceberg: their commits
    race and are retried; DuckDB: one database file shared inside the process)."""
    keys = SINKS[connector_class](tmp_path)
    name, topic = run_with_kill(
        shared_broker, tmp_path, runs, connector_class, {**keys, "tasks.max": str(tasks)}
    )
    if connector_class == "parquet-sink":
        files = [str(p) for p in (tmp_path / "lake").rglob("*.parquet")]
        with duckdb.connect() as db:
            check(rows_of(db.execute("SELECT * FROM read_parquet(?, union_by_name=true)", [files])))
    elif connector_class == "iceberg-sink":
        catalog = open_catalog(ConnectorConfig(name, keys))
        table = catalog.load_table(("bayou", topic.replace("-", "_")))
        check(table.scan().to_arrow().to_pylist())
        catalog.engine.dispose()  # type: ignore[attr-defined]
    else:
        with duckdb.connect(keys["path"], read_only=True) as db:
            check(rows_of(db.execute(f'SELECT * FROM "{topic.replace("-", "_")}"')))
