"""``postgres-cdc-source``: PostgreSQL changes as Debezium-shaped records, via ``pgoutput``.

Theory of operation
-------------------
Keys: ``connection.url`` (libpq URL of the database), ``tables`` (``schema.table`` or
``table`` for ``public``), ``topic.prefix``; optional ``slot.name`` and ``publication.name``
(default ``bayou_{connector name}``), ``snapshot.mode`` (``initial`` | ``never``),
``tombstones.on.delete`` (default true), ``decimal.handling.mode`` (``string`` | ``double``),
``max.batch.size`` (changes decoded per poll, default 2048), ``poll.interval.ms`` (200).

psycopg 3 has no client for the streaming replication protocol, so changes are read with the
SQL interface over an ordinary connection: ``pg_logical_slot_peek_binary_changes`` decodes
whole transactions from the slot's confirmed position *without consuming them*, and
``pg_replication_slot_advance`` moves the slot — in ``commit(position)``, after the
runtime has the records durably in Bayou, and past WAL that holds nothing for this
publication (a peek that returns nothing at all), so that writes to other tables do not
pin WAL on the server.  Peeking therefore returns transactions already
handed out; the task remembers the position of the last record it produced and skips up to
it, which is also how ``start(position)`` resumes after a restart.

A **position** is ``{"lsn": L, "n": n, "end": E}``: records up to the ``n``-th of the
transaction whose commit record is at ``L`` are delivered; ``E`` (the transaction's end
LSN) is set on its last record only, and committing such a position advances the slot to
``E``.  A transaction is only ever skipped as a whole by the slot, so a restart in the
middle of one re-decodes it and skips its first ``n`` records: no loss, no duplicates.

**Snapshot** (``snapshot.mode=initial``, the first start): the slot is created over a
replication connection with ``EXPORT_SNAPSHOT``; a second connection imports that snapshot
(``REPEATABLE READ``, ``SET TRANSACTION SNAPSHOT``) and reads each table through a server-side
cursor, so the rows read (op ``r``) are exactly the state at the slot's consistent point
and the stream continues from there.  Snapshot records carry ``{"snapshot": true}``; the
last one carries ``{"lsn": 0, "n": 0, "end": null}`` (snapshot done, nothing streamed yet).
A start from a snapshot position (the snapshot was interrupted) drops the slot and takes the
snapshot again: snapshot rows may then appear twice in the topic (as Debezium does).

Each change becomes a record keyed by the table's primary key columns (a JSON object), with
Debezium's envelope ``{"before", "after", "op": c|u|d|r, "source": {…, "lsn", "txId",
"schema", "table", "db"}, "ts_ms"}`` on topic ``{topic.prefix}.{schema}.{table}``; a delete
is followed by a tombstone (key, null value) for compacted topics and sinks that delete.
``before`` holds the old row with ``REPLICA IDENTITY FULL``, else only the key of a delete.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import functools
import importlib.metadata
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Transformer
from psycopg.pq import Format
from psycopg.types.string import TextLoader

from bayou.connect.api import (
    ConfigError,
    ConnectError,
    ConnectorConfig,
    JsonValue,
    RetriableError,
    SourceRecord,
    SourceTask,
)
from bayou.connect.postgres_client import connect
from bayou.connect.sources import pgoutput
from bayou.connect.sources.pgoutput import UNCHANGED_TOAST

PG_EPOCH_MS = 946_684_800_000
"""2000-01-01T00:00:00Z in Unix milliseconds: PostgreSQL timestamps count from there."""
UNAVAILABLE = "__debezium_unavailable_value"
"""Debezium's placeholder for an unchanged TOASTed value the WAL did not carry."""
JSON_TYPES = (114, 3802)  # json, jsonb: passed on as their JSON text, as Debezium does
JSON_READY_TYPES = frozenset((16, 19, 20, 21, 23, 25, 26, 1042, 1043))
"""bool, name, int8, int2, int4, text, oid, char(n), varchar: psycopg loads them as a bool, an
int or a str, a JSON value already (no ``_json`` per value)."""
MAX_PEEK = 1_000_000
SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
"""What PostgreSQL takes as a replication slot's name (so it goes into the replication
command as it is)."""
try:
    VERSION = importlib.metadata.version("bayou")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
    VERSION = "unknown"


@dataclass(frozen=True, slots=True)
class CdcSettings:
    url: str
    tables: tuple[tuple[str, str], ...]
    topic_prefix: str
    slot: str
    publication: str
    snapshot: bool
    tombstones: bool
    decimal_as_string: bool
    batch: int
    poll_interval_s: float

    @staticmethod
    def parse(config: ConnectorConfig) -> CdcSettings:
        tables = []
        for item in config.get_list("tables") or config.get_list("table.include.list"):
            schema, _, table = item.rpartition(".")
            tables.append((schema or "public", table))
        if not tables:
            raise ConfigError(f"connector {config.name!r}: 'tables' is required")
        default_name = "bayou_" + re.sub(r"[^a-z0-9_]", "_", config.name.lower())
        snapshot_mode = (config.get("snapshot.mode") or "initial").lower()
        if snapshot_mode not in ("initial", "never"):
            raise ConfigError(f"connector {config.name!r}: 'snapshot.mode' is initial or never")
        decimals = (config.get("decimal.handling.mode") or "string").lower()
        if decimals not in ("string", "double"):
            raise ConfigError(
                f"connector {config.name!r}: 'decimal.handling.mode' is string or double"
            )
        slot = config.get("slot.name") or default_name[:63]
        if not SLOT_NAME.fullmatch(slot):
            raise ConfigError(
                f"connector {config.name!r}: 'slot.name' is lower-case letters, digits and _"
                " (at most 63)"
            )
        return CdcSettings(
            url=config.require("connection.url"),
            tables=tuple(tables),
            topic_prefix=config.require("topic.prefix"),
            slot=slot,
            publication=config.get("publication.name") or default_name,
            snapshot=snapshot_mode == "initial",
            tombstones=config.get_bool("tombstones.on.delete", True),
            decimal_as_string=decimals == "string",
            batch=max(1, config.get_int("max.batch.size", 2048)),
            poll_interval_s=max(0.01, config.get_int("poll.interval.ms", 200) / 1000),
        )


@dataclass(slots=True)
class TableInfo:
    schema: str
    name: str
    key: tuple[str, ...]


class Snapshot:
    """The rows of every table as of the slot's consistent point, read in chunks."""

    def __init__(self, conn: psycopg.Connection[Any], tables: Sequence[TableInfo]) -> None:
        self.conn = conn
        self.tables = list(tables)
        self._rows = self._iterate()
        self._ahead: tuple[TableInfo, dict[str, Any]] | None = next(self._rows, None)

    def _iterate(self) -> Iterator[tuple[TableInfo, dict[str, Any]]]:
        for table in self.tables:
            with self.conn.cursor(name=f"bayou_snapshot_{table.schema}_{table.name}") as cur:
                cur.itersize = 2000
                cur.execute(
                    sql.SQL("SELECT * FROM {}").format(sql.Identifier(table.schema, table.name))
                )
                names = [d.name for d in cur.description or ()]
                for row in cur:
                    yield table, dict(zip(names, row, strict=True))

    def take(self, count: int) -> tuple[list[tuple[TableInfo, dict[str, Any]]], bool]:
        """Up to ``count`` rows, and whether they are the last ones."""
        out: list[tuple[TableInfo, dict[str, Any]]] = []
        while self._ahead is not None and len(out) < count:
            out.append(self._ahead)
            self._ahead = next(self._rows, None)
        return out, self._ahead is None

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


class PostgresCdcSourceTask(SourceTask):
    """One task per connector: the slot is one ordered stream."""

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        self.idle = config.task_id != 0
        """A slot is one ordered stream: task 0 reads it, others (tasks.max > 1) stay idle."""
        self.settings = CdcSettings.parse(config)
        self._conn: psycopg.Connection[Any] | None = None
        self._loader: Transformer | None = None
        self._db = ""
        self._tables: dict[tuple[str, str], TableInfo] = {}
        self._relations: dict[int, pgoutput.Relation] = {}
        self._loaders: dict[
            int, tuple[pgoutput.Relation, list[tuple[str, Callable[[bytes], JsonValue]]]]
        ] = {}
        self._snapshot: Snapshot | None = None
        self._delivered: tuple[int, int] = (0, 0)
        """(commit LSN, records of that transaction) produced so far."""
        self._advanced = 0
        self._peek_limit = self.settings.batch
        self._last_wal_seen: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, position: JsonValue | None) -> None:
        if self.idle:
            return
        try:
            self._start(position)
        except psycopg.OperationalError as exc:
            # The database went away half-way: the runtime calls start again, which finds
            # the slot as it was left (a slot without its snapshot is made again).
            self.stop()
            raise RetriableError(f"PostgreSQL: {exc}") from exc
        except RetriableError:  # it could not be reached again half-way: the same
            self.stop()
            raise

    def _start(self, position: JsonValue | None) -> None:
        conn = self._connection()
        self._db = conn.info.dbname
        for schema, name in self.settings.tables:
            self._tables[(schema, name)] = TableInfo(schema, name, self._primary_key(schema, name))
        self._ensure_publication(conn)
        slot_exists = self._slot_exists(conn)
        streaming = isinstance(position, dict) and "lsn" in position
        if streaming:
            assert isinstance(position, dict)
            if not slot_exists:
                raise ConnectError(
                    f"replication slot {self.settings.slot!r} is gone: changes since the stored"
                    " position are lost; delete the connector's offsets to start again"
                )
            self._delivered = (int(position["lsn"]), int(position["n"]))
            return
        if slot_exists and not self.settings.snapshot and position is None:
            return  # no snapshot wanted: stream from the slot as it is (made by hand, say)
        if slot_exists:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (self.settings.slot,))
        self._create_slot_and_snapshot()

    def poll(self, timeout_s: float) -> Sequence[SourceRecord]:
        if self.idle:
            time.sleep(timeout_s)
            return []
        if self._snapshot is not None:
            return self._poll_snapshot()
        deadline = time.monotonic() + timeout_s
        while True:
            records = self._poll_changes()
            if records or time.monotonic() >= deadline:
                return records
            time.sleep(min(self.settings.poll_interval_s, max(0.0, deadline - time.monotonic())))

    def commit(self, position: JsonValue) -> None:
        if self.idle:
            return
        if not isinstance(position, dict) or position.get("end") is None:
            return  # a snapshot row, or inside a transaction: the slot stays where it is
        end = int(position["end"])
        if end <= self._advanced:
            return
        try:
            self._connection().execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                (self.settings.slot, pgoutput.lsn_text(end)),
            )
        except psycopg.OperationalError as exc:
            self._drop_connection()
            raise RetriableError(f"PostgreSQL: {exc}") from exc
        self._advanced = end
        self._peek_limit = self.settings.batch

    def stop(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None
        self._drop_connection()

    # -- setup -----------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = connect(self.settings.url, self.config.name, autocommit=True)
        self._conn = conn
        self._loader = psycopg.adapt.Transformer(conn)
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _primary_key(self, schema: str, name: str) -> tuple[str, ...]:
        conn = self._connection()
        found = conn.execute(
            "SELECT to_regclass(%s)::oid", (sql.Identifier(schema, name).as_string(conn),)
        ).fetchone()
        if found is None or found[0] is None:
            raise ConfigError(f"connector {self.config.name!r}: no table {schema}.{name}")
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (found[0],),
        ).fetchall()
        return tuple(row[0] for row in rows)

    def _ensure_publication(self, conn: psycopg.Connection[Any]) -> None:
        name = self.settings.publication
        tables = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in self.settings.tables)
        present = conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
            (name,),
        ).fetchall()
        exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), tables)
            )
        elif {tuple(row) for row in present} != set(self.settings.tables):
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), tables)
            )

    def _slot_exists(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT plugin, database FROM pg_replication_slots WHERE slot_name = %s",
            (self.settings.slot,),
        ).fetchone()
        if row is None:
            return False
        if row[0] != "pgoutput" or row[1] != self._db:
            raise ConfigError(
                f"connector {self.config.name!r}: replication slot {self.settings.slot!r}"
                f" belongs to {row[1]} / {row[0]} (set slot.name)"
            )
        return True

    def _create_slot_and_snapshot(self) -> None:
        """Create the slot; with ``snapshot.mode=initial`` open the snapshot it exports."""
        replication = connect(
            self.settings.url, self.config.name, autocommit=True, replication="database"
        )
        try:
            mode = "export" if self.settings.snapshot else "nothing"
            command = f"CREATE_REPLICATION_SLOT {self.settings.slot} LOGICAL pgoutput"
            result = replication.pgconn.exec_(f"{command} (SNAPSHOT '{mode}')".encode())
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                message = (result.error_message or b"").decode(errors="replace")
                raise ConnectError(f"cannot create replication slot: {message.strip()}")
            exported = result.get_value(0, 2)
            if not self.settings.snapshot or exported is None:
                return
            reader = connect(self.settings.url, self.config.name)
            for json_type in ("json", "jsonb"):  # passed on as JSON text, as in the stream
                reader.adapters.register_loader(json_type, TextLoader)
            reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            reader.execute(
                sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported.decode()))
            )
        finally:
            replication.close()  # the exported snapshot is held by the reader from here on
        self._snapshot = Snapshot(reader, list(self._tables.values()))

    # -- the snapshot ------------------------------------------------------------------------

    def _poll_snapshot(self) -> list[SourceRecord]:
        snapshot = self._snapshot
        assert snapshot is not None
        try:
            rows, done = snapshot.take(self.settings.batch)
        except psycopg.OperationalError as exc:
            # The snapshot cannot be resumed on another connection: the task fails, and its
            # restart (from the last snapshot position) takes the snapshot again.
            raise ConnectError(f"PostgreSQL: snapshot interrupted: {exc}") from exc
        now_ms = int(time.time() * 1000)
        records = []
        for index, (table, row) in enumerate(rows):
            last = done and index == len(rows) - 1
            after = {name: self._json(value) for name, value in row.items()}
            envelope = self._envelope(
                table, "r", None, after, {"snapshot": "last" if last else "true"}, now_ms
            )
            position: JsonValue = {"lsn": 0, "n": 0, "end": None} if last else {"snapshot": True}
            records.append(
                SourceRecord(self._topic(table), self._key(table, after), envelope, position)
            )
        if done:
            snapshot.close()
            self._snapshot = None
        return records

    # -- the stream ----------------------------------------------------------------------------

    def _poll_changes(self) -> list[SourceRecord]:
        try:
            conn = self._connection()
            # Decoding reads the WAL up to its flush position (not the insert position: a
            # commit inserted but not yet flushed is not there yet).
            wal = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
            if wal is not None and wal[0] == self._last_wal_seen:
                return []  # nothing flushed anywhere since the last empty look
            for _ in range(32):
                messages = conn.execute(
                    "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes("
                    "%s, NULL, %s, 'proto_version', '1', 'publication_names', %s)",
                    (self.settings.slot, self._peek_limit, self.settings.publication),
                ).fetchall()
                records = self._records_of(messages)
                if records or len(messages) < self._peek_limit:
                    break
                # Every change peeked was handed out already (the slot waits for commit):
                # look further.
                self._peek_limit = min(self._peek_limit * 2, MAX_PEEK)
        except psycopg.OperationalError as exc:
            self._drop_connection()
            raise RetriableError(f"PostgreSQL: {exc}") from exc
        except psycopg.Error as exc:
            raise ConnectError(f"PostgreSQL: {exc}") from exc
        if not records and wal is not None and len(messages) < self._peek_limit:
            self._last_wal_seen = wal[0]
        if not messages and wal is not None:
            self._advance_past_nothing(conn, wal[0])
        return records

    def _advance_past_nothing(self, conn: psycopg.Connection[Any], flushed: str) -> None:
        """The slot held nothing for us up to ``flushed`` (read before the empty peek, which
        decoded at least that far): move it there, so the WAL of tables we do not read is
        neither kept nor decoded again on every look."""
        lsn = pgoutput.parse_lsn(flushed)
        if lsn <= self._advanced:
            return
        try:
            conn.execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.settings.slot, flushed)
            )
        except psycopg.OperationalError as exc:
            self._drop_connection()
            raise RetriableError(f"PostgreSQL: {exc}") from exc
        self._advanced = lsn

    def _records_of(self, rows: list[tuple[str, bytes]]) -> list[SourceRecord]:
        records: list[SourceRecord] = []
        pending: list[tuple[str, JsonValue, JsonValue]] = []
        begin: pgoutput.Begin | None = None
        change_lsn = 0
        for lsn_text, data in rows:
            message = pgoutput.decode(data)
            if isinstance(message, pgoutput.Begin):
                begin, pending = message, []
            elif isinstance(message, pgoutput.Relation):
                self._relations[message.oid] = message
            elif isinstance(message, pgoutput.Insert | pgoutput.Update | pgoutput.Delete):
                if begin is None:
                    raise ConnectError("pgoutput change outside a transaction")
                change_lsn = pgoutput.parse_lsn(lsn_text)
                pending.extend(self._change(message, begin, change_lsn))
            elif isinstance(message, pgoutput.Commit):
                if begin is None:
                    raise ConnectError("pgoutput commit without its begin")
                records.extend(self._finish(begin, message, pending))
                begin, pending = None, []
        return records

    def _finish(
        self,
        begin: pgoutput.Begin,
        commit: pgoutput.Commit,
        pending: list[tuple[str, JsonValue, JsonValue]],
    ) -> list[SourceRecord]:
        """A whole transaction's records with their positions, less those handed out."""
        done_lsn, done_n = self._delivered
        if begin.final_lsn < done_lsn:
            return []
        skip = done_n if begin.final_lsn == done_lsn else 0
        out = []
        for index, (topic, key, value) in enumerate(pending, start=1):
            if index <= skip:
                continue
            end = commit.end_lsn if index == len(pending) else None
            position = {"lsn": begin.final_lsn, "n": index, "end": end}
            timestamp = PG_EPOCH_MS + commit.commit_ts_us // 1000
            out.append(SourceRecord(topic, key, value, position, timestamp_ms=timestamp))
        if pending:
            self._delivered = (begin.final_lsn, len(pending))
        return out

    def _change(
        self,
        message: pgoutput.Insert | pgoutput.Update | pgoutput.Delete,
        begin: pgoutput.Begin,
        change_lsn: int,
    ) -> list[tuple[str, JsonValue, JsonValue]]:
        relation = self._relations.get(message.relation_oid)
        if relation is None:
            raise ConnectError(f"pgoutput change for unknown relation {message.relation_oid}")
        table = self._tables.get((relation.namespace, relation.name))
        if table is None:
            table = TableInfo(
                relation.namespace,
                relation.name,
                tuple(c.name for c in relation.columns if c.is_key),
            )
        before: dict[str, Any] | None = None
        after: dict[str, Any] | None = None
        if isinstance(message, pgoutput.Insert):
            op, after = "c", self._row(relation, message.new)
        elif isinstance(message, pgoutput.Update):
            op, after = "u", self._row(relation, message.new)
            if message.old is not None:
                before = self._row(relation, message.old)
        else:
            op, before = "d", self._row(relation, message.old)
        source = {
            "snapshot": "false",
            "ts_ms": PG_EPOCH_MS + begin.commit_ts_us // 1000,
            "txId": begin.xid,
            "lsn": change_lsn,
        }
        envelope = self._envelope(table, op, before, after, source, int(time.time() * 1000))
        topic = self._topic(table)
        key = self._key(table, after if after is not None else before or {})
        out: list[tuple[str, JsonValue, JsonValue]] = [(topic, key, envelope)]
        if op == "d" and self.settings.tombstones:
            out.append((topic, key, None))
        return out

    # -- records -------------------------------------------------------------------------------

    def _topic(self, table: TableInfo) -> str:
        return f"{self.settings.topic_prefix}.{table.schema}.{table.name}"

    @staticmethod
    def _key(table: TableInfo, row: dict[str, Any]) -> JsonValue:
        if not table.key:
            return None
        return {name: row.get(name) for name in table.key}

    def _envelope(
        self,
        table: TableInfo,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        source: dict[str, Any],
        now_ms: int,
    ) -> dict[str, Any]:
        return {
            "before": before,
            "after": after,
            "source": {
                "version": VERSION,
                "connector": "postgresql",
                "name": self.settings.topic_prefix,
                "ts_ms": source.get("ts_ms", now_ms),
                "snapshot": source["snapshot"],
                "db": self._db,
                "schema": table.schema,
                "table": table.name,
                "txId": source.get("txId"),
                "lsn": source.get("lsn"),
            },
            "op": op,
            "ts_ms": now_ms,
        }

    def _row(
        self, relation: pgoutput.Relation, values: tuple[pgoutput.ColumnValue, ...]
    ) -> dict[str, Any]:
        loads = self._column_loaders(relation)
        row: dict[str, Any] = {}
        for (name, load), raw in zip(loads, values, strict=False):
            if raw is None:
                row[name] = None
            elif raw is UNCHANGED_TOAST:
                row[name] = UNAVAILABLE
            else:
                assert isinstance(raw, bytes)
                row[name] = load(raw)
        return row

    def _column_loaders(
        self, relation: pgoutput.Relation
    ) -> list[tuple[str, Callable[[bytes], JsonValue]]]:
        """Per column: its name and text → JSON value (psycopg's loader for its type)."""
        found = self._loaders.get(relation.oid)
        if found is not None and found[0] is relation:
            return found[1]
        transformer = self._loader
        assert transformer is not None
        loads: list[tuple[str, Callable[[bytes], JsonValue]]] = []
        for column in relation.columns:
            if column.type_oid in JSON_TYPES:
                loads.append((column.name, bytes.decode))
                continue
            load = transformer.get_loader(column.type_oid, Format.TEXT).load
            if column.type_oid in JSON_READY_TYPES:
                loads.append((column.name, load))
            else:
                loads.append((column.name, functools.partial(self._load_json, load)))
        self._loaders[relation.oid] = (relation, loads)
        return loads

    def _load_json(self, load: Callable[[bytes], Any], raw: bytes) -> JsonValue:
        return self._json(load(raw))

    def _json(self, value: Any) -> JsonValue:
        """A loaded PostgreSQL value as JSON: numbers, strings (dates and times in ISO 8601,
        bytes in base64, numeric per ``decimal.handling.mode``), lists."""
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, decimal.Decimal):
            if self.settings.decimal_as_string or not value.is_finite():
                return str(value)
            return float(value)
        if isinstance(value, dt.date | dt.time | dt.datetime):
            return value.isoformat()
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(bytes(value)).decode()
        if isinstance(value, list | tuple):
            return [self._json(item) for item in value]
        if isinstance(value, dict):
            return json.dumps(value)
        if isinstance(value, uuid.UUID):
            return str(value)
        return str(value)
