"""The HTTP door's main flow on the memory engine (``bayou serve --storage memory://``):
produce, a subscribed consumer instance reads and commits (Kafka's OffsetFetch sees the
commit), an SSE stream replays and follows."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_confluent_kafka import create_topic
from tests.integration.test_http_stream import read_events
from tests.support.broker import BrokerProcess
from tests.support.http import JSON_V2, V2, client, create_instance, read_records
from tests.support.kafka import unique_topic

TIMEOUT_S = 20
HEADERS = [{"name": "trace", "value": base64.b64encode(b"t-1").decode()}]


@pytest.fixture
def memory_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path / "data", extra_args=["--storage", "memory://"], doors=("http",)
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def test_produce_consume_commit_and_stream(memory_broker: BrokerProcess) -> None:
    topic, group = unique_topic("mem"), unique_topic("g")
    create_topic(memory_broker.bootstrap, topic, 2)
    with client(memory_broker.http_url, timeout=TIMEOUT_S) as http:
        sent = [{"key": f"k{i % 5}", "value": {"n": i}, "headers": HEADERS} for i in range(20)]
        before = int(time.time() * 1000)
        r = http.post(f"/topics/{topic}", json={"records": sent}, headers={"Content-Type": JSON_V2})
        after = int(time.time() * 1000)
        assert r.status_code == 200, r.text
        placed = [(o["partition"], o["offset"]) for o in r.json()["offsets"]]
        assert sorted(placed) == sorted(
            (p, o) for p in (0, 1) for o in range(sum(1 for q, _ in placed if q == p))
        )

        base = create_instance(
            http,
            group,
            "reader",
            format="json",
            **{"auto.offset.reset": "earliest", "auto.commit.enable": "false"},
        )
        r = http.post(
            f"{base}/subscription", json={"topics": [topic]}, headers={"Content-Type": V2}
        )
        assert r.status_code == 204, r.text
        got = read_records(http, base, JSON_V2, 20, timeout=TIMEOUT_S)
        assert len(got) == 20
        by_place = {(g["partition"], g["offset"]): g for g in got}
        for record, where in zip(sent, placed, strict=True):
            g = by_place[where]
            assert (g["topic"], g["key"], g["value"], g["headers"]) == (
                topic,
                record["key"],
                record["value"],
                HEADERS,
            )
            assert before <= g["timestamp"] <= after
        for p in (0, 1):  # each partition in offset order
            offsets = [g["offset"] for g in got if g["partition"] == p]
            assert offsets == sorted(offsets)

        assert http.post(f"{base}/offsets", headers={"Content-Type": V2}).status_code == 200
        ends = {p: sum(1 for q, _ in placed if q == p) for p in (0, 1)}
        answer = http.request(
            "GET",
            f"{base}/offsets",
            json={"partitions": [{"topic": topic, "partition": p} for p in (0, 1)]},
        ).json()
        assert {o["partition"]: o["offset"] for o in answer["offsets"]} == ends
        assert http.delete(base).status_code == 204

        with http.stream(
            "GET", f"/topics/{topic}/stream", params={"from": "earliest", "format": "json"}
        ) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            replayed = read_events(lines, 20)
            assert sorted((e["partition"], e["offset"]) for _, e in replayed) == sorted(placed)
            r = http.post(f"/topics/{topic}/partitions/1", json={"records": [{"value": "live"}]})
            assert r.status_code == 200, r.text
            [(event_id, live)] = read_events(lines, 1)
        assert (live["partition"], live["offset"], live["value"]) == (1, ends[1], "live")
        assert event_id == f"0:{ends[0]},1:{ends[1] + 1}"

    # the commit is the group's, as any Kafka tool reads it
    kafka = Consumer({"bootstrap.servers": memory_broker.bootstrap, "group.id": group})
    try:
        committed = kafka.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=TIMEOUT_S)
    finally:
        kafka.close()
    assert {tp.partition: tp.offset for tp in committed} == ends
