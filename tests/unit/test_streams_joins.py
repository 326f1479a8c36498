"""SQL joins and repartitioned views without I/O, against DuckDB over the same records.

The two stages of a repartitioned view talk through a topic; here a small in-memory log
stands in for it (records appended per partition, the key hashed to a partition as a
producer would), and the stages run in one ``Processor`` as a worker owning every partition
would run them.  Sources are read partition after partition (a replay), the order that
makes watermarks taken from record timestamps wrong after a shuffle."""

from __future__ import annotations

import json
import random
import zlib
from typing import Any, cast

import duckdb
import pytest

from bayou.streams.operators import Context, EventClock, IntervalJoin
from bayou.streams.pipeline import Processor, SourceRecord
from bayou.streams.rows import Output, Row
from bayou.streams.sql.errors import SqlError
from bayou.streams.sql.planner import ViewPlan
from bayou.streams.sql.statements import CreateView, parse_statement

T0 = 1_700_000_000_000


def plan_of(sql: str) -> ViewPlan:
    statement = parse_statement(sql)
    assert isinstance(statement, CreateView)
    return statement.plan


class Harness:
    """A ``Processor`` over ``plan.pipelines(repartition)`` with an in-memory repartition
    topic of ``width`` partitions."""

    def __init__(self, plan: ViewPlan, repartition: bool, width: int, sources: dict[str, int]):
        self.plan = plan
        self.proc = Processor("t", plan.pipelines(repartition))
        self.topic = plan.repartition_topic
        self.width = width
        self.log: dict[int, list[SourceRecord]] = {p: [] for p in range(width)}
        self.read: dict[int, int] = dict.fromkeys(range(width), 0)
        self.proc.set_partitions({**sources, self.topic: width})
        for topic, count in sources.items():
            for p in range(count):
                self.proc.assign(topic, p)
        if repartition or plan.join is not None:
            for p in range(width):
                self.proc.assign(self.topic, p)
        self.results: list[Output] = []
        self.changelog: list[tuple[str, int, bytes, bytes | None]] = []

    def _route(self) -> None:
        commit = self.proc.collect()
        self.changelog.extend(commit.changelog)
        for out in commit.outputs:
            if out.topic != self.topic:
                self.results.append(out)
                continue
            p = out.partition
            if p is None:
                p = zlib.crc32(out.key or b"") % self.width
            log = self.log[p]
            log.append(SourceRecord(len(log), out.timestamp, out.key, out.value, out.headers))

    def _drain(self) -> None:
        """The second stage reads what the first wrote, a few records at a time, to its
        end (where a partition read to its end says so, as librdkafka's EOF does)."""
        self._route()
        for _round in range(10_000):
            moved = False
            for p in range(self.width):
                log = self.log[p]
                if self.read[p] < len(log):
                    batch = log[self.read[p] : self.read[p] + 7]
                    self.read[p] += len(batch)
                    self.proc.process(self.topic, p, batch)
                    self.proc.fire()
                    moved = True
                else:
                    self.proc.idle(self.topic, p)
            self._route()
            if not moved:
                return
        raise AssertionError("the stages do not settle")

    def feed(self, topic: str, partition: int, records: list[SourceRecord]) -> None:
        for i in range(0, len(records), 50):
            self.proc.process(topic, partition, records[i : i + 50])
            self.proc.fire()
            self._drain()

    def idle(self, topic: str, partition: int) -> None:
        self.proc.idle(topic, partition)
        self.proc.fire()
        self._drain()

    def values(self) -> list[dict[str, Any]]:
        return [
            json.loads(o.value)
            for o in self.results
            if o.topic == self.plan.name and o.value is not None
        ]


def telemetry(n: int, partitions: int, seed: int = 5) -> dict[int, list[SourceRecord]]:
    """Records of 6 devices spread over every partition (not keyed by device), in time
    order within each partition."""
    rng = random.Random(seed)
    out: dict[int, list[SourceRecord]] = {p: [] for p in range(partitions)}
    for i in range(n):
        p = rng.randrange(partitions)
        ts = T0 + i * 300
        value = {"device": f"d{rng.randrange(6)}", "temp": rng.randrange(100)}
        out[p].append(
            SourceRecord(len(out[p]), ts, f"k{i}".encode(), json.dumps(value).encode(), ())
        )
    return out


def duck_table(name: str, rows: list[tuple[Any, ...]], columns: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE {name} ({columns})")
    if rows:
        con.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    return con


# ------------------------------------------------------------------ repartitioning


def test_group_by_a_column_that_is_not_the_key_is_repartitioned() -> None:
    parts = telemetry(900, 4)
    plan = plan_of(
        "CREATE VIEW c AS SELECT device, COUNT(*) AS n, SUM(temp) AS s FROM telemetry"
        " GROUP BY device"
    )
    assert plan.wants_repartition(4) and not plan.wants_repartition(1)
    h = Harness(plan, True, 4, {"telemetry": 4})
    for p in range(4):
        h.feed("telemetry", p, parts[p])
    latest: dict[str, dict[str, Any]] = {}
    for value in h.values():
        latest[value["device"]] = value
    con = duck_table(
        "t",
        [
            (json.loads(r.value or b"")["device"], json.loads(r.value or b"")["temp"])
            for rs in parts.values()
            for r in rs
        ],
        "device VARCHAR, temp INTEGER",
    )
    want = con.execute("SELECT device, count(*), sum(temp) FROM t GROUP BY device").fetchall()
    assert {d: (v["n"], v["s"]) for d, v in latest.items()} == {w[0]: (w[1], w[2]) for w in want}
    # without repartitioning each partition counts on its own: the latest results are wrong
    alone = Harness(plan, False, 4, {"telemetry": 4})
    for p in range(4):
        alone.feed("telemetry", p, parts[p])
    per_partition: dict[str, int] = {}
    for value in alone.values():
        per_partition[value["device"]] = value["n"]
    assert per_partition != {w[0]: w[1] for w in want}


def test_windows_after_a_repartition_follow_the_upstream_watermarks() -> None:
    """Partition 0 is read to its end before partition 1 starts: in the repartition topic
    the records of partition 1 come after later ones of partition 0.  The markers hold the
    second stage's clock at the slowest upstream partition, so nothing is late."""
    parts = telemetry(1200, 3, seed=9)
    plan = plan_of(
        "CREATE VIEW w AS SELECT device, window_start, window_end, COUNT(*) AS n,"
        " MAX(temp) AS hi FROM TABLE(TUMBLE(TABLE telemetry, DESCRIPTOR(_timestamp),"
        " INTERVAL '10' SECOND)) GROUP BY window_start, window_end, device"
    )
    h = Harness(plan, True, 4, {"telemetry": 3})
    for p in range(3):
        h.feed("telemetry", p, parts[p])
    for p in range(3):
        h.idle("telemetry", p)
    got = sorted((v["device"], v["window_start"], v["n"], v["hi"]) for v in h.values())
    rows = [
        (json.loads(r.value or b"")["device"], json.loads(r.value or b"")["temp"], r.timestamp)
        for rs in parts.values()
        for r in rs
    ]
    con = duck_table("t", rows, "device VARCHAR, temp INTEGER, ts BIGINT")
    last_end = max(r[2] for r in rows) // 10_000 * 10_000  # the open window stays open
    want = con.execute(
        "SELECT device, strftime(make_timestamp((ts - ts % 10000) * 1000),"
        " '%Y-%m-%dT%H:%M:%S.000Z'), count(*), max(temp) FROM t"
        f" WHERE ts < {last_end} GROUP BY device, ts - ts % 10000 ORDER BY 1, 2"
    ).fetchall()
    assert got == sorted(want)
    assert h.proc.stats()["view"]["late_dropped"] == 0


def test_a_second_stage_partition_moved_to_another_worker_keeps_what_its_markers_said() -> None:
    """First-stage tasks write a marker when their watermark moves, not again: a second-stage
    partition that moves to another worker (restored from its changelog) knows what every
    upstream said, and its clock is where its old owner left it."""
    parts = telemetry(600, 3, seed=4)
    plan = plan_of(
        "CREATE VIEW w AS SELECT device, window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE"
        " telemetry, DESCRIPTOR(_timestamp), INTERVAL '10' SECOND))"
        " GROUP BY window_start, window_end, device"
    )
    h = Harness(plan, True, 2, {"telemetry": 3})
    for p in range(3):
        h.feed("telemetry", p, parts[p])
    for p in range(3):
        h.idle("telemetry", p)
    assert not h.proc.collect().outputs, "an idle first stage writes its markers once"
    second = plan.pipelines(True)[1]
    before = h.proc.clocks[second.name].max_ts
    assert before == max(r.timestamp for rs in parts.values() for r in rs)

    other = Processor("t", plan.pipelines(True))  # the worker the partitions move to
    other.set_partitions({"telemetry": 3, h.topic: 2})
    changelog = other.changelog_topic(second)
    for p in range(2):
        (task,) = other.assign(h.topic, p)
        for topic, partition, key, value in h.changelog:
            if (topic, partition) == (changelog, p):
                task.restore(key, value)
    assert other.clocks[second.name].max_ts == before


# ------------------------------------------------------------------ stream-table joins

CUSTOMERS = {"c1": {"name": "Ada", "tier": "gold"}, "c2": {"name": "Bo", "tier": "basic"}}


def orders(n: int) -> list[SourceRecord]:
    rng = random.Random(2)
    return [
        SourceRecord(
            i,
            T0 + i,
            f"o{i}".encode(),
            json.dumps({"id": i, "cust": rng.choice(["c1", "c2", "c3"]), "amount": i % 7}).encode(),
            (),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "join",
    [
        "JOIN customers FOR SYSTEM_TIME AS OF o._timestamp AS c ON o.cust = c._key",
        "JOIN customers c ON c._key = o.cust",
        "LEFT JOIN customers FOR SYSTEM_TIME AS OF o._timestamp AS c ON o.cust = c._key",
    ],
)
def test_stream_table_join_matches_duckdb(join: str) -> None:
    plan = plan_of(
        "CREATE VIEW enriched AS SELECT o.id, o.amount, c.name, c.tier, c._key AS cid"
        f" FROM orders AS o {join} WHERE o.amount > 1"
    )
    assert plan.tables == ("customers",)
    proc = Processor("t", [plan.pipeline()])
    for key, value in CUSTOMERS.items():
        proc.table_update("customers", key.encode(), json.dumps(value).encode())
    proc.table_update("customers", b"c9", b'{"name": "gone"}')
    proc.table_update("customers", b"c9", None)  # a tombstone removes a row
    proc.assign("orders", 0)
    recs = orders(60)
    proc.process("orders", 0, recs)
    got = [json.loads(o.value or b"") for o in proc.collect().outputs if o.topic == "enriched"]
    con = duck_table(
        "c",
        [(k, v["name"], v["tier"]) for k, v in CUSTOMERS.items()],
        "k VARCHAR, name VARCHAR, tier VARCHAR",
    )
    con.execute("CREATE TABLE o (id INTEGER, cust VARCHAR, amount INTEGER)")
    con.executemany(
        "INSERT INTO o VALUES (?, ?, ?)",
        [tuple(json.loads(r.value or b"")[f] for f in ("id", "cust", "amount")) for r in recs],
    )
    kind = "LEFT JOIN" if join.startswith("LEFT") else "JOIN"
    want = con.execute(
        f"SELECT o.id, o.amount, c.name, c.tier, c.k FROM o {kind} c ON o.cust = c.k"
        " WHERE o.amount > 1 ORDER BY o.id"
    ).fetchall()
    assert [(g["id"], g["amount"], g["name"], g["tier"], g["cid"]) for g in got] == want


# ------------------------------------------------------------------ stream-stream joins


def clicks_and_views(
    seed: int,
) -> tuple[dict[int, list[SourceRecord]], dict[int, list[SourceRecord]]]:
    rng = random.Random(seed)
    views: dict[int, list[SourceRecord]] = {0: [], 1: []}
    clicks: dict[int, list[SourceRecord]] = {0: [], 1: []}
    for i in range(400):
        for side, out in (("v", views), ("c", clicks)):
            if rng.random() < 0.6:
                p = rng.randrange(2)
                ts = T0 + i * 500 + rng.randrange(400)
                value = {"ad": f"a{rng.randrange(8)}", "n": i, "at": ts}
                out[p].append(
                    SourceRecord(
                        len(out[p]), ts, f"{side}{i}".encode(), json.dumps(value).encode(), ()
                    )
                )
    for out in (views, clicks):  # time order within each partition (a field time: "at")
        for p in out:
            out[p].sort(key=lambda r: r.timestamp)
            out[p] = [r._replace(offset=i, timestamp=0) for i, r in enumerate(out[p])]
    return views, clicks


def test_interval_join_matches_duckdb() -> None:
    views, clicks = clicks_and_views(4)
    plan = plan_of(
        "CREATE VIEW attributed AS SELECT c.ad, c.n AS click, v.n AS impression,"
        " c.at - v.at AS delay FROM clicks AS c JOIN views AS v ON c.ad = v.ad"
        " AND c.at BETWEEN v.at - INTERVAL '1' SECOND AND v.at + INTERVAL '3' SECOND"
        " WHERE c.n <> 17"
    )
    assert plan.sources == ["clicks", "views"]
    with pytest.raises(SqlError, match="repartitioned"):
        plan.pipeline()
    h = Harness(plan, True, 3, {"clicks": 2, "views": 2})
    for topic, parts in (("views", views), ("clicks", clicks)):
        for p in (0, 1):
            h.feed(topic, p, parts[p])
    for topic in ("views", "clicks"):
        for p in (0, 1):
            h.idle(topic, p)
    got = sorted((g["ad"], g["click"], g["impression"], g["delay"]) for g in h.values())

    def rows(parts: dict[int, list[SourceRecord]]) -> list[tuple[Any, ...]]:
        values = [json.loads(r.value or b"") for rs in parts.values() for r in rs]
        return [(v["ad"], v["n"], v["at"]) for v in values]

    con = duck_table("v", rows(views), "ad VARCHAR, n INTEGER, t BIGINT")
    con.execute("CREATE TABLE c (ad VARCHAR, n INTEGER, t BIGINT)")
    con.executemany("INSERT INTO c VALUES (?, ?, ?)", rows(clicks))
    want = con.execute(
        "SELECT c.ad, c.n, v.n, c.t - v.t FROM c JOIN v ON c.ad = v.ad"
        " AND c.t BETWEEN v.t - 1000 AND v.t + 3000 WHERE c.n <> 17 ORDER BY ALL"
    ).fetchall()
    assert len(want) > 100
    assert got == want
    assert h.proc.stats()["view"]["late_dropped"] == 0
    # what the join keeps shrinks as the watermark passes: rows too old to match are gone
    joins = [
        t.ops[0] for (topic, _p), tasks in h.proc.tasks.items() if topic == h.topic for t in tasks
    ]
    assert all(isinstance(op, IntervalJoin) for op in joins) and len(joins) == 3
    kept = sum(len(a) + len(b) for op in joins for a, b in cast(IntervalJoin, op).state.values())
    assert kept < 200


def test_an_interval_join_restored_from_a_long_changelog_schedules_each_row_once() -> None:
    """One hot key updated at every commit: its changelog holds every version of its rows.
    Restored, the join holds the last version, and schedules the expiry of each of its rows
    once (not once per version read: the heap grew with the square of the rows)."""

    def join() -> IntervalJoin:
        op = IntervalJoin(1000, 3000, 0, "b", lambda _row: True)
        op.ns = b"0:"
        return op

    live, ctx = join(), Context(EventClock())
    changelog: list[tuple[bytes, bytes | None]] = []
    for i in range(300):
        row = Row("ad1", {"n": i}, T0 + i * 10, "clicks", 0, i)
        row.side = "lr"[i % 2]
        live.push(row, ctx)
        changelog.extend(live.changes())  # a commit after every record
    restored = join()
    for key, value in changelog:
        restored.restore(key, value)
    restored.restored()
    assert dict(restored.state.items()) == dict(live.state.items())
    assert len(restored.expiring) <= 300
    for op in (live, restored):  # both forget the same rows as the watermark passes
        ctx.clock.see(T0 + 2500)
        op.fire(ctx)
    assert dict(restored.state.items()) == dict(live.state.items())
    assert 0 < sum(len(side) for side in live.state["ad1"]) < 300


@pytest.mark.parametrize(
    "sql,message",
    [
        (
            "CREATE VIEW j AS SELECT a.x FROM a JOIN b ON a.k = b.k",
            "looks the table up by its key",
        ),
        (
            "CREATE VIEW j AS SELECT a.x FROM a JOIN b ON a.k = b.k AND a._timestamp BETWEEN"
            " b._timestamp - INTERVAL '1' SECOND AND b._timestamp + INTERVAL '1' SECOND"
            " GROUP BY a.x",
            "aggregate it in a view of its own",
        ),
        (
            "CREATE VIEW j AS SELECT a.x FROM a JOIN b ON a._timestamp BETWEEN"
            " b._timestamp - INTERVAL '1' SECOND AND b._timestamp + INTERVAL '1' SECOND",
            "needs an equality",
        ),
        ("CREATE VIEW j AS SELECT a.x FROM a JOIN a ON a.k = a._key", "different names"),
        ("CREATE VIEW j AS SELECT a.x FROM a FULL JOIN b ON a.k = b._key", "JOIN or LEFT JOIN"),
    ],
)
def test_join_errors(sql: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        parse_statement(sql)
