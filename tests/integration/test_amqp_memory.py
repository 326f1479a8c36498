"""The AMQP door on the memory engine (``bayou serve --storage memory://``): the main flow —
declare, publish with confirms, consume and ack, basic.get — works there as on disk."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pika
import pytest

from tests.support.amqp import Collector, connect, kafka_read, unique
from tests.support.broker import BrokerProcess


@pytest.fixture(scope="module")
def memory_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("memory") / "data"
    proc = BrokerProcess(data, doors=("amqp",), extra_args=["--storage", "memory://"]).start()
    try:
        yield proc
    finally:
        proc.kill()


def test_declare_publish_confirm_consume_ack_and_get(memory_broker: BrokerProcess) -> None:
    run = unique("mem")
    conn = connect(memory_broker)
    ch = conn.channel()
    ch.exchange_declare(f"{run}-x", "topic", durable=True)
    ch.queue_declare(f"{run}-q", durable=True, arguments={"x-partitions": 2})
    ch.queue_bind(f"{run}-q", f"{run}-x", "orders.#")
    ch.confirm_delivery()  # every publish below returns once confirmed
    sent = [(f"orders.eu.{i}", f"order-{i}".encode()) for i in range(10)]
    for key, body in sent:
        ch.basic_publish(
            f"{run}-x",
            key,
            body,
            pika.BasicProperties(
                headers={"n": int(body[6:]), "kind": "order"}, timestamp=1_700_000_000
            ),
        )

    ch.basic_qos(prefetch_count=100)
    consumer = Collector(conn, ch, f"{run}-q")  # a durable queue: the group amqp:<queue>
    got = consumer.wait_for(10)
    by_key = {d.routing_key: d for d in got}
    assert sorted(by_key) == sorted(k for k, _b in sent)
    for key, body in sent:
        d = by_key[key]
        assert d.body == body and d.exchange == f"{run}-q" and not d.redelivered
        assert d.props.headers["n"] == int(body[6:]) and d.props.headers["kind"] == "order"
        assert d.props.timestamp == 1_700_000_000
    for partition in (0, 1):  # in order within each partition
        offsets = [
            d.props.headers["x-stream-offset"]
            for d in got
            if d.props.headers["x-stream-partition"] == partition
        ]
        assert offsets == sorted(offsets)
    for d in got:
        ch.basic_ack(d.tag)
    ch.basic_cancel(consumer.tag)  # commits what was acked

    # basic.get resumes where the acked consumer left the group: nothing is left ...
    method, _props, _body = ch.basic_get(f"{run}-q")
    assert method is None
    # ... until the next message, which comes with the count of what is left behind it
    ch.basic_publish("", f"{run}-q", b"late-1")
    ch.basic_publish("", f"{run}-q", b"late-2")
    bodies = []
    deadline = time.monotonic() + 10
    while len(bodies) < 2 and time.monotonic() < deadline:
        method, _props, body = ch.basic_get(f"{run}-q")
        if method is not None:
            bodies.append(body)
            ch.basic_ack(method.delivery_tag)
    assert sorted(bodies) == [b"late-1", b"late-2"]
    assert ch.queue_declare(f"{run}-q", passive=True).method.message_count == 0
    conn.close()

    # the same records, read by a Kafka client
    records = kafka_read(memory_broker, f"{run}-q", 2, 12)
    assert sorted(r.value() for r in records) == sorted(
        [b for _k, b in sent] + [b"late-1", b"late-2"]
    )


def test_nothing_of_the_topology_reaches_the_disk(memory_broker: BrokerProcess) -> None:
    conn = connect(memory_broker)
    ch = conn.channel()
    ch.exchange_declare(unique("x"), "fanout", durable=True)
    conn.close()
    data = memory_broker.data_dir
    assert not (data / "internal").exists() and not (data / "amqp").exists()
