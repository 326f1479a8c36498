"""The broker's ``/connectors`` API with httpx, in Kafka Connect's request and response
shapes (create, list with expand, info, config, status, tasks, pause, resume, restart,
delete, plugins, 400/404/409 error bodies), connectors doing real work (http-sink into a
receiver started here, file-source from a directory), and a broker killed and started again
running its connectors on from where they were."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer

from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until
from tests.support.webhook import Webhook


@pytest.fixture
def hook() -> Iterator[Webhook]:
    with Webhook() as receiver:
        yield receiver


def produce(broker: BrokerProcess, topic: str, values: list[Any]) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, json.dumps(value).encode(), b"k")
    assert producer.flush(30) == 0


def status(http: httpx.Client, name: str) -> dict[str, Any]:
    answer = http.get(f"/connectors/{name}/status")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def states(http: httpx.Client, name: str) -> tuple[str, list[str]]:
    body = status(http, name)
    return body["connector"]["state"], [t["state"] for t in body["tasks"]]


def test_rest_lifecycle(shared_broker: BrokerProcess, hook: Webhook) -> None:
    topic = f"rest-{uuid.uuid4().hex[:6]}"
    name = f"hook-{topic}"
    config = {
        "connector.class": "http-sink",
        "topics": topic,
        "http.url": hook.url,
        "batch.size": "5",
        "linger.ms": "20",
        "tasks.max": "1",
    }
    with httpx.Client(base_url=shared_broker.http_url, timeout=60) as http:
        plugins = http.get("/connector-plugins").json()
        assert {"class": "file-source", "type": "source"}.items() <= plugins[
            [p["class"] for p in plugins].index("file-source")
        ].items()
        assert {p["class"]: p["type"] for p in plugins}["http-sink"] == "sink"

        created = http.post("/connectors", json={"name": name, "config": config})
        assert created.status_code == 201, created.text
        assert created.json() == {
            "name": name,
            "config": {**config, "name": name},
            "tasks": [{"connector": name, "task": 0}],
            "type": "sink",
        }
        again = http.post("/connectors", json={"name": name, "config": config})
        assert again.status_code == 409
        assert again.json() == {"error_code": 409, "message": f"Connector {name} already exists"}
        assert again.headers["content-type"] == "application/json"  # as Kafka Connect's
        assert created.headers["content-type"] == "application/json"
        bad = http.post(
            "/connectors", json={"name": "bad", "config": {**config, "connector.class": "nope"}}
        )
        assert bad.status_code == 400 and bad.json()["error_code"] == 400
        assert "nope" in bad.json()["message"]
        no_topics = {k: v for k, v in config.items() if k != "topics"}
        bad = http.post("/connectors", json={"name": "bad", "config": no_topics})
        assert bad.status_code == 400 and "topics" in bad.json()["message"]
        assert http.get("/connectors/bad").status_code == 404

        assert name in http.get("/connectors").json()
        expanded = http.get("/connectors", params=[("expand", "status"), ("expand", "info")])
        entry = expanded.json()[name]
        assert entry["info"]["config"]["http.url"] == hook.url
        assert entry["status"]["name"] == name
        wait_until("RUNNING", lambda: states(http, name) == ("RUNNING", ["RUNNING"]))
        body = status(http, name)
        assert body["type"] == "sink"
        assert body["connector"]["worker_id"] == body["tasks"][0]["worker_id"]
        assert body["tasks"][0]["id"] == 0

        produce(shared_broker, topic, [{"i": i} for i in range(10)])
        wait_until("10 records at the receiver", lambda: len(hook.records()) == 10)

        assert http.put(f"/connectors/{name}/pause").status_code == 202
        assert states(http, name) == ("PAUSED", ["PAUSED"])
        produce(shared_broker, topic, [{"i": i} for i in range(10, 15)])
        time.sleep(1.0)  # a bounded look for what must not happen: nothing while paused
        assert len(hook.records()) == 10
        assert http.put(f"/connectors/{name}/resume").status_code == 202
        wait_until("15 records at the receiver", lambda: len(hook.records()) == 15)
        assert [r["value"]["i"] for r in hook.records()] == list(range(15))
        assert states(http, name) == ("RUNNING", ["RUNNING"])

        assert http.get(f"/connectors/{name}/config").json() == {**config, "name": name}
        tasks = http.get(f"/connectors/{name}/tasks").json()
        assert [t["id"] for t in tasks] == [{"connector": name, "task": 0}]
        assert tasks[0]["config"]["http.url"] == hook.url
        assert http.get(f"/connectors/{name}/tasks/0/status").json()["state"] == "RUNNING"
        assert http.get(f"/connectors/{name}/tasks/3/status").status_code == 404

        updated = http.put(f"/connectors/{name}/config", json={**config, "batch.size": "2"})
        assert updated.status_code == 200
        assert updated.json()["config"]["batch.size"] == "2"
        assert http.get(f"/connectors/{name}").json()["config"]["batch.size"] == "2"
        produce(shared_broker, topic, [{"i": 15}, {"i": 16}, {"i": 17}])
        wait_until("18 records", lambda: len(hook.records()) == 18)
        assert [r["value"]["i"] for r in hook.records()] == list(range(18))  # none twice

        assert http.post(f"/connectors/{name}/restart").status_code == 204
        restarted = http.post(f"/connectors/{name}/restart", params={"includeTasks": "true"})
        assert restarted.status_code == 202
        assert [t["state"] for t in restarted.json()["tasks"]] == ["RESTARTING"]
        assert http.post(f"/connectors/{name}/tasks/0/restart").status_code == 204
        missing = http.post(f"/connectors/{name}/tasks/7/restart")
        assert missing.status_code == 404 and missing.json()["error_code"] == 404
        wait_until("RUNNING again", lambda: states(http, name) == ("RUNNING", ["RUNNING"]))

        assert http.delete(f"/connectors/{name}").status_code == 204
        gone = http.get(f"/connectors/{name}")
        assert gone.status_code == 404
        assert gone.json() == {"error_code": 404, "message": f"Connector {name} not found"}
        assert name not in http.get("/connectors").json()
        assert http.delete(f"/connectors/{name}").status_code == 404

        created = http.put(f"/connectors/{name}/config", json=config)
        assert created.status_code == 201
        assert http.delete(f"/connectors/{name}").status_code == 204


def test_failed_task_shows_its_trace_and_restarts(shared_broker: BrokerProcess) -> None:
    topic = f"fail-{uuid.uuid4().hex[:6]}"
    name = f"strict-{topic}"
    config = {"connector.class": "http-sink", "topics": topic, "http.url": "http://127.0.0.1:1/x"}
    config["errors.retry.timeout"] = "500"
    with httpx.Client(base_url=shared_broker.http_url, timeout=60) as http:
        assert http.post("/connectors", json={"name": name, "config": config}).status_code == 201
        produce(shared_broker, topic, [{"i": 1}])
        wait_until("FAILED", lambda: states(http, name)[1] == ["FAILED"])
        task = status(http, name)["tasks"][0]
        assert "errors.retry.timeout" in task["trace"] and "ConnectError" in task["trace"]
        answer = http.post(
            f"/connectors/{name}/restart", params={"includeTasks": "true", "onlyFailed": "true"}
        )
        assert answer.status_code == 202
        assert answer.json()["connector"]["state"] == "RUNNING"
        assert [t["state"] for t in answer.json()["tasks"]] == ["RESTARTING"]
        assert http.delete(f"/connectors/{name}").status_code == 204


def test_off_answers_503(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", extra_args=["--connect", "off"]).start()
    try:
        answer = httpx.get(f"{broker.http_url}/connectors", timeout=30)
        assert answer.status_code == 503
        assert "--connect off" in answer.json()["message"]
    finally:
        broker.kill()


def read_numbers(broker: BrokerProcess, topic: str, count: int) -> list[int]:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    out: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < count and time.monotonic() < deadline:
            out += [json.loads(m.value())["n"] for m in consumer.consume(500, 0.5) if not m.error()]
        out += [json.loads(m.value())["n"] for m in consumer.consume(500, 1.0) if not m.error()]
    finally:
        consumer.close()
    return out


def test_broker_restart_runs_connectors_on(tmp_path: Path, hook: Webhook) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("".join(json.dumps({"n": i}) + "\n" for i in range(100)))
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=broker.http_url, timeout=60) as http:
            source = {"connector.class": "file-source", "path": str(inbox), "topic": "lines"}
            sink = {
                "connector.class": "http-sink",
                "topics": "lines",
                "http.url": hook.url,
                "offset.flush.interval.ms": "200",
            }
            assert http.post("/connectors", json={"name": "in", "config": source}).is_success
            assert http.post("/connectors", json={"name": "out", "config": sink}).is_success
            assert http.put("/connectors/out/pause").status_code == 202  # a pause is stored
        assert read_numbers(broker, "lines", 100) == list(range(100))
        broker.kill()  # kill -9: no flush, no goodbye
        with open(inbox / "a.jsonl", "a") as f:
            f.write("".join(json.dumps({"n": i}) + "\n" for i in range(100, 150)))
        broker.start()
        with httpx.Client(base_url=broker.http_url, timeout=60) as http:
            wait_until(
                "both connectors back",
                lambda: sorted(http.get("/connectors").json()) == ["in", "out"],
                timeout=60,
            )
            assert states(http, "out") == ("PAUSED", ["PAUSED"])
            # the source resumes from its stored position: every line once
            assert read_numbers(broker, "lines", 150) == list(range(150))
            assert hook.records() == []
            assert http.put("/connectors/out/resume").status_code == 202
            wait_until("150 at the receiver", lambda: len(hook.records()) >= 150, timeout=60)
            assert [r["value"]["n"] for r in hook.records()] == list(range(150))
    finally:
        broker.kill()
