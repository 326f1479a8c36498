"""``bayou connect run FILE.toml`` as a user runs it: a directory of JSON-lines and CSV files
tailed by file-source into topics, an http-sink posting them to a receiver started here; a
kill -9 of the process mid-stream and a restart leave every line in the topic exactly once;
the http-sink's retries and rate limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from bayou.connect.api import ConnectorConfig, SinkRecord
from bayou.connect.sinks.http import HttpSinkTask
from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until
from tests.support.webhook import Webhook


class ConnectProcess:
    def __init__(self, broker: BrokerProcess, config: Path, log: Path) -> None:
        self.args = [
            sys.executable,
            "-m",
            "bayou",
            "connect",
            "run",
            str(config),
            "-b",
            broker.bootstrap,
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConnectProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@pytest.fixture
def processes() -> Iterator[list[ConnectProcess]]:
    started: list[ConnectProcess] = []
    yield started
    for proc in started:
        proc.kill()


def read_topic(broker: BrokerProcess, topic: str, count: int, timeout: float = 60) -> list[Any]:
    """The committed records of ``topic`` until ``count`` came (or the time ran out), then a
    little more to see that no extra ones arrive."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex}",
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
            out += [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        out += [m for m in consumer.consume(1000, 1.0) if m.error() is None]
    finally:
        consumer.close()
    return out


def test_files_to_topic_to_webhook(
    shared_broker: BrokerProcess, tmp_path: Path, processes: list[ConnectProcess]
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text(
        "".join(json.dumps({"id": f"o{i}", "n": i}) + "\n" for i in range(50))
    )
    (inbox / "b.csv").write_text("id,city\nc1,Lafayette\nc2,Houma\n")
    suffix = uuid.uuid4().hex[:6]
    orders, cities = f"orders-{suffix}", f"cities-{suffix}"
    config = tmp_path / "pipeline.toml"
    with Webhook(fail_first=2) as hook:
        config.write_text(
            f"""
[connectors.orders-in-{suffix}]
"connector.class" = "file-source"
path = "{inbox}"
"file.pattern" = "*.jsonl"
topic = "{orders}"
format = "json"
"key.field" = "id"

[connectors.cities-in-{suffix}]
connector.class = "file-source"
path = "{inbox}"
file.pattern = "*.csv"
topic = "{cities}"
format = "csv"
key.field = "id"

[connectors.orders-out-{suffix}]
connector.class = "http-sink"
topics = ["{orders}"]
http.url = "{hook.url}"
batch.size = 20
linger.ms = 50
offset.flush.interval.ms = 500
http.headers = "Authorization: Bearer secret"
"""
        )
        proc = ConnectProcess(shared_broker, config, tmp_path / "connect.log").start()
        processes.append(proc)
        wait_until("the first 50 orders at the webhook", lambda: len(hook.records()) >= 50, 60)
        with open(inbox / "a.jsonl", "a") as f:  # tailing: lines appended later come too
            f.write("".join(json.dumps({"id": f"o{i}", "n": i}) + "\n" for i in range(50, 60)))
        wait_until("60 orders at the webhook", lambda: len(hook.records()) >= 60, 60)
        assert proc.stop() == 0
        got = hook.records()
        assert [r["value"] for r in got] == [{"id": f"o{i}", "n": i} for i in range(60)]
        assert [r["key"] for r in got] == [f"o{i}" for i in range(60)]
        offsets = [r["offset"] for r in got]  # transaction markers take offsets too
        assert offsets == sorted(set(offsets)) and offsets[:50] == list(range(50))
        assert {r["topic"] for r in got} == {orders}
        assert hook.failed == 2  # two 503s, retried
        assert all(len(body) <= 20 for body in hook.bodies)
        assert all(h.get("Authorization") == "Bearer secret" for h in hook.headers)
    city_records = read_topic(shared_broker, cities, 2)
    assert [(m.key(), json.loads(m.value())) for m in city_records] == [
        (b"c1", {"id": "c1", "city": "Lafayette"}),
        (b"c2", {"id": "c2", "city": "Houma"}),
    ]
    described = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayou",
            "group",
            "describe",
            f"connect-orders-out-{suffix}",
            "--format",
            "json",
            "-b",
            shared_broker.bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert described.returncode == 0, described.stderr
    partitions = json.loads(described.stdout)["partitions"]
    assert [(p["topic"], p["committed"], p["lag"]) for p in partitions] == [
        (orders, offsets[-1] + 2, 0)  # after the last record and its transaction marker
    ]


def test_kill_minus_9_mid_stream_every_line_once(
    shared_broker: BrokerProcess, tmp_path: Path, processes: list[ConnectProcess]
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    topic = f"lines-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f"""
[connectors.tail-{topic}]
connector.class = "file-source"
path = "{inbox}"
topic = "{topic}"
batch.size = 200
"""
    )
    total = 30_000
    killed = threading.Event()
    written = threading.Event()

    def writer() -> None:  # two files, appended in chunks while the connector runs
        for start in range(0, total, 1000):
            if start == 20_000:
                killed.wait(120)  # the kill comes while lines are still to be written
            name = "part-1.jsonl" if start < total // 2 else "part-2.jsonl"
            with open(inbox / name, "a") as f:
                f.write("".join(json.dumps({"n": i}) + "\n" for i in range(start, start + 1000)))
            time.sleep(0.05)
        written.set()

    first = ConnectProcess(shared_broker, config, tmp_path / "connect-1.log").start()
    processes.append(first)
    thread = threading.Thread(target=writer)
    thread.start()
    consumer = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": f"watch-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_uncommitted",
        }
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 90
    while seen < 10_000 and time.monotonic() < deadline:
        seen += sum(1 for m in consumer.consume(1000, 0.2) if m.error() is None)
    consumer.close()
    assert seen >= 10_000
    first.kill()  # mid-stream: the writer is still appending
    killed.set()
    assert not written.is_set()
    second = ConnectProcess(shared_broker, config, tmp_path / "connect-2.log").start()
    processes.append(second)
    thread.join(120)
    records = read_topic(shared_broker, topic, total, timeout=120)
    numbers = [json.loads(m.value())["n"] for m in records]
    assert len(numbers) == total, f"{len(numbers)} records, {len(set(numbers))} distinct"
    assert sorted(numbers) == list(range(total))
    assert numbers == sorted(numbers)  # one partition, files in order, lines in order
    assert second.stop() == 0


def test_http_sink_rate_limit(tmp_path: Path) -> None:
    with Webhook() as hook:
        config = ConnectorConfig.from_mapping(
            "rate", {"http.url": hook.url, "batch.size": 1, "rate.limit": 5}
        )
        task = HttpSinkTask(config)
        task.start()
        task.open([("t", 0)])
        task.put([SinkRecord("t", 0, i, 0, None, {"i": i}) for i in range(6)])
        assert task.flush() == {("t", 0): 6}
        task.stop()
        gaps = [b - a for a, b in zip(hook.times, hook.times[1:], strict=False)]
        assert len(hook.bodies) == 6
        assert min(gaps) >= 0.15, gaps  # 5 requests a second: 0.2 s apart (less jitter)
        assert hook.times[-1] - hook.times[0] >= 0.9


def test_a_bad_file_exits_2_naming_the_key(shared_broker: BrokerProcess, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    cases = {
        '[connectors.x]\n"connector.class" = "nope"\n': "connector.class 'nope'",
        '[connectors.x]\n"connector.class" = "http-sink"\n"http.url" = "http://h/"\n': "topics",
        '[connectors.x]\n"connector.class" = "file-source"\n"errors.tolerance" = "some"\n': (
            "errors.tolerance"
        ),
        "[connectors.x\n": "bad.toml",
        "title = 1\n": "no connectors",
    }
    for text, message in cases.items():
        config.write_text(text)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bayou",
                "connect",
                "run",
                str(config),
                "-b",
                shared_broker.bootstrap,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (text, proc.stderr)
        assert message in proc.stderr, (text, proc.stderr)
