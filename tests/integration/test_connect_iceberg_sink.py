"""iceberg-sink with records read from a real broker: a table per topic in a SQL catalog
(SQLite, PostgreSQL), schema evolution on new fields, offsets in snapshot properties, a
crash between writing and committing (in-process and kill -9), a warehouse on SeaweedFS.

DuckDB's iceberg extension cannot be installed here (no network; the PyPI-packaged build
is for DuckDB 1.4 while the tests run DuckDB 2), so DuckDB reads the Parquet data files of
the table's current snapshot as pyiceberg plans them, and pyiceberg's own scan is checked
beside it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pyiceberg.table import Table

from bayou.connect.api import ConnectorConfig, SinkRecord
from bayou.connect.sinks.iceberg import IcebergSinkTask
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess
from tests.support.connect_sinks import (
    BASE_TS_MS,
    Driver,
    assert_every_record_once,
    drive,
    expected_value,
    produce_json,
    read_records,
    start_at_once,
)
from tests.support.kafka import unique_topic
from tests.support.postgres import PostgresServer
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS

TOTAL = 600
PARTITIONS = 3
VALUE_FIELDS = ("id", "name", "amount", "ok", "color", "note")


STARTED: list[IcebergSinkTask] = []


@pytest.fixture(autouse=True)
def stop_tasks() -> Iterator[None]:
    """Every task a test started is stopped (its catalog connections closed) after it."""
    yield
    while STARTED:
        STARTED.pop().stop()


def task_for(warehouse: str, **values: str) -> IcebergSinkTask:
    config = {
        "connector.class": "iceberg-sink",
        "warehouse": warehouse,
        "flush.records": "150",
        **values,
    }
    task = IcebergSinkTask(ConnectorConfig("ice", config))
    task.start()
    STARTED.append(task)
    return task


def table_of(task: IcebergSinkTask, topic: str) -> Table:
    return task.catalog.load_table(("bayou", topic.replace("-", "_")))


def rows_of(table: Table) -> list[dict[str, Any]]:
    """The current snapshot twice: DuckDB over its planned data files, pyiceberg's scan."""
    scan = table.scan()
    files = [task.file.file_path for task in scan.plan_files()]
    assert all(f.startswith("file://") for f in files)
    db = duckdb.connect()
    result = db.execute(
        "SELECT * FROM read_parquet(?, union_by_name = true)",
        [[f.removeprefix("file://") for f in files]],
    )
    names = [d[0] for d in result.description]
    from_duckdb = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    from_scan = scan.to_arrow().to_pylist()
    key = ("_partition", "_offset")
    assert sorted(from_scan, key=lambda r: tuple(r[k] for k in key)) == sorted(
        from_duckdb, key=lambda r: tuple(r[k] for k in key)
    )
    return from_scan


def check_rows(rows: list[dict[str, Any]], total: int, partitions: int) -> None:
    assert_every_record_once(
        [(r["_partition"], r["_offset"], r["id"]) for r in rows], total, partitions
    )
    for row in rows:
        got = {k: row[k] for k in VALUE_FIELDS if row.get(k) is not None}
        assert got == expected_value(row["id"], total)
        assert row["_key"] == f"k{row['id']}"
        assert int(row["_timestamp"].timestamp() * 1000) == BASE_TS_MS + row["id"] * 1000


@pytest.fixture
def topic(shared_broker: BrokerProcess) -> str:
    name = unique_topic("ice")
    create_topic(shared_broker.bootstrap, name, PARTITIONS)
    produce_json(shared_broker.bootstrap, name, PARTITIONS, TOTAL)
    return name


def partitions_of(topic: str) -> list[tuple[str, int]]:
    return [(topic, p) for p in range(PARTITIONS)]


def test_every_record_once_with_schema_evolution(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path
) -> None:
    task = task_for(str(tmp_path))
    assert task.open(partitions_of(topic)) == {}
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    records.sort(key=lambda r: (r.offset, r.partition))  # as produced: "note" comes later
    covered = drive(task, records)
    assert covered == {(topic, p): TOTAL // PARTITIONS for p in range(PARTITIONS)}

    table = table_of(task, topic)
    check_rows(rows_of(table), TOTAL, PARTITIONS)
    # the first snapshots were written before "note" existed: the schema grew by it
    history = [table.schemas()[s.schema_id] for s in table.snapshots() if s.schema_id is not None]
    assert "note" not in history[0].column_names and "note" in history[-1].column_names
    summary = table.current_snapshot().summary  # type: ignore[union-attr]
    offsets = json.loads(summary["bayou.connect.ice.offsets"])
    assert offsets == {f"{topic}/{p}": TOTAL // PARTITIONS for p in range(PARTITIONS)}
    assert task_for(str(tmp_path)).open(partitions_of(topic)) == covered


def test_crash_between_writing_and_committing(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path
) -> None:
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    task = task_for(str(tmp_path), **{"flush.records": "100000"})
    task.open(partitions_of(topic))
    task.put(records[:200])
    task.flush()
    task.put(records[200:400])
    real_commit = task.catalog.commit_table

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError("injected: catalog unreachable")

    task.catalog.commit_table = fail  # type: ignore[method-assign]
    with pytest.raises(OSError, match="injected"):
        task.flush()  # data files written, the snapshot never committed
    task.catalog.commit_table = real_commit  # type: ignore[method-assign]
    data_files = list((tmp_path / "bayou" / topic.replace("-", "_")).rglob("data/*.parquet"))
    assert len(data_files) > len(list(table_of(task, topic).scan().plan_files()))

    restarted = task_for(str(tmp_path))
    start = restarted.open(partitions_of(topic))
    assert sum(start.values()) == 200
    drive(restarted, read_records(shared_broker.bootstrap, topic, PARTITIONS, start))
    check_rows(rows_of(table_of(restarted, topic)), TOTAL, PARTITIONS)


def test_kill_9_between_writing_and_committing_then_restart(
    shared_broker: BrokerProcess, tmp_path: Path
) -> None:
    name = unique_topic("ice-kill")
    create_topic(shared_broker.bootstrap, name, 2)
    produce_json(shared_broker.bootstrap, name, 2, TOTAL)
    warehouse = tmp_path / "warehouse"
    config = {"name": "ice", "connector.class": "iceberg-sink", "warehouse": str(warehouse)}
    driver = Driver(
        tmp_path / "sink.json", {**config, "flush.records": "100"}, shared_broker.bootstrap, name, 2
    )
    # the 5th catalog commit (appends and schema changes): a few flushes in
    assert "flushed" in driver.killed_on_commit(5)
    driver.to_the_end()
    task = task_for(str(warehouse))
    check_rows(rows_of(table_of(task, name)), TOTAL, 2)


def test_two_tasks_write_one_table(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path
) -> None:
    """Tasks 0 and 1 share the table; each snapshot carries both tasks' offsets forward."""
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    first, second = task_for(str(tmp_path)), task_for(str(tmp_path))
    first.open([(topic, 0), (topic, 1)])
    second.open([(topic, 2)])
    mine = [r for r in records if r.partition < 2]
    theirs = [r for r in records if r.partition == 2]
    first.put(mine[:100])
    first.flush()
    second.put(theirs)
    second.flush()  # its table handle is older than first's commit: a conflict, retried
    first.put(mine[100:])
    first.flush()
    assert task_for(str(tmp_path)).open(partitions_of(topic)) == {
        (topic, p): TOTAL // PARTITIONS for p in range(PARTITIONS)
    }
    check_rows(rows_of(table_of(first, topic)), TOTAL, PARTITIONS)


def test_postgres_catalog(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database("ice")
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    task = task_for(str(tmp_path), **{"catalog.uri": url})
    task.open(partitions_of(topic))
    drive(task, records[:300])
    restarted = task_for(str(tmp_path), **{"catalog.uri": url})
    start = restarted.open(partitions_of(topic))
    assert sum(start.values()) == 300
    drive(restarted, read_records(shared_broker.bootstrap, topic, PARTITIONS, start))
    check_rows(rows_of(table_of(restarted, topic)), TOTAL, PARTITIONS)
    assert not (tmp_path / "catalog.db").exists()


def test_s3_warehouse(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    values = {
        "catalog.uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "s3.endpoint": seaweedfs.endpoint,
        "s3.access.key.id": ACCESS_KEY,
        "s3.secret.access.key": SECRET_KEY,
    }
    warehouse = f"s3://{seaweedfs.bucket}/{unique_topic('wh')}"
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    task = task_for(warehouse, **values)
    task.open(partitions_of(topic))
    drive(task, records[:300])
    task.put(records[300:400])  # never flushed
    restarted = task_for(warehouse, **values)
    start = restarted.open(partitions_of(topic))
    assert sum(start.values()) == 300
    drive(restarted, read_records(shared_broker.bootstrap, topic, PARTITIONS, start))
    table = table_of(restarted, topic)
    assert table.location().startswith(warehouse)
    check_rows(table.scan().to_arrow().to_pylist(), TOTAL, PARTITIONS)


def test_a_partition_assigned_later_keeps_the_rows_buffered_for_others(tmp_path: Path) -> None:
    """An incremental assignment (open of one more partition) while rows of another are
    buffered: the next flush still writes them."""
    task = task_for(str(tmp_path))
    task.open([("t", 0)])
    task.put([SinkRecord("t", 0, 0, BASE_TS_MS, None, {"id": 0})])
    task.flush()
    task.put([SinkRecord("t", 0, 1, BASE_TS_MS, None, {"id": 1, "later": "x"})])
    assert task.open([("t", 1)]) == {}
    task.put([SinkRecord("t", 1, 0, BASE_TS_MS, None, {"id": 2})])
    assert task.flush() == {("t", 0): 2, ("t", 1): 1}
    rows = task.catalog.load_table(("bayou", "t")).scan().to_arrow().to_pylist()
    assert sorted((r["_partition"], r["_offset"], r["id"], r["later"]) for r in rows) == [
        (0, 0, 0, None),
        (0, 1, 1, "x"),
        (1, 0, 2, None),
    ]


def test_tasks_starting_at_once_on_a_new_catalog_all_start(tmp_path: Path) -> None:
    """A connector's tasks start together; each creates the catalog's tables if missing."""
    config = {"connector.class": "iceberg-sink", "warehouse": str(tmp_path / "warehouse")}
    tasks = [IcebergSinkTask(ConnectorConfig("ice", config)) for _ in range(4)]
    STARTED.extend(tasks)
    assert start_at_once(tasks) == []
    assert [t.open([("t", 0)]) for t in tasks] == [{}] * 4
