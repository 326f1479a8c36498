"""``parquet-sink``: records into Parquet files on a local directory or S3, exactly once.

Theory of operation
-------------------
Keys: ``path`` (a directory or ``s3://bucket/prefix``, S3 keys in ``lake_files``),
``flush.records`` (default 10000), ``flush.bytes`` (estimated buffered bytes, default
64 MiB), ``flush.ms`` (default 60000: the age of the oldest buffered record),
``partition.by`` (comma-separated value fields; default the record timestamp's UTC date and
hour), ``compression`` (default ``zstd``).

Layout (Hive-style, so DuckDB, Spark or Trino read the directories as columns)::

    PATH/topic=orders/date=2026-12-05/hour=17/orders+0+00000000000000000100+00000000000000000199+0of1.parquet
    PATH/topic=orders/region=eu/orders+0+…      (partition.by=region)

``put`` converts records to rows (``rows.ColumnSchema``) and buffers them per Kafka
partition and directory.  ``flush`` writes, per Kafka partition, one file per directory;
together they hold the partition's records from ``FIRST`` to ``LAST`` (the offsets of the
first and last record put since the last flush), which every file's name carries with the
file's index and the count (``TOPIC+PARTITION+FIRST+LAST+IofN.parquet``).  Each file is
committed atomically (``lake_files``) and also holds ``bayou.*`` key-value metadata: topic,
partition, the flush's range, the offsets of its own first and last row, its index and count.

Exactly once: ``open`` lists the files of its partitions and returns ``LAST + 1`` of the
newest *complete* flush (all N files present) as the next offset; the runtime reads on from
there.  A crash between two files of one flush (a flush spans several directories when
records of one partition fall in several hours or field values) leaves an incomplete one:
``open`` deletes its files before resuming from its ``FIRST``, so the records are written
again exactly once.  (Between the crash and that restart a reader can see the part that was
written; a flush whose records share one directory — the usual case — is one file and never
partial.)  Temporary files a crash left behind are deleted too.  Records below the offset
recovered are dropped if the runtime delivers them again.

New fields: a file holds every column the task has seen so far (absent values null), so
later files have more columns than earlier ones: read with DuckDB's
``read_parquet(…, union_by_name = true)`` (Spark: ``mergeSchema``).  Tombstones write no row.
One connector per ``path``: two connectors writing the same topic into one path would read
each other's files as their own progress.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bayou.connect.api import ConfigError, SinkRecord, SinkTask, TopicPartition

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigError("parquet-sink needs pyarrow: pip install 'bayou[connect]'") from exc

from bayou.connect.sinks.lake_files import TEMP_SUFFIX, LakeFiles, open_lake_files
from bayou.connect.sinks.rows import (
    ColumnSchema,
    arrow_table,
    estimated_batch_bytes,
    value_fields,
)

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
FILE_NAME = re.compile(
    r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<first>\d{20})\+(?P<last>\d{20})"
    r"\+(?P<index>\d+)of(?P<count>\d+)\.parquet$"
)


def file_name(topic: str, partition: int, first: int, last: int, index: int, count: int) -> str:
    return f"{topic}+{partition}+{first:020d}+{last:020d}+{index}of{count}.parquet"


@dataclass
class _Pending:
    """What was put for one Kafka partition since its last flush."""

    first: int
    since_ms: int
    last: int = -1
    rows: int = 0
    size: int = 0
    by_dir: dict[str, list[tuple[SinkRecord, dict[str, Any]]]] = field(default_factory=dict)


class ParquetSinkTask(SinkTask):
    def start(self) -> None:
        self.flush_records = self.config.get_int("flush.records", 10_000)
        self.flush_bytes = self.config.get_int("flush.bytes", 64 * 1024 * 1024)
        self.flush_ms = self.config.get_int("flush.ms", 60_000)
        self.partition_by = self.config.get_list("partition.by")
        self.compression = self.config.get("compression", "zstd") or "zstd"
        if self.flush_records < 1 or self.flush_bytes < 1 or self.flush_ms < 1:
            raise ConfigError(f"connector {self.config.name!r}: flush.* must be positive")
        self.files: LakeFiles = open_lake_files(self.config)
        self.schema = ColumnSchema()
        self._next: dict[TopicPartition, int] = {}
        self._pending: dict[TopicPartition, _Pending] = {}

    # -- recovery ---------------------------------------------------------------------

    def open(self, partitions: Collection[TopicPartition]) -> Mapping[TopicPartition, int]:
        found: dict[TopicPartition, int] = {}
        for topic in {t for t, _ in partitions}:
            wanted = {p for t, p in partitions if t == topic}
            # (partition, first, last, count) → the keys of that flush's files
            flushes: dict[tuple[int, int, int, int], list[str]] = {}
            for key in list(self.files.list(f"topic={quote(topic, safe='')}/")):
                name = key.rsplit("/", 1)[-1]
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    inner = FILE_NAME.match(name[1 : -len(TEMP_SUFFIX)])
                    if inner and inner["topic"] == topic and int(inner["partition"]) in wanted:
                        self.files.delete(key)  # a crash's leftover
                    continue
                match = FILE_NAME.match(name)
                if match is None or match["topic"] != topic:
                    continue
                partition = int(match["partition"])
                if partition not in wanted:
                    continue
                flush_id = (partition, int(match["first"]), int(match["last"]), int(match["count"]))
                flushes.setdefault(flush_id, []).append(key)
            for (partition, _first, last, count), keys in sorted(flushes.items()):
                if len(keys) < count:  # a crash in the middle of this flush: undo it
                    for key in keys:
                        self.files.delete(key)
                    continue
                tp = (topic, partition)
                found[tp] = max(found.get(tp, 0), last + 1)
        for tp in partitions:
            self._pending.pop(tp, None)
            if tp in found:
                self._next[tp] = found[tp]
            else:
                self._next.pop(tp, None)
        return found

    # -- buffering --------------------------------------------------------------------

    def put(self, records: Sequence[SinkRecord]) -> None:
        next_of = self._next
        fresh = [r for r in records if r.offset >= next_of.get((r.topic, r.partition), 0)]
        if not fresh:
            return
        rows, _ = self.schema.rows(fresh)
        now_ms = _now_ms()
        last_of: dict[TopicPartition, int] = {}
        for record in fresh:  # offsets, tombstones included
            tp = (record.topic, record.partition)
            if tp not in last_of and tp not in self._pending:
                self._pending[tp] = _Pending(record.offset, now_ms)
            last_of[tp] = record.offset
        for tp, last in last_of.items():
            self._pending[tp].last = last
            next_of[tp] = last + 1
        row_size = estimated_batch_bytes(rows) // max(1, len(rows))
        pending: _Pending | None = None
        pending_tp: TopicPartition | None = None
        directory_of = self._directory
        for record, row in rows:
            tp = (record.topic, record.partition)
            if tp != pending_tp:
                pending, pending_tp = self._pending[tp], tp
            assert pending is not None
            directory = directory_of(record)
            rows_there = pending.by_dir.get(directory)
            if rows_there is None:
                rows_there = pending.by_dir[directory] = []
            rows_there.append((record, row))
            pending.rows += 1
            pending.size += row_size

    def _directory(self, record: SinkRecord) -> str:
        if self.partition_by:
            values = value_fields(record) or {}
            parts = [_topic_dir(record.topic)]
            for name in self.partition_by:
                value = values.get(name)
                parts.append(_field_dir(name, None if value is None else str(value)))
            return "/".join(parts)
        return _hour_dir(record.topic, record.timestamp_ms // 3_600_000)

    def flush_due(self, now_ms: int) -> bool:
        rows = sum(p.rows for p in self._pending.values())
        size = sum(p.size for p in self._pending.values())
        if rows >= self.flush_records or size >= self.flush_bytes:
            return True
        return any(now_ms - p.since_ms >= self.flush_ms for p in self._pending.values())

    # -- committing -------------------------------------------------------------------

    def flush(self) -> Mapping[TopicPartition, int]:
        done: dict[TopicPartition, int] = {}
        schema = self.schema.arrow_schema()
        for tp, pending in list(self._pending.items()):
            topic, partition = tp
            count = len(pending.by_dir)
            for index, directory in enumerate(sorted(pending.by_dir)):
                rows = pending.by_dir[directory]
                table = arrow_table(rows, schema).replace_schema_metadata(
                    {
                        "bayou.topic": topic,
                        "bayou.partition": str(partition),
                        "bayou.flush.first_offset": str(pending.first),
                        "bayou.flush.last_offset": str(pending.last),
                        "bayou.first_offset": str(rows[0][0].offset),
                        "bayou.last_offset": str(rows[-1][0].offset),
                        "bayou.file_index": str(index),
                        "bayou.file_count": str(count),
                        "bayou.connector": self.config.name,
                    }
                )
                name = file_name(topic, partition, pending.first, pending.last, index, count)
                self.files.put_atomic(f"{directory}/{name}", self._encode(table))
            del self._pending[tp]
            done[tp] = pending.last + 1
        return done

    def _encode(self, table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=self.compression)
        return bytes(sink.getvalue().to_pybytes())

    def close(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)


@functools.lru_cache(maxsize=1024)
def _topic_dir(topic: str) -> str:
    return f"topic={quote(topic, safe='')}"


@functools.lru_cache(maxsize=4096)
def _field_dir(name: str, value: str | None) -> str:
    text = NULL_PARTITION if value is None else quote(value, safe="")
    return f"{quote(name, safe='')}={text}"


@functools.lru_cache(maxsize=4096)
def _hour_dir(topic: str, hours_since_epoch: int) -> str:
    when = dt.datetime.fromtimestamp(hours_since_epoch * 3600, dt.UTC)
    return f"{_topic_dir(topic)}/date={when:%Y-%m-%d}/hour={when:%H}"


def _now_ms() -> int:
    return int(time.time() * 1000)
