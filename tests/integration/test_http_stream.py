"""Live streams: Server-Sent Events (resumable with Last-Event-ID) and WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import websockets

from tests.integration.test_confluent_kafka import create_topic, produce_all
from tests.support.broker import BrokerProcess
from tests.support.http import client
from tests.support.kafka import make_messages, unique_topic

DEADLINE_S = 20
HEADERS = [{"name": "source", "value": "aHR0cA=="}, {"name": "none", "value": None}]


def read_events(lines: Iterator[str], count: int) -> list[tuple[str, dict[str, Any]]]:
    """The next ``count`` SSE events (id, data) from a streaming response's lines."""
    events: list[tuple[str, dict[str, Any]]] = []
    event_id, data = "", ""
    deadline = time.monotonic() + DEADLINE_S
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            events.append((event_id, json.loads(data)))
            data = ""
            if len(events) == count:
                return events
        assert time.monotonic() < deadline, f"only {len(events)} of {count} events came"
    raise AssertionError(f"stream ended after {len(events)} of {count} events")


def test_sse_from_earliest_live_and_resume(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("sse")
    create_topic(shared_broker.bootstrap, topic, 2)
    sent = make_messages(10, 2)
    produce_all(shared_broker.bootstrap, topic, sent)
    url = f"/topics/{topic}/stream"
    with client(shared_broker.http_url, timeout=DEADLINE_S) as http:
        with http.stream("GET", url, params={"from": "earliest", "format": "binary"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            old = read_events(lines, 10)
            assert sorted((e["partition"], e["offset"]) for _, e in old) == sorted(
                (p, o) for p in (0, 1) for o in range(5)
            )
            # records produced while the stream is open arrive on it
            with client(shared_broker.http_url) as producer:
                producer.post(
                    f"/topics/{topic}/partitions/1",
                    json={"records": [{"value": {"live": i}} for i in range(3)]},
                )
            live = read_events(lines, 3)
            assert [(e["partition"], e["offset"]) for _, e in live] == [(1, 5), (1, 6), (1, 7)]
            last_id = live[1][0]  # as if the connection broke after the second live event
        assert last_id == "0:5,1:7"
        http.post(f"/topics/{topic}/partitions/0", json={"records": [{"value": "after"}]})
        with http.stream("GET", url, headers={"Last-Event-ID": last_id}) as r:
            resumed = read_events(r.iter_lines(), 2)
        assert [(e["partition"], e["offset"], e["value"]) for _, e in resumed] == [
            (0, 5, "after"),
            (1, 7, {"live": 2}),
        ]
        bad = http.get(url, headers={"Last-Event-ID": "zz"})
        assert (bad.status_code, bad.json()["error_code"]) == (400, 400)
        missing = http.get(f"/topics/{topic}-nope/stream")
        assert missing.status_code == 404


def test_sse_from_a_point_in_time(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("sset")
    create_topic(shared_broker.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 3_600_000
    produce_all(shared_broker.bootstrap, topic, make_messages(20, 1, base_ts=base))
    moment = datetime.fromtimestamp((base + 12) / 1000, UTC).isoformat()
    with (
        client(shared_broker.http_url, timeout=DEADLINE_S) as http,
        http.stream("GET", f"/topics/{topic}/stream", params={"from": moment}) as r,
    ):
        events = read_events(r.iter_lines(), 8)
    assert [e["offset"] for _, e in events] == list(range(12, 20))
    assert events[0][1]["timestamp"] == base + 12


def test_websocket_stream(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("ws")
    create_topic(shared_broker.bootstrap, topic, 1)
    with client(shared_broker.http_url) as http:
        http.post(
            f"/topics/{topic}",
            json={"records": [{"key": "k", "value": {"n": i}} for i in range(5)]},
        )
        http.post(f"/topics/{topic}", json={"records": [{"value": "h", "headers": HEADERS}]})
    ws_url = shared_broker.http_url.replace("http://", "ws://") + f"/topics/{topic}/stream"

    async def follow() -> list[dict[str, Any]]:
        async with websockets.connect(f"{ws_url}?from=earliest", open_timeout=10) as ws:
            got = [json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S)) for _ in range(6)]
            async with httpx.AsyncClient(base_url=shared_broker.http_url) as http:
                await http.post(f"/topics/{topic}", json={"records": [{"value": "live"}]})
            got.append(json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S)))
        async with websockets.connect(f"{ws_url}?last_event_id=0:3", open_timeout=10) as ws:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S)))
        return got

    got = asyncio.run(follow())
    assert [(m["offset"], m["key"], m["value"]) for m in got[:5]] == [
        (i, "k", {"n": i}) for i in range(5)
    ]
    assert "headers" not in got[0] and got[5]["headers"] == HEADERS
    assert (got[6]["offset"], got[6]["value"], got[6]["id"]) == (6, "live", "0:7")
    assert got[7]["offset"] == 3
