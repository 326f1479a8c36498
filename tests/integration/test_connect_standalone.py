"""``bayou connect run FILE.toml`` as a user runs it: a directory of JSON-lines and CSV files
tailed by file-source into topics, an http-sink posting them to a receiver started here; a
kill -9 of the process mid-stream and a restart leave every line in the topic exactly once;
the http-sink's retries and rate limit."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer

from bayou.connect.api import ConnectorConfig, SinkRecord
from bayou.connect.sinks.http import HttpSinkTask
from tests.support.broker import BrokerProcess
from tests.support.connect_process import ConnectProcess
from tests.support.ports import free_port
from tests.support.wait import wait_until
from tests.support.webhook import Webhook


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
            "rate", {"http.url": hook.url, "batch.size": 1, "rate.limit": 2}
        )
        task = HttpSinkTask(config)
        task.start()
        task.open([("t", 0)])
        task.put([SinkRecord("t", 0, i, 0, None, {"i": i}) for i in range(5)])
        assert task.flush() == {("t", 0): 5}
        task.stop()
        # 2 requests a second: sent 0.5 s apart; the webhook sees them arrive with the
        # machine's jitter (0.13 s seen on a loaded CI machine), so each gap is checked
        # against half the interval and the whole run against one interval less
        gaps = [b - a for a, b in zip(hook.times, hook.times[1:], strict=False)]
        assert [body[0]["value"]["i"] for body in hook.bodies] == list(range(5))
        assert min(gaps) >= 0.25, gaps
        assert hook.times[-1] - hook.times[0] >= 1.5, gaps


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


def test_webhooks_into_a_topic_answered_once_stored(
    shared_broker: BrokerProcess, tmp_path: Path, processes: list[ConnectProcess]
) -> None:
    """http-source: a signed JSON body (GitHub's X-Hub-Signature-256) or a bearer token;
    a 200 only once the records are in the topic; bad input refused with its status."""
    suffix = uuid.uuid4().hex[:6]
    signed_topic, token_topic = f"hooks-{suffix}", f"events-{suffix}"
    signed_port, token_port = free_port(), free_port()
    config = tmp_path / "hooks.toml"
    config.write_text(
        f"""
[connectors.github-{suffix}]
connector.class = "http-source"
listen = "127.0.0.1:{signed_port}"
path = "/github"
topic = "{signed_topic}"
"key.path" = "repository.name"
"hmac.secret" = "s3cret"

[connectors.devices-{suffix}]
connector.class = "http-source"
listen = "127.0.0.1:{token_port}"
topic = "{token_topic}"
"key.path" = "device"
"auth.token" = "t0ken"
"""
    )
    processes.append(ConnectProcess(shared_broker, config, tmp_path / "hooks.log").start())
    signed_url, token_url = (
        f"http://127.0.0.1:{signed_port}/github",
        f"http://127.0.0.1:{token_port}/",
    )
    with httpx.Client(timeout=60) as http:

        def listening(url: str) -> bool:
            try:
                http.post(url, content=b"")  # answered 401 or 411, once it listens
            except httpx.TransportError:
                return False
            return True

        for url in (signed_url, token_url):  # the two connectors start one after the other
            wait_until(f"the http-source at {url}", lambda url=url: listening(url), timeout=60)
        body = json.dumps({"action": "opened", "repository": {"name": "bayou"}}).encode()
        mac = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        sent = http.post(signed_url, content=body, headers={"X-Hub-Signature-256": mac})
        assert sent.status_code == 200 and sent.json() == {"accepted": 1}, sent.text
        assert (
            http.post(
                signed_url, content=body, headers={"X-Hub-Signature-256": "sha256=00"}
            ).status_code
            == 401
        )
        batch = [{"device": f"d{i % 3}", "temp": 20 + i} for i in range(30)]
        auth = {"Authorization": "Bearer t0ken"}
        sent = http.post(token_url, json=batch, headers=auth)
        assert sent.status_code == 200 and sent.json() == {"accepted": 30}, sent.text
        assert http.post(token_url, json=batch).status_code == 401
        assert http.post(token_url, content=b"{nope", headers=auth).status_code == 400
        assert http.post(token_url, json=[1, 2], headers=auth).status_code == 400
    # answered 200: already in the topics, in order, keyed by the path
    (hook,) = read_topic(shared_broker, signed_topic, 1)
    assert hook.key() == b"bayou" and json.loads(hook.value())["action"] == "opened"
    events = read_topic(shared_broker, token_topic, 30)
    assert [json.loads(m.value()) for m in events] == batch
    assert [m.key() for m in events] == [f"d{i % 3}".encode() for i in range(30)]
