"""Aggregate functions: an accumulator each, mergeable (session windows merge), encodable
(the state's changelog and snapshots carry them).

Theory of operation
-------------------
An ``Aggregate`` is a description — which input it reads (``source``: a function of the row's
columns, or None for ``COUNT(*)``) and the name of its output column — plus five pure
functions over an *accumulator*: ``create``, ``add`` (one input value; NULL inputs are skipped
as SQL skips them), ``merge`` (two accumulators of the same aggregate), ``result``, and
``encode``/``decode`` to and from JSON-compatible values.  Operators keep accumulators as live
Python objects and encode them only when the state is written (changelog, snapshot), so the hot
path never serialises.

Approximate aggregates use Apache DataSketches (C++ with Python bindings): HyperLogLog for
``COUNT(DISTINCT …)`` (lg_k 12: about 1.6 % standard error), KLL for percentiles (k 200:
about 1.3 % rank error) and the frequent-items sketch for top-k.  Sketches are encoded as
base64 of their own serialisation.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import datasketches  # type: ignore[import-untyped]

Source = Callable[[Any], Any]  # the row (``rows.Row``) → the aggregated value
HLL_LG_K = 12
KLL_K = 200
TOPK_LG_MAX = 10


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


@dataclass
class Aggregate:
    """One aggregate of a query: ``name`` is its output column."""

    name: str
    source: Source | None = None
    kind: str = "count"
    param: Any = None
    distinct: bool = field(default=False)

    # every method dispatches on ``kind``: one small table instead of a class per function
    def create(self) -> Any:
        return _KINDS[self.kind].create(self)

    def value(self, row: Any) -> Any:
        """The input this aggregate takes from ``row``, checked (raises TypeError on a value
        of the wrong type, before any accumulator changes); None: skip (a NULL)."""
        if self.source is None:
            return 1
        value = self.source(row)
        return None if value is None else _KINDS[self.kind].prepare(value)

    def add(self, acc: Any, value: Any) -> Any:
        """``acc`` with ``value`` (from ``value``, not None) added."""
        return _KINDS[self.kind].add(self, acc, value)

    def merge(self, a: Any, b: Any) -> Any:
        return _KINDS[self.kind].merge(self, a, b)

    def result(self, acc: Any) -> Any:
        return _KINDS[self.kind].result(self, acc)

    def encode(self, acc: Any) -> Any:
        return _KINDS[self.kind].encode(self, acc)

    def decode(self, data: Any) -> Any:
        return _KINDS[self.kind].decode(self, data)


class _Kind:
    """The functions of one aggregate kind; accumulators that are JSON values already."""

    def prepare(self, value: Any) -> Any:
        return value

    def create(self, agg: Aggregate) -> Any:
        raise NotImplementedError

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        raise NotImplementedError

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def result(self, agg: Aggregate, acc: Any) -> Any:
        return acc

    def encode(self, agg: Aggregate, acc: Any) -> Any:
        return acc

    def decode(self, agg: Aggregate, data: Any) -> Any:
        return data


class _Count(_Kind):
    def create(self, agg: Aggregate) -> Any:
        return 0

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        return acc + 1

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        return a + b


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str):
            try:
                return float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        raise TypeError(f"not a number: {value!r}")
    return value


class _Numeric(_Kind):
    """Kinds over numbers: JSON numbers, or strings holding one."""

    def prepare(self, value: Any) -> Any:
        return _number(value)


class _Sum(_Numeric):
    def create(self, agg: Aggregate) -> Any:
        return None

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        return value if acc is None else acc + value

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else a + b


class _Avg(_Numeric):
    """[count, sum]; the result is a double (NULL over no input)."""

    def create(self, agg: Aggregate) -> Any:
        return [0, 0.0]

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        acc[0] += 1
        acc[1] += float(value)
        return acc

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, agg: Aggregate, acc: Any) -> Any:
        return acc[1] / acc[0] if acc[0] else None


class _Stddev(_Numeric):
    """Welford's [count, mean, M2]; population (``param`` "pop") or sample deviation."""

    def create(self, agg: Aggregate) -> Any:
        return [0, 0.0, 0.0]

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        x = float(value)
        n = acc[0] + 1
        delta = x - acc[1]
        mean = acc[1] + delta / n
        return [n, mean, acc[2] + delta * (x - mean)]

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        n = a[0] + b[0]
        if n == 0:
            return [0, 0.0, 0.0]
        delta = b[1] - a[1]
        return [n, a[1] + delta * b[0] / n, a[2] + b[2] + delta * delta * a[0] * b[0] / n]

    def result(self, agg: Aggregate, acc: Any) -> Any:
        n = acc[0]
        if agg.param == "pop":
            return math.sqrt(acc[2] / n) if n else None
        return math.sqrt(acc[2] / (n - 1)) if n > 1 else None


class _MinMax(_Kind):
    def create(self, agg: Aggregate) -> Any:
        return None

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        if acc is None:
            return value
        return min(acc, value) if agg.kind == "min" else max(acc, value)

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        return self.add(agg, a, b)


class _FirstLast(_Kind):
    """[value]; first keeps the first value added (in processing order), last the latest."""

    def create(self, agg: Aggregate) -> Any:
        return None

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        return value if agg.kind == "last" or acc is None else acc

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        if agg.kind == "first":
            return a if a is not None else b
        return b if b is not None else a


class _Distinct(_Kind):
    """COUNT(DISTINCT x): a HyperLogLog sketch; the estimate rounded to an integer."""

    def create(self, agg: Aggregate) -> Any:
        return datasketches.hll_sketch(HLL_LG_K)

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        acc.update(value if isinstance(value, int | float | str) else str(value))
        return acc

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        union = datasketches.hll_union(HLL_LG_K)
        union.update(a)
        union.update(b)
        return union.get_result()

    def result(self, agg: Aggregate, acc: Any) -> Any:
        return round(acc.get_estimate())

    def encode(self, agg: Aggregate, acc: Any) -> Any:
        return _b64(acc.serialize_compact())

    def decode(self, agg: Aggregate, data: Any) -> Any:
        return datasketches.hll_sketch.deserialize(_unb64(data))


class _Percentile(_Numeric):
    """An approximate quantile (``param`` in [0, 1]) from a KLL sketch."""

    def create(self, agg: Aggregate) -> Any:
        return datasketches.kll_doubles_sketch(KLL_K)

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        acc.update(float(value))
        return acc

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        a.merge(b)
        return a

    def result(self, agg: Aggregate, acc: Any) -> Any:
        return None if acc.is_empty() else acc.get_quantile(float(agg.param))

    def encode(self, agg: Aggregate, acc: Any) -> Any:
        return _b64(acc.serialize())

    def decode(self, agg: Aggregate, data: Any) -> Any:
        return datasketches.kll_doubles_sketch.deserialize(_unb64(data))


class _TopK(_Kind):
    """The ``param`` most frequent values (a frequent-items sketch), as [[value, count], …]
    most frequent first; counts are estimates (exact until the sketch is full)."""

    def create(self, agg: Aggregate) -> Any:
        return datasketches.frequent_strings_sketch(TOPK_LG_MAX)

    def add(self, agg: Aggregate, acc: Any, value: Any) -> Any:
        acc.update(value if isinstance(value, str) else str(value))
        return acc

    def merge(self, agg: Aggregate, a: Any, b: Any) -> Any:
        a.merge(b)
        return a

    def result(self, agg: Aggregate, acc: Any) -> Any:
        items = acc.get_frequent_items(datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES)
        ranked = sorted(((item[1], item[0]) for item in items), key=lambda x: (-x[0], x[1]))
        return [[value, count] for count, value in ranked[: int(agg.param)]]

    def encode(self, agg: Aggregate, acc: Any) -> Any:
        return _b64(acc.serialize())

    def decode(self, agg: Aggregate, data: Any) -> Any:
        return datasketches.frequent_strings_sketch.deserialize(_unb64(data))


_KINDS: dict[str, _Kind] = {
    "count": _Count(),
    "sum": _Sum(),
    "avg": _Avg(),
    "stddev": _Stddev(),
    "min": _MinMax(),
    "max": _MinMax(),
    "first": _FirstLast(),
    "last": _FirstLast(),
    "count_distinct": _Distinct(),
    "percentile": _Percentile(),
    "top_k": _TopK(),
}
KINDS = frozenset(_KINDS)


def column(name: str) -> Source:
    """The source reading the top-level field ``name`` of a row's JSON object value."""

    def read(row: Any) -> Any:
        value = row.value
        return value.get(name) if isinstance(value, dict) else None

    return read


# ------------------------------------------------------------------ the Python API's names


def _make(kind: str, field_name: str | None, name: str | None, param: Any = None) -> Aggregate:
    default = kind if field_name is None else f"{kind}_{field_name}"
    return Aggregate(
        name or default, None if field_name is None else column(field_name), kind, param
    )


def count(name: str | None = None) -> Aggregate:
    return Aggregate(name or "count", None, "count")


def sum_(field_name: str, name: str | None = None) -> Aggregate:
    return _make("sum", field_name, name)


def avg(field_name: str, name: str | None = None) -> Aggregate:
    return _make("avg", field_name, name)


def stddev(field_name: str, name: str | None = None, *, population: bool = True) -> Aggregate:
    return _make("stddev", field_name, name, "pop" if population else "samp")


def min_(field_name: str, name: str | None = None) -> Aggregate:
    return _make("min", field_name, name)


def max_(field_name: str, name: str | None = None) -> Aggregate:
    return _make("max", field_name, name)


def first(field_name: str, name: str | None = None) -> Aggregate:
    return _make("first", field_name, name)


def last(field_name: str, name: str | None = None) -> Aggregate:
    return _make("last", field_name, name)


def count_distinct(field_name: str, name: str | None = None) -> Aggregate:
    return _make("count_distinct", field_name, name)


def percentile(field_name: str, q: float, name: str | None = None) -> Aggregate:
    if not 0.0 <= q <= 1.0:
        raise ValueError("a percentile is between 0 and 1")
    return _make("percentile", field_name, name or f"p{round(q * 100)}_{field_name}", q)


def top_k(field_name: str, k: int, name: str | None = None) -> Aggregate:
    if k < 1:
        raise ValueError("top_k needs k >= 1")
    return _make("top_k", field_name, name, k)
