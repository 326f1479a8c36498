"""pika against a real broker: confirms, the Kafka mapping, stream offsets, groups, routing."""

from __future__ import annotations

import datetime
import socket
import struct
import subprocess
import sys

import pika
import pytest
from confluent_kafka import Producer
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from bayou.core.partitioner import partition_for_key
from tests.support.amqp import Collector, connect, kafka_read, unique
from tests.support.broker import BrokerProcess


def produce(
    broker: BrokerProcess,
    topic: str,
    records: list[tuple[bytes | None, bytes, int]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
    for key, value, ts in records:
        producer.produce(topic, value=value, key=key, timestamp=ts, headers=headers or [])
    assert producer.flush(20) == 0


def test_publish_with_confirms_then_read_with_confluent_kafka(shared_broker: BrokerProcess) -> None:
    topic = unique("confirm")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(topic, durable=True, arguments={"x-partitions": 3})
    ch.confirm_delivery()
    props = pika.BasicProperties(
        content_type="application/json",
        message_id="m-1",
        correlation_id="c-1",
        timestamp=1_700_000_000,
        headers={"trace": "abc", "n": 7, "raw": b"\x00\xff"},
    )
    # the default exchange: routing key = topic, no record key
    ch.basic_publish("", topic, b'{"a": 1}', props)
    # the topic as an exchange: the routing key becomes the record key (murmur2 partition)
    for i in range(6):
        ch.basic_publish(topic, f"user-{i}", f"keyed-{i}".encode())
    conn.close()

    records = kafka_read(shared_broker, topic, 3, 7)
    plain = next(r for r in records if r.key() is None)
    assert plain.value() == b'{"a": 1}'
    headers = dict(plain.headers())
    assert headers["trace"] == b"abc" and headers["n"] == b"7" and headers["raw"] == b"\x00\xff"
    assert headers["amqp-content-type"] == b"application/json"
    assert headers["amqp-message-id"] == b"m-1"
    assert headers["amqp-correlation-id"] == b"c-1"
    assert headers["amqp-timestamp"] == b"1700000000"
    keyed = {r.key(): r for r in records if r.key() is not None}
    assert set(keyed) == {f"user-{i}".encode() for i in range(6)}
    for key, record in keyed.items():
        assert record.partition() == partition_for_key(key, 3)  # as the Java client places it
        assert record.value() == b"keyed-" + key[5:]


def test_kafka_records_from_first_next_and_a_timestamp(shared_broker: BrokerProcess) -> None:
    topic = unique("replay")
    early, late = 1_600_000_000_000, 1_800_000_000_000
    produce(
        shared_broker,
        topic,
        [(b"k", f"old-{i}".encode(), early + i) for i in range(5)]
        + [(b"k", f"new-{i}".encode(), late + i) for i in range(5)],
        headers=[("source", b"kafka")],
    )
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(topic, passive=True)
    ch.basic_qos(prefetch_count=100)

    first = Collector(conn, ch, topic, arguments={"x-stream-offset": "first"})
    got = first.wait_for(10)
    assert [d.body for d in got] == [f"old-{i}".encode() for i in range(5)] + [
        f"new-{i}".encode() for i in range(5)
    ]
    d0 = got[0]
    assert d0.routing_key == "k" and d0.exchange == topic
    assert d0.props.headers["source"] == "kafka"
    assert d0.props.headers["x-stream-offset"] == 0
    assert d0.props.timestamp == early // 1000

    since = datetime.datetime.fromtimestamp((early + late) // 2000, datetime.UTC)
    by_time = Collector(conn, ch, topic, arguments={"x-stream-offset": since})
    assert [d.body for d in by_time.wait_for(5)] == [f"new-{i}".encode() for i in range(5)]

    nxt = Collector(conn, ch, topic, arguments={"x-stream-offset": "next"})
    assert nxt.quiet_for(0.3) == 0
    produce(shared_broker, topic, [(None, b"fresh", late + 10)])
    assert [d.body for d in nxt.wait_for(1)] == [b"fresh"]
    by_offset = Collector(conn, ch, topic, arguments={"x-stream-offset": 8})
    assert [d.body for d in by_offset.wait_for(3)] == [b"new-3", b"new-4", b"fresh"]
    conn.close()


def test_prefetch_is_honoured(shared_broker: BrokerProcess) -> None:
    topic = unique("prefetch")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(topic)
    for i in range(20):
        ch.basic_publish("", topic, str(i).encode())
    ch.basic_qos(prefetch_count=3)
    c = Collector(conn, ch, topic, arguments={"x-stream-offset": "first"})
    c.wait_for(3)
    assert c.quiet_for(0.5) == 0  # three outstanding: nothing more
    ch.basic_ack(c.got[0].tag)
    c.wait_for(4)
    assert c.quiet_for(0.3) == 0
    ch.basic_ack(c.got[3].tag, multiple=True)
    c.wait_for(7)
    assert len(c.got) == 7 and [d.body for d in c.got] == [str(i).encode() for i in range(7)]
    conn.close()


def test_exchanges_route_by_key(shared_broker: BrokerProcess) -> None:
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.confirm_delivery()
    direct, topic_ex, fanout = unique("dx"), unique("tx"), unique("fx")
    qa, qb = unique("qa"), unique("qb")
    ch.exchange_declare(direct, "direct", durable=True)
    ch.exchange_declare(topic_ex, "topic", durable=True)
    ch.exchange_declare(fanout, "fanout", durable=True)
    ch.exchange_declare(direct, "direct", passive=True)
    for q in (qa, qb):
        ch.queue_declare(q, durable=True)
    ch.queue_bind(qa, direct, "red")
    ch.queue_bind(qb, direct, "blue")
    ch.queue_bind(qa, topic_ex, "stock.*.nyse")
    ch.queue_bind(qb, topic_ex, "stock.#")
    ch.queue_bind(qa, fanout)
    ch.queue_bind(qb, fanout)

    ch.basic_publish(direct, "red", b"d-red")
    ch.basic_publish(direct, "blue", b"d-blue")
    ch.basic_publish(topic_ex, "stock.usd.nyse", b"t-both")
    ch.basic_publish(topic_ex, "stock.eur", b"t-b")
    ch.basic_publish(fanout, "", b"f-all")
    with pytest.raises(UnroutableError):
        ch.basic_publish(direct, "green", b"lost", mandatory=True)

    def drain(q: str) -> list[tuple[bytes, str]]:
        out = []
        for _ in range(50):
            method, _props, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                break
            out.append((body, method.routing_key))
        return out

    assert drain(qa) == [(b"d-red", "red"), (b"t-both", "stock.usd.nyse"), (b"f-all", qa)]
    assert drain(qb) == [
        (b"d-blue", "blue"),
        (b"t-both", "stock.usd.nyse"),
        (b"t-b", "stock.eur"),
        (b"f-all", qb),
    ]
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_publish(unique("nowhere"), "x", b"x")
    assert info.value.reply_code == 404
    conn.close()


def test_group_resumes_after_acks_and_a_broker_restart(broker: BrokerProcess) -> None:
    queue = unique("resume")
    conn = connect(broker)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-partitions": 2})
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", queue, f"m{i}".encode())
    ch.basic_qos(prefetch_count=20)
    c = Collector(conn, ch, queue, arguments={"x-consumer-group": "resumers"})
    got = c.wait_for(10)
    acked = got[:6]
    for d in acked:
        ch.basic_ack(d.tag)
    ch.basic_cancel(c.tag)  # cancel commits what was acked before it answers
    conn.close()
    broker.restart()

    conn = connect(broker)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=20)
    again = Collector(conn, ch, queue, arguments={"x-consumer-group": "resumers"})
    rest = again.wait_for(4)
    assert again.quiet_for(0.3) == 0
    assert sorted(d.body for d in rest) == sorted(d.body for d in got[6:])
    conn.close()


_VANISHING_CONSUMER = """
import os, sys, pika
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", int(sys.argv[1])))
ch = conn.channel()
ch.basic_qos(prefetch_count=50)
got = []
def on(ch, method, props, body):
    got.append(method.delivery_tag)
    if len(got) == 8:
        ch.basic_ack(got[2], multiple=True)  # m0..m2 done, m3..m7 still in flight
        conn.process_data_events(time_limit=0.3)
        os._exit(0)  # vanish: no cancel, no close, the kernel drops the socket
ch.basic_consume(sys.argv[2], on)
conn.process_data_events(time_limit=20)
os._exit(3)
"""


def test_nothing_lost_when_a_consumer_disconnects_without_acking(
    shared_broker: BrokerProcess,
) -> None:
    queue = unique("unacked")
    conn = connect(shared_broker)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)  # a durable named queue: consumed as a group
    ch.confirm_delivery()
    for i in range(8):
        ch.basic_publish("", queue, f"m{i}".encode())
    conn.close()
    proc = subprocess.run(
        [sys.executable, "-c", _VANISHING_CONSUMER, str(shared_broker.amqp_port), queue],
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0

    conn = connect(shared_broker)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=50)
    again = Collector(conn, ch, queue)
    assert [d.body for d in again.wait_for(5)] == [f"m{i}".encode() for i in range(3, 8)]
    assert again.quiet_for(0.2) == 0
    conn.close()


def test_two_group_members_share_partitions(shared_broker: BrokerProcess) -> None:
    queue = unique("shared")
    c1 = connect(shared_broker)
    ch1 = c1.channel()
    ch1.queue_declare(queue, arguments={"x-partitions": 4})
    for i in range(40):
        ch1.basic_publish(queue, f"key-{i}", f"m{i}".encode())
    ch1.basic_qos(prefetch_count=100)
    a = Collector(c1, ch1, queue, auto_ack=True, arguments={"x-consumer-group": queue})
    a.wait_for(40)  # alone: every partition
    c2 = connect(shared_broker)
    ch2 = c2.channel()
    b = Collector(c2, ch2, queue, auto_ack=True, arguments={"x-consumer-group": queue})
    b.quiet_for(1.5)
    a.quiet_for(1.5)  # rebalance: the first member gives two partitions up
    for i in range(40, 80):
        ch1.basic_publish(queue, f"key-{i}", f"m{i}".encode())
    deadline_rounds = 200
    while len(a.got) + len(b.got) < 80 and deadline_rounds:
        a.quiet_for(0.05)
        b.quiet_for(0.05)
        deadline_rounds -= 1
    late_a = {d.props.headers["x-stream-partition"] for d in a.got[40:]}
    late_b = {d.props.headers["x-stream-partition"] for d in b.got}
    assert len(a.got) - 40 + len(b.got) == 40
    assert late_a and late_b and not late_a & late_b
    c1.close()
    c2.close()


# ----------------------------------------------------------------------------- bad input


def _raw_open(broker: BrokerProcess) -> socket.socket:
    from bayou.protocol.amqp import encode_method, method

    sock = socket.create_connection((broker.host, broker.amqp_port), timeout=5)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    sock.sendall(
        bytes(
            encode_method(
                0, method("connection.start_ok", mechanism="PLAIN", response=b"\x00guest\x00guest")
            )
        )
    )
    sock.sendall(bytes(encode_method(0, method("connection.tune_ok", frame_max=4096))))
    sock.sendall(bytes(encode_method(0, method("connection.open", virtual_host="/"))))
    return sock


def _close_code(sock: socket.socket) -> int:
    """Read frames until connection.close; its reply code."""
    from bayou.protocol.amqp import decode_method

    buf = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "socket closed without connection.close"
        buf += chunk
        while len(buf) >= 7:
            ftype, _ch, size = struct.unpack(">BHI", buf[:7])
            if len(buf) < 8 + size:
                break
            payload, buf = buf[7 : 7 + size], buf[8 + size :]
            if ftype == 1:
                m = decode_method(payload)
                if m.name == "connection.close":
                    return int(m.reply_code)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x01\x00\x01\x00\x10\x00\x00" + b"x" * 16, 501),  # over the 4096 frame_max
        (b"\x01\x00\x01\x00\x00\x00\x04\x00\x63\x00\x01\xce", 540),  # unknown class/method
        # basic.qos on a channel never opened
        (b"\x01\x00\x07\x00\x00\x00\x0b\x00\x3c\x00\x0a" + bytes(7) + b"\xce", 504),
        (b"\x03\x00\x00\x00\x00\x00\x01x\xce", 505),  # a body frame on channel 0
        (b"\x01\x00\x00\x00\x00\x00\x01\x00\x00", 501),  # no frame-end octet
    ],
)
def test_bad_frames_close_only_that_connection(
    shared_broker: BrokerProcess, frame: bytes, code: int
) -> None:
    good = connect(shared_broker)
    sock = _raw_open(shared_broker)
    try:
        sock.sendall(frame)  # (the oversized frame's header alone is refused)
        assert _close_code(sock) == code
    finally:
        sock.close()
    ch = good.channel()  # the other connection is unaffected
    ch.queue_declare(unique("still-fine"))
    good.close()


def test_wrong_channel_state_closes_the_channel_only(shared_broker: BrokerProcess) -> None:
    conn = connect(shared_broker)
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(unique("missing"), passive=True)
    assert info.value.reply_code == 404
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_ack(999)
        ch.queue_declare(unique("after"))
    assert info.value.reply_code == 406
    assert conn.channel().queue_declare(unique("ok")).method.queue.startswith("ok-")
    conn.close()
