"""The Python API: ``App`` → ``stream(topic)`` → operators → ``to(topic)``.

    from bayou.streams import App, avg, sliding

    app = App("alerts-app")
    (app.stream("telemetry")
        .filter(lambda v: v["temp"] is not None)
        .key_by("device")
        .window(sliding(seconds=30))
        .agg(avg("temp"))
        .to("alerts"))

``bayou streams run app.py -b HOST:PORT`` runs every ``App`` the file defines against any
Kafka-compatible broker; several runs with the same app name share the work through one
consumer group (the app's name).  Each ``.to()`` ends one pipeline; its operators and state
are the ones SQL views compile to (``bayou/streams/operators.py``).

User functions take the record's value (decoded JSON unless ``value="bytes"`` or
``"str"``); ``process(fn)`` gives ``fn(value, state)`` the current key's ``KeyState``,
saved with the task's state (anomaly detection, deduplication, sessions of your own).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from bayou.streams.aggregates import Aggregate
from bayou.streams.operators import (
    Filter,
    Finish,
    FlatMap,
    GroupAggregate,
    KeyBy,
    KeyState,
    Map,
    Operator,
    OverAggregate,
    SessionAggregate,
    StatefulApply,
    TableJoin,
    WindowAggregate,
)
from bayou.streams.pipeline import Pipeline, SourceRecord, json_sink
from bayou.streams.rows import Row, iso_ms
from bayou.streams.windows import Window

Guarantee = Literal["exactly-once", "at-least-once"]
ValueFormat = Literal["json", "str", "bytes"]
Factory = Callable[[], Operator]


class App:
    """A stream-processing application: its name is its consumer group and the prefix of
    its internal topics (``<name>-<pipeline>-changelog``)."""

    def __init__(
        self,
        name: str,
        *,
        guarantee: Guarantee = "exactly-once",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        state_dir: str | Path | None = None,
        commit_interval_s: float = 0.2,
    ) -> None:
        self.name = name
        self.guarantee = guarantee
        self.auto_offset_reset = auto_offset_reset
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.commit_interval_s = commit_interval_s
        self._streams: list[Stream] = []

    def stream(
        self,
        topic: str,
        *,
        value: ValueFormat = "json",
        timestamp: Callable[[Any], int] | str | None = None,
        name: str | None = None,
        dead_letter_topic: str | None = None,
    ) -> Stream:
        """A stream of ``topic``'s records; event time is the record timestamp unless
        ``timestamp`` names a field (epoch ms) or is a function of the value."""
        s = Stream(
            self,
            topic,
            value,
            timestamp,
            name or f"p{len(self._streams)}",
            dead_letter_topic or f"{self.name}-dlq",
        )
        return s

    def _add(self, stream: Stream) -> None:
        self._streams.append(stream)

    def pipelines(self) -> list[Pipeline]:
        return [s.pipeline() for s in self._streams]

    def run(self, bootstrap: str, **client_config: Any) -> None:
        """Run until interrupted, against the broker at ``bootstrap``."""
        from bayou.streams.external import ExternalRunner

        ExternalRunner(
            self.name,
            self.pipelines(),
            bootstrap,
            guarantee=self.guarantee,
            auto_offset_reset=self.auto_offset_reset,
            state_dir=self.state_dir,
            commit_interval_s=self.commit_interval_s,
            client_config=client_config,
        ).run()


def _field(fn: Callable[[Any], Any] | str) -> Callable[[Any], Any]:
    if isinstance(fn, str):
        name = fn
        return lambda v: v.get(name) if isinstance(v, dict) else None
    return fn


class Stream:
    """A chain of operators over one source topic (build it, then ``to``)."""

    def __init__(
        self,
        app: App,
        topic: str,
        value: ValueFormat,
        timestamp: Callable[[Any], int] | str | None,
        name: str,
        dead_letter_topic: str,
    ) -> None:
        self.app = app
        self.topic = topic
        self.value_format = value
        self.timestamp = None if timestamp is None else _field(timestamp)
        self.name = name
        self.dead_letter_topic = dead_letter_topic
        self.factories: list[Factory] = []
        self.tables: list[str] = []
        self.sink_topic: str | None = None
        self.sink_key: Callable[[Any], Any] | None = None

    def _then(self, factory: Factory) -> Stream:
        if self.sink_topic is not None:
            raise ValueError("this stream already ends in .to()")
        self.factories.append(factory)
        return self

    def filter(self, fn: Callable[[Any], Any]) -> Stream:
        return self._then(lambda: Filter(lambda row: fn(row.value)))

    def map(self, fn: Callable[[Any], Any]) -> Stream:
        return self._then(lambda: Map(lambda row: fn(row.value)))

    def apply(self, fn: Callable[[Any], Any]) -> Stream:
        """``fn(value)`` returns a value, a list of values, or None to drop the record."""
        return self._then(lambda: FlatMap(lambda row: fn(row.value)))

    def key_by(self, fn: Callable[[Any], Any] | str) -> Stream:
        """Key the records by ``fn(value)`` (or a field name) for what follows."""
        key = _field(fn)
        return self._then(lambda: KeyBy(lambda row: key(row.value)))

    def process(self, fn: Callable[[Any, KeyState], Any]) -> Stream:
        """A stateful user function: ``fn(value, state)`` → value, list, or None."""
        return self._then(lambda: StatefulApply(fn))

    def join_table(
        self,
        table: str,
        on: Callable[[Any], Any] | str,
        merge: Callable[[Any, Any], Any] | None = None,
        *,
        inner: bool = True,
    ) -> Stream:
        """Join each record with the row of compacted topic ``table`` whose key is
        ``on(value)``; ``merge(value, table_value)`` (default: the value's fields, then the
        table's under ``table``)."""
        lookup = _field(on)

        def default(value: Any, match: Any) -> Any:
            return {**value, table: match} if isinstance(value, dict) else [value, match]

        combine = merge or default
        self.tables.append(table)
        return self._then(
            lambda: TableJoin(
                table,
                lambda row: lookup(row.value),
                lambda row, match: combine(row.value, match),
                inner=inner,
            )
        )

    def window(self, window: Window) -> WindowedStream:
        return WindowedStream(self, window)

    def agg(self, *aggs: Aggregate, **named: Aggregate) -> Stream:
        """An aggregation without a window: each record emits its key's new results."""
        every = _named(aggs, named)
        return self._then(lambda: GroupAggregate(every, _finish_plain(every)))

    def to(self, topic: str, *, key: Callable[[Any], Any] | None = None) -> App:
        """Write the values to ``topic`` as JSON (keyed by the current key, or ``key(value)``);
        ends this pipeline."""
        self.sink_topic = topic
        self.sink_key = key
        self.app._add(self)
        return self.app

    def pipeline(self) -> Pipeline:
        assert self.sink_topic is not None
        factories = list(self.factories)
        key_fn = self.sink_key
        sink = json_sink(
            self.sink_topic, None if key_fn is None else (lambda row: key_fn(row.value))
        )
        return Pipeline(
            self.name,
            self.topic,
            lambda: [f() for f in factories],
            sink,
            decode=_decoder(self.value_format, self.timestamp),
            dead_letter_topic=self.dead_letter_topic,
            tables=tuple(self.tables),
        )


class WindowedStream:
    def __init__(self, stream: Stream, window: Window) -> None:
        self.stream = stream
        self.window = window

    def agg(self, *aggs: Aggregate, **named: Aggregate) -> Stream:
        """One result per key and window: ``{"key", "window_start", "window_end", <aggs>}``
        (sliding windows: one per record, ending at its time)."""
        every = _named(aggs, named)
        window = self.window
        if window.kind == "session":
            return self.stream._then(lambda: SessionAggregate(window, every, _finish_window(every)))
        if window.kind in ("sliding", "rows"):
            return self.stream._then(lambda: OverAggregate(window, every, _finish_window(every)))
        return self.stream._then(lambda: WindowAggregate(window, every, _finish_window(every)))


def _named(aggs: tuple[Aggregate, ...], named: dict[str, Aggregate]) -> list[Aggregate]:
    out = list(aggs)
    for name, agg in named.items():
        out.append(Aggregate(name, agg.source, agg.kind, agg.param))
    if not out:
        raise ValueError("agg() needs at least one aggregate")
    return out


def _finish_window(aggs: list[Aggregate]) -> Finish:
    names = [agg.name for agg in aggs]

    def finish(
        key: Any, start: int | None, end: int | None, results: list[Any], row: Row | None
    ) -> Any:
        return {
            "key": list(key) if isinstance(key, tuple) else key,
            "window_start": iso_ms(start or 0),
            "window_end": iso_ms(end or 0),
            **dict(zip(names, results, strict=True)),
        }

    return finish


def _finish_plain(aggs: list[Aggregate]) -> Finish:
    names = [agg.name for agg in aggs]

    def finish(
        key: Any, start: int | None, end: int | None, results: list[Any], row: Row | None
    ) -> Any:
        return {
            "key": list(key) if isinstance(key, tuple) else key,
            **dict(zip(names, results, strict=True)),
        }

    return finish


def _decoder(
    value_format: ValueFormat, timestamp: Callable[[Any], Any] | None
) -> Callable[[SourceRecord, str, int], Row]:
    def decode(record: SourceRecord, topic: str, partition: int) -> Row:
        raw = record.value
        value: Any
        if value_format == "json":
            value = None if raw is None else json.loads(raw)
        elif value_format == "str":
            value = None if raw is None else raw.decode()
        else:
            value = raw
        key = None if record.key is None else record.key.decode("utf-8", "replace")
        ts = record.timestamp if timestamp is None else int(timestamp(value))
        return Row(key, value, ts, topic, partition, record.offset, record.headers)

    return decode
