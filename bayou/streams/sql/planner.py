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
    IntervalJoin,
    KeyBy,
    Map,
    Operator,
    OverAggregate,
    SessionAggregate,
    TableJoin,
    WindowAggregate,
)
from bayou.streams.pipeline import (
    Pipeline,
    SourceRecord,
    decode_repartitioned,
    json_sink,
    repartition_sink,
)
from bayou.streams.rows import Row, dumps, iso_ms
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


Factory = Callable[[], Operator]


@dataclass
class StreamJoin:
    """A windowed stream-stream join: the other stream, its time column and the two sides'
    join keys; ``build`` makes the ``IntervalJoin``."""

    topic: str
    alias: str
    time_column: str
    left_key: Callable[[Row], Any]
    right_key: Callable[[Row], Any]
    build: Factory
    describe: dict[str, Any]


@dataclass
class ViewPlan:
    """A compiled query: what ``DESCRIBE VIEW`` shows and how to build its pipelines.

    The operators are ``pre`` (before the key: WHERE, a stream-table join, a projection),
    ``KeyBy(key)`` when the shape groups, and ``post`` (the aggregation).  On one pipeline
    they run in that order per source partition; repartitioned (``pipelines(True)``), a
    first stage runs ``pre`` and the key and writes to ``<view>-repartition``, and a second
    stage reading it keys again and runs ``post``.  A stream-stream join is always two
    stages: each input keyed by its join key, then the join and the rest."""

    name: str
    sql: str
    source: str
    shape: str  # "projection", "window", "over", "aggregate", "join"
    columns: list[str]
    group_by: list[str]
    window: Window | None
    time_column: str
    startup: str  # "earliest" or "latest"
    pre: list[Factory] = field(default_factory=list, repr=False)
    key: Callable[[Row], Any] | None = field(default=None, repr=False)
    post: list[Factory] = field(default_factory=list, repr=False)
    tables: tuple[str, ...] = ()
    join: StreamJoin | None = field(default=None, repr=False)
    join_info: dict[str, Any] | None = None
    retention_ms: int = 0  # closed windows' results kept in state for pull queries
    # output columns that are a group column as it is (name → its index in the group key):
    # a pull query's ``col = literal`` on one of them is a key lookup
    key_columns: dict[str, int] = field(default_factory=dict)

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.name}-dlq"

    @property
    def repartition_topic(self) -> str:
        return f"{self.name}-repartition"

    @property
    def sources(self) -> list[str]:
        """The topics read as streams (a joined table is read whole, aside)."""
        return [self.source] if self.join is None else [self.source, self.join.topic]

    def wants_repartition(self, partitions: int) -> bool:
        """Whether rows must move between partitions to meet their group: a grouping by
        anything but the record key over a source of several partitions."""
        return (
            self.shape in ("window", "over", "aggregate")
            and partitions > 1
            and self.group_by != ["_key"]
        )

    def build(self) -> list[Operator]:
        ops = [f() for f in self.pre]
        if self.key is not None:
            ops.append(KeyBy(self.key))
        return ops + [f() for f in self.post]

    def pipeline(self) -> Pipeline:
        """One pipeline per source partition (no repartitioning)."""
        if self.join is not None:
            raise SqlError("A stream-stream join runs repartitioned (pipelines(True))")
        return Pipeline(
            PIPELINE_NAME,
            self.source,
            self.build,
            json_sink(self.name),
            decode=_decoder(self.time_column),
            dead_letter_topic=self.dead_letter_topic,
            tables=self.tables,
        )

    def pipelines(self, repartition: bool) -> list[Pipeline]:
        if self.join is None and not repartition:
            return [self.pipeline()]
        topic = self.repartition_topic
        first: list[Pipeline] = []
        if self.join is None:
            key = self.key or (lambda _row: None)
            pre = list(self.pre)
            first.append(
                Pipeline(
                    f"{PIPELINE_NAME}-in",
                    self.source,
                    lambda: [*(f() for f in pre), KeyBy(key)],
                    repartition_sink(topic),
                    decode=_decoder(self.time_column),
                    dead_letter_topic=self.dead_letter_topic,
                    tables=self.tables,
                    repartition=topic,
                )
            )
            post = list(self.post)
            second = _keyed_by(key, post)
        else:
            join = self.join
            for side, source, time_column, side_key in (
                ("l", self.source, self.time_column, join.left_key),
                ("r", join.topic, join.time_column, join.right_key),
            ):
                first.append(
                    Pipeline(
                        f"{PIPELINE_NAME}-{side}",
                        source,
                        _keyed_by(side_key),
                        repartition_sink(topic, side),
                        decode=_decoder(time_column),
                        dead_letter_topic=self.dead_letter_topic,
                        repartition=topic,
                    )
                )
            rest = self.build

            def second() -> list[Operator]:
                return [join.build(), *rest()]

        return [
            *first,
            Pipeline(
                PIPELINE_NAME,
                topic,
                second,
                json_sink(self.name),
                decode=decode_repartitioned,
                dead_letter_topic=self.dead_letter_topic,
                upstreams=tuple((p.name, p.source) for p in first),
            ),
        ]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "shape": self.shape,
            "columns": self.columns,
            "key": self.group_by,
            "window": self.window.describe() if self.window is not None else None,
            "grace_ms": self.window.grace_ms if self.window is not None else 0,
            "retention_ms": self.retention_ms if self.window is not None else 0,
            "event_time": self.time_column,
            "startup": self.startup,
            "dead_letter_topic": self.dead_letter_topic,
            "sql": self.sql,
        }
        if self.join_info is not None:
            out["join"] = self.join_info
        return out


def _keyed_by(
    key: Callable[[Row], Any], then: list[Factory] | None = None
) -> Callable[[], list[Operator]]:
    rest = list(then or [])

    def build() -> list[Operator]:
        return [KeyBy(key), *(f() for f in rest)]

    return build


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
    alias: str | None = None
    time_column: str = "_timestamp"
    window: Window | None = None
    partition_by: list[exp.Expr] = field(default_factory=list)
    grace_ms: int = 0


def _source(from_: exp.Expr | None, grace_ms: int) -> _Source:
    if from_ is None:
        raise SqlError("A view needs FROM <topic>")
    table = from_.this
    if isinstance(table, exp.Table) and isinstance(table.this, exp.Identifier):
        return _Source(table.name, alias=table.alias or None, grace_ms=grace_ms)
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


KNOWN_OPTIONS = ("scan.startup.mode", "grace", "retention")
# closed windows' results kept for pull queries: an hour of event time after their end (the
# results are in memory: ksqlDB's day, on its disk, would be too much for short windows)
DEFAULT_RETENTION_MS = 3_600_000


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
    retention_ms = (
        _duration_option(options["retention"]) if "retention" in options else DEFAULT_RETENTION_MS
    )
    for unsupported in ("order", "limit", "distinct", "with_", "laterals"):
        node = select.args.get(unsupported)
        if node:
            first = node[0] if isinstance(node, list) else node
            raise at(first, f"{unsupported.rstrip('_').upper()} is not supported in a view yet")
    src = _source(select.args.get("from_"), grace_ms)
    q = _Query(name, sql, src, startup)
    q.retention_ms = retention_ms
    joins = select.args.get("joins") or []
    if len(joins) > 1:
        raise at(joins[1], "A view joins one table or stream (chain views for more)")
    if joins:
        _plan_join(q, joins[0])
    where = select.args.get("where")
    if where is not None:
        if any(_column_name(c) in WINDOW_COLUMNS for c in where.find_all(exp.Column)):
            raise at(where, "WHERE runs before windowing: window_start/window_end belong in HAVING")
        if any(is_aggregate(n) for n in where.walk() if isinstance(n, exp.Expr)):
            raise at(where, "Aggregates belong in HAVING, not WHERE")
        cond = truthy(compile_expr(where.this, q.rows))
        q.pre.append(lambda: Filter(cond))

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
    if q.join is not None and (overs or group is not None or aggs_found or src.window):
        node = overs[0] if overs else group if group is not None else items[0]
        raise at(
            node,
            "A stream-stream join's view projects and filters: aggregate it in a view of its"
            " own (CREATE VIEW … AS SELECT … FROM <this view> GROUP BY …)",
        )
    if overs:
        named = {w.this.name: w for w in select.args.get("windows") or []}
        return _plan_over(q, items, overs, named, aggs_found, group)
    if src.window is not None:
        if group is None:
            raise at(items[0], "A windowing table function needs GROUP BY window_start, window_end")
        return _plan_aggregation(q, items, group, having, src.window)
    if group is not None or aggs_found:
        return _plan_aggregation(q, items, group, having, None)
    if having is not None:
        raise at(having, "HAVING needs an aggregation")
    return _plan_projection(q, items)


class _Query:
    """What the shapes share while a query is planned: the source, the row scope, the
    operators so far and the join, if any."""

    def __init__(self, name: str, sql: str, src: _Source, startup: str) -> None:
        self.name = name
        self.sql = sql
        self.src = src
        self.startup = startup
        names = {src.topic} | ({src.alias} if src.alias else set())
        self.rows = RowScope(names)
        self.pre: list[Factory] = []
        self.tables: tuple[str, ...] = ()
        self.join: StreamJoin | None = None
        self.join_info: dict[str, Any] | None = None
        self.retention_ms = 0

    def plan(
        self,
        shape: str,
        columns: list[str],
        group_by: list[str],
        window: Window | None,
        *,
        time_column: str | None = None,
        key: Callable[[Row], Any] | None = None,
        post: list[Factory] | None = None,
        key_columns: dict[str, int] | None = None,
    ) -> ViewPlan:
        return ViewPlan(
            self.name,
            self.sql,
            self.src.topic,
            shape,
            columns,
            group_by,
            window,
            time_column or self.src.time_column,
            self.startup,
            pre=list(self.pre),
            key=key,
            post=list(post or []),
            tables=self.tables,
            join=self.join,
            join_info=self.join_info,
            retention_ms=self.retention_ms,
            key_columns=dict(key_columns or {}),
        )


# ------------------------------------------------------------------ joins

JOIN_SLOT = "\x00joined"


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    return [node]


def _plan_join(q: _Query, join: exp.Join) -> None:
    """``JOIN t FOR SYSTEM_TIME AS OF … ON s.x = t._key`` or ``JOIN t ON s.x = t._key``: a
    stream-table join (``t`` a compacted topic read whole, looked up by its record key);
    ``JOIN t ON s.k = t.k AND s.ts BETWEEN t.ts - INTERVAL … AND t.ts + INTERVAL …``: an
    interval join of two streams."""
    src = q.src
    if src.tvf is not None:
        raise at(join, "A join reads a topic, not a windowing table function")
    side = str(join.args.get("side") or "").upper()
    kind = str(join.args.get("kind") or "").upper()
    if kind not in ("", "INNER") or side not in ("", "LEFT"):
        raise at(join, "A view joins with JOIN or LEFT JOIN")
    if join.args.get("using"):
        raise at(join, "Join ON a condition, not USING")
    table = join.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise at(table, "A view joins a topic")
    other = table.name
    alias = table.alias or other
    left_names = {src.topic.lower()} | ({src.alias.lower()} if src.alias else set())
    if alias.lower() in left_names:
        raise at(table, "Give the two sides of a join different names (aliases)")
    on = join.args.get("on")
    if on is None:
        raise at(join, "A join needs ON <condition>")
    conjuncts = _conjuncts(on)
    betweens = [c for c in conjuncts if isinstance(c, exp.Between)]
    names = {alias.lower(), other.lower()}
    if table.args.get("version") is not None or not betweens:
        _plan_table_join(q, join, table, other, alias, conjuncts, left_join=side == "LEFT")
        return
    if side == "LEFT":
        raise at(join, "A stream-stream join is an inner join (LEFT JOIN is for tables)")
    if len(betweens) > 1:
        raise at(betweens[1], "A stream-stream join has one BETWEEN time bound")
    rows = RowScope(set(left_names), {n: JOIN_SLOT for n in names})
    left_time, right_time, lower, upper = _time_bounds(betweens[0], left_names, names)
    left_keys: list[exp.Expr] = []
    right_keys: list[exp.Expr] = []
    for c in conjuncts:
        if not isinstance(c, exp.EQ):
            continue
        sides = [_side(x, left_names, names) for x in (c.this, c.expression)]
        if sides == ["l", "r"]:
            left_keys.append(c.this)
            right_keys.append(c.expression)
        elif sides == ["r", "l"]:
            left_keys.append(c.expression)
            right_keys.append(c.this)
    if not left_keys:
        raise at(on, "A stream-stream join needs an equality of the two sides (a.k = b.k)")
    right_rows = RowScope(names)
    residual = [c for c in conjuncts if c is not betweens[0]]
    checks = [truthy(compile_expr(c, rows)) for c in residual]
    grace = src.grace_ms

    def match(row: Row) -> bool:
        return all(check(row) for check in checks)

    q.rows = rows
    q.join = StreamJoin(
        other,
        alias,
        right_time,
        _key_fn(left_keys, q.rows),
        _key_fn(right_keys, right_rows),
        lambda: IntervalJoin(lower, upper, grace, JOIN_SLOT, match),
        {},
    )
    src.time_column = left_time
    q.join_info = q.join.describe = {
        "kind": "interval",
        "with": other,
        "as": alias,
        "left_lower_ms": lower,
        "left_upper_ms": upper,
        "right_event_time": right_time,
    }


def _side(node: exp.Expr, left: set[str], right: set[str]) -> str | None:
    if not isinstance(node, exp.Column) or not node.table:
        return None
    qualifier = node.table.lower()
    return "l" if qualifier in left else "r" if qualifier in right else None


def _time_bound(node: exp.Expr, left: set[str], right: set[str]) -> tuple[str, str, int]:
    """``b.ts``, ``b.ts - INTERVAL …`` or ``b.ts + INTERVAL …``: (side, column, offset ms)."""
    offset = 0
    column = node
    if isinstance(node, exp.Sub | exp.Add):
        offset = interval_ms(node.expression) * (-1 if isinstance(node, exp.Sub) else 1)
        column = node.this
    side = _side(column, left, right)
    name = _column_name(column)
    if side is None or name is None:
        raise at(node, "A join's time bound is <side>.<time column> [± INTERVAL …]")
    return side, name, offset


def _time_bounds(
    between: exp.Between, left: set[str], right: set[str]
) -> tuple[str, str, int, int]:
    """The BETWEEN as (left time column, right time column, lower, upper) with
    ``r.ts - lower <= l.ts <= r.ts + upper``."""
    subject_side, subject, _zero = _time_bound(between.this, left, right)
    if isinstance(between.this, exp.Sub | exp.Add):
        raise at(between.this, "BETWEEN's subject is a time column of one side")
    low_side, low_col, low = _time_bound(between.args["low"], left, right)
    high_side, high_col, high = _time_bound(between.args["high"], left, right)
    if low_side == subject_side or high_side == subject_side or low_col != high_col:
        raise at(between, "a.ts BETWEEN b.ts - INTERVAL … AND b.ts + INTERVAL …")
    if low > high:
        raise at(between, "The lower time bound is after the upper one")
    if subject_side == "l":  # b.t + low <= a.t <= b.t + high
        return subject, low_col, -low, high
    return low_col, subject, high, -low  # a.t + low <= b.t <= a.t + high


def _plan_table_join(
    q: _Query,
    join: exp.Join,
    table: exp.Table,
    topic: str,
    alias: str,
    conjuncts: list[exp.Expr],
    *,
    left_join: bool,
) -> None:
    names = {alias.lower(), topic.lower()}
    left_names = set(q.rows.source_names)
    lookup: exp.Expr | None = None
    if len(conjuncts) == 1 and isinstance(conjuncts[0], exp.EQ):
        eq = conjuncts[0]
        for mine, theirs in ((eq.this, eq.expression), (eq.expression, eq.this)):
            if (
                isinstance(theirs, exp.Column)
                and theirs.name == "_key"
                and _side(theirs, left_names, names) == "r"
                and not any(_side(c, left_names, names) == "r" for c in mine.find_all(exp.Column))
            ):
                lookup = mine
    if lookup is None:
        raise at(
            join.args["on"],
            f"A stream-table join looks the table up by its key: ON <expression> = {alias}._key"
            " (a stream-stream join needs a BETWEEN time bound)",
        )
    key = compile_expr(lookup, q.rows)

    def lookup_key(row: Row) -> Any:
        value = key(row)
        return None if value is None else value if isinstance(value, str) else dumps(value).decode()

    def merge(row: Row, match: Any) -> Any:
        joined = dict(match) if isinstance(match, dict) else {}
        joined["\x00key"] = lookup_key(row) if match is not None else None
        base = row.value if isinstance(row.value, dict) else {}
        return {**base, JOIN_SLOT: joined}

    q.pre.append(lambda: TableJoin(topic, lookup_key, merge, inner=not left_join))
    q.tables = (topic,)
    q.rows = RowScope(left_names, {n: JOIN_SLOT for n in names})
    q.join_info = {
        "kind": "left table" if left_join else "table",
        "with": topic,
        "as": alias,
        "for_system_time": table.args.get("version") is not None,
    }


# ------------------------------------------------------------------ shapes


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
            raise at(item, "SELECT * cannot be used here: name the columns")
        names.append(output_name(item))
        fns.append(compile_expr(item, scope))
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise at(items[names.index(dup)], f"Two columns are named {dup!r}: give one an alias")
    return names, fns


def _key_fn(keys: list[exp.Expr], rows: RowScope) -> Callable[[Row], Any]:
    fns = [compile_expr(k, rows) for k in keys]
    if not fns:
        return lambda _row: None
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


def _plan_aggregation(
    q: _Query,
    items: list[exp.Expr],
    group: exp.Expr | None,
    having: exp.Expr | None,
    window: Window | None,
) -> ViewPlan:
    """Windowed (a table function: ``WindowAggregate``/``SessionAggregate``, one result per
    key and window) or unwindowed (``GroupAggregate``, an upsert per record) aggregation."""
    windowed = window is not None
    group_names, keys = _group_columns(group, windowed)
    if q.src.tvf == "SESSION":
        partition = [_column_name(p) for p in q.src.partition_by]
        if sorted(n for n in partition if n) != sorted(group_names):
            raise at(group, "SESSION groups by its PARTITION BY columns")
    nodes = [
        n
        for item in [*items, *([having.this] if having is not None else [])]
        for n in item.walk()
        if isinstance(n, exp.Expr) and is_aggregate(n)
    ]
    aggs, index = _collect_aggs(nodes, q.rows)
    scope = ResultScope(index, group_names, None, windowed)
    names, fns = _select_list(items, scope)
    cond = truthy(compile_expr(having.this, scope)) if having is not None else None
    finish = _finish(names, fns, cond)
    retention = q.retention_ms
    op: Factory
    if window is None:
        op = lambda: GroupAggregate(aggs, finish)  # noqa: E731
    elif window.kind == "session":
        op = lambda: SessionAggregate(window, aggs, finish, retention)  # noqa: E731
    else:
        op = lambda: WindowAggregate(window, aggs, finish, retention)  # noqa: E731
    key_columns = {
        name: group_names.index(item_name)
        for name, item in zip(names, items, strict=True)
        if (item_name := _column_name(item.unalias())) is not None
        and item_name in group_names
        and not item.find(exp.Dot)
    }
    return q.plan(
        "window" if windowed else "aggregate",
        names,
        group_names,
        window,
        key=_key_fn(keys, q.rows),
        post=[op],
        key_columns=key_columns,
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
    q: _Query,
    items: list[exp.Expr],
    overs: list[exp.Window],
    named: dict[str, exp.Window],
    aggs_found: list[exp.Expr],
    group: exp.Expr | None,
) -> ViewPlan:
    if q.src.window is not None:
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
    window, partition_by, time_column = _over_window(specs[0], q.src.grace_ms)
    for over in overs:
        if not is_aggregate(over.this):
            raise at(over, f"{over.this.sql()} is not an aggregate function")
    aggs, index = _collect_aggs([o.this for o in overs], q.rows)
    group_names = [n for n in (_column_name(p) for p in partition_by) if n is not None]
    scope = ResultScope(index, [], q.rows, False)
    names, fns = _select_list(items, scope)
    finish = _finish(names, fns, None)
    return q.plan(
        "over",
        names,
        group_names,
        window,
        time_column=time_column,
        key=_key_fn(partition_by, q.rows),
        post=[lambda: OverAggregate(window, aggs, finish)],
    )


def _plan_projection(q: _Query, items: list[exp.Expr]) -> ViewPlan:
    ops = q.pre
    if len(items) == 1 and isinstance(items[0], exp.Star) and q.join_info is None:
        names: list[str] = ["*"]
    else:
        names, fns = _select_list(items, q.rows)
        pairs = list(zip(names, fns, strict=True))
        ops.append(lambda: Map(lambda row: {n: f(row) for n, f in pairs}))
    return q.plan("join" if q.join is not None else "projection", names, ["_key"], None)
