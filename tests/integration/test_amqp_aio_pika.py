"""aio-pika (aiormq) against a real broker: confirms, properties, stream offsets, nack/requeue,
redelivery of what a consumer that died had not acknowledged, purge."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aio_pika
import pamqp.commands
import pytest

from tests.support.amqp import kafka_read, unique
from tests.support.broker import BrokerProcess

WAIT_S = 20.0


def _url(broker: BrokerProcess) -> str:
    return f"amqp://guest:guest@{broker.host}:{broker.amqp_port}/"


Incoming = aio_pika.abc.AbstractIncomingMessage


async def _take(
    queue: aio_pika.abc.AbstractQueue,
    n: int,
    *,
    no_ack: bool = False,
    arguments: dict[str, object] | None = None,
) -> list[Incoming]:
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
                    aio_pika.Message(
                        f"body-{i}".encode(),
                        content_type="text/plain",
                        correlation_id=f"corr-{i}",
                        headers={"seq": i},
                    ),
                    routing_key=name,
                )
                assert isinstance(confirmation, pamqp.commands.Basic.Ack)
            got = await _take(queue, 10, arguments={"x-stream-offset": "first"})
            out = []
            for message in got:
                out.append(
                    (
                        message.body,
                        message.content_type,
                        message.correlation_id,
                        dict(message.headers),
                    )
                )
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
            exchange = await ch.declare_exchange(
                exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
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


_DYING_CONSUMER = """
import asyncio, os, sys
import aio_pika

async def main():
    conn = await aio_pika.connect(sys.argv[1])
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=20)
    queue = await ch.declare_queue(sys.argv[2], durable=True)
    seen = []
    done = asyncio.Event()

    async def on(message):
        seen.append(message)
        if len(seen) == 6:
            for m in seen[:2]:
                await m.ack()  # m0, m1 done; m2..m5 in flight
            done.set()

    await queue.consume(on)
    await asyncio.wait_for(done.wait(), 20)
    await asyncio.sleep(0.2)  # let the acks reach the socket
    os._exit(0)  # die: no cancel, no close

asyncio.run(main())
"""


def test_what_a_dead_consumer_had_not_acked_is_delivered_again(
    shared_broker: BrokerProcess,
) -> None:
    name = unique("aio-dies")

    async def publish() -> None:
        async with await aio_pika.connect(_url(shared_broker)) as conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.declare_queue(name, durable=True)  # a durable named queue: a group
            for i in range(6):
                await ch.default_exchange.publish(
                    aio_pika.Message(f"m{i}".encode()), routing_key=name
                )

    asyncio.run(publish())
    done = subprocess.run(
        [sys.executable, "-c", _DYING_CONSUMER, _url(shared_broker), name], timeout=60, check=False
    )
    assert done.returncode == 0

    async def again() -> tuple[list[bytes], int]:
        async with await aio_pika.connect(_url(shared_broker)) as conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=20)
            queue = await ch.declare_queue(name, durable=True)
            got: list[bytes] = []
            done = asyncio.Event()

            async def on(message: Incoming) -> None:
                got.append(message.body)
                await message.ack()
                if len(got) == 4:
                    done.set()

            await queue.consume(on)
            await asyncio.wait_for(done.wait(), WAIT_S)
            purged = await queue.purge()  # acked, so nothing is left ready
            return got, purged.message_count

    bodies, left = asyncio.run(again())
    assert bodies == [b"m2", b"m3", b"m4", b"m5"] and left == 0
