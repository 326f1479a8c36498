"""SQL views inside ``bayou serve``, as a user drives them: ``bayou sql -e`` and ``POST /sql``
against a real broker, records in with confluent-kafka (and MQTT for the seed's scenario),
results read back with confluent-kafka and compared with a reference computed here; the
dead-letter topic; a kill -9 mid-window giving the same final results; a restart continuing
from state."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families

from bayou.streams.rows import iso_ms
from bayou.streams.views import _read_to_end
from tests.support.broker import BrokerProcess

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
TIMEOUT_S = 60.0


def bayou_sql(broker: BrokerProcess, statement: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bayou", "sql", "-b", broker.bootstrap, "-e", statement],
        capture_output=True,
        text=True,
        timeout=60,
    )


def sql_ok(broker: BrokerProcess, statement: str) -> str:
    proc = bayou_sql(broker, statement)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def create_topic(broker: BrokerProcess, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions)]).values():
        future.result(30)


def produce(broker: BrokerProcess, topic: str, records: list[tuple[str, Any, int]]) -> None:
    """(key, value, timestamp) records; a value that is bytes goes as it is, else as JSON."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for key, value, ts in records:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        producer.produce(topic, raw, key.encode(), timestamp=ts)
    assert producer.flush(30) == 0


def consume(broker: BrokerProcess, topic: str, count: int, timeout: float = TIMEOUT_S) -> list[Any]:
    """The first ``count`` committed records of ``topic`` (every partition), then a short
    wait to see that no more arrive."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"t-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    out.append(msg)
        extra_deadline = time.monotonic() + 1.5
        while time.monotonic() < extra_deadline:
            for msg in consumer.consume(500, 0.3):
                if msg.error() is None:
                    out.append(msg)
    finally:
        consumer.close()
    return out


def telemetry(n: int, devices: int = 3, step_ms: int = 7_000) -> list[tuple[str, Any, int]]:
    out = []
    for i in range(n):
        device = f"d{i % devices}"
        temp = round(20 + 5 * math.sin(i / 7) + (i % 5), 2)
        out.append((device, {"device": device, "temp": temp}, T0 + i * step_ms))
    return out


def tumble_reference(records: list[tuple[str, Any, int]], size: int) -> dict[Any, Any]:
    """Final results of the windows the last record's time has closed (watermark rule)."""
    high = max(ts for _k, _v, ts in records)
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for _k, value, ts in records:
        start = ts - ts % size
        groups[(value["device"], start)].append(value["temp"])
    return {
        (device, iso_ms(start), iso_ms(start + size)): (sum(v) / len(v), len(v))
        for (device, start), v in groups.items()
        if start + size <= high
    }


AVG_VIEW = (
    "CREATE VIEW {name} AS SELECT device, window_start, window_end, AVG(temp) AS avg_temp,"
    " COUNT(*) AS n FROM TABLE(TUMBLE(TABLE {source}, DESCRIPTOR(_timestamp),"
    " INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, device"
)


def results(msgs: list[Any]) -> dict[Any, Any]:
    out = {}
    for msg in msgs:
        v = json.loads(msg.value())
        assert msg.key().decode() == v["device"]
        key = (v["device"], v["window_start"], v["window_end"])
        assert key not in out, f"two results for {key}"
        assert isinstance(v["avg_temp"], float)
        out[key] = (v["avg_temp"], v["n"])
    return out


def same(got: dict[Any, Any], want: dict[Any, Any]) -> None:
    assert sorted(got) == sorted(want)
    for k, (avg, n) in want.items():
        assert got[k][1] == n and abs(got[k][0] - avg) < 1e-9, k


def test_views_from_the_cli_and_http(shared_broker: BrokerProcess) -> None:
    broker = shared_broker
    create_topic(broker, "telemetry", 3)
    records = telemetry(120)
    produce(broker, "telemetry", records[:60])
    created = sql_ok(broker, AVG_VIEW.format(name="avg_temp", source="telemetry"))
    assert created.startswith(
        "View avg_temp created.\ntelemetry has 3 partitions: its records are repartitioned by"
        " device through avg_temp-repartition."
    )
    produce(broker, "telemetry", [*records[60:], ("bad", b"{not json", T0 + 120 * 7_000)])
    want = tumble_reference(records, MINUTE)
    same(results(consume(broker, "avg_temp", len(want))), want)

    dead = consume(broker, "avg_temp-dlq", 1)
    assert [m.value() for m in dead] == [b"{not json"]
    headers = dict(dead[0].headers())
    assert b"JSONDecodeError" in headers["bayou.error"]
    assert headers["bayou.error.topic"] == b"telemetry"
    metrics = {
        (sample.name, sample.labels.get("view")): sample.value
        for family in text_string_to_metric_families(
            httpx.get(f"{broker.http_url}/metrics", timeout=30).text
        )
        for sample in family.samples
    }
    assert metrics[("bayou_view_dead_letters_total", "avg_temp")] == 1
    assert metrics[("bayou_view_records_in_total", "avg_temp")] == len(records) + 1
    assert metrics[("bayou_view_records_out_total", "avg_temp")] >= len(want)

    assert sql_ok(broker, "SHOW VIEWS") == "avg_temp\n"
    described = sql_ok(broker, "DESCRIBE VIEW avg_temp")
    assert "TUMBLE 60000 ms" in described and "telemetry" in described

    pulled = [
        json.loads(line)
        for line in sql_ok(
            broker, "SELECT window_start, avg_temp, _final FROM avg_temp WHERE device = 'd1'"
        ).splitlines()
    ]
    want_d1 = sorted((k[1], v[0]) for k, v in want.items() if k[0] == "d1")
    assert [(r["window_start"], r["avg_temp"]) for r in pulled if r["_final"]] == want_d1
    # and the window still open (the last one), with its value so far
    assert [r["window_start"] for r in pulled if not r["_final"]] == [iso_ms(T0 + 13 * MINUTE)]

    bad = bayou_sql(
        broker, "CREATE VIEW x AS SELECT devic, COUNT(*) AS n FROM telemetry GROUP BY device"
    )
    assert bad.returncode == 1
    assert "Column 'devic' must be in GROUP BY" in bad.stderr
    assert "\n" + " " * 24 + "^^^^^\n" in bad.stderr

    answer = httpx.post(f"{broker.http_url}/sql", content="SHOW VIEWS", timeout=30)
    assert answer.status_code == 200 and answer.json()["result"] == ["avg_temp"]
    error = httpx.post(f"{broker.http_url}/sql", json={"sql": "SELECT a FROM t WHERE"}, timeout=30)
    assert error.status_code == 400
    assert (error.json()["line"], error.json()["column"]) == (1, 17)

    assert sql_ok(broker, "DROP VIEW avg_temp") == "View avg_temp dropped.\n"
    assert sql_ok(broker, "SHOW VIEWS") == ""
    again = AVG_VIEW.format(name="avg_temp", source="telemetry").replace(
        " AS SELECT", " WITH ('scan.startup.mode' = 'latest-offset') AS SELECT"
    )
    assert sql_ok(broker, again).startswith("View avg_temp created.")  # its topic is reused
    assert sql_ok(broker, "SHOW VIEWS") == "avg_temp\n"
    assert "latest" in sql_ok(broker, "DESCRIBE VIEW avg_temp")
    # the dropped view's repartition topic went with it: the new view (from the latest
    # offset, nothing produced since) finds no rows there, only its own watermark markers
    config = {"bootstrap.servers": broker.bootstrap}
    repartition = _read_to_end(config, "avg_temp-repartition", [0, 1, 2], 10)
    assert [m.value() for m in repartition if m.value() is not None] == []


def test_kill_9_mid_window_gives_the_same_final_results(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        create_topic(broker, "readings", 2)
        records = telemetry(200, step_ms=3_000)
        produce(broker, "readings", records[:100])
        sql_ok(broker, AVG_VIEW.format(name="avg_readings", source="readings"))
        first = tumble_reference(records[:100], MINUTE)
        same(results(consume(broker, "avg_readings", len(first))), first)  # state committed
        broker.kill()  # mid-window: the window of records[99] is open
        broker.start()
        produce(broker, "readings", records[100:])
        want = tumble_reference(records, MINUTE)
        same(results(consume(broker, "avg_readings", len(want))), want)
        broker.stop()  # graceful this time: the view keeps going after a plain restart too
        broker.start()
        assert sql_ok(broker, "SHOW VIEWS") == "avg_readings\n"
        later = [("d0", {"device": "d0", "temp": 1.0}, T0 + 200 * 3_000 + 2 * MINUTE)]
        produce(broker, "readings", later)
        want = tumble_reference(records + later, MINUTE)
        same(results(consume(broker, "avg_readings", len(want))), want)
    finally:
        broker.stop()


def test_seed_scenario_mqtt_telemetry_moving_average_and_alerts(
    shared_broker: BrokerProcess,
) -> None:
    broker = shared_broker
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensors")
    client.connect(broker.host, broker.mqtt_port)
    client.loop_start()
    try:
        # the first message creates the topic; views read it from the beginning
        readings: list[tuple[str, float, int]] = []
        for i in range(90):
            device = f"dev{i % 2}"
            temp = 20.0 + (i % 3) * 0.5
            if i == 71:
                temp = 45.0  # the anomaly: dev1, far off its moving average
            readings.append((device, temp, T0 + i * 1000))
        for n, (device, temp, ts) in enumerate(readings):
            info = client.publish(
                f"sensors/{device}", json.dumps({"device": device, "temp": temp, "ts": ts}), qos=1
            )
            info.wait_for_publish(TIMEOUT_S)
            assert info.is_published(), f"no PUBACK in {TIMEOUT_S}s"
            if n == 0:
                sql_ok(
                    broker,
                    "CREATE VIEW moving AS SELECT device, temp, ts,"
                    " AVG(temp) OVER w AS avg_temp, STDDEV_POP(temp) OVER w AS sd"
                    " FROM sensors WINDOW w AS (PARTITION BY device ORDER BY ts"
                    " RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW)",
                )
                sql_ok(
                    broker,
                    "CREATE VIEW alerts AS SELECT device, temp, avg_temp FROM moving"
                    " WHERE ABS(temp - avg_temp) > 3 * sd",
                )
    finally:
        client.loop_stop()
        client.disconnect()
    moving = consume(broker, "moving", 90)
    # the reference: per device, the records of the last minute (event time) up to this one
    want = []
    for device, _temp, ts in readings:
        frame = [t for d, t, s in readings if d == device and ts - MINUTE <= s <= ts]
        want.append((device, ts, sum(frame) / len(frame)))
    got = sorted(
        (
            json.loads(m.value())["device"],
            json.loads(m.value())["ts"],
            json.loads(m.value())["avg_temp"],
        )
        for m in moving
    )
    assert [g[:2] for g in got] == sorted(w[:2] for w in want)
    assert all(abs(g[2] - w[2]) < 1e-9 for g, w in zip(got, sorted(want), strict=True))
    alerts = consume(broker, "alerts", 1)
    assert [json.loads(m.value())["temp"] for m in alerts] == [45.0]
    assert alerts[0].key() == b"dev1"


def test_views_in_workers_and_the_repl(tmp_path: Path) -> None:
    """``--views workers``: the broker runs no view; two ``bayou streams views`` workers
    share the view's partitions; statements piped to ``bayou sql`` run one after another."""
    broker = BrokerProcess(tmp_path / "data", extra_args=["--views", "workers"]).start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        create_topic(broker, "metrics", 2)
        records = telemetry(60)
        produce(broker, "metrics", records)
        repl = subprocess.run(
            [sys.executable, "-m", "bayou", "sql", "-b", broker.bootstrap],
            input=AVG_VIEW.format(name="avg_metrics", source="metrics").replace(" FROM", "\nFROM")
            + ";\nSHOW VIEWS;\nSHOW TABLES;\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = repl.stdout.splitlines()
        assert lines[0] == "View avg_metrics created." and lines[-1] == "avg_metrics"
        assert "SHOW TABLES is not supported" in repl.stderr and repl.returncode == 1
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
        want = tumble_reference(records, MINUTE)
        same(results(consume(broker, "avg_metrics", len(want))), want)
        assert "view avg_metrics: running" not in broker.log_text()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
