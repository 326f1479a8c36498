"""Pipelines and tasks: what one source partition's records go through, sans-I/O.

Theory of operation
-------------------
A ``Pipeline`` is a source topic, a ``decode`` turning a stored record into a ``Row`` (JSON
parsing, event time), a factory of operators and a ``sink`` turning an emitted row into an
``Output``.  A ``Task`` runs one pipeline over one partition of its source: its own operator
instances (so its state), the position it has processed to, and the outputs waiting for the
next commit.  A record that cannot be decoded or that an operator cannot take (a string where
AVG wants a number) goes to the pipeline's dead-letter topic with the error in headers
(``bayou.error`` and where the record came from); the task goes on.

The task's state is the union of its operators' state, each under its own namespace, plus
the event clock (``~clock``).  It leaves through ``changelog()`` (changed keys, for the
changelog topic's partition of the same number as the source partition) and ``entries()``
(everything, for a snapshot); it comes back through ``restore``.

The ``Processor`` holds the tasks of every pipeline of one runtime, keyed by source
partition, and the event clock each pipeline's tasks share.  Drivers (``external.py`` on a
Kafka client, ``inbroker.py`` on the core) feed it records and collect a ``Commit``: the
outputs and changelog records to write and the source offsets to commit with them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bayou.streams.operators import (
    NEVER,
    Context,
    EventClock,
    MarkerClock,
    Operator,
    StreamStats,
    TableJoin,
    TaskClock,
)
from bayou.streams.rows import Headers, Output, Row, dumps, key_bytes
from bayou.streams.snapshots import Snapshot

log = logging.getLogger(__name__)

CLOCK_KEY = b"~clock"
MARKERS_KEY = b"~markers"  # a second stage's task: the upstream markers its partition heard
ERROR_HEADER = "bayou.error"
WATERMARK_HEADER = "bayou.watermark"


class SourceRecord(NamedTuple):
    """A record as a transport read it."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers


Decode = Callable[[SourceRecord, str, int], Row]
Sink = Callable[[Row], Output | None]


def decode_json(record: SourceRecord, topic: str, partition: int) -> Row:
    """The default decode: the value as JSON, the key as text, event time = record time."""
    value = json.loads(record.value) if record.value is not None else None
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    return Row(key, value, record.timestamp, topic, partition, record.offset, record.headers)


def json_sink(topic: str, key: Callable[[Row], Any] | None = None) -> Sink:
    """Rows as JSON values to ``topic``, keyed by the row's key (or ``key(row)``)."""

    def sink(row: Row) -> Output:
        k = row.key if key is None else key(row)
        return Output(topic, key_bytes(k), dumps(row.value), row.timestamp)

    return sink


def repartition_sink(topic: str, side: str = "") -> Sink:
    """Rows to a repartition topic, keyed by the row's key (the group or join key, so the
    producer's partitioner puts one key's rows in one partition), the value an envelope
    keeping what the next stage's columns need: the record's key, value, topic, partition,
    offset and the join input it belongs to; event time as the record timestamp."""

    def sink(row: Row) -> Output:
        envelope = {
            "k": row.record_key,
            "v": row.value,
            "t": row.topic,
            "p": row.partition,
            "o": row.offset,
            "s": side,
        }
        return Output(topic, key_bytes(row.key), dumps(envelope), row.timestamp, row.headers)

    return sink


def decode_repartitioned(record: SourceRecord, topic: str, partition: int) -> Row:
    """A repartition record back as the row its first stage read (see ``repartition_sink``);
    the row's key is the repartition key (as text)."""
    if record.value is None:
        raise ValueError("a repartition record without a value")
    envelope = json.loads(record.value)
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    row = Row(
        key,
        envelope["v"],
        record.timestamp,
        envelope["t"],
        envelope["p"],
        envelope["o"],
        record.headers,
    )
    row.record_key = envelope["k"]
    row.side = envelope["s"]
    return row


@dataclass
class Pipeline:
    """A source, its operators and a sink.  A pipeline with ``repartition`` set is the first
    stage of a repartitioned one: its sink writes to that topic and its tasks write
    watermark markers there too; the second stage reads it with ``upstreams`` naming the
    first stage's pipelines (name, source topic), whose markers drive its clock."""

    name: str
    source: str
    build: Callable[[], list[Operator]]
    sink: Sink | None
    decode: Decode = decode_json
    dead_letter_topic: str | None = None
    tables: tuple[str, ...] = ()  # compacted topics joined as tables (read whole)
    stats: StreamStats = field(default_factory=StreamStats)
    repartition: str | None = None
    upstreams: tuple[tuple[str, str], ...] = ()


class Task:
    """One pipeline over one source partition (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, partition: int, clock: EventClock) -> None:
        self.pipeline = pipeline
        self.partition = partition
        self.clock = clock
        self.task_clock = TaskClock(clock, partition)
        self.ctx = Context(self.task_clock, pipeline.stats)
        self.ops = pipeline.build()
        for i, op in enumerate(self.ops):
            op.ns = f"{i}:".encode()
        self.outputs: list[Output] = []
        self.position: int | None = None  # next offset to read, once a record was processed
        self.position_collected: int | None = None  # the position the last commit holds
        self.marker_sent: tuple[int, bool] | None = None  # first stages: the last marker
        self.markers_heard = False  # second stages: a marker read since the last changelog
        self.clock_written = NEVER  # the task clock its changelog holds

    def joins(self) -> Iterator[TableJoin]:
        return (op for op in self.ops if isinstance(op, TableJoin))

    def process(self, record: SourceRecord) -> None:
        pipeline = self.pipeline
        self.position = record.offset + 1
        if (
            pipeline.upstreams
            and record.value is None
            and record.headers
            and record.headers[-1][0] == WATERMARK_HEADER
        ):
            self._marker(record.headers[-1][1])
            return
        pipeline.stats.records_in += 1
        try:
            row = pipeline.decode(record, pipeline.source, self.partition)
            self._run(0, [row])
        except Exception as exc:  # a bad record: to the dead letters, never the task's end
            self._dead_letter(record, exc)
            return
        self.clock.see(row.timestamp, self.partition)
        self.fire()

    def _marker(self, raw: bytes | None) -> None:
        try:
            upstream, ts, idle = json.loads(raw or b"")
            self.clock.marker(self.partition, str(upstream), int(ts), bool(idle))
        except (ValueError, TypeError) as exc:
            log.warning("%s: an unreadable watermark marker: %s", self.pipeline.name, exc)
            return
        self.markers_heard = True
        self.fire()

    def markers(self, partitions: int) -> list[Output]:
        """A first stage's watermark markers (its partition's highest event time and whether
        it is idle) to each of the repartition topic's ``partitions``, when they changed.
        Once is enough: a second stage keeps what its partition heard in its changelog
        (``MARKERS_KEY``), so the partition's next owner knows it without hearing it again."""
        topic = self.pipeline.repartition
        if topic is None or partitions <= 0:
            return []
        clock = self.clock
        state = (
            clock.partitions.get(self.partition, NEVER),
            self.partition in clock.idle_partitions,
        )
        if state == self.marker_sent:
            return []
        self.marker_sent = state
        upstream = f"{self.pipeline.name}:{self.partition}"
        headers: Headers = ((WATERMARK_HEADER, dumps([upstream, state[0], state[1]])),)
        ts = max(state[0], 0)
        return [Output(topic, None, None, ts, headers, r) for r in range(partitions)]

    def fire(self) -> None:
        for i, op in enumerate(self.ops):
            emitted = op.fire(self.ctx)
            if emitted:
                self._run(i + 1, emitted)

    def _run(self, start: int, rows: list[Row]) -> None:
        for op in self.ops[start:]:
            if not rows:
                return
            nxt: list[Row] = []
            for row in rows:
                nxt.extend(op.push(row, self.ctx))
            rows = nxt
        sink = self.pipeline.sink
        if sink is None:
            return
        for row in rows:
            out = sink(row)
            if out is not None:
                self.outputs.append(out)
                self.pipeline.stats.records_out += 1

    def _dead_letter(self, record: SourceRecord, exc: Exception) -> None:
        pipeline = self.pipeline
        pipeline.stats.dead_letters += 1
        error = f"{type(exc).__name__}: {exc}"[:1000]
        log.debug(
            "%s: record %d of partition %d to the dead letters: %s",
            pipeline.name,
            record.offset,
            self.partition,
            error,
        )
        if pipeline.dead_letter_topic is None:
            return
        headers: Headers = (
            *record.headers,
            (ERROR_HEADER, error.encode()),
            ("bayou.error.topic", pipeline.source.encode()),
            ("bayou.error.partition", str(self.partition).encode()),
            ("bayou.error.offset", str(record.offset).encode()),
        )
        self.outputs.append(
            Output(pipeline.dead_letter_topic, record.key, record.value, record.timestamp, headers)
        )

    # ------------------------------------------------------------------ state

    def changelog(self) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = []
        for op in self.ops:
            if op.stateful:
                out.extend(op.changes())
        now = self.task_clock.max_ts
        if now != self.clock_written:
            out.append((CLOCK_KEY, str(now).encode()))
            self.clock_written = now
        if self.markers_heard:
            out.append((MARKERS_KEY, self._heard()))
            self.markers_heard = False
        return out

    def _heard(self) -> bytes:
        clock = self.clock
        heard = clock.heard.get(self.partition, {}) if isinstance(clock, MarkerClock) else {}
        return dumps({upstream: list(said) for upstream, said in sorted(heard.items())})

    def state_size(self) -> int:
        """Entries of state (keys over the stateful operators)."""
        return sum(
            len(getattr(op, "state", ())) + len(getattr(getattr(op, "finals", None), "values", ()))
            for op in self.ops
            if op.stateful
        )

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        for op in self.ops:
            if op.stateful:
                yield from op.entries()
        yield CLOCK_KEY, str(self.task_clock.max_ts).encode()
        if self.pipeline.upstreams:
            yield MARKERS_KEY, self._heard()

    def restore(self, key: bytes, value: bytes | None) -> None:
        if key == CLOCK_KEY:
            if value is not None:
                self.task_clock.floor = self.clock_written = int(value)
            return
        if key == MARKERS_KEY:
            if value is not None:
                for upstream, (ts, idle) in json.loads(value).items():
                    self.clock.marker(self.partition, upstream, ts, idle)
            return
        ns, sep, _rest = key.partition(b":")
        if not sep or not ns.isdigit() or int(ns) >= len(self.ops):
            return  # a key of another pipeline shape: ignored
        op = self.ops[int(ns)]
        if op.stateful:
            op.restore(key, value)

    def restore_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot's entries (``snapshots.py``): each operator takes its namespace's range
        (kept in the snapshot and read as asked, or loaded now: ``_Keyed.attach``), then the
        clock and the markers."""
        for op in self.ops:
            if op.stateful:
                lo, hi = snapshot.range(op.ns)
                op.attach(snapshot, lo, hi)
        for key in (CLOCK_KEY, MARKERS_KEY):
            value = snapshot.get(key)
            if value is not None:
                self.restore(key, value)

    def restored(self) -> None:
        """Every entry is restored (snapshot, changelog): the operators schedule their state."""
        for op in self.ops:
            if op.stateful:
                op.restored()


@dataclass
class Commit:
    """What one commit writes: outputs (sinks and dead letters), changelog records (topic,
    partition, key, value) and the source offsets (next offset to read) they cover."""

    outputs: list[Output]
    changelog: list[tuple[str, int, bytes, bytes | None]]
    offsets: dict[tuple[str, int], int]

    def __bool__(self) -> bool:
        return bool(self.outputs or self.changelog or self.offsets)


class Processor:
    """The tasks of one runtime (see the module docstring)."""

    def __init__(self, app_id: str, pipelines: list[Pipeline]) -> None:
        names = [p.name for p in pipelines]
        if len(set(names)) != len(names):
            raise ValueError(f"pipelines need distinct names: {names}")
        self.app_id = app_id
        self.pipelines = pipelines
        self.clocks: dict[str, EventClock] = {
            p.name: MarkerClock() if p.upstreams else EventClock() for p in pipelines
        }
        self.tasks: dict[tuple[str, int], list[Task]] = {}
        self.tables: dict[str, dict[str, Any]] = {t: {} for p in pipelines for t in p.tables}
        self.partitions: dict[str, int] = {}  # partition counts of the topics it reads/writes

    def sources(self) -> list[str]:
        return sorted({p.source for p in self.pipelines})

    def repartition_topics(self) -> dict[str, list[str]]:
        """Each repartition topic and the sources of the first stages writing to it."""
        out: dict[str, list[str]] = {}
        for p in self.pipelines:
            if p.repartition is not None:
                out.setdefault(p.repartition, []).append(p.source)
        return out

    def set_partitions(self, counts: dict[str, int]) -> None:
        """The partition counts of the sources and repartition topics (the driver reads
        them): a second stage waits for the markers of every first-stage task."""
        self.partitions.update(counts)
        for p in self.pipelines:
            clock = self.clocks[p.name]
            if isinstance(clock, MarkerClock):
                clock.expected = frozenset(
                    f"{name}:{i}"
                    for name, topic in p.upstreams
                    for i in range(counts.get(topic, 0))
                )

    def changelog_topic(self, pipeline: Pipeline) -> str:
        return f"{self.app_id}-{pipeline.name}-changelog"

    def stateful(self, pipeline: Pipeline) -> bool:
        return True  # the event clock at least: every pipeline keeps a changelog

    def assign(self, topic: str, partition: int) -> list[Task]:
        tasks = [
            Task(p, partition, self.clocks[p.name]) for p in self.pipelines if p.source == topic
        ]
        for task in tasks:
            task.clock.track(partition)
            for join in task.joins():
                join.rows = self.tables[join.table]
        self.tasks[(topic, partition)] = tasks
        return tasks

    def revoke(self, topic: str, partition: int) -> list[Task]:
        tasks = self.tasks.pop((topic, partition), [])
        for task in tasks:
            task.clock.untrack(partition)
        return tasks

    def idle(self, topic: str, partition: int) -> None:
        """``partition`` of ``topic`` was read to its end: it holds no pipeline's clock back
        (call ``fire`` after)."""
        for task in self.tasks.get((topic, partition), []):
            task.task_clock.catching_up = False  # caught up: the shared clock from now
            task.clock.idle(partition)

    def process(self, topic: str, partition: int, records: list[SourceRecord]) -> None:
        tasks = self.tasks.get((topic, partition))
        if not tasks:
            return
        for record in records:
            for task in tasks:
                task.process(record)

    def fire(self) -> None:
        """After records moved a shared clock: every task closes what is now due."""
        for tasks in self.tasks.values():
            for task in tasks:
                task.fire()

    def table_update(self, table: str, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        rows = self.tables.get(table)
        if rows is None:
            return
        text = key.decode("utf-8", "replace")
        if value is None:
            rows.pop(text, None)
            return
        try:
            rows[text] = json.loads(value)
        except ValueError:
            rows[text] = value.decode("utf-8", "replace")

    def collect(self) -> Commit:
        """What to write next; watermark markers go after the records they cover."""
        outputs: list[Output] = []
        markers: list[Output] = []
        changelog: list[tuple[str, int, bytes, bytes | None]] = []
        offsets: dict[tuple[str, int], int] = {}
        for (topic, partition), tasks in self.tasks.items():
            for task in tasks:
                outputs.extend(task.outputs)
                task.outputs = []
                repartition = task.pipeline.repartition
                if repartition is not None:
                    markers.extend(task.markers(self.partitions.get(repartition, 0)))
                topic_name = self.changelog_topic(task.pipeline)
                for key, value in task.changelog():
                    changelog.append((topic_name, partition, key, value))
                position = task.position
                if position is not None and position != task.position_collected:
                    offsets[(topic, partition)] = task.position_collected = position
        return Commit(outputs + markers, changelog, offsets)

    def stats(self) -> dict[str, dict[str, int]]:
        return {p.name: p.stats.as_dict() for p in self.pipelines}
