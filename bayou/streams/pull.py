"""Pull queries on aggregating views, answered from the view's state.

Theory of operation
-------------------
A pull query (``SELECT … FROM avg_temp WHERE device = 'x'``) asks for a view's current
results, as ksqlDB's pull queries on a materialized table.  For a view that aggregates
(windowed or not) the answer is in its aggregation operator's state: per group key (and
window) the accumulators, whose result so far is the current value, and for windowed views
the final results of the windows closed within the view's retention (``Finals``).  Each
``Current`` becomes a row of the view's output columns; a windowed view's rows carry
``_final`` (false: the window is still open and its value may change).

Where the state is:

- **here** — the view runs in this process (inside ``bayou serve``): the query is handed to
  the view's runner thread (``ExternalRunner.ask``), which reads its tasks' operators
  between two batches of records; nothing is copied but the matching rows.
- **elsewhere** — the view runs in ``bayou streams views`` workers, on another broker, or the
  question comes from ``bayou sql`` (a client): the state is read from the view's changelog
  topic (compacted: the latest accumulators per key and window, and the kept finals), only
  the matching keys restored into a scratch task.  The changelog is what the runner
  committed (every 0.2 s by default), so this answer can be that much behind the first.

A key lookup (every group column equal to a literal, or ``_key`` equal to one) reads one
partition: the view's aggregation runs on ``<view>-repartition``, whose records the runner's
producer places by librdkafka's ``consistent_random`` partitioner (CRC-32 of the key bytes,
modulo the partition count), so the key's partition is known.  A view aggregating its
source's own partitions (grouped by the record key, or a one-partition source) cannot know
how its source's producers placed the key: every partition's state is searched.  Without a
key lookup every key is read.  The WHERE clause, the projection and LIMIT then apply to the
rows as before.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from bayou.streams.operators import ANY_KEY, Current, EventClock, Finals, Operator, _Keyed
from bayou.streams.pipeline import Pipeline, Task
from bayou.streams.rows import Row, hashable, key_bytes
from bayou.streams.sql.planner import ViewPlan

FINAL_COLUMN = "_final"
AGGREGATING_SHAPES = ("window", "aggregate")


@dataclass(frozen=True)
class Lookup:
    """What a pull query's WHERE says of the group key: ``key`` (the group key, or
    ``ANY_KEY``) and ``key_bytes`` (the output record key, when known: it routes)."""

    key: Any
    key_bytes: bytes | None

    def partitions(self, count: int, repartitioned: bool) -> list[int]:
        """The partitions of the aggregation's state that may hold the key."""
        if self.key_bytes is None or not repartitioned or count <= 0:
            return list(range(count))
        return [zlib.crc32(self.key_bytes) % count]


def lookup_of(where: exp.Expr | None, plan: ViewPlan) -> Lookup:
    """The key lookup in ``where``'s conjuncts: every group column (an output column that is
    the group column as it is) equal to a literal, or ``_key`` equal to a string."""
    if where is None:
        return Lookup(ANY_KEY, None)
    found: dict[int, Any] = {}
    record_key: bytes | None = None
    for node in _conjuncts(where.this):
        if not isinstance(node, exp.EQ):
            continue
        for column, other in ((node.this, node.expression), (node.expression, node.this)):
            if not isinstance(column, exp.Column) or not isinstance(column.this, exp.Identifier):
                continue
            known, value = _literal(other)
            if not known:
                continue
            if column.name == "_key" and isinstance(value, str):
                record_key = value.encode()
            elif column.name in plan.key_columns:
                found[plan.key_columns[column.name]] = value
    width = len(plan.group_by)
    if width and len(found) == width:
        key = found[0] if width == 1 else tuple(found[i] for i in range(width))
        key = hashable(key)
        return Lookup(key, key_bytes(key))
    return Lookup(ANY_KEY, record_key)


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    return [node]


def _literal(node: exp.Expr) -> tuple[bool, Any]:
    if isinstance(node, exp.Literal):
        if node.is_string:
            return True, node.this
        number = float(node.this)
        return True, int(number) if number.is_integer() and "." not in node.this else number
    if isinstance(node, exp.Boolean):
        return True, bool(node.this)
    return False, None


def aggregation(task: Task) -> _Keyed | None:
    """The operator of ``task`` holding a view's results (the last with ``current``)."""
    for op in reversed(task.ops):
        if isinstance(op, _Keyed) and hasattr(op, "current"):
            return op
    return None


PulledRow = tuple[tuple[str, int, int], Row]  # (key text, window start, end), the row


def task_rows(task: Task, lookup: Lookup, view: str) -> list[PulledRow]:
    """The current rows of ``task``'s aggregation that ``lookup`` may want."""
    op = aggregation(task)
    if op is None:
        return []
    currents: list[Current] = op.current(lookup.key)  # type: ignore[attr-defined]
    rows: list[PulledRow] = []
    for group, start, end, value, final in currents:
        record_key = key_bytes(group)
        if lookup.key_bytes is not None and record_key != lookup.key_bytes:
            continue
        if final is not None and isinstance(value, dict):
            value = {**value, FINAL_COLUMN: final}
        text = record_key.decode("utf-8", "replace") if record_key is not None else None
        row = Row(text, value, (end - 1) if end is not None else 0, view, task.partition)
        rows.append(((text or "", start or 0, end or 0), row))
    return rows


def ordered(rows: Iterable[PulledRow]) -> list[Row]:
    """Rows by key, then window."""
    return [row for _order, row in sorted(rows, key=lambda r: r[0])]


class ScratchTask:
    """A task of ``pipeline`` over one partition, restored from its changelog records that
    ``lookup`` may want (the view runs elsewhere)."""

    def __init__(self, pipeline: Pipeline, partition: int, lookup: Lookup) -> None:
        self.task = Task(pipeline, partition, EventClock())
        self.lookup = lookup
        self.op: Operator | None = aggregation(self.task)

    def restore(self, key: bytes, value: bytes | None) -> None:
        op = self.op
        if op is None or not key.startswith(op.ns):
            return
        if self.lookup.key is not ANY_KEY and self._group(op, key) != self.lookup.key:
            return
        self.task.restore(key, value)

    @staticmethod
    def _group(op: Operator, key: bytes) -> Any:
        assert isinstance(op, _Keyed)
        try:
            if Finals.is_final_key(op.ns, key):
                return Finals.group_of_key(op.ns, key)
            return op.group_of(op.decode_key(key))
        except (ValueError, IndexError, TypeError):
            return None
