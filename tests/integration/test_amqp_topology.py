"""Topology under load and AMQP queue semantics: concurrent declarers, names that are not
Kafka topic names, queue.purge, auto-delete queues, and the broker closing politely."""

from __future__ import annotations

import asyncio
import json

import aio_pika

from tests.support.amqp import unique
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
