"""The columns the lake and OLAP sinks infer from JSON records (connect/sinks/rows.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from bayou.connect.api import RecordError, SinkRecord
from bayou.connect.sinks.rows import ColumnSchema, Kind, arrow_table


def rec(offset: int, value: object, key: object = None) -> SinkRecord:
    return SinkRecord("t", 0, offset, 1_000, key, value)


def test_types_from_the_first_batch_that_brings_a_field() -> None:
    schema = ColumnSchema()
    rows, added = schema.rows(
        [
            rec(0, {"i": 1, "f": 1, "s": "a", "b": True, "mixed": 1, "obj": {"x": [1]}}, "k"),
            rec(1, {"i": 2, "f": 2.5, "s": "b", "b": False, "mixed": "two", "obj": None}),
        ]
    )
    assert added == {
        "i": Kind.INT,
        "f": Kind.FLOAT,
        "s": Kind.STRING,
        "b": Kind.BOOL,
        "mixed": Kind.STRING,
        "obj": Kind.STRING,
        "_key": Kind.STRING,
    }
    assert rows[0][1] == {
        "i": 1,
        "f": 1.0,
        "s": "a",
        "b": True,
        "mixed": "1",
        "obj": '{"x":[1]}',
        "_key": "k",
    }
    table = arrow_table(rows, schema.arrow_schema())
    assert table.schema.field("f").type == pa.float64()
    assert table.column("_offset").to_pylist() == [0, 1]
    assert table.column("_timestamp").type == pa.timestamp("us", tz="UTC")


def test_later_values_convert_or_are_refused_without_changing_the_schema() -> None:
    schema = ColumnSchema({"n": Kind.INT, "x": Kind.FLOAT, "s": Kind.STRING})
    rows, _ = schema.rows([rec(0, {"n": 3.0, "x": 1, "s": [1, 2]})])
    assert rows[0][1] == {"n": 3, "x": 1.0, "s": "[1,2]"}
    bad = rec(2, {"n": "three", "brand_new": 1})
    with pytest.raises(RecordError) as refused:
        schema.rows([rec(1, {"n": 1, "other": "y"}), bad])
    assert refused.value.record is bad
    assert set(schema.columns) == {"n", "x", "s"}  # neither "other" nor "brand_new"
    with pytest.raises(RecordError):
        schema.rows([rec(3, {"n": 1.5})])
    with pytest.raises(RecordError):
        schema.rows([rec(4, {"n": True})])


def test_non_objects_tombstones_and_bytes() -> None:
    schema = ColumnSchema()
    rows, _ = schema.rows([rec(0, "plain"), rec(1, None), rec(2, "again", key=b"\x00k")])
    assert [(r.offset, row) for r, row in rows] == [
        (0, {"value": "plain", "_key": None}),
        (2, {"value": "again", "_key": b"\x00k"}),
    ]
    assert schema.columns == {"value": Kind.STRING, "_key": Kind.BINARY}
