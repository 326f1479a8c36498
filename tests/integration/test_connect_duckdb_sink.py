"""duckdb-sink with records read from a real broker: the table created and altered from
the JSON records, offsets in ``_bayou_offsets`` in the same transaction, a failure inside
the transaction (in-process and kill -9) leaving every record once after the restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bayou.connect.api import ConnectorConfig, RecordError, SinkRecord
from bayou.connect.sinks.duckdb import DuckDbSinkTask
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

TOTAL = 600
PARTITIONS = 3
VALUE_FIELDS = ("id", "name", "amount", "ok", "color", "note")
STARTED: list[DuckDbSinkTask] = []


@pytest.fixture(autouse=True)
def stop_tasks() -> Iterator[None]:
    yield
    while STARTED:
        STARTED.pop().stop()


def task_for(path: Path, **values: str) -> DuckDbSinkTask:
    config = {"connector.class": "duckdb-sink", "path": str(path), "flush.records": "150"}
    task = DuckDbSinkTask(ConnectorConfig("olap", {**config, **values}))
    task.start()
    STARTED.append(task)
    return task


def read_back(path: Path, table: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(path), read_only=True) as db:
        result = db.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def check_rows(rows: list[dict[str, Any]], total: int, partitions: int) -> None:
    assert_every_record_once(
        [(r["_partition"], r["_offset"], r["id"]) for r in rows], total, partitions
    )
    for row in rows:
        got = {k: row[k] for k in VALUE_FIELDS if row[k] is not None}
        assert got == expected_value(row["id"], total)
        assert row["_key"] == f"k{row['id']}"
        assert int(row["_timestamp"].timestamp() * 1000) == BASE_TS_MS + row["id"] * 1000


@pytest.fixture
def topic(shared_broker: BrokerProcess) -> str:
    name = unique_topic("olap")
    create_topic(shared_broker.bootstrap, name, PARTITIONS)
    produce_json(shared_broker.bootstrap, name, PARTITIONS, TOTAL)
    return name


def partitions_of(topic: str) -> list[tuple[str, int]]:
    return [(topic, p) for p in range(PARTITIONS)]


def test_every_record_once_with_offsets_in_the_database(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path
) -> None:
    db = tmp_path / "olap.duckdb"
    task = task_for(db)
    assert task.open(partitions_of(topic)) == {}
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    records.sort(key=lambda r: (r.offset, r.partition))  # "note" appears half-way
    covered = drive(task, records)
    assert covered == {(topic, p): TOTAL // PARTITIONS for p in range(PARTITIONS)}
    task.stop()
    STARTED.remove(task)

    table = topic.replace("-", "_")
    check_rows(read_back(db, table), TOTAL, PARTITIONS)
    with duckdb.connect(str(db), read_only=True) as con:
        offsets = con.execute(
            "SELECT topic, partition, next_offset FROM _bayou_offsets WHERE connector = 'olap'"
        ).fetchall()
        types = dict(
            con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall()
        )
    assert sorted(offsets) == [(topic, p, TOTAL // PARTITIONS) for p in range(PARTITIONS)]
    assert types["id"] == "BIGINT" and types["amount"] == "DOUBLE" and types["ok"] == "BOOLEAN"
    assert types["note"] == "VARCHAR"  # added by ALTER TABLE when it first appeared
    assert task_for(db).open(partitions_of(topic)) == covered


def test_failure_inside_the_transaction_rolls_back_rows_and_offsets(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path
) -> None:
    db = tmp_path / "olap.duckdb"
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    task = task_for(db, **{"flush.records": "100000"})
    task.open(partitions_of(topic))
    task.put(records[:200])
    task.flush()
    task.put(records[200:400])
    append = task._append

    def append_then_fail(*args: Any) -> None:
        append(*args)
        raise OSError("injected: disk full before COMMIT")

    task._append = append_then_fail  # type: ignore[method-assign]
    with pytest.raises(OSError, match="injected"):
        task.flush()
    task.stop()
    STARTED.remove(task)

    restarted = task_for(db)
    start = restarted.open(partitions_of(topic))
    assert sum(start.values()) == 200
    drive(restarted, read_records(shared_broker.bootstrap, topic, PARTITIONS, start))
    restarted.stop()
    STARTED.remove(restarted)
    check_rows(read_back(db, topic.replace("-", "_")), TOTAL, PARTITIONS)


def test_kill_9_inside_the_transaction_then_restart(
    shared_broker: BrokerProcess, tmp_path: Path
) -> None:
    name = unique_topic("olap-kill")
    create_topic(shared_broker.bootstrap, name, 2)
    produce_json(shared_broker.bootstrap, name, 2, TOTAL)
    db = tmp_path / "olap.duckdb"
    config = {"name": "olap", "connector.class": "duckdb-sink", "path": str(db)}
    driver = Driver(
        tmp_path / "sink.json", {**config, "flush.records": "100"}, shared_broker.bootstrap, name, 2
    )
    assert "flushed 2" in driver.killed_on_commit(3)
    driver.to_the_end()
    check_rows(read_back(db, name.replace("-", "_")), TOTAL, 2)


def test_a_value_that_does_not_fit_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "olap.duckdb"
    task = task_for(db)
    task.open([("t", 0)])
    task.put([SinkRecord("t", 0, 0, BASE_TS_MS, None, {"n": 1})])
    task.flush()
    bad = SinkRecord("t", 0, 2, BASE_TS_MS, None, {"n": "one", "new": True})
    with pytest.raises(RecordError) as refused:
        task.put([SinkRecord("t", 0, 1, BASE_TS_MS, None, {"n": 2.0, "new": False}), bad])
    assert refused.value.record is bad
    task.put([SinkRecord("t", 0, 3, BASE_TS_MS, None, {"n": 3})])
    assert task.flush() == {("t", 0): 4}
    task.stop()
    STARTED.remove(task)
    assert [(r["_offset"], r["n"]) for r in read_back(db, "t")] == [(0, 1), (3, 3)]
    assert "new" not in read_back(db, "t")[0]


def test_a_partition_assigned_later_keeps_the_rows_buffered_for_others(tmp_path: Path) -> None:
    db = tmp_path / "olap.duckdb"
    task = task_for(db)
    task.open([("t", 0)])
    task.put([SinkRecord("t", 0, 0, BASE_TS_MS, None, {"id": 0})])
    task.flush()
    task.put([SinkRecord("t", 0, 1, BASE_TS_MS, None, {"id": 1, "later": "x"})])
    assert task.open([("t", 1)]) == {}
    task.put([SinkRecord("t", 1, 0, BASE_TS_MS, None, {"id": 2})])
    assert task.flush() == {("t", 0): 2, ("t", 1): 1}
    task.stop()
    STARTED.remove(task)
    assert sorted(
        (r["_partition"], r["_offset"], r["id"], r["later"]) for r in read_back(db, "t")
    ) == [
        (0, 0, 0, None),
        (0, 1, 1, "x"),
        (1, 0, 2, None),
    ]


def test_tasks_starting_at_once_on_a_new_database_all_start(tmp_path: Path) -> None:
    """A connector's tasks start together; each creates the offsets table if missing."""
    config = ConnectorConfig(
        "olap", {"connector.class": "duckdb-sink", "path": str(tmp_path / "db")}
    )
    tasks = [DuckDbSinkTask(config) for _ in range(4)]
    STARTED.extend(tasks)
    assert start_at_once(tasks) == []
    assert [t.open([("t", 0)]) for t in tasks] == [{}] * 4
