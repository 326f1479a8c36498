"""kombu (Celery's messaging library, on py-amqp) against a real broker: publish with
confirms, consume and ack in order, requeue and reject, purge, and redelivery of what a
consumer that died had not acknowledged."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from tests.support.amqp import unique
from tests.support.broker import BrokerProcess
from tests.support.celery_worker import REPO

WAIT_S = 20.0


def _url(broker: BrokerProcess) -> str:
    return f"amqp://guest:guest@{broker.host}:{broker.amqp_port}//"


@pytest.fixture
def conn(shared_broker: BrokerProcess) -> Iterator[Connection]:
    with Connection(_url(shared_broker), transport_options={"confirm_publish": True}) as c:
        c.ensure_connection(max_retries=3)
        yield c


def _drain(conn: Connection, got: list[Any], n: int, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            continue
    assert len(got) >= n, f"got {len(got)} of {n} messages in {timeout}s"


def _quiet(conn: Connection, got: list[Any], seconds: float) -> int:
    before = len(got)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.1)
    return len(got) - before


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)


def test_publish_consume_ack_in_order(conn: Connection) -> None:
    queue = _queue(unique("kombu"))
    with conn.channel() as ch:
        producer = Producer(ch)
        for i in range(200):
            producer.publish(
                {"n": i},
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                declare=[queue],
                serializer="json",
                headers={"seq": i, "ok": True},
                retry=True,
            )
    got: list[tuple[Any, Message]] = []

    def on(body: Any, message: Message) -> None:
        got.append((body, message))
        message.ack()

    with Consumer(conn, [queue], callbacks=[on], prefetch_count=50):
        _drain(conn, got, 200)
        assert _quiet(conn, got, 0.3) == 0
    assert [body["n"] for body, _m in got] == list(range(200))
    first = got[0][1]
    assert first.content_type == "application/json"
    assert first.headers["seq"] == 0 and first.headers["ok"] is True  # types kept
    assert first.delivery_info["routing_key"] == queue.routing_key
    assert not first.delivery_info["redelivered"]


def test_requeue_redelivers_and_reject_drops(conn: Connection) -> None:
    queue = _queue(unique("kombu-rq"))
    with conn.channel() as ch:
        producer = Producer(ch)
        for body in ("a", "b", "c"):
            producer.publish(
                body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue]
            )
    got: list[tuple[Any, Message]] = []

    def on(body: Any, message: Message) -> None:
        got.append((body, message))
        if body == "a" and not message.delivery_info["redelivered"]:
            message.requeue()
        elif body == "b":
            message.reject()
        else:
            message.ack()

    with Consumer(conn, [queue], callbacks=[on], prefetch_count=10):
        _drain(conn, got, 4)
        assert _quiet(conn, got, 0.5) == 0
    bodies = [b for b, _m in got]
    assert sorted(bodies) == ["a", "a", "b", "c"]
    assert [m.delivery_info["redelivered"] for b, m in got if b == "a"] == [False, True]


def test_purge_counts_what_was_ready(conn: Connection) -> None:
    queue = _queue(unique("kombu-purge"))
    with conn.channel() as ch:
        producer = Producer(ch)
        for i in range(7):
            producer.publish(
                i, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue]
            )
        bound = queue(ch)
        assert bound.purge() == 7
        assert bound.queue_declare(passive=True).message_count == 0


_DYING_CONSUMER = """
import os, sys
from kombu import Connection, Consumer, Exchange, Queue
name = sys.argv[2]
queue = Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)
seen = []
def on(body, message):
    seen.append(message)
    if len(seen) == 6:
        for m in seen[:2]:
            m.ack()  # 0 and 1 done (written to the socket now); 2..5 in flight
        os._exit(0)  # die: no cancel, no close
with Connection(sys.argv[1]) as conn:
    with Consumer(conn, [queue], callbacks=[on], prefetch_count=20):
        for _ in range(200):
            try:
                conn.drain_events(timeout=0.1)
            except TimeoutError:
                pass
os._exit(3)
"""


def test_what_a_dead_consumer_had_not_acked_is_delivered_again(
    shared_broker: BrokerProcess,
    conn: Connection,
) -> None:
    name = unique("kombu-dies")
    queue = _queue(name)
    with conn.channel() as ch:
        producer = Producer(ch)
        for i in range(6):
            producer.publish(i, exchange=queue.exchange, routing_key=name, declare=[queue])
    done = subprocess.run(
        [sys.executable, "-c", _DYING_CONSUMER, _url(shared_broker), name],
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    got: list[tuple[Any, Message]] = []
    with Consumer(conn, [queue], callbacks=[lambda b, m: got.append((b, m))], prefetch_count=20):
        _drain(conn, got, 4)
        for _b, m in got:
            m.ack()
        assert _quiet(conn, got, 0.3) == 0
    assert [b for b, _m in got] == [2, 3, 4, 5]
