"""Helpers for AMQP tests: pika connections and bounded waits for deliveries."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import pika
from confluent_kafka import Consumer, TopicPartition
from pika.adapters.blocking_connection import BlockingChannel

from tests.support.broker import BrokerProcess

WAIT_S = 20.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def connect(broker: BrokerProcess, **params: Any) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            broker.host, broker.amqp_port, connection_attempts=3, retry_delay=0.2, **params
        )
    )


@dataclass
class Delivery:
    tag: int
    routing_key: str
    exchange: str
    redelivered: bool
    props: pika.BasicProperties
    body: bytes


class Collector:
    """basic.consume into a list; ``wait_for(n)`` pumps pika's I/O until n arrived (bounded)."""

    def __init__(
        self,
        conn: pika.BlockingConnection,
        ch: BlockingChannel,
        queue: str,
        *,
        auto_ack: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.conn = conn
        self.ch = ch
        self.got: list[Delivery] = []
        self.tag = ch.basic_consume(queue, self._on, auto_ack=auto_ack, arguments=arguments)

    def _on(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        self.got.append(
            Delivery(
                method.delivery_tag,
                method.routing_key,
                method.exchange,
                method.redelivered,
                props,
                body,
            )
        )

    def wait_for(self, n: int, timeout: float = WAIT_S) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.05)
        assert len(self.got) >= n, f"got {len(self.got)} of {n} deliveries in {timeout}s"
        return self.got

    def quiet_for(self, seconds: float) -> int:
        """Pump I/O for ``seconds`` and return how many deliveries arrived meanwhile."""
        before = len(self.got)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.05)
        return len(self.got) - before


def wait_for_any(collectors: list[Collector], n: int, timeout: float = WAIT_S) -> int:
    """Pump I/O until the ``collectors`` (competing consumers of one queue, on one connection)
    got ``n`` deliveries between them (bounded); how many they got."""
    conn = collectors[0].conn

    def total() -> int:
        return sum(len(c.got) for c in collectors)

    deadline = time.monotonic() + timeout
    while total() < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert total() >= n, f"got {total()} of {n} deliveries in {timeout}s"
    return total()


def kafka_read(broker: BrokerProcess, topic: str, partitions: int, n: int) -> list[Any]:
    """Read ``n`` records from the start of every partition with confluent-kafka."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": unique("rd"),
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    assert len(out) == n, f"read {len(out)} of {n} records"
    return out
