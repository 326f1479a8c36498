"""``duckdb-sink``: records appended into a DuckDB database file, exactly once.

Theory of operation
-------------------
Keys: ``path`` (the database file; DuckDB's own ``md:`` URLs work too), ``table`` (one
table for every topic; default one per topic, named like it with ``.``/``-`` as ``_``),
``flush.records`` (default 10000), ``flush.bytes`` (default 64 MiB), ``flush.ms`` (default
10000).

Rows are the Parquet sink's (``rows``): the value's top-level fields and the ``_topic``,
``_partition``, ``_offset``, ``_timestamp``, ``_key`` columns; a missing table is created
from the first records, a new field adds a column (``ALTER TABLE … ADD COLUMN``).

Exactly once: a flush is one transaction that creates or alters the tables, inserts the
buffered rows (an Arrow table, ``INSERT … BY NAME``) and upserts, per partition, the next
offset into ``_bayou_offsets (connector, topic, partition, next_offset)``.  DuckDB commits
it whole or not at all (its write-ahead log), so the rows and the offsets agree after any
crash, and ``open`` reads the next offsets back from that table.  A DuckDB file is opened
by one process at a time; the tasks of one connector share the database inside the
process (DuckDB's optimistic concurrency lets their appends commit side by side; a
conflict is retried).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from bayou.connect.api import ConfigError, RetriableError, SinkRecord, SinkTask, TopicPartition

try:
    import duckdb
    import pyarrow as pa
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigError("duckdb-sink needs duckdb and pyarrow: pip install 'bayou[connect]'") from exc

from bayou.connect.sinks.rows import META_NAMES, ColumnSchema, Kind, arrow_table
from bayou.connect.sinks.table_buffer import Row, TableBuffer

OFFSETS_TABLE = "_bayou_offsets"
SQL_TYPES: dict[Kind, str] = {
    Kind.BOOL: "BOOLEAN",
    Kind.INT: "BIGINT",
    Kind.FLOAT: "DOUBLE",
    Kind.STRING: "VARCHAR",
    Kind.BINARY: "BLOB",
}
META_DDL = '"_topic" VARCHAR, "_partition" INTEGER, "_offset" BIGINT, "_timestamp" TIMESTAMPTZ'


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def kind_of_sql(sql_type: str) -> Kind | None:
    t = sql_type.upper()
    if t == "BOOLEAN":
        return Kind.BOOL
    if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"):
        return Kind.INT
    if t in ("UINTEGER", "UBIGINT"):
        return Kind.INT
    if t in ("FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL"):
        return Kind.FLOAT
    if t == "VARCHAR" or t.startswith("VARCHAR("):
        return Kind.STRING
    if t == "BLOB":
        return Kind.BINARY
    return None


class DuckDbSinkTask(SinkTask):
    def start(self) -> None:
        self.buffer: TableBuffer[str] = TableBuffer(
            self.config.get_int("flush.records", 10_000),
            self.config.get_int("flush.bytes", 64 * 1024 * 1024),
            self.config.get_int("flush.ms", 10_000),
        )
        self.table_key = self.config.get("table")
        path = self.config.require("path")
        try:
            self.db = duckdb.connect(path)
        except duckdb.IOException as exc:  # locked by another process
            raise RetriableError(f"open {path}: {exc}") from exc
        try:
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (connector VARCHAR, topic VARCHAR,"
                " partition INTEGER, next_offset BIGINT,"
                " PRIMARY KEY (connector, topic, partition))"
            )
        except duckdb.TransactionException as exc:  # another task creating it at once
            self.db.close()
            raise RetriableError(f"create {OFFSETS_TABLE} in {path}: {exc}") from exc
        self._schemas: dict[str, ColumnSchema] = {}

    def _table(self, topic: str) -> str:
        return self.table_key or re.sub(r"[^A-Za-z0-9_]", "_", topic)

    def _schema(self, table: str) -> ColumnSchema:
        schema = self._schemas.get(table)
        if schema is None:
            described = self.db.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?"
                " ORDER BY ordinal_position",
                [table],
            ).fetchall()
            columns: dict[str, Kind] = {}
            for name, sql_type in described:
                kind = kind_of_sql(sql_type)
                if name not in META_NAMES and kind is not None:
                    columns[name] = kind
            schema = self._schemas[table] = ColumnSchema(columns)
        return schema

    def open(self, partitions: Collection[TopicPartition]) -> Mapping[TopicPartition, int]:
        found: dict[TopicPartition, int] = {}
        for topic, partition in partitions:
            row = self.db.execute(
                f"SELECT next_offset FROM {OFFSETS_TABLE}"
                " WHERE connector = ? AND topic = ? AND partition = ?",
                [self.config.name, topic, partition],
            ).fetchall()
            if row:
                found[(topic, partition)] = int(row[0][0])
            self.buffer.opened((topic, partition), found.get((topic, partition)))
        for table in list(self._schemas):
            if not self.buffer.rows.get(table):  # read again: another task may have added columns
                del self._schemas[table]
        return found

    def put(self, records: Sequence[SinkRecord]) -> None:
        self.buffer.put(records, self._table, self._schema)

    def flush_due(self, now_ms: int) -> bool:
        return self.buffer.flush_due(now_ms)

    def flush(self) -> Mapping[TopicPartition, int]:
        if not self.buffer.covered:
            return {}
        covered = dict(self.buffer.covered)
        cursor = self.db.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
            for table, rows in self.buffer.rows.items():
                if rows:
                    self._append(cursor, table, rows)
            cursor.executemany(
                f"INSERT OR REPLACE INTO {OFFSETS_TABLE} VALUES (?, ?, ?, ?)",
                [[self.config.name, t, p, n] for (t, p), n in covered.items()],
            )
            cursor.execute("COMMIT")
        except duckdb.TransactionException as exc:
            cursor.execute("ROLLBACK")
            raise RetriableError(f"commit to {self.config.get('path')}: {exc}") from exc
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()
        self.buffer.flushed()
        return covered

    def _append(
        self,
        cursor: duckdb.DuckDBPyConnection,
        table: str,
        rows: list[Row],
    ) -> None:
        schema = self._schemas[table]
        name = quote_ident(table)
        data_ddl = "".join(f", {quote_ident(c)} {SQL_TYPES[k]}" for c, k in schema.columns.items())
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {name} ({META_DDL}{data_ddl})")
        have = {
            r[0]
            for r in cursor.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?",
                [table],
            ).fetchall()
        }
        for column, kind in schema.columns.items():
            if column not in have:
                cursor.execute(
                    f"ALTER TABLE {name} ADD COLUMN {quote_ident(column)} {SQL_TYPES[kind]}"
                )
        batch: pa.Table = arrow_table(rows, schema.arrow_schema())
        cursor.register("_bayou_batch", batch)
        try:
            cursor.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _bayou_batch")
        finally:
            cursor.unregister("_bayou_batch")

    def close(self, partitions: Collection[TopicPartition]) -> None:
        self.buffer.close(partitions)

    def stop(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
