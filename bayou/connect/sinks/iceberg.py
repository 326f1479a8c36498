"""``iceberg-sink``: records into Apache Iceberg tables through pyiceberg, exactly once.

Theory of operation
-------------------
Keys: ``warehouse`` (a directory or ``s3://bucket/prefix`` where data and metadata files
go), ``catalog.uri`` (the SQL catalog: a SQLAlchemy URL, ``sqlite:////path/catalog.db`` or
``postgresql://user:pass@host/db`` — run through psycopg 3; default a SQLite file
``catalog.db`` in a local warehouse), ``catalog.name`` (default ``bayou``), ``namespace``
(default ``bayou``), ``table`` (``name`` or ``namespace.name`` for every topic; default one
table per topic, named like it with ``.``/``-`` as ``_``), ``flush.records`` (default
10000), ``flush.bytes`` (default 64 MiB), ``flush.ms`` (default 60000), the ``s3.*`` keys of
the Parquet sink for an S3 warehouse.

Rows are the Parquet sink's (``rows``): the value's top-level fields and the ``_topic``,
``_partition``, ``_offset``, ``_timestamp``, ``_key`` columns.  A missing table is created
from the first records' columns (unpartitioned); a batch with new fields first evolves the
table's schema (``update_schema().union_by_name``, new columns optional) and then appends.

Exactly once: each flush is one ``append`` per table — one Iceberg snapshot, committed
atomically by the catalog's compare-and-swap of the metadata location — whose summary holds
the property ``bayou.connect.<connector>.offsets``: a JSON object of
``"topic/partition": next offset`` for every partition this connector has written into the
table (carried over from the snapshot before, so any one snapshot answers).  ``open`` walks
back from the table's current snapshot to the newest one holding that property (another
writer's snapshots, a compaction's, have none) and returns those offsets.  A crash before
the commit leaves at most unreferenced data files; a lost race with another writer (a
second task committing to the same table) is retried on the refreshed table, offsets merged
again.  Iceberg commits are heavy (a manifest list and metadata file each): keep
``flush.ms`` in seconds, not milliseconds.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayou.connect.api import ConfigError, RetriableError, SinkRecord, SinkTask, TopicPartition

try:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
    from pyiceberg.table import Table
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigError(
        "iceberg-sink needs pyiceberg and pyarrow: pip install 'bayou[connect]'"
    ) from exc

from bayou.connect.sinks.rows import META_NAMES, ColumnSchema, Kind, arrow_table, kind_of_arrow
from bayou.connect.sinks.table_buffer import Row, TableBuffer

COMMIT_ATTEMPTS = 8
HISTORY_WALK_LIMIT = 10_000


def table_name_for(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", topic)


@dataclass
class _TableState:
    identifier: tuple[str, str]
    schema: ColumnSchema
    table: Table | None


class IcebergSinkTask(SinkTask):
    def start(self) -> None:
        self.buffer: TableBuffer[tuple[str, str]] = TableBuffer(
            self.config.get_int("flush.records", 10_000),
            self.config.get_int("flush.bytes", 64 * 1024 * 1024),
            self.config.get_int("flush.ms", 60_000),
        )
        self.namespace = self.config.get("namespace", "bayou") or "bayou"
        self.table_key = self.config.get("table")
        self.offsets_property = f"bayou.connect.{self.config.name}.offsets"
        try:
            self.catalog: Catalog = open_catalog(self.config)
        except (OperationalError, IntegrityError, ProgrammingError) as exc:
            # the catalog database unreachable, or another task creating the catalog's
            # tables at the same moment (SQLite: "table … already exists")
            raise RetriableError(f"open the catalog: {exc}") from exc
        self._tables: dict[tuple[str, str], _TableState] = {}

    def _identifier(self, topic: str) -> tuple[str, str]:
        name = self.table_key or table_name_for(topic)
        namespace, dot, table = name.rpartition(".")
        return (namespace if dot else self.namespace, table)

    def _state(self, identifier: tuple[str, str]) -> _TableState:
        state = self._tables.get(identifier)
        if state is None:
            table = self._load(identifier)
            schema = ColumnSchema()
            if table is not None:
                schema = ColumnSchema(existing_columns(table.schema().as_arrow()))
            state = self._tables[identifier] = _TableState(identifier, schema, table)
        return state

    def _load(self, identifier: tuple[str, str]) -> Table | None:
        try:
            return self.catalog.load_table(identifier)
        except NoSuchTableError:
            return None

    # -- recovery ---------------------------------------------------------------------

    def open(self, partitions: Collection[TopicPartition]) -> Mapping[TopicPartition, int]:
        found: dict[TopicPartition, int] = {}
        for identifier in {self._identifier(t) for t, _ in partitions}:
            state = self._tables.get(identifier)
            if state is not None and self.buffer.rows.get(identifier):
                # rows of other partitions are buffered with this schema: keep it, and
                # only take a fresh handle on the table (another task may have evolved it)
                state.table = self._load(identifier)
            else:
                self._tables.pop(identifier, None)
                state = self._state(identifier)
            if state.table is None:
                continue
            recorded = self._recorded_offsets(state.table)
            for topic, partition in partitions:
                if self._identifier(topic) == identifier:
                    next_offset = recorded.get(f"{topic}/{partition}")
                    if next_offset is not None:
                        found[(topic, partition)] = next_offset
        for tp in partitions:
            self.buffer.opened(tp, found.get(tp))
        return found

    def _recorded_offsets(self, table: Table) -> dict[str, int]:
        """The offsets property of the newest snapshot that has one."""
        snapshot = table.current_snapshot()
        for _ in range(HISTORY_WALK_LIMIT):
            if snapshot is None:
                return {}
            value = snapshot.summary.get(self.offsets_property) if snapshot.summary else None
            if value:
                return {str(k): int(v) for k, v in json.loads(value).items()}
            if snapshot.parent_snapshot_id is None:
                return {}
            snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)
        return {}

    # -- buffering --------------------------------------------------------------------

    def put(self, records: Sequence[SinkRecord]) -> None:
        self.buffer.put(records, self._identifier, lambda table: self._state(table).schema)

    def flush_due(self, now_ms: int) -> bool:
        return self.buffer.flush_due(now_ms)

    # -- committing -------------------------------------------------------------------

    def flush(self) -> Mapping[TopicPartition, int]:
        covered = dict(self.buffer.covered)
        for state in self._tables.values():
            offsets = {
                f"{t}/{p}": n
                for (t, p), n in covered.items()
                if self._identifier(t) == state.identifier
            }
            if not offsets:
                continue
            self._commit(state, offsets, self.buffer.rows.get(state.identifier, []))
            # committed: not again in the retry of a flush whose next table fails
            self.buffer.rows.pop(state.identifier, None)
        self.buffer.flushed()
        return covered

    def _commit(self, state: _TableState, offsets: dict[str, int], rows: list[Row]) -> None:
        """One snapshot with the buffered rows (maybe none: tombstones only) and offsets."""
        if state.table is None:
            self.catalog.create_namespace_if_not_exists(state.identifier[0])
            state.table = self.catalog.create_table_if_not_exists(
                state.identifier, schema=state.schema.arrow_schema()
            )
        table = state.table
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                self._evolve(table, state.schema)
                recorded = self._recorded_offsets(table)
                properties = {self.offsets_property: json.dumps({**recorded, **offsets})}
                data = arrow_table(rows, table.schema().as_arrow())
                table.append(data, snapshot_properties=properties)
                return
            except OperationalError as exc:  # the catalog database: locked, unreachable
                raise RetriableError(f"commit to {state.identifier}: {exc}") from exc
            except CommitFailedException as exc:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise RetriableError(f"commit to {state.identifier}: {exc}") from exc
                time.sleep(0.05 * (attempt + 1))
                table = state.table = self.catalog.load_table(state.identifier)

    def _evolve(self, table: Table, schema: ColumnSchema) -> None:
        have = {f.name for f in table.schema().fields}
        missing = [name for name in schema.columns if name not in have]
        if missing:
            with table.update_schema() as update:
                update.union_by_name(schema.arrow_schema(missing))

    def close(self, partitions: Collection[TopicPartition]) -> None:
        self.buffer.close(partitions)

    def stop(self) -> None:
        catalog = getattr(self, "catalog", None)
        if isinstance(catalog, SqlCatalog):
            catalog.engine.dispose()  # the catalog database's pooled connections


def existing_columns(schema: pa.Schema) -> dict[str, Kind]:
    columns: dict[str, Kind] = {}
    for f in schema:
        kind = kind_of_arrow(f.type)
        if f.name not in META_NAMES and kind is not None:
            columns[f.name] = kind
    return columns


def open_catalog(config: Any) -> Catalog:
    """The SQL catalog the ``catalog.*``, ``warehouse`` and ``s3.*`` keys describe."""
    warehouse = config.require("warehouse")
    properties: dict[str, str] = {}
    if warehouse.startswith("s3://"):
        for ours, theirs in (
            ("s3.endpoint", "s3.endpoint"),
            ("s3.region", "s3.region"),
            ("s3.access.key.id", "s3.access-key-id"),
            ("s3.secret.access.key", "s3.secret-access-key"),
        ):
            value = config.get(ours)
            if value:
                properties[theirs] = value
        location = warehouse
    elif "://" in warehouse and not warehouse.startswith("file://"):
        raise ConfigError(f"connector {config.name!r}: 'warehouse' must be a directory or s3://")
    else:
        local = Path(warehouse.removeprefix("file://")).expanduser().resolve()
        local.mkdir(parents=True, exist_ok=True)
        location = local.as_uri()
    uri = config.get("catalog.uri")
    if not uri:
        if warehouse.startswith("s3://"):
            raise ConfigError(f"connector {config.name!r}: an s3:// warehouse needs 'catalog.uri'")
        uri = f"sqlite:///{Path(location.removeprefix('file://')) / 'catalog.db'}"
    if uri.startswith(("postgresql://", "postgres://")):
        uri = "postgresql+psycopg://" + uri.split("://", 1)[1]
    name = config.get("catalog.name", "bayou") or "bayou"
    return SqlCatalog(name, uri=uri, warehouse=location, **properties)
