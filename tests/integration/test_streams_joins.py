"""SQL joins and repartitioned views against a real broker: statements through ``bayou sql``,
records in and results out with confluent-kafka, the reference computed by DuckDB over the
same records.  A stream-table join against a compacted topic, an interval join of two
streams of two partitions, and a GROUP BY on a column that is not the record key over four
partitions, run by two ``bayou streams views`` workers."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import httpx
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.integration.test_streams_views import consume, sql_ok
from tests.support.broker import BrokerProcess

T0 = 1_767_225_600_000


def create_topic(broker: BrokerProcess, name: str, partitions: int, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, config=config)]).values():
        future.result(30)


def produce(
    broker: BrokerProcess, topic: str, records: Sequence[tuple[str | None, Any, int, int | None]]
) -> None:
    """(key, value, timestamp, partition) records; a None value is a tombstone."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for key, value, ts, partition in records:
        raw = None if value is None else json.dumps(value).encode()
        k = None if key is None else key.encode()
        if partition is None:
            producer.produce(topic, raw, k, timestamp=ts)
        else:
            producer.produce(topic, raw, k, timestamp=ts, partition=partition)
    assert producer.flush(30) == 0


def test_stream_table_and_interval_joins_match_duckdb(shared_broker: BrokerProcess) -> None:
    broker = shared_broker
    rng = random.Random(8)
    create_topic(broker, "j_customers", 1, **{"cleanup.policy": "compact"})
    create_topic(broker, "j_orders", 2)
    customers = {
        f"c{i}": {"name": f"name{i}", "tier": rng.choice(["gold", "basic"])} for i in range(5)
    }
    produce(broker, "j_customers", [(k, v, T0, None) for k, v in customers.items()])
    produce(broker, "j_customers", [("c4", None, T0, None)])  # deleted: orders of c4 unmatched
    del customers["c4"]
    orders: list[dict[str, Any]] = [
        {"id": i, "cust": f"c{rng.randrange(6)}", "amount": rng.randrange(100)} for i in range(300)
    ]
    produce(broker, "j_orders", [(f"o{o['id']}", o, T0 + o["id"], o["id"] % 2) for o in orders])
    out = sql_ok(
        broker,
        "CREATE VIEW j_enriched AS SELECT o.id, o.amount, c.name, c.tier FROM j_orders AS o"
        " JOIN j_customers FOR SYSTEM_TIME AS OF o._timestamp AS c ON o.cust = c._key"
        " WHERE o.amount >= 10",
    )
    assert out.startswith("View j_enriched created.")

    create_topic(broker, "j_views", 2)
    create_topic(broker, "j_clicks", 2)
    impressions: list[dict[str, Any]] = []
    clicks: list[dict[str, Any]] = []
    for i in range(300):
        ad = f"a{rng.randrange(6)}"
        ts = T0 + i * 400
        impressions.append({"ad": ad, "n": i, "at": ts})
        if rng.random() < 0.5:
            clicks.append({"ad": ad, "n": i, "at": ts + rng.randrange(-500, 2500)})
        if rng.random() < 0.2:
            clicks.append({"ad": f"a{rng.randrange(6)}", "n": 1000 + i, "at": ts})
    clicks.sort(key=lambda c: c["at"])
    # keyed by nothing that matches the join key: each partition holds every ad
    produce(broker, "j_views", [(None, v, v["at"], v["n"] % 2) for v in impressions])
    produce(broker, "j_clicks", [(None, c, c["at"], c["n"] % 2) for c in clicks])
    sql_ok(
        broker,
        "CREATE VIEW j_attributed AS SELECT c.ad, c.n AS click, v.n AS impression"
        " FROM j_clicks AS c JOIN j_views AS v ON c.ad = v.ad AND c._timestamp BETWEEN"
        " v._timestamp - INTERVAL '1' SECOND AND v._timestamp + INTERVAL '2' SECOND",
    )
    described = sql_ok(broker, "DESCRIBE VIEW j_attributed")
    assert "interval" in described and "repartition" in described

    con = duckdb.connect()
    con.execute("CREATE TABLE c (k VARCHAR, name VARCHAR, tier VARCHAR)")
    con.executemany(
        "INSERT INTO c VALUES (?, ?, ?)", [(k, v["name"], v["tier"]) for k, v in customers.items()]
    )
    con.execute("CREATE TABLE o (id INTEGER, cust VARCHAR, amount INTEGER)")
    con.executemany(
        "INSERT INTO o VALUES (?, ?, ?)", [(o["id"], o["cust"], o["amount"]) for o in orders]
    )
    want_enriched = con.execute(
        "SELECT o.id, o.amount, c.name, c.tier FROM o JOIN c ON o.cust = c.k"
        " WHERE o.amount >= 10 ORDER BY ALL"
    ).fetchall()
    con.execute("CREATE TABLE v (ad VARCHAR, n INTEGER, t BIGINT)")
    con.executemany(
        "INSERT INTO v VALUES (?, ?, ?)", [(x["ad"], x["n"], x["at"]) for x in impressions]
    )
    con.execute("CREATE TABLE k (ad VARCHAR, n INTEGER, t BIGINT)")
    con.executemany("INSERT INTO k VALUES (?, ?, ?)", [(x["ad"], x["n"], x["at"]) for x in clicks])
    want_attributed = con.execute(
        "SELECT k.ad, k.n, v.n FROM k JOIN v ON k.ad = v.ad"
        " AND k.t BETWEEN v.t - 1000 AND v.t + 2000 ORDER BY ALL"
    ).fetchall()
    assert len(want_attributed) > 100

    enriched = consume(broker, "j_enriched", len(want_enriched))
    got = sorted(tuple(json.loads(m.value()).values()) for m in enriched)
    assert got == want_enriched
    attributed = consume(broker, "j_attributed", len(want_attributed))
    got_pairs = sorted(
        (v["ad"], v["click"], v["impression"]) for v in (json.loads(m.value()) for m in attributed)
    )
    assert got_pairs == want_attributed


def test_group_by_another_column_over_four_partitions_and_two_workers(tmp_path: Path) -> None:
    """Records of each device in every partition (keyed by something else); two workers
    share the view: one count per device, the right one."""
    broker = BrokerProcess(tmp_path / "data", extra_args=["--views", "workers"]).start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        create_topic(broker, "r_events", 4)
        rng = random.Random(4)
        events = [
            (f"e{i}", {"device": f"d{rng.randrange(5)}", "v": rng.randrange(10)}, T0 + i, i % 4)
            for i in range(2000)
        ]
        produce(broker, "r_events", events)
        out = sql_ok(
            broker,
            "CREATE VIEW r_counts AS SELECT device, COUNT(*) AS n, SUM(v) AS s FROM r_events"
            " GROUP BY device",
        )
        assert "repartitioned by device through r_counts-repartition" in out
        for i in range(2):
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bayou",
                        "streams",
                        "views",
                        "-b",
                        broker.bootstrap,
                        "--state-dir",
                        str(tmp_path / f"w{i}"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        con = duckdb.connect()
        con.execute("CREATE TABLE e (device VARCHAR, v INTEGER)")
        con.executemany(
            "INSERT INTO e VALUES (?, ?)", [(e[1]["device"], e[1]["v"]) for e in events]
        )
        want = {
            d: (n, s)
            for d, n, s in con.execute(
                "SELECT device, count(*), sum(v) FROM e GROUP BY 1"
            ).fetchall()
        }
        msgs = consume(broker, "r_counts", len(events))  # an upsert per record
        assert len(msgs) == len(events)
        latest: dict[str, tuple[int, int]] = {}
        partition_of: dict[str, set[int]] = {}
        for m in msgs:
            value = json.loads(m.value())
            assert m.key().decode() == value["device"]
            latest[value["device"]] = (value["n"], value["s"])
            partition_of.setdefault(value["device"], set()).add(m.partition())
        assert latest == want
        assert all(len(p) == 1 for p in partition_of.values())  # one device, one partition

        # the view runs in the workers: the broker answers pull queries from its changelog
        url = f"{broker.http_url}/sql"
        every = httpx.post(url, content="SELECT device, n, s FROM r_counts", timeout=30).json()
        assert every["answered_from"] == "changelog"
        assert every["result"] == [
            {"device": d, "n": n, "s": s} for d, (n, s) in sorted(want.items())
        ]
        one = httpx.post(url, content="SELECT * FROM r_counts WHERE device = 'd3'", timeout=30)
        assert one.json()["result"] == [{"device": "d3", "n": want["d3"][0], "s": want["d3"][1]}]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
