"""SQL views without I/O: each window type and aggregate of a compiled view against DuckDB
running the equivalent query over the same records; late records; errors that point at the
token; the dead-letter path."""

from __future__ import annotations

import json
import random
from typing import Any

import duckdb
import pytest

from bayou.streams.pipeline import Processor, SourceRecord
from bayou.streams.rows import iso_ms
from bayou.streams.sql.errors import SqlError
from bayou.streams.sql.statements import (
    CreateView,
    DescribeView,
    DropView,
    PullQuery,
    ShowViews,
    parse_statement,
)

T0 = 1_700_000_000_000
TAIL = T0 + 10_000_000


def records(n: int, *, seed: int = 11, disorder_ms: int = 0) -> list[SourceRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + i * 250 - (rng.randrange(disorder_ms) if disorder_ms else 0)
        value = {
            "device": f"d{rng.randrange(4)}",
            "temp": round(rng.uniform(10, 30), 2),
            "user": rng.randrange(40),
            "ts": ts,
        }
        out.append(SourceRecord(i, ts, b"k", json.dumps(value).encode(), ()))
    return out


def run_view(sql: str, recs: list[SourceRecord], *, close: bool = True) -> list[dict[str, Any]]:
    """The view's output records (values), in order; a record far ahead closes every window."""
    statement = parse_statement(sql)
    assert isinstance(statement, CreateView)
    plan = statement.plan
    proc = Processor("t", [plan.pipeline()])
    proc.assign(plan.source, 0)
    feed = list(recs)
    if close:
        tail = {"device": "zz", "temp": 0, "user": 0, "ts": TAIL}
        feed.append(SourceRecord(len(feed), TAIL, b"k", json.dumps(tail).encode(), ()))
    for record in feed:
        proc.process(plan.source, 0, [record])
        proc.fire()
    outs = proc.collect().outputs
    return [json.loads(o.value) for o in outs if o.topic == plan.name and o.value is not None]


def duck(recs: list[SourceRecord], query: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (device VARCHAR, temp DOUBLE, u INTEGER, ts BIGINT, seq INTEGER)")
    rows = []
    for r in recs:
        v = json.loads(r.value or b"{}")
        rows.append((v["device"], v["temp"], v["user"], r.timestamp, r.offset))
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    return con.execute(query).fetchall()


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


WINDOWS = {
    "tumble": (
        "TUMBLE(TABLE telemetry, DESCRIPTOR(_timestamp), INTERVAL '5' SECOND)",
        "SELECT ts - ts % 5000 AS ws, ts - ts % 5000 + 5000 AS we, * FROM t",
    ),
    "hop": (
        "HOP(TABLE telemetry, DESCRIPTOR(_timestamp), INTERVAL '2' SECOND, INTERVAL '6' SECOND)",
        "SELECT s AS ws, s + 6000 AS we, t.* FROM t, "
        "range(ts - ts % 2000 - 4000, ts + 1, 2000) AS r(s) WHERE ts < s + 6000",
    ),
    "cumulate": (
        "CUMULATE(TABLE telemetry, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND)",
        "SELECT ts - ts % 6000 AS ws, e AS we, t.* FROM t, "
        "range(ts - ts % 6000 + 2000, ts - ts % 6000 + 6001, 2000) AS r(e) WHERE e > ts",
    ),
}


@pytest.mark.parametrize("kind", list(WINDOWS))
def test_windowed_aggregates_match_duckdb(kind: str) -> None:
    tvf, windows = WINDOWS[kind]
    recs = records(600, disorder_ms=900)
    got = run_view(
        "CREATE VIEW v WITH ('grace' = '1 s') AS SELECT device, window_start, window_end,"
        " COUNT(*) AS n, SUM(temp) AS s, AVG(temp) AS a, MIN(temp) AS lo, MAX(temp) AS hi,"
        " STDDEV_POP(temp) AS sd, COUNT(DISTINCT user) AS users"
        f" FROM TABLE({tvf}) GROUP BY window_start, window_end, device",
        recs,
    )
    want = duck(
        recs,
        f"SELECT device, ws, we, count(*), sum(temp), avg(temp), min(temp), max(temp),"
        f" stddev_pop(temp), count(DISTINCT u) FROM ({windows}) GROUP BY device, ws, we"
        " ORDER BY we, ws, device",
    )
    got = [r for r in got if r["device"] != "zz"]
    assert [(r["device"], _ms(r["window_start"]), _ms(r["window_end"])) for r in got] == [
        (w[0], w[1], w[2]) for w in want
    ]
    for r, w in zip(got, want, strict=True):
        assert r["n"] == w[3]
        assert _close(r["s"], w[4]) and _close(r["a"], w[5]) and isinstance(r["a"], float)
        assert (r["lo"], r["hi"]) == (w[6], w[7])
        assert abs(r["sd"] - w[8]) < 1e-6
        assert abs(r["users"] - w[9]) <= max(1, 0.02 * w[9])  # HyperLogLog: an estimate


def test_over_range_and_rows_match_duckdb() -> None:
    recs = records(400)  # in order: an OVER result per record, in record order per device
    over = "PARTITION BY device ORDER BY _timestamp RANGE BETWEEN INTERVAL '3' SECOND PRECEDING"
    got = run_view(
        f"CREATE VIEW m AS SELECT device, temp, AVG(temp) OVER ({over} AND CURRENT ROW) AS a,"
        f" COUNT(*) OVER ({over} AND CURRENT ROW) AS n FROM telemetry",
        recs,
        close=False,
    )
    want = duck(
        recs,
        "SELECT device, temp, avg(temp) OVER w, count(*) OVER w FROM t WINDOW w AS"
        " (PARTITION BY device ORDER BY ts RANGE BETWEEN 3000 PRECEDING AND CURRENT ROW)"
        " ORDER BY seq",
    )
    assert [(r["device"], r["temp"], r["n"]) for r in got] == [(w[0], w[1], w[3]) for w in want]
    assert all(_close(r["a"], w[2]) for r, w in zip(got, want, strict=True))

    rows = run_view(
        "CREATE VIEW r AS SELECT device, SUM(temp) OVER (PARTITION BY device ORDER BY"
        " _timestamp ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s FROM telemetry",
        recs,
        close=False,
    )
    want_rows = duck(
        recs,
        "SELECT device, sum(temp) OVER (PARTITION BY device ORDER BY ts ROWS BETWEEN 2"
        " PRECEDING AND CURRENT ROW) FROM t ORDER BY seq",
    )
    assert [r["device"] for r in rows] == [w[0] for w in want_rows]
    assert all(_close(r["s"], w[1]) for r, w in zip(rows, want_rows, strict=True))


def test_session_windows_match_a_python_reference() -> None:
    rng = random.Random(3)
    recs = []
    ts = T0
    for i in range(300):
        ts += rng.choice([200, 500, 4000])
        v = {"device": f"d{rng.randrange(3)}", "temp": rng.randrange(100), "user": 0, "ts": ts}
        recs.append(SourceRecord(i, ts, None, json.dumps(v).encode(), ()))
    got = run_view(
        "CREATE VIEW s AS SELECT device, window_start, window_end, COUNT(*) AS n, SUM(temp) AS t"
        " FROM TABLE(SESSION(TABLE telemetry PARTITION BY device, DESCRIPTOR(_timestamp),"
        " INTERVAL '3' SECOND)) GROUP BY window_start, window_end, device",
        recs,
    )
    sessions: list[tuple[str, int, int, int, int]] = []
    for device in ("d0", "d1", "d2"):
        mine = [(r.timestamp, json.loads(r.value or b"")["temp"]) for r in recs]
        mine = [
            m for r, m in zip(recs, mine, strict=True) if b'"' + device.encode() in (r.value or b"")
        ]
        current: list[tuple[int, int]] = []
        for t, temp in mine:
            if current and t - current[-1][0] >= 3000:
                sessions.append(_session(device, current))
                current = []
            current.append((t, temp))
        sessions.append(_session(device, current))
    got_set = sorted(
        (r["device"], _ms(r["window_start"]), _ms(r["window_end"]), r["n"], r["t"])
        for r in got
        if r["device"] != "zz"
    )
    assert got_set == sorted(sessions)


def _session(device: str, rows: list[tuple[int, int]]) -> tuple[str, int, int, int, int]:
    return (device, rows[0][0], rows[-1][0] + 3000, len(rows), sum(t for _, t in rows))


def test_sketch_aggregates_first_last_and_having() -> None:
    recs = records(200)
    got = run_view(
        "CREATE VIEW q AS SELECT window_start, PERCENTILE_APPROX(temp, 0.5) AS p50,"
        " FIRST_VALUE(temp) AS f, LAST_VALUE(temp) AS l, TOP_K(device, 2) AS top,"
        " COUNT(*) AS n FROM TABLE(TUMBLE(TABLE telemetry, DESCRIPTOR(_timestamp),"
        " INTERVAL '10' SECOND)) GROUP BY window_start, window_end HAVING COUNT(*) >= 40",
        recs,
    )
    assert [r["n"] for r in got] == [40] * 5  # the tail's window (1 record) fails HAVING
    for i, r in enumerate(got):
        mine = [json.loads(x.value or b"") for x in recs[i * 40 : (i + 1) * 40]]
        temps = sorted(m["temp"] for m in mine)
        assert temps[18] <= r["p50"] <= temps[21]
        assert (r["f"], r["l"]) == (mine[0]["temp"], mine[-1]["temp"])
        counts: dict[str, int] = {}
        for m in mine:
            counts[m["device"]] = counts.get(m["device"], 0) + 1
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
        assert [tuple(x) for x in r["top"]] == best
        assert r["window_start"] == iso_ms(T0 - T0 % 10_000 + i * 10_000)


def test_late_records_are_dropped_per_the_watermark_rule() -> None:
    def rec(i: int, ts: int) -> SourceRecord:
        v = {"device": "d", "temp": i, "user": 0, "ts": ts}
        return SourceRecord(i, ts, None, json.dumps(v).encode(), ())

    base = T0 - T0 % 60_000
    sql = (
        "CREATE VIEW v {opts} AS SELECT window_start, SUM(temp) AS s, COUNT(*) AS n"
        " FROM TABLE(TUMBLE(TABLE telemetry, DESCRIPTOR(_timestamp), INTERVAL '1' MINUTE))"
        " GROUP BY window_start, window_end"
    )
    # 1 at :10, 2 at 1:05 (the watermark passes the first window's end), 4 late at :20
    feed = [rec(1, base + 10_000), rec(2, base + 65_000), rec(4, base + 20_000)]
    no_grace = run_view(sql.format(opts=""), feed, close=False)
    assert no_grace == [{"window_start": iso_ms(base), "s": 1, "n": 1}]
    # with a grace of 10 s the window is still open at 1:05 and takes the record at :20
    graced = run_view(sql.format(opts="WITH ('grace' = '10 s')"), feed)
    assert graced[0] == {"window_start": iso_ms(base), "s": 5, "n": 2}


def test_unwindowed_group_by_emits_each_groups_new_result() -> None:
    recs = records(50)
    got = run_view(
        "CREATE VIEW g AS SELECT device, COUNT(*) AS n, MAX(temp) AS hi FROM telemetry"
        " WHERE temp > 15 GROUP BY device",
        recs,
        close=False,
    )
    seen: dict[str, list[float]] = {}
    want = []
    for r in recs:
        v = json.loads(r.value or b"")
        if v["temp"] > 15:
            seen.setdefault(v["device"], []).append(v["temp"])
            want.append(
                {"device": v["device"], "n": len(seen[v["device"]]), "hi": max(seen[v["device"]])}
            )
    assert got == want


def test_projection_filter_json_paths_and_record_columns() -> None:
    value = {"device": "d1", "payload": {"temp": 21.5, "tags": ["a", "b"]}}
    rec = SourceRecord(7, T0, b"key-1", json.dumps(value).encode(), (("h", b"v"),))
    got = run_view(
        "CREATE VIEW p AS SELECT device, payload.temp AS t, JSON_VALUE(payload, '$.tags[1]')"
        " AS tag, _key, _offset, _timestamp, _headers['h'] AS h, UPPER(device) AS u"
        " FROM telemetry WHERE payload.temp > 20 AND device LIKE 'd%'",
        [rec],
        close=False,
    )
    assert got == [
        {
            "device": "d1",
            "t": 21.5,
            "tag": "b",
            "_key": "key-1",
            "_offset": 7,
            "_timestamp": T0,
            "h": "v",
            "u": "D1",
        }
    ]


def test_bad_records_go_to_the_dead_letter_topic() -> None:
    statement = parse_statement(
        "CREATE VIEW v AS SELECT device, AVG(temp) AS a FROM telemetry GROUP BY device"
    )
    assert isinstance(statement, CreateView)
    proc = Processor("t", [statement.plan.pipeline()])
    proc.assign("telemetry", 0)
    bad = [b"{not json", b"[1, 2]", b'{"device": "d", "temp": "hot"}']
    proc.process(
        "telemetry", 0, [SourceRecord(i, T0, b"k", v, (("x", b"1"),)) for i, v in enumerate(bad)]
    )
    outs = proc.collect().outputs
    assert [(o.topic, o.value) for o in outs] == [("v-dlq", v) for v in bad]
    errors = [dict(o.headers)["bayou.error"].decode() for o in outs]  # type: ignore[union-attr]
    assert "JSONDecodeError" in errors[0] and "not a JSON object" in errors[1]
    assert "not a number" in errors[2]
    assert all(dict(o.headers)["x"] == b"1" for o in outs)
    assert proc.stats()["view"]["dead_letters"] == 3


@pytest.mark.parametrize(
    "sql,message,line,token",
    [
        ("SELECT a FROM t WHERE", "near 'WHERE'", 1, "WHERE"),
        (
            "CREATE VIEW v AS SELECT devic, COUNT(*) AS n FROM t GROUP BY device",
            "devic",
            1,
            "devic",
        ),
        ("CREATE VIEW v AS\nSELECT FOO(x) AS y FROM t", "Unknown function FOO", 2, "FOO"),
        (
            "CREATE VIEW v AS SELECT COUNT(*) AS n FROM TABLE(TUMBLE(TABLE t,"
            " DESCRIPTOR(_timestamp), INTERVAL '1' FORTNIGHT)) GROUP BY window_start, window_end",
            "FORTNIGHT",
            1,
            "'1' FORTNIGHT",
        ),
    ],
)
def test_errors_point_at_the_token(sql: str, message: str, line: int, token: str) -> None:
    with pytest.raises(SqlError) as info:
        parse_statement(sql)
    err = info.value
    assert message in err.message
    column = sql.splitlines()[line - 1].index(token) + 1
    assert (err.line, err.column) == (line, column)
    assert err.caret(sql).splitlines()[1].index("^") == column - 1


def test_other_statements_parse() -> None:
    assert isinstance(parse_statement("SHOW VIEWS"), ShowViews)
    assert parse_statement("DESCRIBE VIEW avg_temp") == DescribeView("avg_temp")
    assert parse_statement("DROP VIEW IF EXISTS a;") == DropView("a", True)
    pull = parse_statement("SELECT * FROM avg_temp WHERE device = 'x'", {"avg_temp"})
    assert isinstance(pull, PullQuery) and pull.view == "avg_temp"
    with pytest.raises(SqlError, match="No view named"):
        parse_statement("SELECT * FROM nope", {"avg_temp"})
    with pytest.raises(SqlError, match="SHOW TABLES is not supported"):
        parse_statement("SHOW TABLES")


def test_a_partition_read_ahead_of_another_does_not_make_its_records_late() -> None:
    """A replay reads partitions one after the other: the watermark is held back by the
    partition still being read, and moves on once every partition is read to its end."""
    statement = parse_statement(
        "CREATE VIEW v AS SELECT device, window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE"
        " telemetry, DESCRIPTOR(_timestamp), INTERVAL '1' MINUTE))"
        " GROUP BY window_start, window_end, device"
    )
    assert isinstance(statement, CreateView)
    proc = Processor("t", [statement.plan.pipeline()])
    for partition in (0, 1):
        proc.assign("telemetry", partition)
    for partition in (0, 1):  # all of partition 0 first, then all of partition 1
        device = f"d{partition}"
        recs = [
            SourceRecord(i, T0 + i * 10_000, None, json.dumps({"device": device}).encode(), ())
            for i in range(30)
        ]
        proc.process("telemetry", partition, recs)
        proc.fire()
    proc.idle("telemetry", 0)
    proc.fire()
    proc.idle("telemetry", 1)
    proc.fire()
    outs = [json.loads(o.value or b"") for o in proc.collect().outputs]
    per_device = {d: sum(o["n"] for o in outs if o["device"] == d) for d in ("d0", "d1")}
    last_window = (T0 + 29 * 10_000) - (T0 + 29 * 10_000) % 60_000  # still open
    closed = sum(1 for i in range(30) if T0 + i * 10_000 < last_window)
    assert per_device == {"d0": closed, "d1": closed}
    assert proc.stats()["view"]["late_dropped"] == 0


def test_a_partition_moved_in_with_a_backlog_is_judged_by_its_own_progress() -> None:
    """A worker read its partition 0 to its end (its clock is at the end of time there);
    partition 1 moves in from a worker that died, restored, with records still to read from
    where that worker committed: they are not late, and its windows close as they would
    have on the old worker.  A record older than the restored clock still is late."""
    statement = parse_statement(
        "CREATE VIEW v AS SELECT device, window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE"
        " telemetry, DESCRIPTOR(_timestamp), INTERVAL '1' MINUTE))"
        " GROUP BY window_start, window_end, device"
    )
    assert isinstance(statement, CreateView)
    proc = Processor("t", [statement.plan.pipeline()])
    proc.assign("telemetry", 0)

    base = T0 - T0 % 60_000

    def rec(offset: int, ts: int, device: str) -> SourceRecord:
        return SourceRecord(offset, ts, None, json.dumps({"device": device}).encode(), ())

    proc.process("telemetry", 0, [rec(i, base + i * 10_000, "d0") for i in range(60)])
    proc.idle("telemetry", 0)
    proc.fire()
    proc.collect()
    [moved] = proc.assign("telemetry", 1)
    moved.restore(b"~clock", str(base + 60_000).encode())  # where its old owner committed
    backlog = [rec(i, base + 60_000 + i * 10_000, "d1") for i in range(30)]
    proc.process("telemetry", 1, [rec(99, base, "d1"), *backlog])  # the first: late there too
    proc.fire()
    outs = [json.loads(o.value or b"") for o in proc.collect().outputs]
    d1 = [o["n"] for o in outs if o["device"] == "d1"]
    assert d1 == [6, 6, 6, 6]  # the windows the backlog's own progress closed
    assert proc.stats()["view"]["late_dropped"] == 1


def test_windows_held_in_state_for_pull_queries_until_the_retention() -> None:
    from bayou.streams.pull import aggregation, lookup_of, task_rows

    created = parse_statement(
        "CREATE VIEW v WITH ('retention' = '2 s') AS SELECT device, window_start,"
        " COUNT(*) AS n FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(_timestamp), INTERVAL '1' SECOND))"
        " GROUP BY window_start, window_end, device"
    )
    assert isinstance(created, CreateView)
    plan = created.plan
    select = parse_statement("SELECT * FROM v WHERE device = 'a'", {"v"})
    assert isinstance(select, PullQuery)
    lookup = lookup_of(select.select.args.get("where"), plan)
    assert lookup.key == "a" and lookup.key_bytes == b"a"

    def record(i: int, device: str, ts: int) -> SourceRecord:
        return SourceRecord(i, ts, device.encode(), json.dumps({"device": device}).encode(), ())

    proc = Processor("t", [plan.pipeline()])
    [task] = proc.assign("s", 0)
    times = [T0, T0 + 100, T0 + 1_100, T0 + 2_500]  # windows 0, 0, 1, 2 (the last open)
    proc.process("s", 0, [record(i, "a", ts) for i, ts in enumerate(times)])
    proc.process("s", 0, [record(9, "b", T0 + 2_600)])

    def held(t: Any) -> list[tuple[str, int, bool]]:
        return [
            (r.value["window_start"], r.value["n"], r.value["_final"])
            for _o, r in sorted(task_rows(t, lookup, "v"), key=lambda p: p[0])
        ]

    want = [(iso_ms(T0), 2, True), (iso_ms(T0 + 1000), 1, True), (iso_ms(T0 + 2000), 1, False)]
    assert held(task) == want
    changelog = proc.collect().changelog
    restored = Processor("t", [plan.pipeline()])
    [again] = restored.assign("s", 0)
    for _t, _p, key, value in changelog:
        again.restore(key, value)
    again.restored()
    assert held(again) == want  # finals and open windows come back from the changelog

    # the watermark passes window 0's end + 2 s: its final result leaves state (and window 2
    # is closed now)
    proc.process("s", 0, [record(10, "b", T0 + 3_000)])
    assert held(task) == [want[1], (iso_ms(T0 + 2000), 1, True)]
    op = aggregation(task)
    assert op is not None
    changelog = proc.collect().changelog
    assert [k for _t, _p, k, v in changelog if v is None and k.startswith(op.ns + b"f")] == [
        op.ns + b'f["a",' + str(T0).encode() + b"," + str(T0 + 1000).encode() + b"]"
    ]
