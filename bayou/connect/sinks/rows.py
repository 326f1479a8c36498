"""From sink records to Arrow tables: the columns the lake and OLAP sinks infer from JSON.

Theory of operation
-------------------
A record's value becomes one row.  A JSON object's top-level fields are columns of the same
name; any other value (a JSON scalar or array, a ``string`` or ``bytes`` converter's value)
is the single column ``value``.  Every row also carries where it came from:
``_topic``, ``_partition``, ``_offset``, ``_timestamp`` (UTC, microseconds) and ``_key``
(typed like any field), so a reader can check and deduplicate by coordinates.  A tombstone
(``value`` null) writes no row: these sinks append, they do not delete.

A column's type is fixed when it first appears, from the values of the batch that brings
it: booleans → ``bool``, integers → ``int64``, numbers with a fraction (or integers mixed
with them) → ``float64``, strings → ``string``, bytes → ``binary``, and objects, arrays or
mixed types → ``string`` holding the JSON text.  Later values are converted to the column's
type where nothing is lost (an integer into a ``float64`` column, a whole float into an
``int64`` one, anything into a ``string`` column as JSON text); a value that does not fit
(a string into an ``int64`` column) makes the record a ``RecordError``, which the runtime
fails the task with or, under ``errors.tolerance=all``, sends to the dead-letter topic.
``ColumnSchema.rows`` checks a whole batch before it changes anything, so a refused record
leaves the sink as it was.  New fields add columns: each sink says how its target learns
them (a Parquet file holds the columns known when it is written; Iceberg evolves the table
schema; DuckDB alters the table).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import pyarrow as pa

from bayou.connect.api import RecordError, SinkRecord


class Kind(StrEnum):
    BOOL = "bool"
    INT = "int64"
    FLOAT = "float64"
    STRING = "string"
    BINARY = "binary"


ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.BOOL: pa.bool_(),
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.STRING: pa.string(),
    Kind.BINARY: pa.binary(),
}

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
META_FIELDS: tuple[pa.Field, ...] = (
    pa.field("_topic", pa.string()),
    pa.field("_partition", pa.int32()),
    pa.field("_offset", pa.int64()),
    pa.field("_timestamp", TIMESTAMP_TYPE),
)
META_NAMES = frozenset(f.name for f in META_FIELDS)
KEY_COLUMN = "_key"
VALUE_COLUMN = "value"


def kind_of_arrow(data_type: pa.DataType) -> Kind | None:
    """The kind a target's existing column has (``None``: a type these sinks never write)."""
    if pa.types.is_boolean(data_type):
        return Kind.BOOL
    if pa.types.is_integer(data_type):
        return Kind.INT
    if pa.types.is_floating(data_type):
        return Kind.FLOAT
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return Kind.STRING
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return Kind.BINARY
    return None


def kind_of(value: Any) -> Kind | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return Kind.BOOL
    if isinstance(value, int):
        return Kind.INT
    if isinstance(value, float):
        return Kind.FLOAT
    if isinstance(value, str):
        return Kind.STRING
    if isinstance(value, bytes | bytearray | memoryview):
        return Kind.BINARY
    return Kind.STRING  # objects and arrays: JSON text


def unify(a: Kind | None, b: Kind | None) -> Kind | None:
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} == {Kind.INT, Kind.FLOAT}:
        return Kind.FLOAT
    return Kind.STRING


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


def convert(value: Any, kind: Kind) -> Any:
    """``value`` as a column of ``kind`` holds it; ``ValueError`` when it does not fit."""
    if value is None:
        return None
    if kind is Kind.STRING:
        if isinstance(value, str):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(bytes(value)).decode("ascii")
        return json.dumps(value, separators=(",", ":"), default=_json_default)
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
    elif kind is Kind.INT:
        if isinstance(value, int) and not isinstance(value, bool):
            if -(2**63) <= value < 2**63:
                return value
        elif isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is Kind.FLOAT:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is Kind.BINARY:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        if isinstance(value, str):
            return value.encode()
    raise ValueError(f"{value!r} does not fit a {kind} column")


def value_fields(record: SinkRecord) -> dict[str, Any] | None:
    """The columns of the record's value; ``None`` for a tombstone."""
    value = record.value
    if value is None:
        return None
    if isinstance(value, dict):
        if META_NAMES.isdisjoint(value):
            return value
        return {str(k): v for k, v in value.items() if str(k) not in META_NAMES}
    return {VALUE_COLUMN: value}


# the Python type a column of each kind takes as it is (the fast path of ``rows``)
NATIVE: dict[Kind, type] = {
    Kind.BOOL: bool,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.STRING: str,
    Kind.BINARY: bytes,
}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ColumnSchema:
    """The data columns (name → kind, in order of appearance) a sink writes."""

    def __init__(self, columns: Mapping[str, Kind] | None = None) -> None:
        self.columns: dict[str, Kind] = dict(columns or {})

    def rows(
        self, records: Sequence[SinkRecord]
    ) -> tuple[list[tuple[SinkRecord, dict[str, Any]]], dict[str, Kind]]:
        """Each record with a row (tombstones left out) and the columns this batch adds.
        Raises ``RecordError`` for the first record that does not fit, changing nothing."""
        known = self.columns
        fielded: list[tuple[SinkRecord, dict[str, Any]]] = []
        added: dict[str, Kind | None] = {}
        for record in records:
            values = value_fields(record)
            if values is None:
                continue
            fielded.append((record, values))
            new = values.keys() - known.keys()
            for name in new:
                added[name] = unify(added.get(name), kind_of(values[name]))
            if KEY_COLUMN not in known:
                added[KEY_COLUMN] = unify(added.get(KEY_COLUMN), kind_of(record.key))
        new_columns = {name: kind for name, kind in added.items() if kind is not None}
        columns = {**known, **new_columns} if new_columns else known
        out: list[tuple[SinkRecord, dict[str, Any]]] = []
        natives = {name: NATIVE[kind] for name, kind in columns.items()}
        key_native = natives.get(KEY_COLUMN)
        for record, values in fielded:
            row: dict[str, Any] = {}
            for name, value in values.items():
                native = natives.get(name)
                if native is None:  # only nulls so far: no column yet
                    continue
                # the common cases, without a call: null, a value of the column's type
                if (
                    value is None
                    or (type(value) is native and native is not int)
                    or (native is int and type(value) is int and INT64_MIN <= value <= INT64_MAX)
                ):
                    row[name] = value
                else:
                    row[name] = _fit(record, name, value, columns[name])
            if key_native is not None:
                key = record.key
                if key is None or (type(key) is key_native and key_native is not int):
                    row[KEY_COLUMN] = key
                else:
                    row[KEY_COLUMN] = _fit(record, KEY_COLUMN, key, columns[KEY_COLUMN])
            out.append((record, row))
        self.columns = columns
        return out, new_columns

    def arrow_schema(self, columns: Iterable[str] | None = None) -> pa.Schema:
        names = self.columns if columns is None else columns
        return pa.schema(
            [*META_FIELDS, *(pa.field(n, ARROW_TYPES[self.columns[n]]) for n in names)]
        )


def _fit(record: SinkRecord, name: str, value: Any, kind: Kind) -> Any:
    if value is None:
        return None
    if kind is Kind.INT:
        if type(value) is int and INT64_MIN <= value <= INT64_MAX:
            return value
    elif type(value) is NATIVE[kind]:
        return value
    try:
        return convert(value, kind)
    except ValueError as exc:
        raise RecordError(f"field {name!r}: {exc}", record) from None


def arrow_table(
    rows: Sequence[tuple[SinkRecord, Mapping[str, Any]]], schema: pa.Schema
) -> pa.Table:
    """The rows as a table of ``schema`` (absent fields are null; the coordinate columns
    take the types ``schema`` gives them, a target's own)."""
    records = [record for record, _ in rows]
    meta: dict[str, list[Any]] = {
        "_topic": [r.topic for r in records],
        "_partition": [r.partition for r in records],
        "_offset": [r.offset for r in records],
        "_timestamp": [r.timestamp_ms * 1000 for r in records],
    }
    data_schema = pa.schema([f for f in schema if f.name not in META_NAMES])
    data = pa.Table.from_pylist([row for _, row in rows], schema=data_schema)
    arrays = [
        pa.array(meta[f.name], f.type) if f.name in META_NAMES else data.column(f.name)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def estimated_bytes(row: Mapping[str, Any]) -> int:
    """A cheap size estimate of a buffered row, for ``flush.bytes``."""
    size = 48
    for value in row.values():
        size += len(value) if isinstance(value, str | bytes) else 8
    return size


def estimated_batch_bytes(rows: Sequence[tuple[SinkRecord, Mapping[str, Any]]]) -> int:
    """``estimated_bytes`` of a batch from a sample of at most 16 of its rows."""
    if not rows:
        return 0
    step = max(1, len(rows) // 16)
    sample = [estimated_bytes(rows[i][1]) for i in range(0, len(rows), step)]
    return sum(sample) * len(rows) // len(sample)
