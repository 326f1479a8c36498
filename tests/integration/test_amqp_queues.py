"""Classic queues as share groups: competing consumers, prefetch, redelivery, dead letters.

A queue declared without ``x-queue-type: stream`` is the share group ``amqp:<queue>``
(``bayou/gateways/amqp/queues.py``): real pika and aio-pika clients compete for its
messages, a consumer killed -9 hands what it held to the others, nacks and rejects
dead-letter, and a Kafka consumer group and a Java ``KafkaShareConsumer`` read the same
topic beside them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika
import pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.test_transactions import create_topic, producer
from tests.integration.test_transactions_doors import in_transaction, values
from tests.support.amqp import WAIT_S, Collector, connect, kafka_read, unique
from tests.support.broker import BrokerProcess
from tests.support.kafka_java import ShareClients, records, why_not


def _url(broker: BrokerProcess) -> str:
    return f"amqp://guest:guest@{broker.host}:{broker.amqp_port}/"


def publish(broker: BrokerProcess, queue: str, bodies: list[bytes], **props: Any) -> None:
    conn = connect(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(**props))
    conn.close()


def dead_letter_queue(ch: Any, name: str) -> str:
    """A fanout exchange ``name`` and a queue bound to it; the queue's name."""
    ch.exchange_declare(name, "fanout", durable=True)
    dlq = name + "-q"
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, name)
    return dlq


def test_four_consumers_with_prefetch_10_share_10000_messages_each_exactly_once(
    shared_broker: BrokerProcess,
) -> None:
    queue = unique("work")
    total = 10_000

    async def body() -> dict[int, list[bytes]]:
        async with await aio_pika.connect(_url(shared_broker)) as conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.declare_queue(queue, durable=True)
            for start in range(0, total, 500):
                await asyncio.gather(
                    *(
                        ch.default_exchange.publish(
                            aio_pika.Message(f"m{i}".encode()), routing_key=queue
                        )
                        for i in range(start, start + 500)
                    )
                )
        got: dict[int, list[bytes]] = {i: [] for i in range(4)}
        redelivered: list[bytes] = []
        done = asyncio.Event()
        conns = [await aio_pika.connect(_url(shared_broker)) for _ in range(4)]
        try:
            for i, c in enumerate(conns):
                ch = await c.channel()
                await ch.set_qos(prefetch_count=10)
                q = await ch.declare_queue(queue, durable=True)

                async def on(message: AbstractIncomingMessage, i: int = i) -> None:
                    got[i].append(message.body)
                    if message.redelivered:
                        redelivered.append(message.body)
                    await asyncio.sleep(0)  # the work
                    await message.ack()
                    if sum(len(v) for v in got.values()) >= total:
                        done.set()

                await q.consume(on)
            await asyncio.wait_for(done.wait(), 120)
            await asyncio.sleep(0.5)  # anything delivered twice would arrive meanwhile
            left = await (await conns[0].channel()).declare_queue(queue, durable=True)
            assert left.declaration_result.message_count == 0
        finally:
            for c in conns:
                await c.close()
        assert not redelivered
        return got

    got = asyncio.run(body())
    seen = Counter(b for bodies in got.values() for b in bodies)
    assert len(seen) == total and set(seen.values()) == {1}  # each message exactly once
    counts = sorted(len(v) for v in got.values())
    assert counts[0] >= total // 4 // 2, counts  # every consumer had a fair part of the work
    # a Kafka consumer group reading the queue's topic sees every record regardless
    records = kafka_read(shared_broker, queue, 1, total)
    assert sorted(r.value() for r in records) == sorted(seen)


_DYING_CONSUMER = r"""
import sys, pika
host, port, queue = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = pika.BlockingConnection(pika.ConnectionParameters(host, port))
ch = conn.channel()
ch.basic_qos(prefetch_count=10)
held = []
def on(ch, method, props, body):
    held.append(body)
    if len(held) == 10:
        print(" ".join(b.decode() for b in held), flush=True)
ch.basic_consume(queue, on)
ch.start_consuming()
"""


def test_a_consumer_killed_holding_unacked_messages_hands_them_to_the_others(
    shared_broker: BrokerProcess,
) -> None:
    queue = unique("dies")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    bodies = [f"m{i}".encode() for i in range(30)]
    publish(shared_broker, queue, bodies)
    where = [shared_broker.host, str(shared_broker.amqp_port), queue]
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DYING_CONSUMER, *where],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout is not None
        held = doomed.stdout.readline().split()  # it holds ten, unacked
        assert len(held) == 10
        ch.basic_qos(prefetch_count=100)
        survivor = Collector(conn, ch, queue)
        survivor.wait_for(20)
        assert survivor.quiet_for(0.3) == 0  # the ten stay with the living holder
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
        if doomed.stdout is not None:
            doomed.stdout.close()
    got = survivor.wait_for(30)
    assert sorted(d.body for d in got) == sorted(bodies)
    again = {d.body.decode() for d in got if d.redelivered}
    assert again == set(held)
    for d in got:
        ch.basic_ack(d.tag)
    conn.close()


def test_nack_without_requeue_dead_letters_and_requeue_redelivers(
    shared_broker: BrokerProcess,
) -> None:
    queue = unique("nacked")
    conn = connect(shared_broker)
    ch = conn.channel()
    dlq = dead_letter_queue(ch, unique("dlx"))
    ch.queue_declare(queue, durable=True, arguments={"x-dead-letter-exchange": dlq[:-2]})
    publish(shared_broker, queue, [b"poison", b"fine"], headers={"app": "x"})
    c = Collector(conn, ch, queue)
    first = c.wait_for(2)
    by_body = {d.body: d for d in first}
    ch.basic_nack(by_body[b"fine"].tag, requeue=True)
    ch.basic_nack(by_body[b"poison"].tag, requeue=False)
    again = c.wait_for(3)[2]
    assert again.body == b"fine" and again.redelivered
    ch.basic_ack(again.tag)
    dead = Collector(conn, ch, dlq, auto_ack=True).wait_for(1)
    assert [d.body for d in dead] == [b"poison"]
    headers = dead[0].props.headers
    assert headers["app"] == "x"
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == queue
    (death,) = headers["x-death"]
    assert death["reason"] == "rejected" and death["queue"] == queue and death["count"] == 1
    assert c.quiet_for(0.3) == 0  # the rejected one is gone from the queue
    conn.close()


def test_delivery_limit_3_dead_letters_a_poison_message_after_its_redeliveries(
    shared_broker: BrokerProcess,
) -> None:
    queue = unique("poison")
    conn = connect(shared_broker)
    ch = conn.channel()
    dlq = dead_letter_queue(ch, unique("dlx"))
    ch.queue_declare(
        queue,
        durable=True,
        arguments={"x-delivery-limit": 3, "x-dead-letter-exchange": dlq[:-2]},
    )
    publish(shared_broker, queue, [b"poison"])
    c = Collector(conn, ch, queue)
    for n in range(1, 5):  # the first delivery and three redeliveries
        d = c.wait_for(n)[-1]
        assert d.body == b"poison" and d.redelivered == (n > 1)
        ch.basic_nack(d.tag, requeue=True)
    dead = Collector(conn, ch, dlq, auto_ack=True).wait_for(1)
    assert dead[0].body == b"poison"
    assert dead[0].props.headers["x-first-death-reason"] == "delivery_limit"
    assert c.quiet_for(0.3) == 0 and len(c.got) == 4
    conn.close()


def test_message_ttl_and_expiration_expire_at_delivery_time(shared_broker: BrokerProcess) -> None:
    conn = connect(shared_broker)
    ch = conn.channel()
    dlq = dead_letter_queue(ch, unique("dlx"))
    with_ttl, plain = unique("ttl"), unique("expiration")
    ch.queue_declare(
        with_ttl,
        durable=True,
        arguments={"x-message-ttl": 200, "x-dead-letter-exchange": dlq[:-2]},
    )
    ch.queue_declare(plain, durable=True, arguments={"x-dead-letter-exchange": dlq[:-2]})
    publish(shared_broker, with_ttl, [b"late"])
    publish(shared_broker, plain, [b"short"], expiration="100")
    publish(shared_broker, plain, [b"kept"], expiration="600000")
    time.sleep(0.4)  # the time-to-live runs out: what is under test, not a synchronisation
    publish(shared_broker, with_ttl, [b"fresh"])
    got_ttl = Collector(conn, ch, with_ttl, auto_ack=True).wait_for(1)
    got_plain = Collector(conn, ch, plain, auto_ack=True).wait_for(1)
    assert [d.body for d in got_ttl] == [b"fresh"]
    assert [d.body for d in got_plain] == [b"kept"]
    dead = Collector(conn, ch, dlq, auto_ack=True).wait_for(2)
    assert sorted(d.body for d in dead) == [b"late", b"short"]
    assert {d.props.headers["x-first-death-reason"] for d in dead} == {"expired"}
    short = next(d for d in dead if d.body == b"short")
    assert short.props.expiration is None  # dropped on dead-lettering, as RabbitMQ does
    conn.close()


def test_a_cancelled_consumer_keeps_its_unacked_messages_until_it_settles_them(
    shared_broker: BrokerProcess,
) -> None:
    """RabbitMQ's basic.cancel: deliveries stay unacked on the channel (Celery's warm
    shutdown cancels, finishes its tasks, then acks them); a closed channel gives back."""
    queue = unique("cancelled")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    publish(shared_broker, queue, [b"a", b"b", b"c", b"d", b"e"])
    ch.basic_qos(prefetch_count=2)
    first = Collector(conn, ch, queue)
    held = first.wait_for(2)
    ch.basic_cancel(first.tag)
    other_ch = conn.channel()
    other = Collector(conn, other_ch, queue)
    assert [d.body for d in other.wait_for(3)] == [b"c", b"d", b"e"]
    assert other.quiet_for(0.3) == 0  # the cancelled consumer still holds a and b
    ch.basic_ack(held[0].tag)  # still counts after the cancel
    ch.basic_nack(held[1].tag, requeue=True)  # back to the queue: the other one gets it
    again = other.wait_for(4)[3]
    assert again.body == held[1].body and again.redelivered
    for d in other.got:
        other_ch.basic_ack(d.tag)
    assert other.quiet_for(0.3) == 0 and ch.is_open
    other_ch.basic_cancel(other.tag)
    # cancelled while holding, then the channel closes: what it held goes back
    publish(shared_broker, queue, [b"f"])
    third_ch = conn.channel()
    third = Collector(conn, third_ch, queue)
    assert [d.body for d in third.wait_for(1)] == [b"f"]
    third_ch.basic_cancel(third.tag)
    third_ch.close()
    last = Collector(conn, conn.channel(), queue, auto_ack=True).wait_for(1)
    assert last[0].body == b"f" and last[0].redelivered
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    conn.close()


def test_basic_get_takes_one_message_at_a_time_and_a_closed_channel_gives_back(
    shared_broker: BrokerProcess,
) -> None:
    queue = unique("get")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(queue)  # not durable: a classic queue too, no broadcast
    publish(shared_broker, queue, [b"a", b"b"])
    method, _props, body = ch.basic_get(queue)
    assert body == b"a" and method.message_count == 1
    other = conn.channel()
    m2, _p2, b2 = other.basic_get(queue)
    assert b2 == b"b" and m2.message_count == 0
    assert other.basic_get(queue) == (None, None, None)
    ch.close()  # "a" unacked: back to the queue
    m3, _p3, b3 = other.basic_get(queue, auto_ack=True)
    assert b3 == b"a" and m3.redelivered
    other.basic_ack(m2.delivery_tag)
    assert other.queue_declare(queue, passive=True).method.message_count == 0
    conn.close()


@pytest.mark.skipif(why_not() is not None, reason=str(why_not()))
def test_a_java_share_consumer_and_an_amqp_consumer_share_the_queue(
    shared_broker: BrokerProcess, tmp_path: Path
) -> None:
    queue = unique("mixed")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    bodies = [f"job-{i}" for i in range(200)]
    publish(shared_broker, queue, [b.encode() for b in bodies])
    ch.basic_qos(prefetch_count=10)
    amqp = Collector(conn, ch, queue)
    mine = amqp.wait_for(10)  # held: the Java consumer cannot have these
    java = ShareClients(tmp_path / "java.log")
    try:
        java.call(
            "new",
            "j",
            shared_broker.bootstrap,
            f"amqp:{queue}",
            queue,
            "max.poll.records=10",
            "share.acquire.mode=record_limit",
        )
        theirs = records(java.call("consume", "j", 190, 30_000, "accept", timeout=60))
        for d in mine:
            ch.basic_ack(d.tag)
        rest = amqp.quiet_for(0.5)
        java.call("close", "j")
    finally:
        java.close()
    seen = Counter([d.body.decode() for d in amqp.got] + [r[4] for r in theirs])
    assert sorted(seen) == sorted(bodies) and set(seen.values()) == {1}
    assert len(theirs) == 190 and rest == 0
    conn.close()


def test_a_stream_queue_still_broadcasts_to_every_consumer(shared_broker: BrokerProcess) -> None:
    queue = unique("stream")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "stream"})
    publish(shared_broker, queue, [b"a", b"b"])
    one = Collector(conn, ch, queue, auto_ack=True, arguments={"x-stream-offset": "first"})
    two = Collector(conn, ch, queue, auto_ack=True, arguments={"x-stream-offset": "first"})
    assert [d.body for d in one.wait_for(2)] == [b"a", b"b"]
    assert [d.body for d in two.wait_for(2)] == [b"a", b"b"]
    conn.close()


def test_a_queue_declared_over_an_existing_topic_starts_at_its_end(
    shared_broker: BrokerProcess,
) -> None:
    queue = unique("late")
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    admin.create_topics([NewTopic(queue, 1, 1)])[queue].result(WAIT_S)
    producer = Producer({"bootstrap.servers": shared_broker.bootstrap})
    producer.produce(queue, value=b"before")
    assert producer.flush(15) == 0
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    publish(shared_broker, queue, [b"after"])  # waits for a consumer
    got = Collector(conn, ch, queue, auto_ack=True).wait_for(1)
    assert [d.body for d in got] == [b"after"]
    conn.close()


def test_a_classic_queue_delivers_only_committed_transactions(shared_broker: BrokerProcess) -> None:
    topic = unique("txn-queue")
    create_topic(shared_broker.bootstrap, topic)
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(topic, durable=True)
    p = producer(shared_broker.bootstrap, unique("tid"))
    in_transaction(p, topic, values(2, "aborted-"), commit=False)
    in_transaction(p, topic, values(1, "committed-"), commit=True)
    c = Collector(conn, ch, topic, auto_ack=True)
    assert [json.loads(d.body) for d in c.wait_for(1)] == ["committed-0"]
    assert c.quiet_for(0.5) == 0
    conn.close()
