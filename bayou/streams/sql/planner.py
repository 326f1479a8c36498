"""A view's SELECT compiled to a ``Pipeline`` of the engine's operators.

Theory of operation
-------------------
A query reads one topic, by name or through a windowing table function
(``FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(col), INTERVAL …))``, ``HOP``, ``CUMULATE``,
``SESSION``), and takes one of four shapes, each a fixed list of operators:

- projection: ``Filter`` (WHERE) → ``Map`` (the SELECT list); keyed by the record key;
- windowed aggregation (a table function and ``GROUP BY window_start, window_end, k…``):
  ``Filter`` → ``KeyBy`` (the other GROUP BY columns) → ``WindowAggregate`` or
  ``SessionAggregate``; one result per key and window when the watermark reaches its end;
- OVER aggregation (``AGG(x) OVER (PARTITION BY k ORDER BY t RANGE BETWEEN INTERVAL …
  PRECEDING AND CURRENT ROW)`` or ``ROWS BETWEEN n PRECEDING …``): ``Filter`` → ``KeyBy``
  → ``OverAggregate``; one result per record;
- unwindowed aggregation (``GROUP BY k…`` without a table function): ``Filter`` → ``KeyBy``
  → ``GroupAggregate``; each record emits its group's new results (an upsert stream).

Aggregate calls are found in the SELECT list and HAVING, deduplicated by their SQL text and
named ``a0``, ``a1``…; the SELECT list is then compiled in a scope where an aggregate call is
its result, a GROUP BY column its value and ``window_start``/``window_end`` the window's
bounds as ISO-8601 UTC strings with milliseconds.  The output record is a JSON object of the
SELECT columns, keyed by the group key (one column: its value; several: a JSON array).

Event time is the record timestamp (``_timestamp``) or the field the DESCRIPTOR (or the
OVER's ORDER BY) names: epoch milliseconds or an ISO-8601 string.  A record whose value is
not a JSON object, or whose event-time field is missing or unreadable, goes to the view's
dead-letter topic (``<view>-dlq``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from bayou.streams.aggregates import Aggregate
from bayou.streams.operators import (
    Filter,
    Finish,
    GroupAggregate,
    KeyBy,
    Map,
    Operator,
    OverAggregate,
    SessionAggregate,
    WindowAggregate,
)
from bayou.streams.pipeline import Pipeline, SourceRecord, json_sink
from bayou.streams.rows import Row, iso_ms
from bayou.streams.sql.errors import SqlError, at
from bayou.streams.sql.expressions import Fn, RowScope, Scope, compile_expr, truthy
from bayou.streams.windows import Window

WINDOW_COLUMNS = ("window_start", "window_end")
PIPELINE_NAME = "view"
_UNITS_MS = {
    "MILLISECOND": 1,
    "SECOND": 1000,
    "MINUTE": 60_000,
    "HOUR": 3_600_000,
    "DAY": 86_400_000,
}


@dataclass
class ViewPlan:
    """A compiled query: what ``DESCRIBE VIEW`` shows and how to build its pipeline."""

    name: str
    sql: str
    source: str
    shape: str  # "projection", "window", "over", "aggregate"
    columns: list[str]
    group_by: list[str]
    window: Window | None
    time_column: str
    startup: str  # "earliest" or "latest"
    build: Callable[[], list[Operator]] = field(repr=False)

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.name}-dlq"

    def pipeline(self) -> Pipeline:
        return Pipeline(
            PIPELINE_NAME,
            self.source,
            self.build,
            json_sink(self.name),
            decode=_decoder(self.time_column),
            dead_letter_topic=self.dead_letter_topic,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "shape": self.shape,
            "columns": self.columns,
            "key": self.group_by,
            "window": self.window.describe() if self.window is not None else None,
            "grace_ms": self.window.grace_ms if self.window is not None else 0,
            "event_time": self.time_column,
            "startup": self.startup,
            "dead_letter_topic": self.dead_letter_topic,
            "sql": self.sql,
        }


# ------------------------------------------------------------------ decoding


def _event_time(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not an event time: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return int(when.timestamp() * 1000)
    raise ValueError(f"not an event time: {value!r}")


def _decoder(time_column: str) -> Callable[[SourceRecord, str, int], Row]:
    def decode(record: SourceRecord, topic: str, partition: int) -> Row:
        if record.value is None:
            raise ValueError("a record without a value (a tombstone)")
        value = json.loads(record.value)
        if not isinstance(value, dict):
            raise ValueError(f"the value is not a JSON object but {type(value).__name__}")
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        ts = (
            record.timestamp if time_column == "_timestamp" else _event_time(value.get(time_column))
        )
        return Row(key, value, ts, topic, partition, record.offset, record.headers)

    return decode


# ------------------------------------------------------------------ helpers


def interval_ms(node: exp.Expr | None) -> int:
    """``INTERVAL '1' MINUTE`` (or ``INTERVAL '1 minute'``, or a number of ms) in ms."""
    if isinstance(node, exp.Literal) and not node.is_string:
        return int(float(node.this))
    if not isinstance(node, exp.Interval):
        raise at(node, "Expected an INTERVAL, e.g. INTERVAL '1' MINUTE")
    text = node.this.name if node.this is not None else ""
    unit = node.args.get("unit")
    unit_name = unit.name.upper() if unit is not None else ""
    if not unit_name:
        parts = text.split()
        if len(parts) != 2:
            raise at(node, f"Cannot read the interval {node.sql()!r}")
        text, unit_name = parts[0], parts[1].upper()
    unit_name = unit_name.rstrip("S") if unit_name.endswith("S") else unit_name
    factor = _UNITS_MS.get(unit_name)
    if factor is None:
        raise at(node, f"Unknown interval unit {unit_name}")
    try:
        amount = float(text)
    except ValueError:
        raise at(node, f"Cannot read the interval {node.sql()!r}") from None
    ms = int(amount * factor)
    if ms <= 0:
        raise at(node, "An interval must be positive")
    return ms


def _duration_option(text: str) -> int:
    """A view option's duration: ``5000`` (ms), ``5 s``, ``5 seconds``, ``1 minute``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None:
        raise SqlError(f"Cannot read the duration {text!r}")
    amount, unit = float(match[1]), match[2].upper()
    short = {"MS": "MILLISECOND", "S": "SECOND", "M": "MINUTE", "H": "HOUR", "D": "DAY"}
    unit = short.get(unit, unit.rstrip("S") if unit.endswith("S") else unit) or "MILLISECOND"
    if unit not in _UNITS_MS:
        raise SqlError(f"Unknown duration unit in {text!r}")
    return int(amount * _UNITS_MS[unit])


def _column_name(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
        return node.name
    return None


def output_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Alias):
        return node.alias
    name = _column_name(node)
    if name is not None:
        return name
    return node.sql(dialect="postgres")


_AGG_TYPES: dict[type[exp.Expr], str] = {
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.StddevPop: "stddev",
    exp.StddevSamp: "stddev",
    exp.Stddev: "stddev",
    exp.FirstValue: "first",
    exp.LastValue: "last",
    exp.ApproxDistinct: "count_distinct",
}
_AGG_NAMES = {
    "PERCENTILE_APPROX": "percentile",
    "APPROX_PERCENTILE": "percentile",
    "TOP_K": "top_k",
    "COUNT_DISTINCT": "count_distinct",
    "FIRST_VALUE": "first",
    "LAST_VALUE": "last",
}


def is_aggregate(node: exp.Expr) -> bool:
    if isinstance(node, exp.Count) or type(node) in _AGG_TYPES:
        return True
    return isinstance(node, exp.Anonymous) and str(node.this).upper() in _AGG_NAMES


def _aggregate(node: exp.Expr, name: str, scope: Scope) -> Aggregate:
    """One aggregate call as an engine ``Aggregate`` reading ``scope``'s rows."""
    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Star) or arg is None:
            return Aggregate(name, None, "count")
        if isinstance(arg, exp.Distinct):
            [inner] = arg.expressions
            return Aggregate(name, compile_expr(inner, scope), "count_distinct")
        return Aggregate(name, compile_expr(arg, scope), "count")
    kind = _AGG_TYPES.get(type(node))
    if kind is not None:
        arg = node.this
        if isinstance(arg, exp.Distinct):
            raise at(node, f"DISTINCT is only supported in COUNT, not {node.key.upper()}")
        mode = None
        if kind == "stddev":
            mode = "pop" if isinstance(node, exp.StddevPop) else "samp"
        return Aggregate(name, compile_expr(arg, scope), kind, mode)
    assert isinstance(node, exp.Anonymous)
    fname = str(node.this).upper()
    kind = _AGG_NAMES[fname]
    args = list(node.expressions)
    if kind in ("percentile", "top_k"):
        if len(args) != 2 or not isinstance(args[1], exp.Literal) or args[1].is_string:
            raise at(node, f"{fname} takes a column and a number")
        number = float(args[1].this)
        if kind == "percentile" and not 0.0 <= number <= 1.0:
            raise at(args[1], "A percentile is between 0 and 1")
        if kind == "top_k" and (number < 1 or number != int(number)):
            raise at(args[1], "TOP_K needs a whole number k >= 1")
        param: Any = number if kind == "percentile" else int(number)
        return Aggregate(name, compile_expr(args[0], scope), kind, param)
    if len(args) != 1:
        raise at(node, f"{fname} takes one argument")
    return Aggregate(name, compile_expr(args[0], scope), kind)


# ------------------------------------------------------------------ scopes after aggregation


class Result:
    """What the SELECT list of an aggregation sees: the group's values, the window, the
    aggregate results, and (OVER) the current row."""

    __slots__ = ("end", "group", "results", "row", "start")

    def __init__(
        self, group: Any, start: int | None, end: int | None, results: list[Any], row: Row | None
    ) -> None:
        self.group = group
        self.start = start
        self.end = end
        self.results = results
        self.row = row


class ResultScope(Scope):
    def __init__(
        self,
        aggs: dict[str, int],
        group: list[str],
        rows: RowScope | None,
        windowed: bool,
    ) -> None:
        self.aggs = aggs
        self.group = group
        self.rows = rows
        self.windowed = windowed

    def resolve(self, node: exp.Expr) -> Fn | None:
        if is_aggregate(node):
            index = self.aggs[node.sql()]
            return lambda x: x.results[index]
        if isinstance(node, exp.Window):
            index = self.aggs[node.this.sql()]
            return lambda x: x.results[index]
        return None

    def column(self, node: exp.Column) -> Fn:
        name = node.name
        if self.windowed and name == "window_start":
            return lambda x: None if x.start is None else iso_ms(x.start)
        if self.windowed and name == "window_end":
            return lambda x: None if x.end is None else iso_ms(x.end)
        if name in self.group:
            index = self.group.index(name)
            if len(self.group) == 1:
                return lambda x: x.group
            return lambda x: x.group[index] if isinstance(x.group, tuple) else None
        if self.rows is not None:
            inner = self.rows.column(node)
            return lambda x: inner(x.row) if x.row is not None else None
        raise at(node, f"Column '{name}' must be in GROUP BY or inside an aggregate")


# ------------------------------------------------------------------ the planner


@dataclass
class _Source:
    topic: str
    tvf: str | None = None
    time_column: str = "_timestamp"
    window: Window | None = None
    partition_by: list[exp.Expr] = field(default_factory=list)
    grace_ms: int = 0


def _source(from_: exp.Expr | None, grace_ms: int) -> _Source:
    if from_ is None:
        raise SqlError("A view needs FROM <topic>")
    table = from_.this
    if isinstance(table, exp.Table) and isinstance(table.this, exp.Identifier):
        return _Source(table.name, grace_ms=grace_ms)
    call = table.this if isinstance(table, exp.Table) else None
    if (
        isinstance(call, exp.Anonymous)
        and str(call.this).upper() == "TABLE"
        and len(call.expressions) == 1
        and isinstance(call.expressions[0], exp.Anonymous)
    ):
        tvf = call.expressions[0]
        return _window_tvf(tvf, grace_ms)
    raise at(table, "FROM takes a topic or TABLE(TUMBLE|HOP|CUMULATE|SESSION(…))")


def _window_tvf(tvf: exp.Anonymous, grace_ms: int) -> _Source:
    name = str(tvf.this).upper()
    args = list(tvf.expressions)
    if not args or not isinstance(args[0], exp.Table):
        raise at(tvf, f"{name} takes TABLE <topic> first")
    src = _Source(args[0].name, name, grace_ms=grace_ms)
    rest = args[1:]
    if rest and isinstance(rest[0], exp.Anonymous) and str(rest[0].this).upper() == "PARTITION":
        if name != "SESSION":
            raise at(rest[0], f"PARTITION BY belongs to SESSION, not {name}")
        src.partition_by = list(rest[0].expressions)
        rest = rest[1:]
    if not rest or not (
        isinstance(rest[0], exp.Anonymous) and str(rest[0].this).upper() == "DESCRIPTOR"
    ):
        raise at(tvf, f"{name} takes DESCRIPTOR(<time column>) after the table")
    descriptor = rest[0]
    if len(descriptor.expressions) != 1 or _column_name(descriptor.expressions[0]) is None:
        raise at(descriptor, "DESCRIPTOR names one time column")
    src.time_column = _column_name(descriptor.expressions[0]) or "_timestamp"
    sizes = [interval_ms(a) for a in rest[1:]]
    expected = {"TUMBLE": (1, 2), "HOP": (2, 3), "CUMULATE": (2, 3), "SESSION": (1, 1)}[name]
    if not expected[0] <= len(sizes) <= expected[1]:
        raise at(tvf, f"{name} takes {expected[0]} to {expected[1]} intervals")
    if name == "TUMBLE":
        src.window = Window(
            "tumble", sizes[0], grace_ms=grace_ms, offset_ms=sizes[1] if len(sizes) > 1 else 0
        )
    elif name == "HOP":  # HOP(data, timecol, slide, size [, offset])
        slide, size = sizes[0], sizes[1]
        if size % slide:
            raise at(tvf, "HOP's size must be a multiple of its slide")
        src.window = Window(
            "hop", size, slide, grace_ms, offset_ms=sizes[2] if len(sizes) > 2 else 0
        )
    elif name == "CUMULATE":  # CUMULATE(data, timecol, step, size [, offset])
        step, size = sizes[0], sizes[1]
        if size % step:
            raise at(tvf, "CUMULATE's size must be a multiple of its step")
        src.window = Window(
            "cumulate", size, step, grace_ms, offset_ms=sizes[2] if len(sizes) > 2 else 0
        )
    else:
        src.window = Window("session", 0, sizes[0], grace_ms)
    return src


def _options(create: exp.Create | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if create is None:
        return out
    props = create.args.get("properties")
    for prop in props.expressions if props is not None else []:
        if isinstance(prop, exp.Property):
            key = prop.this.name if isinstance(prop.this, exp.Expr) else str(prop.this)
            value = prop.args.get("value")
            out[key.lower()] = value.name if isinstance(value, exp.Expr) else str(value)
    return out


KNOWN_OPTIONS = ("scan.startup.mode", "grace")


def plan_view(name: str, select: exp.Expr, sql: str, options: dict[str, str]) -> ViewPlan:
    """Compile a view's query (see the module docstring); raises ``SqlError``."""
    if not isinstance(select, exp.Select):
        raise at(select, "A view is one SELECT (no UNION, no VALUES)")
    for key in options:
        if key not in KNOWN_OPTIONS:
            raise SqlError(f"Unknown view option {key!r} (known: {', '.join(KNOWN_OPTIONS)})")
    mode = options.get("scan.startup.mode", "earliest-offset")
    if mode not in ("earliest-offset", "latest-offset"):
        raise SqlError("'scan.startup.mode' is 'earliest-offset' or 'latest-offset'")
    startup = "latest" if mode == "latest-offset" else "earliest"
    grace_ms = _duration_option(options["grace"]) if "grace" in options else 0
    for unsupported in ("joins", "order", "limit", "distinct", "with_", "laterals"):
        node = select.args.get(unsupported)
        if node:
            first = node[0] if isinstance(node, list) else node
            raise at(first, f"{unsupported.rstrip('_').upper()} is not supported in a view yet")
    src = _source(select.args.get("from_"), grace_ms)
    rows = RowScope({src.topic})
    where = select.args.get("where")
    ops: list[Callable[[], Operator]] = []
    if where is not None:
        if any(_column_name(c) in WINDOW_COLUMNS for c in where.find_all(exp.Column)):
            raise at(where, "WHERE runs before windowing: window_start/window_end belong in HAVING")
        if any(is_aggregate(n) for n in where.walk() if isinstance(n, exp.Expr)):
            raise at(where, "Aggregates belong in HAVING, not WHERE")
        cond = truthy(compile_expr(where.this, rows))
        ops.append(lambda: Filter(cond))

    items = list(select.expressions)
    overs = [w for item in items for w in item.find_all(exp.Window)]
    group = select.args.get("group")
    having = select.args.get("having")
    aggs_found = [
        n
        for item in [*items, *([having.this] if having is not None else [])]
        for n in item.walk()
        if isinstance(n, exp.Expr) and is_aggregate(n) and not isinstance(n.parent, exp.Window)
    ]

    if overs:
        named = {w.this.name: w for w in select.args.get("windows") or []}
        return _plan_over(
            name, sql, src, rows, ops, items, overs, named, aggs_found, group, startup
        )
    if src.window is not None:
        return _plan_window(name, sql, src, rows, ops, items, group, having, startup)
    if group is not None or aggs_found:
        return _plan_group(name, sql, src, rows, ops, items, group, having, startup)
    if having is not None:
        raise at(having, "HAVING needs an aggregation")
    return _plan_projection(name, sql, src, rows, ops, items, startup)


def _collect_aggs(nodes: list[exp.Expr], rows: RowScope) -> tuple[list[Aggregate], dict[str, int]]:
    aggs: list[Aggregate] = []
    index: dict[str, int] = {}
    for node in nodes:
        text = node.sql()
        if text in index:
            continue
        index[text] = len(aggs)
        aggs.append(_aggregate(node, f"a{len(aggs)}", rows))
    return aggs, index


def _select_list(items: list[exp.Expr], scope: Scope) -> tuple[list[str], list[Fn]]:
    names: list[str] = []
    fns: list[Fn] = []
    for item in items:
        if isinstance(item, exp.Star):
            raise at(item, "SELECT * cannot be used with an aggregation: name the columns")
        names.append(output_name(item))
        fns.append(compile_expr(item, scope))
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise at(items[names.index(dup)], f"Two columns are named {dup!r}: give one an alias")
    return names, fns


def _key_fn(keys: list[exp.Expr], rows: RowScope) -> Callable[[Row], Any]:
    fns = [compile_expr(k, rows) for k in keys]
    if len(fns) == 1:
        only = fns[0]
        return lambda row: only(row)
    return lambda row: tuple(f(row) for f in fns)


def _finish(names: list[str], fns: list[Fn], having: Callable[[Any], bool] | None) -> Finish:
    pairs = list(zip(names, fns, strict=True))

    def finish(
        key: Any, start: int | None, end: int | None, results: list[Any], row: Row | None
    ) -> Any:
        result = Result(key, start, end, results, row)
        if having is not None and not having(result):
            return None
        return {name: fn(result) for name, fn in pairs}

    return finish


def _group_columns(group: exp.Expr | None, windowed: bool) -> tuple[list[str], list[exp.Expr]]:
    names: list[str] = []
    keys: list[exp.Expr] = []
    seen_window: set[str] = set()
    for node in group.expressions if group is not None else []:
        name = _column_name(node)
        if name is None:
            raise at(node, "GROUP BY takes columns")
        if windowed and name in WINDOW_COLUMNS:
            seen_window.add(name)
            continue
        names.append(name)
        keys.append(node)
    if windowed and seen_window != set(WINDOW_COLUMNS):
        raise at(
            group,
            "A windowed aggregation groups by window_start and window_end (and its keys)",
        )
    return names, keys


def _plan_window(
    name: str,
    sql: str,
    src: _Source,
    rows: RowScope,
    ops: list[Callable[[], Operator]],
    items: list[exp.Expr],
    group: exp.Expr | None,
    having: exp.Expr | None,
    startup: str,
) -> ViewPlan:
    window = src.window
    assert window is not None
    if group is None:
        raise at(items[0], "A windowing table function needs GROUP BY window_start, window_end")
    group_names, keys = _group_columns(group, True)
    if src.tvf == "SESSION":
        partition = [_column_name(p) for p in src.partition_by]
        if sorted(n for n in partition if n) != sorted(group_names):
            raise at(group, "SESSION groups by its PARTITION BY columns")
    nodes = [
        n
        for item in [*items, *([having.this] if having is not None else [])]
        for n in item.walk()
        if isinstance(n, exp.Expr) and is_aggregate(n)
    ]
    aggs, index = _collect_aggs(nodes, rows)
    scope = ResultScope(index, group_names, None, True)
    names, fns = _select_list(items, scope)
    cond = truthy(compile_expr(having.this, scope)) if having is not None else None
    finish = _finish(names, fns, cond)
    key = _key_fn(keys, rows) if keys else (lambda _row: None)
    ops.append(lambda: KeyBy(key))
    if window.kind == "session":
        ops.append(lambda: SessionAggregate(window, aggs, finish))
    else:
        ops.append(lambda: WindowAggregate(window, aggs, finish))
    factories = list(ops)
    return ViewPlan(
        name,
        sql,
        src.topic,
        "window",
        names,
        group_names,
        window,
        src.time_column,
        startup,
        lambda: [f() for f in factories],
    )


def _plan_group(
    name: str,
    sql: str,
    src: _Source,
    rows: RowScope,
    ops: list[Callable[[], Operator]],
    items: list[exp.Expr],
    group: exp.Expr | None,
    having: exp.Expr | None,
    startup: str,
) -> ViewPlan:
    group_names, keys = _group_columns(group, False)
    nodes = [
        n
        for item in [*items, *([having.this] if having is not None else [])]
        for n in item.walk()
        if isinstance(n, exp.Expr) and is_aggregate(n)
    ]
    aggs, index = _collect_aggs(nodes, rows)
    scope = ResultScope(index, group_names, None, False)
    names, fns = _select_list(items, scope)
    cond = truthy(compile_expr(having.this, scope)) if having is not None else None
    finish = _finish(names, fns, cond)
    key = _key_fn(keys, rows) if keys else (lambda _row: None)
    ops.append(lambda: KeyBy(key))
    ops.append(lambda: GroupAggregate(aggs, finish))
    factories = list(ops)
    return ViewPlan(
        name,
        sql,
        src.topic,
        "aggregate",
        names,
        group_names,
        None,
        src.time_column,
        startup,
        lambda: [f() for f in factories],
    )


def _over_window(over: exp.Window, grace_ms: int) -> tuple[Window, list[exp.Expr], str]:
    order = over.args.get("order")
    if order is None or len(order.expressions) != 1:
        raise at(over, "An OVER window needs ORDER BY <time column>")
    time_column = _column_name(order.expressions[0].this)
    if time_column is None:
        raise at(order, "An OVER window is ordered by a time column")
    spec = over.args.get("spec")
    if spec is None:
        raise at(over, "An OVER window needs RANGE|ROWS BETWEEN … PRECEDING AND CURRENT ROW")
    end = spec.args.get("end")
    if str(end).upper() != "CURRENT ROW":
        raise at(spec, "An OVER window ends at CURRENT ROW")
    start = spec.args.get("start")
    if spec.args.get("start_side", "").upper() != "PRECEDING" or start is None:
        raise at(spec, "An OVER window starts at … PRECEDING")
    kind = str(spec.args.get("kind", "")).upper()
    if kind == "RANGE":
        if isinstance(start, str) and start.upper() == "UNBOUNDED":
            raise at(spec, "UNBOUNDED PRECEDING is not supported: give the range an INTERVAL")
        window = Window("sliding", interval_ms(start), grace_ms=grace_ms)
    elif kind == "ROWS":
        if not isinstance(start, exp.Literal) or start.is_string:
            raise at(spec, "ROWS BETWEEN <n> PRECEDING AND CURRENT ROW")
        window = Window("rows", 1, grace_ms=grace_ms, rows=int(start.this))
    else:
        raise at(spec, "An OVER window is RANGE or ROWS")
    return window, list(over.args.get("partition_by") or []), time_column


def _plan_over(
    name: str,
    sql: str,
    src: _Source,
    rows: RowScope,
    ops: list[Callable[[], Operator]],
    items: list[exp.Expr],
    overs: list[exp.Window],
    named: dict[str, exp.Window],
    aggs_found: list[exp.Expr],
    group: exp.Expr | None,
    startup: str,
) -> ViewPlan:
    if src.window is not None:
        raise at(overs[0], "OVER windows read a topic, not a windowing table function")
    if group is not None:
        raise at(group, "OVER aggregates and GROUP BY do not mix")
    if aggs_found:
        raise at(aggs_found[0], "Every aggregate of an OVER query needs the OVER clause")
    specs = []
    for over in overs:
        alias = over.args.get("alias")
        if alias is not None and over.args.get("spec") is None:
            found = named.get(alias.name)
            if found is None:
                raise at(over, f"No window named {alias.name!r} (WINDOW {alias.name} AS (…))")
            specs.append(found)
        else:
            specs.append(over)
    shapes = {
        (
            o.args.get("partition_by") and tuple(p.sql() for p in o.args["partition_by"]),
            o.args.get("order") and o.args["order"].sql(),
            o.args.get("spec") and o.args["spec"].sql(),
        )
        for o in specs
    }
    if len(shapes) != 1:
        raise at(overs[1], "Every OVER clause of a query must be the same window")
    window, partition_by, time_column = _over_window(specs[0], src.grace_ms)
    for over in overs:
        if not is_aggregate(over.this):
            raise at(over, f"{over.this.sql()} is not an aggregate function")
    aggs, index = _collect_aggs([o.this for o in overs], rows)
    group_names = [n for n in (_column_name(p) for p in partition_by) if n is not None]
    scope = ResultScope(index, [], rows, False)
    names, fns = _select_list(items, scope)
    finish = _finish(names, fns, None)
    key = _key_fn(partition_by, rows) if partition_by else (lambda _row: None)
    ops.append(lambda: KeyBy(key))
    ops.append(lambda: OverAggregate(window, aggs, finish))
    factories = list(ops)
    return ViewPlan(
        name,
        sql,
        src.topic,
        "over",
        names,
        group_names,
        window,
        time_column,
        startup,
        lambda: [f() for f in factories],
    )


def _plan_projection(
    name: str,
    sql: str,
    src: _Source,
    rows: RowScope,
    ops: list[Callable[[], Operator]],
    items: list[exp.Expr],
    startup: str,
) -> ViewPlan:
    if len(items) == 1 and isinstance(items[0], exp.Star):
        names: list[str] = ["*"]
    else:
        names, fns = _select_list(items, rows)
        pairs = list(zip(names, fns, strict=True))
        ops.append(lambda: Map(lambda row: {n: f(row) for n, f in pairs}))
    factories = list(ops)
    return ViewPlan(
        name,
        sql,
        src.topic,
        "projection",
        names,
        ["_key"],
        None,
        src.time_column,
        startup,
        lambda: [f() for f in factories],
    )
