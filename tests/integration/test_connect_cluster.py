"""Connectors in a cluster: every broker follows the connectors' catalog, but a connector
runs on one broker only — the one coordinating its group ``connect-{name}`` — and moves to
another when that broker dies, going on from the group's committed offsets: an http-sink
delivers every record, before and after the move."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from confluent_kafka import Producer

from bayou.storage.cluster import coordinator_key, rendezvous
from tests.support.broker import BrokerProcess, start_all
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until
from tests.support.webhook import Webhook

NODES = (1, 2)


def produce(bootstrap: str, topic: str, first: int, last: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(first, last):
        p.produce(topic, json.dumps({"n": i}).encode(), b"k")
    assert p.flush(60) == 0


def state(broker: BrokerProcess, name: str) -> str:
    with httpx.Client(base_url=broker.http_url, timeout=30) as http:
        answer = http.get(f"/connectors/{name}/status")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["connector"]["state"])


def test_a_connector_runs_on_one_broker_and_moves_when_it_dies(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    database = postgres_server.create_database()
    brokers = {
        n: BrokerProcess(
            tmp_path / f"node{n}",
            extra_args=["--storage", database, "--node-id", str(n)],
            doors=("http",),
        )
        for n in NODES
    }
    name = next(  # runs on broker 1 while both live
        f"out{i}"
        for i in range(1000)
        if rendezvous(coordinator_key(0, f"connect-out{i}"), NODES) == 1
    )
    topic = f"{name}-in"
    with Webhook() as hook:
        try:
            start_all(brokers.values())
            bootstrap = ",".join(b.bootstrap for b in brokers.values())
            produce(bootstrap, topic, 0, 200)
            config = {
                "connector.class": "http-sink",
                "topics": topic,
                "http.url": hook.url,
                "offset.flush.interval.ms": "200",
            }
            with httpx.Client(base_url=brokers[2].http_url, timeout=60) as http:
                created = http.post("/connectors", json={"name": name, "config": config})
                assert created.status_code == 201, created.text
            wait_until("200 at the receiver", lambda: len(hook.records()) >= 200, timeout=60)
            assert state(brokers[1], name) == "RUNNING"
            assert state(brokers[2], name) == "UNASSIGNED"  # followed, not run, there
            brokers[1].kill()
            produce(brokers[2].bootstrap, topic, 200, 300)
            wait_until(
                "the connector moved to broker 2",
                lambda: state(brokers[2], name) == "RUNNING",
                timeout=60,
            )
            wait_until("300 at the receiver", lambda: len(hook.records()) >= 300, timeout=60)
            # at least once: what broker 1 sent after its last commit may come again
            assert {r["value"]["n"] for r in hook.records()} == set(range(300))
        finally:
            for b in brokers.values():
                b.kill()
