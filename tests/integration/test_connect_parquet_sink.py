"""parquet-sink with records read from a real broker: every record once in the files (read
back with DuckDB), Hive-style directories, offsets in names and metadata, restarts and
crashes in the middle of a flush (in-process fault injection and kill -9), on a local
directory and on a real S3 (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from bayou.connect.api import ConnectorConfig, SinkRecord
from bayou.connect.sinks.lake_files import LakeFiles
from bayou.connect.sinks.parquet import ParquetSinkTask
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
)
from tests.support.kafka import unique_topic
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS

TOTAL = 600
VALUE_FIELDS = ("id", "name", "amount", "ok", "color", "note")
PARTITIONS = 3


def task_for(path: str, **values: str) -> ParquetSinkTask:
    config = {"connector.class": "parquet-sink", "path": path, "flush.records": "100", **values}
    task = ParquetSinkTask(ConnectorConfig("lake", config))
    task.start()
    return task


def read_back(root: Path) -> list[dict[str, Any]]:
    files = sorted(str(p) for p in root.rglob("*.parquet"))
    assert files, f"no parquet files under {root}"
    db = duckdb.connect()
    result = db.execute(
        "SELECT * FROM read_parquet(?, union_by_name = true, hive_partitioning = false)",
        [files],
    )
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def check_rows(rows: list[dict[str, Any]], total: int, partitions: int) -> None:
    assert_every_record_once(
        [(r["_partition"], r["_offset"], r["id"]) for r in rows], total, partitions
    )
    for row in rows:
        want = expected_value(row["id"], total)
        got = {
            k: row[k] for k in ("id", "name", "amount", "ok", "color", "note") if row[k] is not None
        }
        assert got == want
        assert row["_key"] == f"k{row['id']}"
        assert int(row["_timestamp"].timestamp() * 1000) == BASE_TS_MS + row["id"] * 1000


@pytest.fixture
def topic(shared_broker: BrokerProcess) -> str:
    name = unique_topic("lake")
    create_topic(shared_broker.bootstrap, name, PARTITIONS)
    produce_json(shared_broker.bootstrap, name, PARTITIONS, TOTAL)
    return name


def partitions_of(topic: str) -> list[tuple[str, int]]:
    return [(topic, p) for p in range(PARTITIONS)]


def test_every_record_once_in_hive_directories(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path
) -> None:
    task = task_for(str(tmp_path))
    assert task.open(partitions_of(topic)) == {}
    covered = drive(task, read_records(shared_broker.bootstrap, topic, PARTITIONS))
    assert covered == {(topic, p): TOTAL // PARTITIONS for p in range(PARTITIONS)}

    check_rows(read_back(tmp_path), TOTAL, PARTITIONS)
    # topic/date/hour directories; offsets in each file's name and key-value metadata
    files = sorted(tmp_path.rglob("*.parquet"))
    dirs = {f.parent.relative_to(tmp_path).as_posix() for f in files}
    assert dirs == {
        f"topic={topic}/date=2025-12-05/hour=15",
        f"topic={topic}/date=2025-12-05/hour=16",
    }
    for f in files:
        meta = {k.decode(): v.decode() for k, v in pq.read_metadata(f).metadata.items()}
        offsets = pq.read_table(f, columns=["_offset"])["_offset"].to_pylist()
        assert meta["bayou.topic"] == topic
        assert (int(meta["bayou.first_offset"]), int(meta["bayou.last_offset"])) == (
            offsets[0],
            offsets[-1],
        )
        name_parts = f.name.split("+")
        assert name_parts[:2] == [topic, meta["bayou.partition"]]
        assert int(name_parts[2]) == int(meta["bayou.flush.first_offset"])
        assert int(name_parts[3]) == int(meta["bayou.flush.last_offset"])
    # a new task finds where the files end
    again = task_for(str(tmp_path))
    assert again.open(partitions_of(topic)) == covered


def test_restart_resumes_after_the_last_file(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path
) -> None:
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    task = task_for(str(tmp_path))
    task.open(partitions_of(topic))
    drive(task, records[:250])
    task.put(records[250:400])  # buffered, never flushed: the task "crashes" here

    restarted = task_for(str(tmp_path))
    start = restarted.open(partitions_of(topic))
    assert sum(start.values()) == 250
    drive(restarted, read_records(shared_broker.bootstrap, topic, PARTITIONS, start))
    check_rows(read_back(tmp_path), TOTAL, PARTITIONS)


class FailingFiles(LakeFiles):
    """Fault injection: the ``fail_at``-th file put fails (after leaving a temp file, as a
    crash during the write would)."""

    def __init__(self, inner: LakeFiles, fail_at: int) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail_at = fail_at
        self.puts = 0

    def put_atomic(self, key: str, data: bytes) -> None:
        self.puts += 1
        if self.puts == self.fail_at:
            directory, _, name = key.rpartition("/")
            self.inner.put_atomic(f"{directory}/.{name}.tmp", data[: len(data) // 2])
            raise OSError("injected: disk full")
        self.inner.put_atomic(key, data)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_crash_between_the_files_of_one_flush(
    shared_broker: BrokerProcess, topic: str, tmp_path: Path
) -> None:
    """partition.by=color puts each flush of a partition into two directories (two files):
    the second one fails, so the flush is incomplete; the next task removes its first file
    and the temp file, resumes at the flush's first offset, and no record is doubled."""
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    task = task_for(str(tmp_path), **{"partition.by": "color", "flush.records": "1000"})
    task.open(partitions_of(topic))
    task.put(records[:300])
    assert task.flush()  # the first flush commits
    task.files = FailingFiles(task.files, fail_at=2)
    task.put(records[300:])
    with pytest.raises(OSError, match="injected"):
        task.flush()
    assert list(tmp_path.rglob(".*.tmp"))

    restarted = task_for(str(tmp_path), **{"partition.by": "color"})
    start = restarted.open(partitions_of(topic))
    assert sum(start.values()) == 300
    assert not list(tmp_path.rglob(".*.tmp"))
    drive(restarted, read_records(shared_broker.bootstrap, topic, PARTITIONS, start))
    rows = read_back(tmp_path)
    check_rows(rows, TOTAL, PARTITIONS)
    dirs = {p.parent.name for p in tmp_path.rglob("*.parquet")}
    assert dirs == {"color=red", "color=green"}


def test_partition_by_a_missing_field_goes_to_the_default_partition(tmp_path: Path) -> None:
    task = task_for(str(tmp_path), **{"partition.by": "region"})
    task.open([("t", 0)])
    task.put(
        [
            SinkRecord("t", 0, 0, BASE_TS_MS, None, {"region": "eu/west", "n": 1}),
            SinkRecord("t", 0, 1, BASE_TS_MS, None, {"n": 2}),
        ]
    )
    assert task.flush() == {("t", 0): 2}
    dirs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert dirs == ["topic=t/region=__HIVE_DEFAULT_PARTITION__", "topic=t/region=eu%2Fwest"]


def test_rolled_by_records_size_and_time(tmp_path: Path) -> None:
    def record(offset: int, text: str = "x") -> SinkRecord:
        return SinkRecord("t", 0, offset, BASE_TS_MS, None, {"text": text})

    by_count = task_for(str(tmp_path / "a"), **{"flush.records": "3"})
    by_count.open([("t", 0)])
    by_count.put([record(0), record(1)])
    assert not by_count.flush_due(0)
    by_count.put([record(2)])
    assert by_count.flush_due(0)

    by_size = task_for(str(tmp_path / "b"), **{"flush.bytes": "10000"})
    by_size.open([("t", 0)])
    by_size.put([record(0, "x" * 5000)])
    assert not by_size.flush_due(0)
    by_size.put([record(1, "x" * 5000)])
    assert by_size.flush_due(0)

    by_time = task_for(str(tmp_path / "c"), **{"flush.ms": "1000"})
    by_time.open([("t", 0)])
    assert not by_time.flush_due(10**13)  # nothing buffered
    by_time.put([record(0)])
    since = by_time._pending[("t", 0)].since_ms
    assert not by_time.flush_due(since + 999)
    assert by_time.flush_due(since + 1000)


def test_kill_9_in_the_middle_of_a_flush_then_restart(
    shared_broker: BrokerProcess, tmp_path: Path
) -> None:
    """A separate process SIGKILLs itself right after the first file of its third flush is
    committed (partition.by=color: two files a flush); the restarted process leaves every record
    in the files once."""
    name = unique_topic("lake-kill")
    create_topic(shared_broker.bootstrap, name, 2)
    produce_json(shared_broker.bootstrap, name, 2, TOTAL)
    out = tmp_path / "lake"
    config = {"name": "lake", "connector.class": "parquet-sink", "path": str(out)}
    driver = Driver(
        tmp_path / "sink.json",
        {**config, "flush.records": "80", "partition.by": "color"},
        shared_broker.bootstrap,
        name,
        2,
    )
    assert "flushed 2" in driver.killed_on_commit(5)
    partial = {p.name for p in out.rglob("*.parquet") if "+1of2" in p.name} ^ {
        p.name.replace("+0of2", "+1of2") for p in out.rglob("*.parquet") if "+0of2" in p.name
    }
    assert partial, "the kill left no incomplete flush: the test did not test it"
    driver.to_the_end()
    check_rows(read_back(out), TOTAL, 2)


def test_s3_every_record_once_across_a_restart(
    shared_broker: BrokerProcess, topic: str, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    prefix = unique_topic("lake")
    s3_keys = {
        "s3.endpoint": seaweedfs.endpoint,
        "s3.access.key.id": ACCESS_KEY,
        "s3.secret.access.key": SECRET_KEY,
    }
    path = f"s3://{seaweedfs.bucket}/{prefix}"
    records = read_records(shared_broker.bootstrap, topic, PARTITIONS)
    task = task_for(path, **s3_keys)
    assert task.open(partitions_of(topic)) == {}
    drive(task, records[:350])
    task.put(records[350:420])  # never flushed

    restarted = task_for(path, **s3_keys)
    start = restarted.open(partitions_of(topic))
    assert sum(start.values()) == 350
    drive(restarted, read_records(shared_broker.bootstrap, topic, PARTITIONS, start))

    # DuckDB's httpfs extension cannot be installed offline: copy the objects down first
    local = tmp_path / "copy"
    keys = list(restarted.files.list(f"topic={topic}/"))
    assert keys and all(k.endswith(".parquet") for k in keys)
    for key in keys:
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(restarted.files.get(key))
    check_rows(read_back(local), TOTAL, PARTITIONS)


def test_a_partition_assigned_later_keeps_the_rows_buffered_for_others(tmp_path: Path) -> None:
    task = task_for(str(tmp_path), **{"partition.by": "id"})
    task.open([("t", 0)])
    task.put([SinkRecord("t", 0, 0, BASE_TS_MS, None, {"id": 0, "later": "x"})])
    assert task.open([("t", 1)]) == {}
    task.put([SinkRecord("t", 1, 0, BASE_TS_MS, None, {"id": 1})])
    assert task.flush() == {("t", 0): 1, ("t", 1): 1}
    rows = read_back(tmp_path)
    assert sorted((r["_partition"], r["_offset"], r["id"], r["later"]) for r in rows) == [
        (0, 0, 0, "x"),
        (1, 0, 1, None),
    ]
