"""``bayou streams run`` workers of one app through rebalances while records flow: two
workers start, a third joins mid-stream, one is killed -9 mid-stream; the final results
equal those of one worker alone over the same records, with nothing lost or doubled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until

T0 = 1_767_225_600_000
WINDOW_MS = 5_000
STEP_MS = 5  # event time between two records
RECORDS = 8_000
DEVICES = 12
FAR = T0 + 10 * 3_600_000  # a last record per partition this far on closes every window

APP = """
import os
from bayou.streams import App, count, sum_, tumbling

app = App(os.environ["RB_APP"], commit_interval_s=0.2)
(
    app.stream("rb_events")
    .window(tumbling(milliseconds=5000, grace_ms=10_000))
    .agg(count("n"), sum_("v", "s"))
    .to(os.environ["RB_OUT"])
)
"""


def start_worker(
    broker: BrokerProcess, app_file: Path, state: Path, app: str, out: str, *extra: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RB_APP": app, "RB_OUT": out}
    with open(state.parent / f"{state.name}.log", "ab") as log:  # the child keeps its copy
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bayou",
                "streams",
                "run",
                str(app_file),
                "-b",
                broker.bootstrap,
                "--state-dir",
                str(state),
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def read_all(broker: BrokerProcess, topic: str) -> list[Any]:
    """Every committed record of ``topic`` now (each partition to its end)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"rb-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=10)
    partitions = set(meta.topics[topic].partitions) if topic in meta.topics else set()
    out: list[Any] = []
    if not partitions:
        consumer.close()
        return out
    consumer.subscribe([topic])
    done: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while done != partitions and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    done.add(msg.partition() or 0)
                else:
                    out.append(msg)
    finally:
        consumer.close()
    return out


def windows(msgs: list[Any]) -> Counter[tuple[str, str, int, int]]:
    return Counter(
        (v["key"], v["window_start"], v["n"], v["s"]) for v in (json.loads(m.value()) for m in msgs)
    )


def test_rebalance_mid_stream_gives_the_single_worker_results(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    app_file = tmp_path / "app.py"
    app_file.write_text(APP)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.create_topics([NewTopic("rb_events", 4)]).values():
            future.result(30)
        records = [(f"dev{i % DEVICES}", {"v": i % 10}, T0 + i * STEP_MS) for i in range(RECORDS)]
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})

        def produce(start: int, end: int) -> None:
            """Records [start, end) at ≤ 2000 records/s, so rebalances happen while they
            flow."""
            for n in range(start, end):
                key, value, ts = records[n]
                producer.produce(
                    "rb_events", json.dumps(value).encode(), key.encode(), timestamp=ts
                )
                if n % 100 == 99:
                    assert producer.flush(30) == 0
                    time.sleep(0.05)
            assert producer.flush(30) == 0

        def results() -> int:
            return len(read_all(broker, "rb_out"))

        for name in ("a", "b"):
            workers[name] = start_worker(broker, app_file, tmp_path / name, "rb", "rb_out")
        produce(0, 3500)  # the first window closes (the grace is 2 windows)
        wait_until("the first windows' results", lambda: results() >= 12, 60)
        workers["c"] = start_worker(broker, app_file, tmp_path / "c", "rb", "rb_out")
        produce(3500, 6000)  # while the third worker joins
        wait_until("results after the third worker joined", lambda: results() >= 36, 60)
        workers["a"].kill()  # -9, mid-stream, with an open window and transaction
        workers["a"].wait(10)
        produce(6000, RECORDS)  # while the killed worker's partitions move
        for p in range(4):
            producer.produce("rb_events", b'{"v": 0}', b"closer", timestamp=FAR, partition=p)
        assert producer.flush(30) == 0
        assert workers["b"].poll() is None and workers["c"].poll() is None

        want_count = (RECORDS * STEP_MS // WINDOW_MS) * DEVICES  # every window of every device
        try:
            wait_until("every window's result", lambda: results() >= want_count, 120)
        except AssertionError:
            got = windows(read_all(broker, "rb_out"))
            seen = sorted({(k, w) for k, w, _n, _s in got})
            logs = "\n".join(
                f"--- {n}\n" + (tmp_path / f"{n}.log").read_text()[-3000:] for n in workers
            )
            raise AssertionError(f"{len(got)} results: {seen}\n{logs}") from None
        got = windows(read_all(broker, "rb_out"))
        assert max(got.values()) == 1, "a window result written twice"

        # one worker alone over the same records
        alone = start_worker(
            broker,
            app_file,
            tmp_path / "alone",
            "rb-alone",
            "rb_alone_out",
            "--exit-when-idle",
            "5",
        )
        workers["alone"] = alone
        alone.wait(180)
        want = windows(read_all(broker, "rb_alone_out"))
        assert sum(want.values()) == want_count and max(want.values()) == 1
        assert got == want
        assert sum(n for (_k, _w, n, _s) in got) == RECORDS  # nothing lost or doubled
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.terminate()
        for worker in workers.values():
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
