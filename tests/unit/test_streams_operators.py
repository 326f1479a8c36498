"""The streams engine without I/O: windows and aggregates against references computed here in
plain Python over the same records, late data, state restore from a changelog and a snapshot,
the dead-letter path."""

from __future__ import annotations

import json
import random
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from bayou.streams import (
    App,
    avg,
    count,
    count_distinct,
    cumulate,
    first,
    hopping,
    last,
    max_,
    min_,
    percentile,
    session,
    sliding,
    stddev,
    sum_,
    top_k,
    tumbling,
)
from bayou.streams.pipeline import Pipeline, Processor, SourceRecord
from bayou.streams.rows import iso_ms
from bayou.streams.snapshots import open_snapshot, read_snapshot, write_snapshot

T0 = 1_700_000_000_000


def records(n: int, *, seed: int = 7, disorder_ms: int = 0) -> list[SourceRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + i * 250 - (rng.randrange(disorder_ms) if disorder_ms else 0)
        device = f"d{rng.randrange(4)}"
        value = {"device": device, "temp": round(rng.uniform(10, 30), 2), "user": rng.randrange(50)}
        out.append(SourceRecord(i, ts, device.encode(), json.dumps(value).encode(), ()))
    return out


def run(pipeline: Pipeline, recs: list[SourceRecord], tail_ts: int | None = None) -> list[Any]:
    """Feed ``recs`` to one task; a final record far ahead (``tail_ts``) closes every window."""
    proc = Processor("t", [pipeline])
    proc.assign(pipeline.source, 0)
    feed = list(recs)
    if tail_ts is not None:
        feed.append(SourceRecord(len(recs), tail_ts, b"zz", b'{"device": "zz"}', ()))
    proc.process(pipeline.source, 0, feed)
    proc.fire()
    out = proc.collect().outputs
    return [json.loads(o.value) for o in out if o.value is not None and o.key != b"zz"]


def test_an_idle_task_commits_nothing() -> None:
    """Offsets are committed when they moved: a runner whose tasks read nothing since its
    last commit writes nothing (no transaction every commit interval)."""
    app = App("t")
    app.stream("metrics").filter(lambda v: True).to("out")
    proc = Processor("t", app.pipelines())
    proc.assign("metrics", 0)
    proc.process("metrics", 0, records(5))
    proc.fire()
    first = proc.collect()
    assert first.offsets == {("metrics", 0): 5} and len(first.outputs) == 5
    assert not proc.collect()
    proc.process("metrics", 0, records(6)[5:])
    assert proc.collect().offsets == {("metrics", 0): 6}


def one(app: App) -> Pipeline:
    return app.pipelines()[0]


def reference_windows(
    recs: list[SourceRecord], windows_of: Any, grace: int = 0
) -> dict[tuple[str, int, int], list[float]]:
    """Values per (device, window), with Flink's late rule applied in arrival order."""
    out: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    high = -(1 << 62)
    for r in recs:
        v = json.loads(r.value)
        for start, end in windows_of(r.timestamp):
            if end > high - grace:
                out[(v["device"], start, end)].append(v["temp"])
        high = max(high, r.timestamp)
    return out


@pytest.mark.parametrize(
    "window,windows_of",
    [
        (tumbling(seconds=5), lambda ts: [(ts - ts % 5000, ts - ts % 5000 + 5000)]),
        (
            hopping(size_ms=6000, slide_ms=2000),
            lambda ts: [
                (s, s + 6000)
                for s in range(ts - ts % 2000 - 4000, ts + 1, 2000)
                if s <= ts < s + 6000
            ],
        ),
        (
            cumulate(step_ms=2000, size_ms=6000),
            lambda ts: [
                (ts - ts % 6000, e)
                for e in range(ts - ts % 6000 + 2000, ts - ts % 6000 + 6001, 2000)
                if e > ts
            ],
        ),
    ],
    ids=["tumble", "hop", "cumulate"],
)
def test_fixed_windows_match_a_reference(window: Any, windows_of: Any) -> None:
    recs = records(400, disorder_ms=900)
    app = App("a")
    app.stream("s").key_by("device").window(
        type(window)(window.kind, window.size_ms, window.slide_ms, 1000)
    ).agg(avg("temp"), sum_("temp"), count(), min_("temp"), max_("temp")).to("o")
    got = run(one(app), recs, tail_ts=T0 + 10**7)
    expected = reference_windows(recs, windows_of, grace=1000)
    assert len(got) == len(expected)
    for row in got:
        values = expected[(row["key"], _ms(row["window_start"]), _ms(row["window_end"]))]
        assert row["count"] == len(values)
        assert row["avg_temp"] == pytest.approx(statistics.fmean(values))
        assert row["sum_temp"] == pytest.approx(sum(values))
        assert (row["min_temp"], row["max_temp"]) == (min(values), max(values))
    # one final result per window, emitted in window-end order
    ends = [_ms(r["window_end"]) for r in got]
    assert ends == sorted(ends)


def _ms(iso: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_window_times_are_iso_utc_with_milliseconds() -> None:
    assert iso_ms(T0 + 5) == "2023-11-14T22:13:20.005Z"


def test_late_records_are_dropped_and_counted() -> None:
    app = App("a")
    app.stream("s").key_by("device").window(tumbling(seconds=1)).agg(count()).to("o")
    pipeline = one(app)

    def rec(i: int, ts: int) -> SourceRecord:
        return SourceRecord(i, ts, b"d", b'{"device": "d"}', ())

    feed = [rec(0, T0), rec(1, T0 + 1500), rec(2, T0 + 200), rec(3, T0 + 1600), rec(4, T0 + 5000)]
    got = run(pipeline, feed)
    assert [(r["window_start"], r["count"]) for r in got] == [
        (iso_ms(T0), 1),
        (iso_ms(T0 + 1000), 2),
    ]
    assert pipeline.stats.late_dropped == 1


def test_session_windows_match_a_reference() -> None:
    rng = random.Random(3)
    recs, ts = [], T0
    for i in range(300):
        ts += rng.choice([100, 200, 300, 2500])
        dev = f"d{rng.randrange(3)}"
        recs.append(
            SourceRecord(i, ts, dev.encode(), json.dumps({"device": dev, "temp": i}).encode(), ())
        )
    app = App("a")
    app.stream("s").key_by("device").window(session(gap_ms=1000)).agg(count(), sum_("temp")).to("o")
    got = run(one(app), recs, tail_ts=ts + 10**6)
    expected = []
    by_dev: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in recs:
        v = json.loads(r.value)
        by_dev[v["device"]].append((r.timestamp, v["temp"]))
    for dev, items in by_dev.items():
        start, last_ts, vals = items[0][0], items[0][0], [items[0][1]]
        for t, v in items[1:]:
            if t < last_ts + 1000:
                last_ts = t
                vals.append(v)
            else:
                expected.append((dev, start, last_ts + 1000, len(vals), sum(vals)))
                start, last_ts, vals = t, t, [v]
        expected.append((dev, start, last_ts + 1000, len(vals), sum(vals)))
    assert sorted(
        (r["key"], _ms(r["window_start"]), _ms(r["window_end"]), r["count"], r["sum_temp"])
        for r in got
    ) == sorted(expected)


def test_sliding_window_emits_a_moving_aggregate_per_record() -> None:
    recs = records(200, disorder_ms=0)
    app = App("a")
    app.stream("s").key_by("device").window(sliding(seconds=3)).agg(
        avg("temp"), stddev("temp"), count()
    ).to("o")
    got = run(one(app), recs, tail_ts=T0 + 10**7)
    assert len(got) == len(recs)
    history: dict[str, list[tuple[int, float]]] = defaultdict(list)
    expected = []
    for r in recs:
        v = json.loads(r.value)
        history[v["device"]].append((r.timestamp, v["temp"]))
        frame = [t for ts, t in history[v["device"]] if r.timestamp - 3000 <= ts <= r.timestamp]
        expected.append(
            (
                v["device"],
                r.timestamp,
                statistics.fmean(frame),
                statistics.pstdev(frame),
                len(frame),
            )
        )
    for row, (dev, ts, mean, sd, n) in zip(got, expected, strict=True):
        assert (row["key"], _ms(row["window_end"]), row["count"]) == (dev, ts, n)
        assert row["avg_temp"] == pytest.approx(mean)
        assert row["stddev_temp"] == pytest.approx(sd, abs=1e-9)


def test_sketch_aggregates_and_first_last() -> None:
    recs = []
    for i in range(5000):
        value = {
            "device": "d",
            "user": i % 1500,
            "temp": float(i % 1000),
            "tag": f"t{i % 7 if i % 3 else 0}",
        }
        recs.append(SourceRecord(i, T0 + i, b"d", json.dumps(value).encode(), ()))
    app = App("a")
    app.stream("s").key_by("device").window(tumbling(minutes=1)).agg(
        count_distinct("user"),
        percentile("temp", 0.9),
        top_k("tag", 2),
        first("user"),
        last("user"),
    ).to("o")
    [row] = run(one(app), recs, tail_ts=T0 + 10**7)
    assert abs(row["count_distinct_user"] - 1500) <= 1500 * 0.05
    assert abs(row["p90_temp"] - 900) <= 1000 * 0.03
    tags = defaultdict(int)
    for r in recs:
        tags[json.loads(r.value)["tag"]] += 1
    best = sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    assert row["top_k_tag"] == [[k, n] for k, n in best]
    assert (row["first_user"], row["last_user"]) == (0, 4999 % 1500)


@pytest.mark.parametrize("window", ["hopping", "session"])
def test_restore_from_changelog_and_snapshot_gives_the_same_results(
    tmp_path: Path, window: str
) -> None:
    recs = records(600, disorder_ms=400)
    app = App("a")
    spec = hopping(size_ms=4000, slide_ms=1000) if window == "hopping" else session(gap_ms=300)
    app.stream("s").key_by("device").window(spec).agg(avg("temp"), count_distinct("user")).to("o")
    pipeline = one(app)
    whole = run(pipeline, recs, tail_ts=T0 + 10**7)

    first_half = Processor("t", [pipeline])
    first_half.assign("s", 0)
    first_half.process("s", 0, recs[:250])
    c1 = first_half.collect()
    first_half.process("s", 0, recs[250:300])
    c2 = first_half.collect()
    # a snapshot after commit 1, the changelog tail of commit 2
    snap = tmp_path / "0.snapshot"
    state_after_1: dict[bytes, bytes | None] = {}
    for _t, _p, k, v in c1.changelog:
        state_after_1[k] = v
    write_snapshot(snap, 1, ((k, v) for k, v in state_after_1.items() if v is not None))
    offset, entries = read_snapshot(snap) or (0, [])
    resumed = Processor("t", [pipeline])
    [task] = resumed.assign("s", 0)
    for k, v in entries:
        task.restore(k, v)
    for _t, _p, k, v in c2.changelog:
        task.restore(k, v)
    task.restored()
    tail = [*recs[300:], SourceRecord(len(recs), T0 + 10**7, b"zz", b'{"device": "zz"}', ())]
    resumed.process("s", 0, tail)
    out = [
        json.loads(o.value)
        for o in [*c1.outputs, *c2.outputs, *resumed.collect().outputs]
        if o.key != b"zz"
    ]
    assert out == whole
    assert offset == 1


def test_torn_snapshot_is_ignored(tmp_path: Path) -> None:
    snap = tmp_path / "s"
    write_snapshot(snap, 9, [(b"k", b"v")] * 3)
    snap.write_bytes(snap.read_bytes()[:-5])
    assert read_snapshot(snap) is None


def test_bad_records_go_to_the_dead_letter_topic_with_the_error() -> None:
    app = App("a")
    app.stream("s", dead_letter_topic="s-dlq").key_by("device").window(tumbling(seconds=1)).agg(
        avg("temp")
    ).to("o")
    pipeline = one(app)
    proc = Processor("t", [pipeline])
    proc.assign("s", 0)
    proc.process(
        "s",
        0,
        [
            SourceRecord(0, T0, b"d", b"not json", (("h", b"1"),)),
            SourceRecord(1, T0, b"d", b'{"device": "d", "temp": "warm"}', ()),
            SourceRecord(2, T0, b"d", b'{"device": "d", "temp": 20}', ()),
            SourceRecord(3, T0 + 5000, b"d", b'{"device": "d", "temp": 1}', ()),
        ],
    )
    outputs = proc.collect().outputs
    dead = [o for o in outputs if o.topic == "s-dlq"]
    assert [o.value for o in dead] == [b"not json", b'{"device": "d", "temp": "warm"}']
    headers = dict(dead[0].headers)
    assert headers["h"] == b"1"
    assert headers["bayou.error.offset"] == b"0"
    assert b"JSONDecodeError" in headers["bayou.error"]
    assert b"not a number" in dict(dead[1].headers)["bayou.error"]
    [result] = [json.loads(o.value) for o in outputs if o.topic == "o"]
    assert result["avg_temp"] == 20.0
    assert pipeline.stats.dead_letters == 2


def test_a_snapshot_is_read_key_by_key_and_gives_the_same_results(tmp_path: Path) -> None:
    def count(value: Any, state: Any) -> Any:
        n = (state.get("n") or 0) + 1
        state.set("n", n)
        if n == 3:
            state.delete("n")  # a deletion the snapshot must not bring back
        return {"k": value["k"], "n": n}

    app = App("a")
    app.stream("s").process(count).to("o")
    pipeline = one(app)

    def recs(first: int, n: int) -> list[SourceRecord]:
        return [
            SourceRecord(i, T0 + i, f"k{i % 50}".encode(), json.dumps({"k": i % 50}).encode(), ())
            for i in range(first, first + n)
        ]

    whole = Processor("t", [pipeline])
    [live] = whole.assign("s", 0)
    whole.process("s", 0, recs(0, 60))
    whole.collect()
    snap = tmp_path / "0.snapshot"
    write_snapshot(snap, 60, live.entries())
    whole.process("s", 0, recs(60, 35))  # the changelog's tail: keys 10..44 change
    tail = whole.collect().changelog

    snapshot = open_snapshot(snap)
    assert snapshot is not None and snapshot.offset == 60
    resumed = Processor("t", [pipeline])
    [task] = resumed.assign("s", 0)
    task.restore_snapshot(snapshot)
    [op] = [o for o in task.ops if o.stateful]
    state = op.state  # type: ignore[attr-defined]
    assert dict.__len__(state) == 0 and len(state) == len(live.ops[-1].state)  # type: ignore[attr-defined]
    for _t, _p, key, value in tail:
        task.restore(key, value)
    task.restored()
    assert dict.__len__(state) == 35  # the tail's keys, nothing else read

    more = recs(95, 100)
    whole.process("s", 0, more)
    resumed.process("s", 0, more)
    assert [o.value for o in resumed.collect().outputs] == [
        o.value for o in whole.collect().outputs
    ]
    assert dict(task.entries()) == dict(live.entries())
    write_snapshot(snap, 195, task.entries())  # over the file it reads from
    again = open_snapshot(snap)
    assert again is not None and dict(again.entries()) == dict(live.entries())
    assert read_snapshot(snap) == (195, sorted(dict(live.entries()).items()))


def test_a_version_1_snapshot_is_still_read(tmp_path: Path) -> None:
    import struct

    entries = [(b'1:"b"', b"[2]"), (b'1:"a"', b"[1]"), (b"~clock", b"5")]
    body = b"".join(struct.pack("<II", len(k), len(v)) + k + v for k, v in entries)
    snap = tmp_path / "0.snapshot"
    snap.write_bytes(b"BAYOUSNAP1" + struct.pack("<Q", 42) + body + b"END" + struct.pack("<Q", 3))
    opened = open_snapshot(snap)
    assert opened is not None and opened.offset == 42
    assert list(opened.entries()) == sorted(entries)
    assert opened.get(b'1:"b"') == b"[2]" and opened.get(b'1:"c"') is None
    assert opened.range(b"1:") == (0, 2)
    assert read_snapshot(snap) == (42, entries)
