"""What the table sinks (``iceberg-sink``, ``duckdb-sink``) buffer between two flushes.

Theory of operation
-------------------
Both sinks write one target table per topic (or one for every topic) and commit, per flush,
the buffered rows with the next offset of every partition in one transaction.  This holds
the part they share: the rows per table (``rows.ColumnSchema`` converts them; a batch with a
record that does not fit leaves every table's columns as they were), the next offset per
partition — recovered by ``open`` or after the last record put, so a record the runtime
delivers again is dropped — and the offsets the buffered rows cover (``covered``: what the
flush commits, tombstones included), with the ``flush.records``/``flush.bytes``/``flush.ms``
accounting behind ``flush_due``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, Generic, TypeVar

from bayou.connect.api import SinkRecord, TopicPartition
from bayou.connect.sinks.rows import ColumnSchema, Kind, estimated_batch_bytes

Table = TypeVar("Table", bound=Hashable)
Row = tuple[SinkRecord, dict[str, Any]]


class TableBuffer(Generic[Table]):
    def __init__(self, flush_records: int, flush_bytes: int, flush_ms: int) -> None:
        self.flush_records = flush_records
        self.flush_bytes = flush_bytes
        self.flush_ms = flush_ms
        self.rows: dict[Table, list[Row]] = {}
        self.covered: dict[TopicPartition, int] = {}  # committed by the next flush
        self._next: dict[TopicPartition, int] = {}
        self._count = 0
        self._size = 0
        self._since_ms: int | None = None

    def put(
        self,
        records: Sequence[SinkRecord],
        table_of: Callable[[str], Table],
        schema_of: Callable[[Table], ColumnSchema],
    ) -> None:
        """Buffer the records not below their partition's next offset, each in the table
        ``table_of(topic)``; ``RecordError`` (from ``ColumnSchema.rows``) buffers nothing."""
        fresh = [r for r in records if r.offset >= self._next.get(r.topic_partition, 0)]
        if not fresh:
            return
        by_table: dict[Table, list[SinkRecord]] = {}
        for record in fresh:
            by_table.setdefault(table_of(record.topic), []).append(record)
        converted: list[tuple[ColumnSchema, dict[str, Kind], Table, list[Row]]] = []
        for table, batch in by_table.items():
            schema = schema_of(table)
            before = dict(schema.columns)
            try:
                rows, _ = schema.rows(batch)
            except Exception:
                for prior_schema, prior_columns, _, _ in converted:
                    prior_schema.columns = prior_columns  # every table's columns as they were
                raise
            converted.append((schema, before, table, rows))
        for _, _, table, rows in converted:
            self.rows.setdefault(table, []).extend(rows)
            self._count += len(rows)
            self._size += estimated_batch_bytes(rows)
        for record in fresh:
            self._next[record.topic_partition] = record.offset + 1
            self.covered[record.topic_partition] = record.offset + 1
        if self._since_ms is None:
            self._since_ms = int(time.time() * 1000)

    def flush_due(self, now_ms: int) -> bool:
        if self._count >= self.flush_records or self._size >= self.flush_bytes:
            return True
        return self._since_ms is not None and now_ms - self._since_ms >= self.flush_ms

    def flushed(self) -> None:
        """Everything buffered is committed."""
        self.rows.clear()
        self.covered.clear()
        self._count = self._size = 0
        self._since_ms = None

    def opened(self, tp: TopicPartition, next_offset: int | None) -> None:
        """``tp`` starts again at ``next_offset`` (``None``: what the runtime delivers)."""
        self.close([tp])
        if next_offset is not None:
            self._next[tp] = next_offset

    def close(self, partitions: Collection[TopicPartition]) -> None:
        """Forget what was buffered of ``partitions``."""
        gone = set(partitions)
        for table, rows in self.rows.items():
            self.rows[table] = [(r, row) for r, row in rows if r.topic_partition not in gone]
        for tp in gone:
            self._next.pop(tp, None)
            self.covered.pop(tp, None)
