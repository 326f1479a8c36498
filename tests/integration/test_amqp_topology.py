"""Topology under load and AMQP queue semantics: concurrent declarers, names that are not
Kafka topic names, queue.purge, auto-delete queues, and the broker closing politely."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time

import aio_pika
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from pamqp import commands
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from bayou.gateways.amqp.names import amqp_name, topic_for
from tests.support.amqp import Collector, connect, kafka_read, unique, wait_for_any
from tests.support.amqp_raw import RawClient
from tests.support.amqp_topology import topology
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
        return {
            (b["exchange"], b["queue"], b["routing_key"])
            for b in topology(broker.data_dir)["binding"]
        }

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


def test_a_data_dir_of_the_previous_release_keeps_its_topology(broker: BrokerProcess) -> None:
    """The release before kept exchanges, queues and bindings in DATA/amqp/registry.json;
    started on such a data directory, the broker imports it (then removes it), and the
    topology routes as before — and still does after another restart."""
    run = unique("old")
    queue, exchange = f"{run}-billing", f"{run}:events"  # an exchange that is no topic name
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic_for(queue), 2, 1)])[topic_for(queue)].result(WAIT_S)
    del admin
    broker.stop()
    legacy = broker.data_dir / "amqp" / "registry.json"
    legacy.parent.mkdir()
    legacy.write_text(
        json.dumps(
            {  # as the previous release wrote it
                "exchanges": [
                    {
                        "name": exchange,
                        "type": "topic",
                        "auto_delete": False,
                        "internal": False,
                        "arguments": {},
                    }
                ],
                "queues": [
                    {
                        "name": queue,
                        "topic": topic_for(queue),
                        "durable": True,
                        "auto_delete": False,
                        "arguments": {"x-partitions": 2},
                        "created_topic": True,
                    }
                ],
                "bindings": [
                    {
                        "exchange": exchange,
                        "queue": queue,
                        "routing_key": "invoice.#",
                        "arguments": {},
                    }
                ],
            },
            indent=1,
        )
    )
    broker.start()
    assert not legacy.exists()

    def publish_and_consume(body: bytes) -> list[bytes]:
        conn = connect(broker)
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", passive=True)
        ch.confirm_delivery()
        ch.basic_publish(exchange, "invoice.eu", body, mandatory=True)  # unroutable: raises
        collector = Collector(conn, ch, queue)  # durable: the group amqp:<queue>
        got = collector.wait_for(1)
        ch.basic_ack(got[-1].tag)
        ch.basic_cancel(collector.tag)
        conn.close()
        return [d.body for d in got]

    assert publish_and_consume(b"first") == [b"first"]
    broker.restart()
    assert publish_and_consume(b"second") == [b"second"]  # the group resumed after "first"
    assert {b["queue"] for b in topology(broker.data_dir)["binding"]} == {queue}


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

    topics = set(
        AdminClient({"bootstrap.servers": shared_broker.bootstrap}).list_topics(timeout=10).topics
    )
    for q in queues:
        topic = topic_for(q)
        assert topic in topics and amqp_name(topic) == q
        assert [r.value() for r in kafka_read(shared_broker, topic, 1, 2)] == [
            f"direct to {q}".encode(),
            b"fanned out",
        ]
    assert topic_for(queues[0]) == f"amqp--celery-40{run.replace('-', '-2d')}.celery.pidbox"


# ----------------------------------------------------------------------------- queue.purge


def test_purge_moves_readers_past_the_topic_and_deletes_nothing(
    shared_broker: BrokerProcess,
) -> None:
    durable, temporary = unique("purge-d"), unique("purge-t")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(durable, durable=True)  # read through the group amqp:<queue>
    ch.queue_declare(temporary)  # not durable, created here: a queue of its own
    for q in (durable, temporary):
        for i in range(10):
            ch.basic_publish("", q, f"old-{i}".encode())
        assert ch.queue_declare(q, passive=True).method.message_count == 10
        assert ch.queue_purge(q).method.message_count == 10
        assert ch.queue_declare(q, passive=True).method.message_count == 0
        method, _props, _body = ch.basic_get(q)
        assert method is None  # nothing ready
        ch.basic_publish("", q, b"new")
        c = Collector(conn, ch, q)
        assert [d.body for d in c.wait_for(1)] == [b"new"]
        assert c.quiet_for(0.3) == 0
        ch.basic_ack(c.got[0].tag)
        ch.basic_cancel(c.tag)
    conn.close()
    # Kafka readers see everything: purge deletes nothing
    for q in (durable, temporary):
        values = [r.value() for r in kafka_read(shared_broker, q, 1, 11)]
        assert values == [f"old-{i}".encode() for i in range(10)] + [b"new"]


def test_purge_with_a_live_consumer(shared_broker: BrokerProcess) -> None:
    queue = unique("purge-live")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    for i in range(10):
        ch.basic_publish("", queue, f"m{i}".encode())
    ch.basic_qos(prefetch_count=2)
    c = Collector(conn, ch, queue)
    assert [d.body for d in c.wait_for(2)] == [b"m0", b"m1"]  # delivered, not acked
    other = conn.channel()
    assert other.queue_purge(queue).method.message_count == 8  # ready, not the unacked two
    for d in c.got:
        ch.basic_ack(d.tag)
    ch.basic_publish("", queue, b"after")
    assert [d.body for d in c.wait_for(3)][2:] == [b"after"]
    ch.basic_ack(c.got[2].tag)
    ch.basic_cancel(c.tag)
    # a later consumer of the queue's group resumes after the purge
    ch.basic_publish("", queue, b"later")
    again = Collector(conn, ch, queue)
    assert [d.body for d in again.wait_for(1)] == [b"later"]
    assert again.quiet_for(0.3) == 0
    conn.close()


# ----------------------------------------------------------------------------- temporary queues


def test_a_new_non_durable_queue_keeps_what_was_sent_before_anyone_consumed(
    shared_broker: BrokerProcess,
) -> None:
    """RabbitMQ's first tutorial (and Celery's inspect replies): send, then consume."""
    queue = unique("hello")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue)
    ch.basic_publish("", queue, b"Hello World!")
    ch.basic_publish("", queue, b"second")
    first = Collector(conn, ch, queue)
    got = first.wait_for(2)
    assert [d.body for d in got] == [b"Hello World!", b"second"]
    ch.basic_ack(got[0].tag)
    ch.basic_cancel(first.tag)  # "second" was not acked: it stays unacked on the channel
    ch.basic_publish("", queue, b"third")
    then = Collector(conn, ch, queue)
    assert [d.body for d in then.wait_for(1)] == [b"third"]
    ch.basic_nack(got[1].tag, requeue=True)
    again = then.wait_for(2)[1]
    assert again.body == b"second" and again.redelivered
    assert then.quiet_for(0.3) == 0
    conn.close()


# ----------------------------------------------------------------------------- auto_delete


def test_auto_delete_queue_goes_with_its_last_consumer(shared_broker: BrokerProcess) -> None:
    created, existing, idle = unique("ad-new"), unique("ad-old"), unique("ad-idle")
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    admin.create_topics([NewTopic(existing, 1)])[existing].result(10)

    def topics() -> set[str]:
        return set(admin.list_topics(timeout=10).topics)

    conn = connect(shared_broker)
    ch = conn.channel()
    ch.exchange_declare(f"{created}-x", "fanout")
    for q in (created, existing, idle):
        ch.queue_declare(q, auto_delete=True)
        ch.queue_bind(q, f"{created}-x")
    c1 = Collector(conn, ch, created, auto_ack=True)
    c2 = Collector(conn, ch, created, auto_ack=True)
    ch.basic_publish(f"{created}-x", "", b"to all")
    wait_for_any([c1, c2], 1)  # competing consumers: either may get it
    ch.basic_cancel(c1.tag)
    ch.queue_declare(created, passive=True)  # one consumer left: still there
    ch.basic_cancel(c2.tag)
    wait_until("the auto-delete queue's topic deleted", lambda: created not in topics())
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(created, passive=True)
    assert info.value.reply_code == 404

    # consumed on a connection that closes: the queue goes, the older topic stays
    conn2 = connect(shared_broker)
    ch2 = conn2.channel()
    Collector(conn2, ch2, existing, auto_ack=True)
    conn2.close()
    ch = conn.channel()

    def declared() -> set[str]:
        return {q["name"] for q in topology(shared_broker.data_dir)["queue"]}

    wait_until("the queue on a pre-existing topic dropped", lambda: existing not in declared())
    assert existing in topics()
    ch.basic_publish(f"{created}-x", "", b"again")  # the bindings went with the queues
    assert [r.value() for r in kafka_read(shared_broker, existing, 1, 1)] == [b"to all"]
    # never consumed: stays, as in RabbitMQ
    assert ch.queue_declare(idle, passive=True).method.message_count == 2
    conn.close()


# ----------------------------------------------------------------------------- closing politely


def test_a_client_still_sending_reads_why_the_broker_closed(shared_broker: BrokerProcess) -> None:
    """The broker closes on a frame over frame_max while the client is still sending: the
    client must read connection.close (code and text), then an orderly end, never a reset."""
    client = RawClient(shared_broker)
    try:
        # a method frame announced at 1 MB (frame_max is 128 KiB): refused from its header
        client.sock.sendall(struct.pack(">BHI", 1, 1, 1_000_000))
        junk = bytes(64 * 1024)
        deadline = time.monotonic() + 1.5  # longer than the broker used to wait
        while time.monotonic() < deadline:
            client.sock.sendall(junk)
            time.sleep(0.01)
        close = client.expect(commands.Connection.Close)
        assert close.reply_code == 501
        assert close.reply_text.startswith("FRAME_ERROR - frame of 1000008 bytes exceeds")
        client.send(0, commands.Connection.CloseOk())
        client.sock.shutdown(socket.SHUT_WR)
        assert client.sock.recv(100) == b""  # the broker's orderly end
    finally:
        client.sock.close()


def test_pika_reads_the_reply_code_of_a_broker_close(shared_broker: BrokerProcess) -> None:
    conn = connect(shared_broker)
    ch = conn.channel()
    with pytest.raises(ConnectionClosedByBroker) as info:
        ch.tx_select()  # transactions: NOT_IMPLEMENTED, a hard error
    assert info.value.reply_code == 540
    assert "tx" in info.value.reply_text
