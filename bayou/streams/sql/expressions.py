"""SQL scalar expressions compiled to Python closures over a row.

``compile_expr(node, scope)`` turns a sqlglot expression into ``fn(x) -> value``.  Leaves
(columns, aggregates) are resolved by the ``Scope``: over source rows a column is a top-level
field of the JSON value (or a JSON path: ``payload.a.b``, ``JSON_VALUE(payload, '$.a.b')``)
or one of the record's own columns ``_key``, ``_timestamp``, ``_partition``, ``_offset``,
``_headers`` (``_headers['name']``); after an aggregation the scope maps group columns and
aggregates to the results.  SQL's NULL rules hold: an operator over NULL gives NULL, and a
NULL condition filters the row out.  An unknown function is an error at its token.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from sqlglot import exp

from bayou.streams.rows import Row
from bayou.streams.sql.errors import at

Fn = Callable[[Any], Any]
META_COLUMNS = ("_key", "_timestamp", "_partition", "_offset", "_headers")


class Scope:
    """How leaves resolve; ``resolve`` returns a closure or None to compile normally."""

    def resolve(self, node: exp.Expr) -> Fn | None:
        return None

    def column(self, node: exp.Column) -> Fn:
        raise at(node, f"Column '{node.sql()}' is not known here")


def _path_getter(path: list[str]) -> Fn:
    def get(value: Any) -> Any:
        for part in path:
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
        return value

    return get


class RowScope(Scope):
    """Columns of source rows (``Row``): JSON fields, JSON paths and the record's columns.
    ``tables`` maps a table alias to the name a stream-table join stores its row under."""

    def __init__(self, source_names: set[str], tables: dict[str, str] | None = None) -> None:
        self.source_names = {n.lower() for n in source_names}
        self.tables = {k.lower(): v for k, v in (tables or {}).items()}

    def column(self, node: exp.Column) -> Fn:
        parts = [p.name for p in node.parts]
        if len(parts) > 1 and parts[0].lower() in self.tables:
            slot = self.tables[parts[0].lower()]
            rest = parts[1:]
            if len(rest) == 1 and rest[0] in META_COLUMNS and rest[0] != "_headers":
                inside = "\x00" + rest[0][1:]
                return lambda row: (
                    (row.value.get(slot) or {}).get(inside) if isinstance(row.value, dict) else None
                )
            inner = _path_getter(rest)
            return lambda row: inner(row.value.get(slot)) if isinstance(row.value, dict) else None
        if len(parts) > 1 and parts[0].lower() in self.source_names:
            parts = parts[1:]
        first = parts[0]
        if len(parts) == 1 and first in META_COLUMNS:
            return _meta(first)
        getter = _path_getter(parts)
        return lambda row: getter(row.value)


def _meta(name: str) -> Fn:
    if name == "_key":
        return lambda row: row.record_key
    if name == "_timestamp":
        return lambda row: row.timestamp
    if name == "_partition":
        return lambda row: row.partition
    if name == "_offset":
        return lambda row: row.offset
    return lambda row: {
        k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in row.headers
    }


def _null_safe(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        return op(a, b)

    return apply


def _div(a: Any, b: Any) -> Any:
    if b == 0:
        return None
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    return a / b


def _mod(a: Any, b: Any) -> Any:
    if b == 0:
        return None
    return math.fmod(a, b) if isinstance(a, float) or isinstance(b, float) else int(math.fmod(a, b))


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        try:
            return op(a, b)
        except TypeError:
            if (isinstance(a, int | float) and isinstance(b, str)) or (
                isinstance(a, str) and isinstance(b, int | float)
            ):
                try:
                    return op(float(a), float(b))
                except ValueError:
                    return None
            raise

    return apply


_BINARY: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.Add: _null_safe(operator.add),
    exp.Sub: _null_safe(operator.sub),
    exp.Mul: _null_safe(operator.mul),
    exp.Div: _null_safe(_div),
    exp.Mod: _null_safe(_mod),
    exp.Pow: _null_safe(operator.pow),
    exp.EQ: _cmp(operator.eq),
    exp.NEQ: _cmp(operator.ne),
    exp.GT: _cmp(operator.gt),
    exp.GTE: _cmp(operator.ge),
    exp.LT: _cmp(operator.lt),
    exp.LTE: _cmp(operator.le),
    exp.DPipe: _null_safe(lambda a, b: f"{_text(a)}{_text(b)}"),
}


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    return str(v)


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(out), re.S)


def _cast(value: Any, to: str) -> Any:
    if value is None:
        return None
    try:
        if to in ("DOUBLE", "FLOAT", "DECIMAL", "REAL", "DOUBLE PRECISION"):
            return float(value)
        if to in ("INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT"):
            return int(float(value)) if isinstance(value, str) else int(value)
        if to in ("VARCHAR", "STRING", "TEXT", "CHAR"):
            return _text(value)
        if to == "BOOLEAN":
            if isinstance(value, str):
                return value.strip().lower() in ("true", "t", "1", "yes")
            return bool(value)
    except (TypeError, ValueError):
        return None
    return value


def _unary_math(fn: Callable[[float], Any]) -> Callable[[Any], Any]:
    def apply(v: Any) -> Any:
        if v is None:
            return None
        try:
            return fn(v)
        except (ValueError, OverflowError):
            return None

    return apply


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ABS": _unary_math(abs),
    "SQRT": _unary_math(math.sqrt),
    "LN": _unary_math(math.log),
    "EXP": _unary_math(math.exp),
    "FLOOR": _unary_math(math.floor),
    "CEIL": _unary_math(math.ceil),
    "CEILING": _unary_math(math.ceil),
    "LOWER": lambda v: None if v is None else str(v).lower(),
    "UPPER": lambda v: None if v is None else str(v).upper(),
    "CHAR_LENGTH": lambda v: None if v is None else len(str(v)),
    "LENGTH": lambda v: None if v is None else len(str(v)),
    "TRIM": lambda v: None if v is None else str(v).strip(),
    "POWER": _null_safe(lambda a, b: a**b),
    "MOD": _null_safe(_mod),
}


def compile_expr(node: exp.Expr, scope: Scope) -> Fn:
    """``node`` as a closure (see the module docstring)."""
    found = scope.resolve(node)
    if found is not None:
        return found
    if isinstance(node, exp.Paren):
        return compile_expr(node.this, scope)
    if isinstance(node, exp.Alias):
        return compile_expr(node.this, scope)
    if isinstance(node, exp.Column):
        if isinstance(node.this, exp.Star):
            raise at(node, "* is only allowed alone in a SELECT list")
        return scope.column(node)
    if isinstance(node, exp.Literal):
        if node.is_string:
            text = node.this
            return lambda _x: text
        number = float(node.this) if any(c in node.this for c in ".eE") else int(node.this)
        return lambda _x: number
    if isinstance(node, exp.Boolean):
        truth = bool(node.this)
        return lambda _x: truth
    if isinstance(node, exp.Null):
        return lambda _x: None
    binary = _BINARY.get(type(node))
    if binary is not None:
        left = compile_expr(node.args["this"], scope)
        right = compile_expr(node.args["expression"], scope)
        return lambda x: binary(left(x), right(x))
    if isinstance(node, exp.And):
        a, b = compile_expr(node.this, scope), compile_expr(node.expression, scope)

        def both(x: Any) -> Any:
            va = a(x)
            if va is False:
                return False
            vb = b(x)
            if vb is False:
                return False
            return None if va is None or vb is None else True

        return both
    if isinstance(node, exp.Or):
        a, b = compile_expr(node.this, scope), compile_expr(node.expression, scope)

        def either(x: Any) -> Any:
            va = a(x)
            if va is True:
                return True
            vb = b(x)
            if vb is True:
                return True
            return None if va is None or vb is None else False

        return either
    if isinstance(node, exp.Not):
        inner = compile_expr(node.this, scope)
        return lambda x: None if (v := inner(x)) is None else not v
    if isinstance(node, exp.Neg):
        inner = compile_expr(node.this, scope)
        return lambda x: None if (v := inner(x)) is None else -v
    if isinstance(node, exp.Is):
        inner = compile_expr(node.this, scope)
        if isinstance(node.expression, exp.Null):
            return lambda x: inner(x) is None
        other = compile_expr(node.expression, scope)
        return lambda x: inner(x) == other(x)
    if isinstance(node, exp.Between):
        v, lo, hi = (compile_expr(node.args[k], scope) for k in ("this", "low", "high"))
        ge, le = _cmp(operator.ge), _cmp(operator.le)

        def between(x: Any) -> Any:
            value = v(x)
            a, b = ge(value, lo(x)), le(value, hi(x))
            return None if a is None or b is None else a and b

        return between
    if isinstance(node, exp.In):
        v = compile_expr(node.this, scope)
        options = [compile_expr(e, scope) for e in node.expressions]
        if not options:
            raise at(node, "IN needs a list of values")
        return lambda x: None if (value := v(x)) is None else value in [o(x) for o in options]
    if isinstance(node, exp.Like | exp.ILike):
        v = compile_expr(node.this, scope)
        pattern_node = node.expression
        if not isinstance(pattern_node, exp.Literal) or not pattern_node.is_string:
            raise at(node, "LIKE needs a string literal pattern")
        regex = _like(pattern_node.this)
        if isinstance(node, exp.ILike):
            regex = re.compile(regex.pattern, re.S | re.I)
        return lambda x: None if (value := v(x)) is None else bool(regex.fullmatch(str(value)))
    if isinstance(node, exp.Case):
        return _case(node, scope)
    if isinstance(node, exp.If):
        cond = compile_expr(node.this, scope)
        then = compile_expr(node.args["true"], scope)
        other_node = node.args.get("false")
        other = compile_expr(other_node, scope) if other_node is not None else (lambda _x: None)
        return lambda x: then(x) if cond(x) else other(x)
    if isinstance(node, exp.Coalesce):
        parts = [compile_expr(node.this, scope)] + [
            compile_expr(e, scope) for e in node.expressions
        ]

        def coalesce(x: Any) -> Any:
            for p in parts:
                v = p(x)
                if v is not None:
                    return v
            return None

        return coalesce
    if isinstance(node, exp.Cast | exp.TryCast):
        inner = compile_expr(node.this, scope)
        to = node.to.sql(dialect="postgres").upper()
        return lambda x: _cast(inner(x), to)
    if isinstance(node, exp.Round):
        inner = compile_expr(node.this, scope)
        digits_node = node.args.get("decimals")
        digits = compile_expr(digits_node, scope) if digits_node is not None else (lambda _x: 0)
        return lambda x: None if (v := inner(x)) is None else round(v, int(digits(x) or 0))
    if isinstance(node, exp.Bracket):
        base = compile_expr(node.this, scope)
        [index_node] = node.expressions
        index = compile_expr(index_node, scope)

        def item(x: Any) -> Any:
            container, key = base(x), index(x)
            if isinstance(container, dict):
                return container.get(key)
            if isinstance(container, list) and isinstance(key, int) and 1 <= key <= len(container):
                return container[key - 1]  # SQL arrays count from 1
            return None

        return item
    if isinstance(node, exp.JSONExtract | exp.JSONExtractScalar):
        return _json_value(node, node.this, node.expression, scope)
    if isinstance(node, exp.JSONValue):
        return _json_value(node, node.this, node.args.get("path"), scope)
    return _function(node, scope)


def _case(node: exp.Case, scope: Scope) -> Fn:
    subject = compile_expr(node.this, scope) if node.this is not None else None
    branches = [
        (compile_expr(b.this, scope), compile_expr(b.args["true"], scope)) for b in node.args["ifs"]
    ]
    default_node = node.args.get("default")
    default = compile_expr(default_node, scope) if default_node is not None else (lambda _x: None)

    def case(x: Any) -> Any:
        s = subject(x) if subject is not None else None
        for cond, then in branches:
            c = cond(x)
            if (subject is not None and s is not None and c == s) or (
                subject is None and c is True
            ):
                return then(x)
        return default(x)

    return case


def _json_value(node: exp.Expr, base_node: exp.Expr, path_node: Any, scope: Scope) -> Fn:
    base = compile_expr(base_node, scope)
    path_text = path_node.sql() if not isinstance(path_node, exp.Literal) else path_node.this
    path_text = path_text.strip("'")
    if not path_text.startswith("$"):
        raise at(node, f"A JSON path starts with $: {path_text!r}")
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path_text[1:]) if p]
    getter = _path_getter(parts)

    def value(x: Any) -> Any:
        doc = base(x)
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except ValueError:
                return None
        return getter(doc)

    return value


def _function(node: exp.Expr, scope: Scope) -> Fn:
    if isinstance(node, exp.Anonymous):
        name = str(node.this).upper()
        args = list(node.expressions)
    elif isinstance(node, exp.Func):
        name = node.sql_name().upper()
        args = [
            a for a in (node.args.get("this"), *node.args.get("expressions", [])) if a is not None
        ]
        if isinstance(node, exp.Pow):
            args = [node.this, node.expression]
    else:
        raise at(node, f"Unsupported expression: {node.sql(dialect='postgres')}")
    if name in ("JSON_VALUE", "JSON_QUERY") and len(args) == 2:
        return _json_value(node, args[0], args[1], scope)
    if name == "CONCAT":
        parts = [compile_expr(a, scope) for a in args]

        def concat(x: Any) -> Any:
            values = [p(x) for p in parts]
            return None if any(v is None for v in values) else "".join(_text(v) for v in values)

        return concat
    fn = _FUNCTIONS.get(name)
    if fn is None:
        raise at(node, f"Unknown function {name}")
    compiled = [compile_expr(a, scope) for a in args]
    if len(compiled) == 1:
        only = compiled[0]
        return lambda x: fn(only(x))
    return lambda x: fn(*(c(x) for c in compiled))


def truthy(fn: Fn) -> Callable[[Row], bool]:
    """A WHERE/HAVING condition: NULL and false filter the row out."""
    return lambda row: fn(row) is True
