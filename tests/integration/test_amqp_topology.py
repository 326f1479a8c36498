"""Topology under load and AMQP queue semantics: concurrent declarers, names that are not
Kafka topic names, queue.purge, auto-delete queues, and the broker closing politely."""

from __future__ import annotations

import asyncio
import json

import aio_pika
from confluent_kafka.admin import AdminClient

from bayou.gateways.amqp.names import amqp_name, topic_for
from tests.support.amqp import connect, kafka_read, unique
from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until

WAIT_S = 30.0


def _url(broker: BrokerProcess) -> str:
    return f"amqp://guest:guest@{broker.host}:{broker.amqp_port}/"


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


# ----------------------------------------------------------------------------- races

DECLARERS = 60


def test_concurrent_declarers_and_leavers_all_succeed(broker: BrokerProcess) -> None:
    """60 clients change the topology at once (durable exchanges, queues, bindings, exclusive
    queues that go when their connection does, group consumers that leave): none is refused,
    and every durable change survives a restart."""
    run = unique("race")

    async def one(i: int, start: asyncio.Event) -> str:
        conn = await aio_pika.connect(_url(broker), timeout=WAIT_S)
        try:
            ch = await conn.channel()
            await start.wait()
            exchange = await ch.declare_exchange(
                f"{run}-x{i}", aio_pika.ExchangeType.DIRECT, durable=True
            )
            queue = await ch.declare_queue(f"{run}-q{i}", durable=True)
            await queue.bind(exchange, f"key-{i}")
            temp = await ch.declare_queue(exclusive=True)  # dropped when this client leaves
            await temp.bind(exchange, "temp")
            tag = await queue.consume(_ignore)  # a group member ...
            await queue.cancel(tag)  # ... that leaves
            if i % 2:
                await queue.unbind(exchange, f"key-{i}")
                await queue.bind(exchange, f"again-{i}")
            return temp.name
        finally:
            await conn.close()

    async def main() -> list[str | BaseException]:
        start = asyncio.Event()
        tasks = [asyncio.ensure_future(one(i, start)) for i in range(DECLARERS)]
        await asyncio.sleep(0.5)  # every client connected and waiting
        start.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {DECLARERS} clients failed: {failures[:3]!r}"

    def bindings() -> set[tuple[str, str, str]]:
        doc = json.loads((broker.data_dir / "amqp" / "registry.json").read_text())
        return {(b["exchange"], b["queue"], b["routing_key"]) for b in doc["bindings"]}

    expected = {
        (f"{run}-x{i}", f"{run}-q{i}", f"again-{i}" if i % 2 else f"key-{i}")
        for i in range(DECLARERS)
    }
    # the exclusive queues go (with their bindings) as their connections end
    wait_until("exclusive queues' bindings dropped", lambda: bindings() == expected)
    assert "Traceback" not in broker.log_text()

    broker.restart()

    async def routed() -> list[bytes]:
        conn = await aio_pika.connect(_url(broker), timeout=WAIT_S)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            out = []
            for i in (0, 1, DECLARERS - 1):
                exchange = await ch.declare_exchange(f"{run}-x{i}", passive=True)
                key = f"again-{i}" if i % 2 else f"key-{i}"
                await exchange.publish(aio_pika.Message(f"m{i}".encode()), routing_key=key)
                queue = await ch.declare_queue(f"{run}-q{i}", passive=True)
                message = await queue.get(timeout=WAIT_S)
                assert message is not None
                await message.ack()
                out.append(message.body)
            return out

    assert asyncio.run(routed()) == [b"m0", b"m1", f"m{DECLARERS - 1}".encode()]


# ----------------------------------------------------------------------------- names


def test_names_that_are_not_topic_names(shared_broker: BrokerProcess) -> None:
    """Celery's names (``@``, ``:``) and names that differ only by ``.`` versus ``_`` are
    declared, bound, published to and consumed under their own names; Kafka tools see the
    documented encoded topics and read the same records."""
    run = unique("n")
    queues = [f"celery@{run}.celery.pidbox", f"reply:{run}", f"a.b@{run}", f"a_b@{run}"]
    exchange = f"fan:{run}"
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(exchange, "fanout")
    for q in queues:
        assert ch.queue_declare(q, durable=True).method.queue == q
        ch.queue_bind(q, exchange)
        ch.basic_publish("", q, f"direct to {q}".encode())
        ch.queue_declare(q, passive=True)
    ch.basic_publish(exchange, "any", b"fanned out")

    for q in queues:
        got = []
        for _ in range(2):
            method, _props, body = ch.basic_get(q, auto_ack=True)
            assert method is not None, q
            got.append((method.exchange, method.routing_key, body))
        assert got == [("", q, f"direct to {q}".encode()), (q, "any", b"fanned out")]
    conn.close()

    topics = set(AdminClient({"bootstrap.servers": shared_broker.bootstrap})
                 .list_topics(timeout=10).topics)
    for q in queues:
        topic = topic_for(q)
        assert topic in topics and amqp_name(topic) == q
        assert [r.value() for r in kafka_read(shared_broker, topic, 1, 2)] == [
            f"direct to {q}".encode(), b"fanned out"]
    assert topic_for(queues[0]) == f"amqp--celery-40{run.replace('-', '-2d')}.celery.pidbox"
