"""``postgres-sink``: records into PostgreSQL tables, exactly once.

Theory of operation
-------------------
Keys are the Confluent JDBC sink's: ``connection.url`` (a libpq URL), ``table`` (``${topic}``
stands for the record's topic; the default is the topic's name), ``insert.mode``
(``insert`` | ``upsert``), ``pk.mode`` (``none`` | ``record_key`` | ``record_value``),
``pk.fields``, ``auto.create``, ``auto.evolve``, ``delete.enabled``, ``batch.size``.  A
record's value is a JSON object whose top-level fields go to the same-named columns; with
``pk.mode=record_key`` the key's fields (or the key itself, named by the one ``pk.fields``)
are columns too.

``put`` only buffers.  ``flush`` writes the buffer in **one transaction** that also moves
this connector's rows in the offsets table (``_bayou_connect_offsets`` in the target,
``offsets.table``): the rows and the offsets they cover commit together or not at all, and
``open`` reads the offsets back, so after any crash the runtime resumes exactly after the
last committed row.  The transaction first takes the offsets rows ``FOR UPDATE`` and drops
buffered records below the stored offset: a retried flush whose commit did reach the server,
or a second task that still believes it owns a partition, cannot write a record twice.

Within a flush, records are cut into runs of writes and runs of deletes (a tombstone —
``value`` ``None`` — deletes by key when ``delete.enabled``; otherwise it is skipped), kept in
offset order.  A run of writes goes in with ``COPY``: straight into the table for
``insert``; for ``upsert`` into a temporary table, then one ``INSERT … SELECT … ON CONFLICT
(pk) DO UPDATE`` (keeping the last record per key: one statement may not touch a row twice).
A run of deletes is a pipelined ``DELETE … WHERE pk = …`` per key.  ``auto.create`` creates
a missing table from the JSON types of the batch's values (bool → boolean, integer →
bigint, number → double precision, string → text, object/array → jsonb, only nulls → text;
integers mixed with fractions → double precision, other mixes → text) with the key columns
as its primary key; ``auto.evolve`` adds a column for a new field, typed the same way.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import AdaptContext
from psycopg.types.json import JsonbDumper

from bayou.connect.api import (
    ConfigError,
    ConnectError,
    ConnectorConfig,
    RecordError,
    RetriableError,
    SinkRecord,
    SinkTask,
    TopicPartition,
)
from bayou.connect.postgres_client import connect

INSERT_MODES = ("insert", "upsert")
PK_MODES = ("none", "record_key", "record_value")
DEFAULT_OFFSETS_TABLE = "_bayou_connect_offsets"
CATALOG_RACES = ("pg_type_typname_nsp_index", "pg_class_relname_nsp_index")
"""Unique indexes of the catalog two concurrent ``CREATE TABLE IF NOT EXISTS`` collide on."""


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """The connector's keys, checked once at ``start``."""

    url: str
    table_format: str
    insert_mode: str
    pk_mode: str
    pk_fields: tuple[str, ...]
    auto_create: bool
    auto_evolve: bool
    delete_enabled: bool
    batch_size: int
    offsets_table: str

    @staticmethod
    def parse(config: ConnectorConfig) -> SinkSettings:
        insert_mode = (config.get("insert.mode") or "insert").lower()
        if insert_mode not in INSERT_MODES:
            raise ConfigError(f"connector {config.name!r}: 'insert.mode' must be insert or upsert")
        pk_mode = (config.get("pk.mode") or "none").lower()
        if pk_mode not in PK_MODES:
            raise ConfigError(
                f"connector {config.name!r}: 'pk.mode' must be none, record_key or record_value"
            )
        pk_fields = tuple(config.get_list("pk.fields"))
        delete_enabled = config.get_bool("delete.enabled", False)
        if insert_mode == "upsert" and pk_mode == "none":
            raise ConfigError(f"connector {config.name!r}: insert.mode=upsert needs a 'pk.mode'")
        if pk_mode == "record_value" and not pk_fields:
            raise ConfigError(f"connector {config.name!r}: pk.mode=record_value needs 'pk.fields'")
        if delete_enabled and pk_mode != "record_key":
            raise ConfigError(f"connector {config.name!r}: delete.enabled needs pk.mode=record_key")
        batch_size = config.get_int("batch.size", 3000)
        if batch_size < 1:
            raise ConfigError(f"connector {config.name!r}: 'batch.size' must be at least 1")
        return SinkSettings(
            url=config.require("connection.url"),
            table_format=config.get("table") or config.get("table.name.format") or "${topic}",
            insert_mode=insert_mode,
            pk_mode=pk_mode,
            pk_fields=pk_fields,
            auto_create=config.get_bool("auto.create", False),
            auto_evolve=config.get_bool("auto.evolve", False),
            delete_enabled=delete_enabled,
            batch_size=batch_size,
            offsets_table=config.get("offsets.table") or DEFAULT_OFFSETS_TABLE,
        )

    def table_for(self, topic: str) -> str:
        return self.table_format.replace("${topic}", topic)


@dataclass(slots=True)
class TableShape:
    """What the sink knows of a target table: its columns (name → SQL type), in order."""

    name: str
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def ident(self) -> sql.Identifier:
        return table_identifier(self.name)


@dataclass(frozen=True, slots=True)
class Row:
    """One record as a table row: its columns, and its key (pk column values) if any."""

    record: SinkRecord
    values: dict[str, Any]
    key: tuple[Any, ...] | None
    kind: str
    """``write``, ``delete`` (a tombstone with ``delete.enabled``) or ``skip``."""


def table_identifier(name: str) -> sql.Identifier:
    """``schema.table`` or ``table`` as a quoted identifier."""
    return sql.Identifier(*name.split(".", 1))


def lock_creation(conn: psycopg.Connection[Any], table: str) -> None:
    """Serialize ``CREATE TABLE IF NOT EXISTS`` of ``table`` among tasks (until the end of the
    transaction): two at once can collide in the catalog even with ``IF NOT EXISTS``."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"bayou-connect:{table}",))


def sql_type_of(value: Any) -> str | None:
    """The column type ``auto.create`` gives a JSON value (``None`` for null: not known)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, dict | list):
        return "jsonb"
    return "text"


def widen(a: str | None, b: str | None) -> str | None:
    """One column type for values of types ``a`` and ``b``: integers with fractions make a
    double, other mixes text (the lake sinks' rule, ``sinks/rows.py: unify``)."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} == {"bigint", "double precision"}:
        return "double precision"
    return "text"


class CompactJsonDumper(JsonbDumper):
    """JSON objects and arrays as COPY writes them (registered for ``dict`` and ``list`` on
    the COPY cursor only): compact JSON text, good for a ``jsonb``, ``json`` or ``text``
    column.  Every other value goes through psycopg's own dumpers."""

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        self.dumps = functools.partial(json.dumps, separators=(",", ":"))


class PostgresSinkTask(SinkTask):
    """Buffers records; each ``flush`` is one transaction with the offsets it covers."""

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        self.settings = SinkSettings.parse(config)
        self._conn: psycopg.Connection[Any] | None = None
        self._buffer: list[Row] = []
        self._covered: dict[TopicPartition, int] = {}
        self._tables: dict[str, TableShape | None] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._connection()

    def open(self, partitions: Collection[TopicPartition]) -> Mapping[TopicPartition, int]:
        wanted = set(partitions)
        try:
            conn = self._connection()
            with conn.transaction():
                rows = conn.execute(
                    sql.SQL(
                        "SELECT topic, partition, next_offset FROM {} WHERE connector = %s"
                    ).format(table_identifier(self.settings.offsets_table)),
                    (self.config.name,),
                ).fetchall()
        except psycopg.OperationalError as exc:
            self._drop_connection()
            raise RetriableError(f"PostgreSQL: {exc}") from exc
        stored = {(topic, partition): offset for topic, partition, offset in rows}
        found = {tp: offset for tp, offset in stored.items() if tp in wanted}
        self._covered.update(found)
        return found

    def put(self, records: Sequence[SinkRecord]) -> None:
        # Every record is checked before any is taken: a RecordError leaves the buffer as it
        # was (the runtime then sends that record to the dead-letter topic and puts the rest).
        self._buffer.extend([self._row(record) for record in records])

    def flush_due(self, now_ms: int) -> bool:
        return len(self._buffer) >= self.settings.batch_size

    def flush(self) -> Mapping[TopicPartition, int]:
        if not self._buffer:
            return dict(self._covered)
        batch = self._buffer
        try:
            conn = self._connection()
            with conn.transaction():
                self._write(conn, batch)
        except psycopg.OperationalError as exc:
            self._drop_connection()
            self._tables.clear()
            raise RetriableError(f"PostgreSQL: {exc}") from exc
        except (psycopg.errors.DuplicateTable, psycopg.errors.DuplicateColumn) as exc:
            self._tables.clear()  # another task created it at the same moment: look again
            raise RetriableError(f"PostgreSQL: {exc}") from exc
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            self._tables.clear()
            if exc.diag.constraint_name in CATALOG_RACES:
                raise RetriableError(f"PostgreSQL: {exc}") from exc
            raise ConnectError(f"PostgreSQL refused the batch: {exc}") from exc
        except RecordError:
            self._tables.clear()
            raise
        for row in batch:
            tp = row.record.topic_partition
            self._covered[tp] = max(self._covered.get(tp, 0), row.record.offset + 1)
        self._buffer = []
        return dict(self._covered)

    def close(self, partitions: Collection[TopicPartition]) -> None:
        gone = set(partitions)
        self._buffer = [r for r in self._buffer if r.record.topic_partition not in gone]
        for tp in gone:
            self._covered.pop(tp, None)

    def stop(self) -> None:
        self._drop_connection()

    # -- the connection ---------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = connect(self.settings.url, self.config.name, autocommit=True)
        self._ensure_offsets_table(conn)
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ensure_offsets_table(self, conn: psycopg.Connection[Any]) -> None:
        statement = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " connector text NOT NULL, topic text NOT NULL, partition integer NOT NULL,"
            " next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (connector, topic, partition))"
        ).format(table_identifier(self.settings.offsets_table))
        with conn.transaction():
            lock_creation(conn, self.settings.offsets_table)
            conn.execute(statement)

    # -- one flush --------------------------------------------------------------------------

    def _write(self, conn: psycopg.Connection[Any], batch: list[Row]) -> None:
        ends: dict[TopicPartition, int] = {}
        for row in batch:
            ends[row.record.topic_partition] = row.record.offset + 1
        stored = self._lock_offsets(conn, list(ends))
        by_table: dict[str, list[Row]] = {}
        for row in batch:
            record = row.record
            if row.kind != "skip" and record.offset >= stored.get(record.topic_partition, 0):
                by_table.setdefault(self.settings.table_for(record.topic), []).append(row)
        for table, rows in by_table.items():
            for kind, run in self._runs(rows):
                if kind == "write":
                    self._write_rows(conn, table, run)
                else:
                    self._delete_rows(conn, table, run)
        conn.cursor().executemany(
            sql.SQL(
                "UPDATE {} SET next_offset = %s, updated_at = now()"
                " WHERE connector = %s AND topic = %s AND partition = %s"
            ).format(table_identifier(self.settings.offsets_table)),
            [
                (max(end, stored.get(tp, 0)), self.config.name, tp[0], tp[1])
                for tp, end in ends.items()
            ],
        )

    def _lock_offsets(
        self, conn: psycopg.Connection[Any], partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Make sure a row exists per partition and lock them all: the fence against a
        concurrent or repeated writer of the same partitions."""
        table = table_identifier(self.settings.offsets_table)
        name = self.config.name
        conn.cursor().executemany(
            sql.SQL(
                "INSERT INTO {} (connector, topic, partition, next_offset)"
                " VALUES (%s, %s, %s, 0) ON CONFLICT DO NOTHING"
            ).format(table),
            [(name, topic, partition) for topic, partition in sorted(partitions)],
        )
        rows = conn.execute(
            sql.SQL(
                "SELECT topic, partition, next_offset FROM {} WHERE connector = %s"
                " AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
                " ORDER BY topic, partition FOR UPDATE"
            ).format(table),
            (name, [t for t, _ in partitions], [p for _, p in partitions]),
        ).fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    @staticmethod
    def _runs(rows: list[Row]) -> Iterator[tuple[str, list[Row]]]:
        """Consecutive writes and consecutive deletes, in offset order."""
        kind = ""
        run: list[Row] = []
        for row in rows:
            if row.kind != kind and run:
                yield kind, run
                run = []
            kind = row.kind
            run.append(row)
        if run:
            yield kind, run

    def _row(self, record: SinkRecord) -> Row:
        """The record as a row to write, a key to delete, or nothing (a skipped tombstone)."""
        values: dict[str, Any] = {}
        if record.value is None:
            if not self.settings.delete_enabled:
                return Row(record, values, None, "skip")
            kind = "delete"
        else:
            kind = "write"
            if not isinstance(record.value, dict):
                raise RecordError(
                    f"{record.topic}[{record.partition}]@{record.offset}: the value is not a"
                    " JSON object (set value.converter=json)",
                    record,
                )
            values = dict(record.value)
        mode = self.settings.pk_mode
        if mode == "none":
            return Row(record, values, None, kind)
        if mode == "record_value":
            missing = [f for f in self.settings.pk_fields if values.get(f) is None]
            if missing:
                raise RecordError(
                    f"{record.topic}[{record.partition}]@{record.offset}: no value for key"
                    f" field(s) {', '.join(missing)}",
                    record,
                )
            key = tuple(values[f] for f in self.settings.pk_fields)
            return Row(record, values, key, kind)
        key_values = self._key_columns(record)
        values.update(key_values)
        return Row(record, values, tuple(key_values.values()), kind)

    def _key_columns(self, record: SinkRecord) -> dict[str, Any]:
        key = record.key
        fields = self.settings.pk_fields
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        if isinstance(key, dict):
            names = fields or tuple(key)
            missing = [f for f in names if key.get(f) is None]
            if missing or not names:
                absent = ", ".join(missing) or "field"
                raise RecordError(f"{where}: the key has no {absent}", record)
            return {name: key[name] for name in names}
        if key is None:
            raise RecordError(f"{where}: pk.mode=record_key but the record has no key", record)
        if len(fields) != 1:
            raise ConfigError(
                f"connector {self.config.name!r}: a key that is not a JSON object needs exactly"
                " one name in 'pk.fields'"
            )
        return {fields[0]: key}

    def _key_names(self, rows: list[Row]) -> list[str]:
        if self.settings.pk_fields:
            return list(self.settings.pk_fields)
        key = rows[0].record.key
        return list(key) if isinstance(key, dict) else []

    # -- tables -------------------------------------------------------------------------------

    def _shape(self, conn: psycopg.Connection[Any], table: str) -> TableShape | None:
        if table in self._tables:
            return self._tables[table]
        # the name as CREATE TABLE wrote it: quoted, so neither case-folded nor parsed
        regclass = conn.execute(
            "SELECT to_regclass(%s)::oid", (table_identifier(table).as_string(conn),)
        ).fetchone()
        shape: TableShape | None = None
        if regclass is not None and regclass[0] is not None:
            shape = TableShape(table)
            for name, type_name in conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (regclass[0],),
            ):
                shape.columns[name] = type_name
        self._tables[table] = shape
        return shape

    def _prepare_table(
        self, conn: psycopg.Connection[Any], table: str, rows: list[Row], columns: list[str]
    ) -> TableShape:
        shape = self._shape(conn, table)
        if shape is None:
            if not self.settings.auto_create:
                raise ConnectError(
                    f"table {table!r} does not exist (set auto.create=true to create it)"
                )
            keys = self._key_names(rows) if self.settings.pk_mode != "none" else []
            types = self._column_types(rows, columns)
            parts = [
                sql.SQL("{} {}{}").format(
                    sql.Identifier(name),
                    sql.SQL(types[name]),
                    sql.SQL(" NOT NULL" if name in keys else ""),
                )
                for name in columns
            ]
            if keys:
                parts.append(
                    sql.SQL("PRIMARY KEY ({})").format(
                        sql.SQL(", ").join(sql.Identifier(k) for k in keys)
                    )
                )
            lock_creation(conn, table)
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                    table_identifier(table), sql.SQL(", ").join(parts)
                )
            )
            self._tables.pop(table, None)
            created = self._shape(conn, table)
            assert created is not None
            return created
        new = [name for name in columns if name not in shape.columns]
        if new:
            if not self.settings.auto_evolve:
                row = next(r for r in rows if any(n in r.values for n in new))
                raise RecordError(
                    f"table {table!r} has no column {new[0]!r} (set auto.evolve=true to add it)",
                    row.record,
                )
            types = self._column_types(rows, new)
            for name in new:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        shape.ident, sql.Identifier(name), sql.SQL(types[name])
                    )
                )
                shape.columns[name] = types[name]
        return shape

    @staticmethod
    def _column_types(rows: list[Row], columns: list[str]) -> dict[str, str]:
        """Each column's type from all the batch's values of it (``widen``; text if null)."""
        types: dict[str, str | None] = dict.fromkeys(columns)
        for row in rows:
            for name, value in row.values.items():
                if name in types:
                    types[name] = widen(types[name], sql_type_of(value))
        return {name: found or "text" for name, found in types.items()}

    # -- writes and deletes ---------------------------------------------------------------------

    def _write_rows(self, conn: psycopg.Connection[Any], table: str, rows: list[Row]) -> None:
        if self.settings.insert_mode == "upsert":
            last: dict[tuple[Any, ...], Row] = {}
            for row in rows:
                assert row.key is not None
                last.pop(row.key, None)
                last[row.key] = row
            rows = list(last.values())
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row.values))
        names = list(columns)
        shape = self._prepare_table(conn, table, rows, names)
        column_list = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        if self.settings.insert_mode == "insert":
            self._copy(conn, shape.ident, column_list, names, rows)
            return
        stage = sql.Identifier("_bayou_sink_stage")
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, shape.ident)
        )
        self._copy(conn, stage, column_list, names, rows)
        keys = self._key_names(rows)
        others = [n for n in names if n not in keys]
        action = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in others
                )
            )
            if others
            else sql.SQL("DO NOTHING")
        )
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
                shape.ident,
                column_list,
                column_list,
                stage,
                sql.SQL(", ").join(sql.Identifier(k) for k in keys),
                action,
            )
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(stage))

    @staticmethod
    def _copy(
        conn: psycopg.Connection[Any],
        target: sql.Identifier,
        column_list: sql.Composable,
        names: list[str],
        rows: list[Row],
    ) -> None:
        cursor = conn.cursor()
        cursor.adapters.register_dumper(dict, CompactJsonDumper)
        cursor.adapters.register_dumper(list, CompactJsonDumper)
        with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, column_list)) as copy:
            for row in rows:
                values = row.values
                copy.write_row([values.get(n) for n in names])

    def _delete_rows(self, conn: psycopg.Connection[Any], table: str, rows: list[Row]) -> None:
        shape = self._shape(conn, table)
        if shape is None:
            return  # nothing to delete from a table that was never created
        keys = self._key_names(rows)
        unique = list({row.key: None for row in rows if row.key is not None})
        condition = sql.SQL(" AND ").join(
            sql.SQL("{} = %s").format(sql.Identifier(k)) for k in keys
        )
        conn.cursor().executemany(
            sql.SQL("DELETE FROM {} WHERE {}").format(shape.ident, condition),
            [list(key) for key in unique],
        )
