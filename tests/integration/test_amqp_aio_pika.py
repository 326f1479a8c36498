"""aio-pika (aiormq) against a real broker: confirms, properties, stream offsets, nack/requeue."""

from __future__ import annotations

import asyncio

import aio_pika
import pamqp.commands
import pytest

from tests.support.amqp import kafka_read, unique
from tests.support.broker import BrokerProcess

WAIT_S = 20.0


def _url(broker: BrokerProcess) -> str:
    return f"amqp://guest:guest@{broker.host}:{broker.amqp_port}/"


Incoming = aio_pika.abc.AbstractIncomingMessage


async def _take(queue: aio_pika.abc.AbstractQueue, n: int, *, no_ack: bool = False,
                arguments: dict[str, object] | None = None) -> list[Incoming]:
    got: list[Incoming] = []
    done = asyncio.Event()

    async def on(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        got.append(message)
        if len(got) >= n:
            done.set()

    tag = await queue.consume(on, no_ack=no_ack, arguments=arguments)
    await asyncio.wait_for(done.wait(), WAIT_S)
    await queue.cancel(tag)
    return got


def test_publish_confirm_properties_and_consume(shared_broker: BrokerProcess) -> None:
    name = unique("aio")

    async def main() -> list[tuple[bytes, str | None, str | None, dict[str, object]]]:
        conn = await aio_pika.connect_robust(_url(shared_broker))
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.set_qos(prefetch_count=50)
            queue = await ch.declare_queue(name, durable=True, arguments={"x-partitions": 2})
            for i in range(10):
                confirmation = await ch.default_exchange.publish(
                    aio_pika.Message(f"body-{i}".encode(), content_type="text/plain",
                                     correlation_id=f"corr-{i}", headers={"seq": i}),
                    routing_key=name,
                )
                assert isinstance(confirmation, pamqp.commands.Basic.Ack)
            got = await _take(queue, 10, arguments={"x-stream-offset": "first"})
            out = []
            for message in got:
                out.append((message.body, message.content_type, message.correlation_id,
                            dict(message.headers)))
                await message.ack()
            return out

    got = asyncio.run(main())
    assert sorted(b for b, *_ in got) == sorted(f"body-{i}".encode() for i in range(10))
    for body, content_type, corr, headers in got:
        i = int(body.decode().split("-")[1])
        assert content_type == "text/plain" and corr == f"corr-{i}"
        assert headers["seq"] == i  # numbers keep their type (Kafka sees text)
    records = kafka_read(shared_broker, name, 2, 10)
    assert all(dict(r.headers())["amqp-content-type"] == b"text/plain" for r in records)


def test_nack_requeue_redelivers_and_reject_drops(shared_broker: BrokerProcess) -> None:
    name = unique("aio-nack")

    async def main() -> tuple[list[bytes], list[bool]]:
        conn = await aio_pika.connect(_url(shared_broker))
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.set_qos(prefetch_count=10)
            queue = await ch.declare_queue(name)
            for body in (b"a", b"b", b"c"):
                await ch.default_exchange.publish(aio_pika.Message(body), routing_key=name)
            seen: list[aio_pika.abc.AbstractIncomingMessage] = []
            done = asyncio.Event()

            async def on(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                seen.append(message)
                if message.body == b"a" and not message.redelivered:
                    await message.nack(requeue=True)
                elif message.body == b"b":
                    await message.reject(requeue=False)
                else:
                    await message.ack()
                if sum(1 for m in seen if m.body in (b"a", b"c")) >= 3:
                    done.set()

            await queue.consume(on, arguments={"x-stream-offset": "first"})
            await asyncio.wait_for(done.wait(), WAIT_S)
            return [m.body for m in seen], [m.redelivered for m in seen]

    bodies, redelivered = asyncio.run(main())
    assert bodies.count(b"a") == 2 and bodies.count(b"b") == 1 and bodies.count(b"c") == 1
    assert redelivered[bodies.index(b"a", 1)] is True


def test_topic_exchange_with_aio_pika(shared_broker: BrokerProcess) -> None:
    exchange_name, queue_name = unique("aio-x"), unique("aio-q")

    async def main() -> list[str]:
        conn = await aio_pika.connect(_url(shared_broker))
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            exchange = await ch.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC,
                                                 durable=True)
            queue = await ch.declare_queue(queue_name, durable=True)
            await queue.bind(exchange, "logs.*.error")
            for key in ("logs.web.error", "logs.web.info", "logs.db.error"):
                await exchange.publish(aio_pika.Message(key.encode()), routing_key=key)
            got = await _take(queue, 2, no_ack=True, arguments={"x-stream-offset": "first"})
            return [m.body.decode() for m in got]

    assert asyncio.run(main()) == ["logs.web.error", "logs.db.error"]


def test_unknown_exchange_closes_the_channel(shared_broker: BrokerProcess) -> None:
    async def main() -> int:
        conn = await aio_pika.connect(_url(shared_broker))
        async with conn:
            ch = await conn.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await ch.declare_exchange(unique("absent"), passive=True)
            ch2 = await conn.channel()  # the connection survives
            queue = await ch2.declare_queue(unique("alive"))
            return queue.declaration_result.message_count

    assert asyncio.run(main()) == 0
