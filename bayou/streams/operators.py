"""Operators: deterministic steps over rows, with their state, no I/O and no clock.

Theory of operation
-------------------
A pipeline is a list of operators.  ``push(row)`` gives an operator one row and returns the
rows it sends on at once (a filter: zero or one; a map: one; a windowed aggregation: none —
it emits when windows close).  ``fire()`` is called after event time moved: an operator whose
results wait for the watermark returns them then.  Event time is an ``EventClock`` shared by
the operators of every task of one pipeline: the highest record timestamp seen (Flink's
watermark is that minus the grace, per operator; idle partitions never hold it back).

Stateful operators keep their state as live Python objects in dicts (accumulators, buffered
rows) and track which keys changed.  ``changes()`` hands out each changed key once — encoded
to bytes, None for a deletion — for the task's changelog; ``entries()`` every key (snapshots);
``restore(key, value)`` loads one entry back (recovery: the snapshot, then the changelog's
tail), and ``restored()`` then schedules what the final state waits for (once per key,
however many versions of it the changelog held).  A key is ``namespace + JSON``: the
namespace tells the operators of a pipeline apart.

Closing order is deterministic (window end, then start, then the key's JSON), so a replay of
the same input from the same state gives the same output records in the same order.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bayou.streams.aggregates import Aggregate
from bayou.streams.rows import Row, dumps, hashable
from bayou.streams.windows import Window

NEVER = -(1 << 62)
# finish(key, window_start, window_end, results, row) -> the value emitted (None: nothing)
Finish = Callable[[Any, int | None, int | None, list[Any], Row | None], Any]


@dataclass(frozen=True)
class Keyed:
    """What a ``Finish`` returns to give the emitted row a key of its own."""

    key: Any
    value: Any


def emitted(key: Any, value: Any, ts: int) -> Row:
    if isinstance(value, Keyed):
        return Row(value.key, value.value, ts)
    return Row(key, value, ts)


@dataclass
class StreamStats:
    """Counters of one pipeline (or view), for ``/metrics``: records read and written,
    records sent to the dead-letter topic, late records dropped."""

    records_in: int = 0
    records_out: int = 0
    dead_letters: int = 0
    late_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class EventClock:
    """A pipeline's event clock across the source partitions it reads; ``max_ts`` is what the
    watermark is made of (minus each operator's grace).

    Each partition's highest event time is tracked.  A partition with records still to read
    holds the clock back: ``max_ts`` is the lowest of those partitions' highest times, so a
    replay that reads one partition ahead of another does not make the other's records late.
    A partition read to its end is idle (``idle()``, the driver says so) and holds nothing
    back; when every partition is idle, ``max_ts`` is the highest time seen anywhere.  An
    assigned partition not read yet holds the clock where it is.  ``max_ts`` never goes
    back."""

    max_ts: int = NEVER
    partitions: dict[int, int] = field(default_factory=dict)
    idle_partitions: set[int] = field(default_factory=set)

    def track(self, partition: int) -> None:
        self.partitions.setdefault(partition, NEVER)
        self.idle_partitions.discard(partition)

    def untrack(self, partition: int) -> bool:
        self.partitions.pop(partition, None)
        self.idle_partitions.discard(partition)
        return self._advance()

    def see(self, ts: int, partition: int | None = None) -> bool:
        """A record's event time; True when ``max_ts`` moved."""
        if partition is None:  # no partition tracking (a restored clock, a bare operator)
            if ts > self.max_ts:
                self.max_ts = ts
                return True
            return False
        if ts > self.partitions.get(partition, NEVER):
            self.partitions[partition] = ts
        self.idle_partitions.discard(partition)
        return self._advance()

    def idle(self, partition: int) -> bool:
        """``partition`` was read to its end; True when ``max_ts`` moved."""
        if partition not in self.partitions:
            return False
        self.idle_partitions.add(partition)
        return self._advance()

    def marker(self, partition: int, upstream: str, ts: int, idle: bool) -> bool:
        """A watermark marker read (only ``MarkerClock`` listens to them)."""
        return False

    def _advance(self) -> bool:
        if not self.partitions:
            return False
        busy = [ts for p, ts in self.partitions.items() if p not in self.idle_partitions]
        base = min(busy) if busy else max(self.partitions.values())
        if base > self.max_ts:
            self.max_ts = base
            return True
        return False


@dataclass
class MarkerClock(EventClock):
    """The event clock of a pipeline reading a repartition topic (Flink's watermark
    propagation through a shuffle).

    Records in a repartition partition come from every upstream task (one per partition of
    the source, on whichever worker owns it), interleaved in no order of time, so their
    timestamps cannot move the clock.  Each upstream task writes instead a watermark marker
    (its partition's highest event time, and whether it was read to its end) to every
    repartition partition, after the records it covers.  A repartition partition's time is
    what its markers say, by ``EventClock``'s rule over the upstream tasks: the lowest of the
    busy ones, the highest of all when every one is idle, and nothing (it holds the clock)
    until every expected upstream task has spoken.  The clock is the lowest over the
    assigned repartition partitions, and never goes back."""

    expected: frozenset[str] = frozenset()
    heard: dict[int, dict[str, tuple[int, bool]]] = field(default_factory=dict)

    def track(self, partition: int) -> None:
        self.partitions.setdefault(partition, NEVER)

    def untrack(self, partition: int) -> bool:
        self.heard.pop(partition, None)
        return super().untrack(partition)

    def see(self, ts: int, partition: int | None = None) -> bool:
        return False  # data records do not move it: markers do

    def idle(self, partition: int) -> bool:
        return False  # a repartition partition read to its end says nothing of upstream

    def marker(self, partition: int, upstream: str, ts: int, idle: bool) -> bool:
        if partition not in self.partitions:
            return False
        heard = self.heard.setdefault(partition, {})
        heard[upstream] = (ts, idle)
        if not self.expected <= heard.keys():
            return False
        busy = [t for t, i in heard.values() if not i]
        self.partitions[partition] = min(busy) if busy else max(t for t, _i in heard.values())
        return self._advance()


class TaskClock:
    """The clock one task's operators see: its pipeline's ``EventClock``, bounded for the
    task's own partition.

    - A floor: the clock its changelog saved (``floor``), so a task restored after a crash or
      a move never judges records by an earlier time than its predecessor did (a window it
      closed cannot be opened again by a record that was late then).
    - While the partition catches up (from its assignment to the first time it is read to
      its end), a ceiling: the partition's own highest event time.  The pipeline's clock is
      shared by every partition of this worker, and may have moved past the backlog of a
      partition that just moved here (from a worker that stopped or died); that backlog is
      judged by its own progress instead, as its old owner would have judged it, so a
      rebalance neither drops it as late nor changes any result."""

    __slots__ = ("catching_up", "floor", "partition", "shared")

    def __init__(self, shared: EventClock, partition: int) -> None:
        self.shared = shared
        self.partition = partition
        self.floor = NEVER
        self.catching_up = True

    @property
    def max_ts(self) -> int:  # read per record: comparisons, not min()/max() calls
        base = self.shared.max_ts
        if self.catching_up:
            own = self.shared.partitions.get(self.partition, NEVER)
            if own < base:
                base = own
        return base if base > self.floor else self.floor


@dataclass
class Context:
    clock: EventClock | TaskClock
    stats: StreamStats = field(default_factory=StreamStats)


class Operator:
    """A step of a pipeline (stateless unless it overrides the state methods)."""

    ns = b""
    stateful = False

    def push(self, row: Row, ctx: Context) -> list[Row]:
        raise NotImplementedError

    def fire(self, ctx: Context) -> list[Row]:
        return []

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        return []

    def restore(self, key: bytes, value: bytes | None) -> None:
        raise NotImplementedError

    def restored(self) -> None:
        """The last ``restore`` was made: schedule what the restored state waits for."""

    def attach(self, snapshot: Any, lo: int, hi: int) -> None:
        """Entries ``[lo, hi)`` of a snapshot (``snapshots.Snapshot``) are this operator's."""
        for key, value in snapshot.entries(lo, hi):
            self.restore(key, value)

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(())


class Filter(Operator):
    def __init__(self, predicate: Callable[[Row], Any]) -> None:
        self.predicate = predicate

    def push(self, row: Row, ctx: Context) -> list[Row]:
        return [row] if self.predicate(row) else []


class Map(Operator):
    """``fn(row) -> value``: the row's value replaced."""

    def __init__(self, fn: Callable[[Row], Any]) -> None:
        self.fn = fn

    def push(self, row: Row, ctx: Context) -> list[Row]:
        return [row.derive(self.fn(row))]


class FlatMap(Operator):
    """``fn(row) -> value | list of values | None`` (None or [] drops the row)."""

    def __init__(self, fn: Callable[[Row], Any]) -> None:
        self.fn = fn

    def push(self, row: Row, ctx: Context) -> list[Row]:
        out = self.fn(row)
        if out is None:
            return []
        if isinstance(out, list):
            return [row.derive(v) for v in out]
        return [row.derive(out)]


class KeyBy(Operator):
    def __init__(self, fn: Callable[[Row], Any]) -> None:
        self.fn = fn

    def push(self, row: Row, ctx: Context) -> list[Row]:
        return [row.derive(row.value, key=hashable(self.fn(row)))]


class _Raw:
    """A restored value not decoded yet."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


_MISSING: Any = object()


class LazyState(dict[Any, Any]):
    """An operator's state whose restored values stay bytes until first read, and whose
    snapshot entries stay in the snapshot until a key is asked for.

    Recovery (a snapshot, a changelog) brings back every entry, while the records that follow
    touch a few keys at a time.  Decoding a value (JSON) on its first read instead of at
    restore makes a changelog replay cost one key decode per entry, and a snapshot of entries
    never read since writes their bytes back as they came.

    With a snapshot attached (``attach``: its range of this operator's keys), the dict holds
    only the keys read or written since: a key missing from it is looked up in the snapshot
    once (by its encoded bytes, a binary search), and ``touched`` remembers which encoded
    keys were, so the snapshot never answers for a key written or deleted since.  ``len`` is
    the dict's plus the snapshot entries not touched.  Whatever needs every key (iteration,
    ``items()``) first loads the rest (``materialize``): such operators pay for their whole
    state once, the others only for what the records that follow touch."""

    __slots__ = (
        "base",
        "base_live",
        "base_range",
        "decode",
        "decode_key",
        "encode_key",
        "maybe_raw",
        "touched",
    )

    def __init__(self, decode: Callable[[Any, bytes], Any]) -> None:
        super().__init__()
        self.decode = decode
        self.maybe_raw = False  # False: every value is decoded (a whole read is a dict's)
        self.base: Any = None  # a snapshots.Snapshot
        self.base_range = (0, 0)
        self.base_live = 0
        self.touched: set[bytes] = set()
        self.encode_key: Callable[[Any], bytes] = _no_codec
        self.decode_key: Callable[[bytes], Any] = _no_codec

    def attach(
        self,
        base: Any,
        lo: int,
        hi: int,
        encode_key: Callable[[Any], bytes],
        decode_key: Callable[[bytes], Any],
    ) -> None:
        """Entries ``[lo, hi)`` of the snapshot ``base`` are this state's (read as asked)."""
        self.base = base
        self.base_range = (lo, hi)
        self.base_live = hi - lo
        self.touched = set()
        self.encode_key = encode_key
        self.decode_key = decode_key

    def _from_base(self, key: Any) -> bool:
        """Look ``key`` (missing from the dict) up in the snapshot, once; True when it was
        there (it is in the dict now)."""
        base = self.base
        if base is None:
            return False
        raw_key = self.encode_key(key)
        if raw_key in self.touched:
            return False
        self.touched.add(raw_key)
        data = base.get(raw_key)
        if data is None:
            return False
        self.base_live -= 1
        dict.__setitem__(self, key, _Raw(data))
        self.maybe_raw = True
        return True

    def materialize(self) -> None:
        """Every snapshot entry not touched into the dict (keys decoded, values not)."""
        base = self.base
        if base is None:
            return
        touched = self.touched
        for raw_key, data in base.entries(*self.base_range):
            if raw_key not in touched:
                dict.__setitem__(self, self.decode_key(raw_key), _Raw(data))
                self.maybe_raw = True
        self.base = None
        self.base_live = 0
        self.touched = set()

    def put_raw(self, key: Any, data: bytes) -> None:
        if self.base is not None and not dict.__contains__(self, key):
            self._from_base(key)
        dict.__setitem__(self, key, _Raw(data))
        self.maybe_raw = True

    def drop(self, key: Any) -> None:
        """Delete ``key`` if present, without decoding its value."""
        if self.base is not None and not dict.__contains__(self, key):
            self._from_base(key)
        dict.pop(self, key, None)

    def __getitem__(self, key: Any) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            if not self._from_base(key):
                raise KeyError(key)
            value = dict.__getitem__(self, key)
        if type(value) is _Raw:
            value = self.decode(key, value.data)
            dict.__setitem__(self, key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            if not self._from_base(key):
                return default
            value = dict.__getitem__(self, key)
        if type(value) is _Raw:
            value = self.decode(key, value.data)
            dict.__setitem__(self, key, value)
        return value

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._from_base(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.base is not None and not dict.__contains__(self, key):
            self._from_base(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        if self.base is not None and not dict.__contains__(self, key):
            self._from_base(key)
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        if self.base is not None and not dict.__contains__(self, key):
            self._from_base(key)
        value = dict.pop(self, key, *default)
        return self.decode(key, value.data) if type(value) is _Raw else value

    def __len__(self) -> int:
        return dict.__len__(self) + self.base_live

    def __iter__(self) -> Iterator[Any]:
        self.materialize()
        return dict.__iter__(self)

    def keys(self) -> Any:
        self.materialize()
        return dict.keys(self)

    def items(self) -> Any:
        self.materialize()
        if self.maybe_raw:  # decode what is left, once
            for key, value in list(dict.items(self)):
                if type(value) is _Raw:
                    dict.__setitem__(self, key, self.decode(key, value.data))
            self.maybe_raw = False
        return list(dict.items(self))

    def values(self) -> Any:
        return [value for _key, value in self.items()]

    def encoded(
        self, encode_key: Callable[[Any], bytes], encode: Callable[[Any], bytes]
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every (key bytes, value bytes): restored bytes as they are, live values encoded,
        the snapshot's entries not touched as they are in it."""
        for key, value in dict.items(self):
            yield encode_key(key), value.data if type(value) is _Raw else encode(value)
        base = self.base
        if base is not None:
            touched = self.touched
            for raw_key, data in base.entries(*self.base_range):
                if raw_key not in touched:
                    yield raw_key, data


def _no_codec(value: Any) -> Any:
    raise TypeError("no snapshot is attached")


class _Keyed(Operator):
    """Shared state plumbing: ``self.state`` maps a state key (hashable) to a live object."""

    stateful = True

    def __init__(self) -> None:
        self.state: LazyState = LazyState(self.decode_value)
        self.dirty: set[Any] = set()

    def encode_key(self, skey: Any) -> bytes:
        return self.ns + dumps(list(skey) if isinstance(skey, tuple) else skey)

    def decode_key(self, raw: bytes) -> Any:
        return hashable(json.loads(raw[len(self.ns) :]))

    def group_of(self, skey: Any) -> Any:
        """The group key a state key belongs to (itself, unless it holds a window too)."""
        return skey

    def encode_value(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode_value(self, skey: Any, raw: bytes) -> Any:
        raise NotImplementedError

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = []
        for skey in sorted(self.dirty, key=repr):
            value = self.state.get(skey)
            out.append((self.encode_key(skey), None if value is None else self.encode_value(value)))
        self.dirty.clear()
        return out

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self.state.encoded(self.encode_key, self.encode_value)

    def restore(self, key: bytes, value: bytes | None) -> None:
        skey = self.decode_key(key)
        if value is None:
            self.state.drop(skey)
        else:
            self.state.put_raw(skey, value)

    def attach(self, snapshot: Any, lo: int, hi: int) -> None:
        """The snapshot's entries ``[lo, hi)`` are this operator's: kept in the snapshot and
        read as asked when restoring schedules nothing, loaded now otherwise."""
        if type(self).on_restore is _Keyed.on_restore:
            self.state.attach(snapshot, lo, hi, self.encode_key, self.decode_key)
            return
        for key, value in snapshot.entries(lo, hi):
            self.restore(key, value)

    def restored(self) -> None:
        if type(self).on_restore is _Keyed.on_restore:
            return  # nothing to schedule: a snapshot's keys stay where they are
        # once per key of the final state, not per version a changelog holds
        for skey in list(self.state.keys()):
            self.on_restore(skey)

    def on_restore(self, skey: Any) -> None:
        """Schedule a restored key (its windows' ends, its rows' expiries)."""


def _values(aggs: Sequence[Aggregate], row: Row) -> list[Any]:
    """Every aggregate's input from ``row``, checked before any accumulator changes."""
    return [agg.value(row) for agg in aggs]


def _add(aggs: Sequence[Aggregate], accs: list[Any], values: list[Any]) -> None:
    for i, agg in enumerate(aggs):
        if values[i] is not None:
            accs[i] = agg.add(accs[i], values[i])


ANY_KEY: Any = object()  # ``current()``: every key
FINAL_TAG = b"f"  # a kept final result's state key: namespace + ``f`` + JSON [key, start, end]
# current() rows: (group key, window start, window end, value, final); no window: None, None
Current = tuple[Any, int | None, int | None, Any, bool | None]


class Finals:
    """The final results of closed windows, kept for pull queries until the watermark passes
    the window's end plus ``retention_ms`` (ksqlDB's window retention; 0 keeps none).

    A window's accumulators leave the operator's state when it closes; its result (the value
    emitted, as JSON bytes) stays here, in the changelog and snapshots under the key
    ``namespace + b"f" + [key, start, end]`` beside the operator's own entries."""

    __slots__ = ("dirty", "expiring", "retention_ms", "values")

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.values: dict[tuple[Any, int, int], bytes] = {}
        self.dirty: set[tuple[Any, int, int]] = set()
        self.expiring: list[tuple[int, int, str, tuple[Any, int, int]]] = []

    def keep(self, key: Any, start: int, end: int, value: Any) -> None:
        if self.retention_ms <= 0 or value is None:
            return
        fkey = (key, start, end)
        self.values[fkey] = dumps(value.value if isinstance(value, Keyed) else value)
        self.dirty.add(fkey)
        self._schedule(fkey)

    def _schedule(self, fkey: tuple[Any, int, int]) -> None:
        expiry = fkey[2] + self.retention_ms
        heapq.heappush(self.expiring, (expiry, fkey[1], dumps(_plain(fkey[0])).decode(), fkey))

    def expire(self, watermark: int) -> None:
        while self.expiring and self.expiring[0][0] <= watermark:
            fkey = heapq.heappop(self.expiring)[3]
            if self.values.pop(fkey, None) is not None:
                self.dirty.add(fkey)

    def changes(self, ns: bytes) -> list[tuple[bytes, bytes | None]]:
        out = [(self._key(ns, f), self.values.get(f)) for f in sorted(self.dirty, key=repr)]
        self.dirty.clear()
        return out

    def entries(self, ns: bytes) -> Iterator[tuple[bytes, bytes]]:
        for fkey, raw in self.values.items():
            yield self._key(ns, fkey), raw

    @staticmethod
    def _key(ns: bytes, fkey: tuple[Any, int, int]) -> bytes:
        return ns + FINAL_TAG + dumps([_plain(fkey[0]), fkey[1], fkey[2]])

    @staticmethod
    def is_final_key(ns: bytes, key: bytes) -> bool:
        return key[len(ns) : len(ns) + 1] == FINAL_TAG

    @staticmethod
    def group_of_key(ns: bytes, key: bytes) -> Any:
        return hashable(json.loads(key[len(ns) + 1 :])[0])

    def restore(self, ns: bytes, key: bytes, value: bytes | None) -> None:
        group, start, end = json.loads(key[len(ns) + 1 :])
        fkey = (hashable(group), start, end)
        if value is None:
            self.values.pop(fkey, None)
        else:
            self.values[fkey] = value

    def restored(self) -> None:
        for fkey in self.values:
            self._schedule(fkey)

    def current(self, key: Any) -> Iterator[Current]:
        for fkey, raw in self.values.items():
            if key is ANY_KEY or fkey[0] == key:
                yield fkey[0], fkey[1], fkey[2], json.loads(raw), True


class _Windowed(_Keyed):
    """Shared by the window kinds: the window, its aggregates and how a result is finished,
    the watermark, and the finals kept for pull queries (``Finals``)."""

    def __init__(
        self,
        window: Window,
        aggs: Sequence[Aggregate],
        finish: Finish,
        retention_ms: int = 0,
    ) -> None:
        super().__init__()
        self.window = window
        self.aggs = list(aggs)
        self.finish = finish
        self.finals = Finals(retention_ms)

    def _watermark(self, ctx: Context) -> int:
        return ctx.clock.max_ts - self.window.grace_ms

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        return super().changes() + self.finals.changes(self.ns)

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        yield from super().entries()
        yield from self.finals.entries(self.ns)

    def restore(self, key: bytes, value: bytes | None) -> None:
        if Finals.is_final_key(self.ns, key):
            self.finals.restore(self.ns, key, value)
        else:
            super().restore(key, value)

    def attach(self, snapshot: Any, lo: int, hi: int) -> None:
        for key, value in snapshot.entries(lo, hi):  # finals beside the windows: all now
            self.restore(key, value)

    def restored(self) -> None:
        super().restored()
        self.finals.restored()


class WindowAggregate(_Windowed):
    """Tumbling, hopping and cumulating windows: one accumulator list per (key, window);
    one final result per window when the watermark reaches its end."""

    def __init__(
        self,
        window: Window,
        aggs: Sequence[Aggregate],
        finish: Finish,
        retention_ms: int = 0,
    ) -> None:
        super().__init__(window, aggs, finish, retention_ms)
        self.closing: list[tuple[int, int, str, Any]] = []  # heap of (end, start, key json, skey)

    def push(self, row: Row, ctx: Context) -> list[Row]:
        watermark = self._watermark(ctx)
        windows = [w for w in self.window.assign(row.timestamp) if w[1] > watermark]
        if not windows:
            ctx.stats.late_dropped += 1
            return []
        values = _values(self.aggs, row)
        for start, end in windows:
            skey = (row.key, start, end)
            accs = self.state.get(skey)
            if accs is None:
                accs = self.state[skey] = [agg.create() for agg in self.aggs]
                self._schedule(skey)
            _add(self.aggs, accs, values)
            self.dirty.add(skey)
        return []

    def group_of(self, skey: Any) -> Any:
        return skey[0]

    def _schedule(self, skey: tuple[Any, int, int]) -> None:
        heapq.heappush(self.closing, (skey[2], skey[1], dumps(_plain(skey[0])).decode(), skey))

    def on_restore(self, skey: Any) -> None:
        self._schedule(skey)

    def fire(self, ctx: Context) -> list[Row]:
        watermark = self._watermark(ctx)
        out: list[Row] = []
        while self.closing and self.closing[0][0] <= watermark:
            end, start, _k, skey = heapq.heappop(self.closing)
            accs = self.state.pop(skey, None)
            if accs is None:
                continue  # already closed
            self.dirty.add(skey)
            results = [agg.result(acc) for agg, acc in zip(self.aggs, accs, strict=True)]
            value = self.finish(skey[0], start, end, results, None)
            if value is not None:
                out.append(emitted(skey[0], value, end - 1))
            self.finals.keep(skey[0], start, end, value)
        self.finals.expire(watermark)
        return out

    def current(self, key: Any = ANY_KEY) -> list[Current]:
        """The value of every window held of ``key`` (of every key with ``ANY_KEY``): open
        windows (their result so far, not final) and the finals kept."""
        out: list[Current] = []
        for skey in [k for k in self.state if key is ANY_KEY or k[0] == key]:
            accs = self.state[skey]
            results = [agg.result(acc) for agg, acc in zip(self.aggs, accs, strict=True)]
            value = self.finish(skey[0], skey[1], skey[2], results, None)
            if value is not None:
                out.append((skey[0], skey[1], skey[2], value, False))
        out.extend(self.finals.current(key))
        return out

    def encode_value(self, value: Any) -> bytes:
        return dumps([agg.encode(acc) for agg, acc in zip(self.aggs, value, strict=True)])

    def decode_value(self, skey: Any, raw: bytes) -> Any:
        data = json.loads(raw)
        return [agg.decode(d) for agg, d in zip(self.aggs, data, strict=True)]


def _plain(key: Any) -> Any:
    return list(key) if isinstance(key, tuple) else key


class SessionAggregate(_Windowed):
    """Session windows: per key a list of open sessions ``[start, end, accumulators]``,
    merged when a record bridges two; a session closes when the watermark reaches its end
    (its last record plus the gap)."""

    def push(self, row: Row, ctx: Context) -> list[Row]:
        gap = self.window.slide_ms
        ts = row.timestamp
        if ts + gap <= self._watermark(ctx):
            ctx.stats.late_dropped += 1
            return []
        values = _values(self.aggs, row)
        sessions: list[list[Any]] = self.state.get(row.key) or []
        accs = [agg.create() for agg in self.aggs]
        _add(self.aggs, accs, values)
        merged: list[Any] = [ts, ts + gap, accs]
        keep = []
        for s in sessions:
            if s[0] < merged[1] and merged[0] < s[1]:  # overlapping: merge
                merged = [
                    min(s[0], merged[0]),
                    max(s[1], merged[1]),
                    [agg.merge(a, b) for agg, a, b in zip(self.aggs, s[2], merged[2], strict=True)],
                ]
            else:
                keep.append(s)
        keep.append(merged)
        keep.sort(key=lambda s: s[0])
        self.state[row.key] = keep
        self.dirty.add(row.key)
        return []

    def fire(self, ctx: Context) -> list[Row]:
        watermark = self._watermark(ctx)
        closed: list[tuple[int, int, str, Any, list[Any]]] = []
        for key, sessions in self.state.items():
            if sessions[0][1] > watermark and all(s[1] > watermark for s in sessions):
                continue
            remaining = []
            for s in sessions:
                if s[1] <= watermark:
                    closed.append((s[1], s[0], dumps(_plain(key)).decode(), key, s[2]))
                else:
                    remaining.append(s)
            if remaining:
                self.state[key] = remaining
            else:
                del self.state[key]
            self.dirty.add(key)
        out: list[Row] = []
        for end, start, _k, key, accs in sorted(closed, key=lambda c: c[:3]):
            results = [agg.result(acc) for agg, acc in zip(self.aggs, accs, strict=True)]
            value = self.finish(key, start, end, results, None)
            if value is not None:
                out.append(emitted(key, value, end - 1))
            self.finals.keep(key, start, end, value)
        self.finals.expire(watermark)
        return out

    def current(self, key: Any = ANY_KEY) -> list[Current]:
        """The sessions held of ``key`` (every key with ``ANY_KEY``): open ones (their
        result so far, not final) and the finals kept."""
        out: list[Current] = []
        for skey in [k for k in self.state if key is ANY_KEY or k == key]:
            for start, end, accs in self.state[skey]:
                results = [agg.result(acc) for agg, acc in zip(self.aggs, accs, strict=True)]
                value = self.finish(skey, start, end, results, None)
                if value is not None:
                    out.append((skey, start, end, value, False))
        out.extend(self.finals.current(key))
        return out

    def encode_value(self, value: Any) -> bytes:
        return dumps(
            [
                [s[0], s[1], [a.encode(acc) for a, acc in zip(self.aggs, s[2], strict=True)]]
                for s in value
            ]
        )

    def decode_value(self, skey: Any, raw: bytes) -> Any:
        return [
            [s[0], s[1], [a.decode(d) for a, d in zip(self.aggs, s[2], strict=True)]]
            for s in json.loads(raw)
        ]


class OverAggregate(_Keyed):
    """OVER windows (moving aggregates) and the Python API's sliding windows: one result per
    row, over the rows of its key within ``size`` before it (RANGE, peers included) or the
    ``rows`` rows before it (ROWS).  A row is emitted once the watermark reaches its time —
    so rows that arrive out of order but not late are counted where they belong.

    State per key: ``[history, pending]``: rows emitted (``[ts, value]``, kept while a later
    row may still need them) and rows waiting for the watermark (``[ts, value, record
    key]``)."""

    def __init__(self, window: Window, aggs: Sequence[Aggregate], finish: Finish) -> None:
        super().__init__()
        self.window = window
        self.aggs = list(aggs)
        self.finish = finish
        self.waiting: list[tuple[int, str, Any]] = []  # heap of (first pending ts, key json, key)

    def _watermark(self, ctx: Context) -> int:
        return ctx.clock.max_ts - self.window.grace_ms

    def push(self, row: Row, ctx: Context) -> list[Row]:
        if row.timestamp < self._watermark(ctx):
            ctx.stats.late_dropped += 1
            return []
        _values(self.aggs, row)  # checked now, so a bad row goes to the dead letters
        entry = self.state.get(row.key)
        if entry is None:
            entry = self.state[row.key] = [[], []]
        entry[1].append([row.timestamp, row.value, row.record_key])
        heapq.heappush(self.waiting, (row.timestamp, dumps(_plain(row.key)).decode(), row.key))
        self.dirty.add(row.key)
        return []

    def on_restore(self, skey: Any) -> None:
        entry = self.state.get(skey)
        if entry is not None and entry[1]:
            ts = min(p[0] for p in entry[1])
            heapq.heappush(self.waiting, (ts, dumps(_plain(skey)).decode(), skey))

    def fire(self, ctx: Context) -> list[Row]:
        watermark = self._watermark(ctx)
        due: dict[str, Any] = {}
        while self.waiting and self.waiting[0][0] <= watermark:
            _ts, key_json, key = heapq.heappop(self.waiting)
            due[key_json] = key
        out: list[Row] = []
        for key_json in sorted(due):
            key = due[key_json]
            if key in self.state and self.state[key][1]:
                out.extend(self._emit(key, watermark))
        out.sort(key=lambda r: r.timestamp)  # stable: keys in key order within a time
        return out

    def _emit(self, key: Any, watermark: int) -> list[Row]:
        history, pending = self.state[key]
        ready = sorted((p for p in pending if p[0] <= watermark), key=lambda p: p[0])
        rest = [p for p in pending if p[0] > watermark]
        out: list[Row] = []
        rows_mode = self.window.kind == "rows"
        for i, (ts, value, record_key) in enumerate(ready):
            history.append([ts, value])
            if rows_mode:
                frame = history[-(self.window.rows + 1) :]
            else:
                low = ts - self.window.size_ms
                # peers: rows of the same time still to come in this batch count too
                peers = [p for p in ready[i + 1 :] if p[0] == ts]
                frame = [h for h in history if low <= h[0] <= ts] + peers
            accs = [agg.create() for agg in self.aggs]
            for _t, v in frame:
                _add(self.aggs, accs, _values(self.aggs, Row(key, v, _t)))
            results = [agg.result(acc) for agg, acc in zip(self.aggs, accs, strict=True)]
            current = Row(key, value, ts)
            current.record_key = record_key
            result = self.finish(key, ts - self.window.size_ms, ts, results, current)
            if result is not None:
                row = emitted(key, result, ts)
                row.record_key = record_key
                out.append(row)
        if rows_mode:
            history[:] = history[-self.window.rows :] if self.window.rows else []
        else:
            low = watermark - self.window.size_ms
            history[:] = [h for h in history if h[0] >= low]
        if rest:
            heapq.heappush(
                self.waiting, (min(p[0] for p in rest), dumps(_plain(key)).decode(), key)
            )
        if history or rest:
            self.state[key] = [history, rest]
        else:
            del self.state[key]
        self.dirty.add(key)
        return out

    def encode_value(self, value: Any) -> bytes:
        return dumps(value)

    def decode_value(self, skey: Any, raw: bytes) -> Any:
        return json.loads(raw)


class GroupAggregate(_Keyed):
    """An aggregation without a window: every row updates its key's accumulators and emits
    the key's new result (an upsert stream: the output topic's last record per key is the
    answer)."""

    def __init__(self, aggs: Sequence[Aggregate], finish: Finish) -> None:
        super().__init__()
        self.aggs = list(aggs)
        self.finish = finish

    def push(self, row: Row, ctx: Context) -> list[Row]:
        values = _values(self.aggs, row)
        accs = self.state.get(row.key)
        if accs is None:
            accs = self.state[row.key] = [agg.create() for agg in self.aggs]
        _add(self.aggs, accs, values)
        self.dirty.add(row.key)
        results = [agg.result(acc) for agg, acc in zip(self.aggs, accs, strict=True)]
        value = self.finish(row.key, None, None, results, row)
        if value is None:
            return []
        if isinstance(value, Keyed):
            return [row.derive(value.value, key=value.key)]
        return [row.derive(value)]

    def current(self, key: Any = ANY_KEY) -> list[Current]:
        """The current result of ``key`` (of every key with ``ANY_KEY``)."""
        keys = list(self.state.keys()) if key is ANY_KEY else [key]
        out: list[Current] = []
        for skey in keys:
            accs = self.state.get(skey)
            if accs is None:
                continue
            results = [agg.result(acc) for agg, acc in zip(self.aggs, accs, strict=True)]
            value = self.finish(skey, None, None, results, None)
            if value is not None:
                out.append((skey, None, None, value, None))
        return out

    def encode_value(self, value: Any) -> bytes:
        return dumps([agg.encode(acc) for agg, acc in zip(self.aggs, value, strict=True)])

    def decode_value(self, skey: Any, raw: bytes) -> Any:
        return [agg.decode(d) for agg, d in zip(self.aggs, json.loads(raw), strict=True)]


class KeyState:
    """The state a stateful user function sees for the current key: a dict-like of JSON
    values, saved with the task's state."""

    __slots__ = ("changed", "data")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.changed = False

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def set(self, name: str, value: Any) -> None:
        self.data[name] = value
        self.changed = True

    def delete(self, name: str) -> None:
        if self.data.pop(name, None) is not None:
            self.changed = True


class StatefulApply(_Keyed):
    """``fn(value, state) -> value | list | None``: a user function with per-key state."""

    def __init__(self, fn: Callable[[Any, KeyState], Any]) -> None:
        super().__init__()
        self.fn = fn

    def push(self, row: Row, ctx: Context) -> list[Row]:
        state = KeyState(dict(self.state.get(row.key) or {}))
        out = self.fn(row.value, state)
        if state.changed:
            if state.data:
                self.state[row.key] = state.data
            else:
                self.state.pop(row.key, None)
            self.dirty.add(row.key)
        if out is None:
            return []
        if isinstance(out, list):
            return [row.derive(v) for v in out]
        return [row.derive(out)]

    def encode_value(self, value: Any) -> bytes:
        return dumps(value)

    def decode_value(self, skey: Any, raw: bytes) -> Any:
        return json.loads(raw)


class TableJoin(Operator):
    """Stream-table join: the table is a compacted topic read whole by the runtime (every
    partition, kept current), looked up by ``lookup(row)`` = the table record's key as
    text.  ``merge(row, table_value or None)`` builds the joined value; ``inner`` drops rows
    without a match."""

    def __init__(
        self,
        table: str,
        lookup: Callable[[Row], Any],
        merge: Callable[[Row, Any], Any],
        *,
        inner: bool = True,
    ) -> None:
        self.table = table
        self.lookup = lookup
        self.merge = merge
        self.inner = inner
        self.rows: dict[str, Any] = {}  # filled by the runtime

    def push(self, row: Row, ctx: Context) -> list[Row]:
        key = self.lookup(row)
        match = (
            self.rows.get(key if isinstance(key, str) else str(key)) if key is not None else None
        )
        if match is None and self.inner:
            return []
        value = self.merge(row, match)
        return [] if value is None else [row.derive(value)]


def side_columns(row: Row) -> dict[str, Any]:
    """A row as the joined row holds its other input: its fields and its record columns
    (``\x00key``, ``\x00timestamp``, ``\x00partition``, ``\x00offset``)."""
    out = dict(row.value) if isinstance(row.value, dict) else {}
    out["\x00key"] = row.record_key
    out["\x00timestamp"] = row.timestamp
    out["\x00partition"] = row.partition
    out["\x00offset"] = row.offset
    return out


class IntervalJoin(_Keyed):
    """A windowed stream-stream join (Flink's interval join): rows of the two inputs with the
    same key join when ``r.ts - lower <= l.ts <= r.ts + upper``; ``match(joined)`` checks the
    rest of the ON condition.  A pair is emitted when its second row arrives (the left row
    with the right one under ``slot``: ``side_columns``), in arrival order.

    State per key: ``[lefts, rights]``, each row ``[ts, value, record key, partition,
    offset]``.  A left row is kept while a right row that is not late could still match it
    (until the watermark passes ``l.ts + lower``), a right row until it passes ``r.ts +
    upper``; a row older than the watermark is late: dropped and counted, as windows do."""

    def __init__(
        self,
        lower_ms: int,
        upper_ms: int,
        grace_ms: int,
        slot: str,
        match: Callable[[Row], Any],
    ) -> None:
        super().__init__()
        self.lower_ms = lower_ms
        self.upper_ms = upper_ms
        self.grace_ms = grace_ms
        self.slot = slot
        self.match = match
        self.expiring: list[tuple[int, str, Any]] = []  # heap of (expiry, key json, key)

    def _watermark(self, ctx: Context) -> int:
        return ctx.clock.max_ts - self.grace_ms

    def push(self, row: Row, ctx: Context) -> list[Row]:
        if row.timestamp < self._watermark(ctx):
            ctx.stats.late_dropped += 1
            return []
        entry = self.state.get(row.key)
        if entry is None:
            entry = self.state[row.key] = [[], []]
        left = row.side == "l"
        stored = [row.timestamp, row.value, row.record_key, row.partition, row.offset]
        out: list[Row] = []
        for other in entry[1] if left else entry[0]:
            other_row = self._row(row.key, other)
            lrow, rrow = (row, other_row) if left else (other_row, row)
            if rrow.timestamp - self.lower_ms <= lrow.timestamp <= rrow.timestamp + self.upper_ms:
                joined = lrow.derive({**(lrow.value or {}), self.slot: side_columns(rrow)})
                if self.match(joined):
                    out.append(joined)
        entry[0 if left else 1].append(stored)
        expiry = row.timestamp + (self.lower_ms if left else self.upper_ms)
        heapq.heappush(self.expiring, (expiry, dumps(_plain(row.key)).decode(), row.key))
        self.dirty.add(row.key)
        return out

    @staticmethod
    def _row(key: Any, stored: list[Any]) -> Row:
        ts, value, record_key, partition, offset = stored
        row = Row(key, value, ts, "", partition, offset)
        row.record_key = record_key
        return row

    def fire(self, ctx: Context) -> list[Row]:
        watermark = self._watermark(ctx)
        while self.expiring and self.expiring[0][0] < watermark:
            _expiry, _k, key = heapq.heappop(self.expiring)
            entry = self.state.get(key)
            if entry is None:
                continue
            lefts = [r for r in entry[0] if r[0] + self.lower_ms >= watermark]
            rights = [r for r in entry[1] if r[0] + self.upper_ms >= watermark]
            if len(lefts) == len(entry[0]) and len(rights) == len(entry[1]):
                continue
            self.dirty.add(key)
            if lefts or rights:
                self.state[key] = [lefts, rights]
            else:
                del self.state[key]
        return []

    def on_restore(self, skey: Any) -> None:
        entry = self.state.get(skey)
        if entry is None:
            return
        expiries = [r[0] + self.lower_ms for r in entry[0]]
        expiries += [r[0] + self.upper_ms for r in entry[1]]
        key_json = dumps(_plain(skey)).decode()
        for expiry in set(expiries):
            heapq.heappush(self.expiring, (expiry, key_json, skey))

    def encode_value(self, value: Any) -> bytes:
        return dumps(value)

    def decode_value(self, skey: Any, raw: bytes) -> Any:
        return json.loads(raw)
