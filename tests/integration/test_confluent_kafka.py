"""confluent-kafka (librdkafka) against a real broker: produce, consume, admin, idempotence."""

from __future__ import annotations

import random
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from tests.support.broker import BrokerProcess
from tests.support.kafka import Sent, by_partition, make_messages, unique_topic

DEADLINE_S = 60


def create_topic(bootstrap: str, name: str, partitions: int, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config)])
    futures[name].result(timeout=15)


def produce_all(bootstrap: str, topic: str, messages: list[Sent], **extra: object) -> list:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **extra})
    reports: list = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        reports.append((err, msg))

    for m in messages:
        producer.produce(
            topic,
            value=m.value,
            key=m.key,
            partition=m.partition,
            headers=list(m.headers),
            timestamp=m.timestamp_ms,
            on_delivery=on_delivery,
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    errors = [err for err, _ in reports if err is not None]
    assert not errors, errors[:3]
    assert len(reports) == len(messages)
    return [msg for _, msg in reports]


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("g"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    received = []
    at_eof: set[int] = set()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline and (
            len(received) < expected or len(at_eof) < partitions
        ):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            at_eof.discard(msg.partition())
            received.append(msg)
    finally:
        consumer.close()
    return received


def check_received(sent: list[Sent], received: list) -> None:
    got: dict[int, list] = {}
    for msg in received:
        got.setdefault(msg.partition(), []).append(msg)
    expected = by_partition(sent)
    assert sorted(got) == sorted(expected)
    for partition, messages in expected.items():
        actual = got[partition]
        assert [m.offset() for m in actual] == list(range(len(messages)))
        for want, msg in zip(messages, actual, strict=True):
            assert msg.key() == want.key
            assert msg.value() == want.value
            assert tuple(msg.headers() or ()) == want.headers
            assert msg.timestamp()[1] == want.timestamp_ms


def test_produce_and_consume_every_message_in_order(shared_broker: BrokerProcess) -> None:
    topic = unique_topic()
    create_topic(shared_broker.bootstrap, topic, 4)
    sent = make_messages(4000, 4)
    produce_all(shared_broker.bootstrap, topic, sent, acks="all")
    check_received(sent, consume_all(shared_broker.bootstrap, topic, 4, len(sent)))


def test_large_pipelined_produce_requests_come_back_byte_for_byte(
    shared_broker: BrokerProcess,
) -> None:
    """Requests of about a megabyte, five in flight per connection: each is received into a
    pooled frame buffer and written from it in place — a buffer reused while a request
    still needed it would show here as another message's bytes."""
    topic = unique_topic("large")
    create_topic(shared_broker.bootstrap, topic, 8)
    rng = random.Random(11)
    base = int(time.time() * 1000) - 60_000
    sent = [
        Sent(
            partition=i % 8,
            key=f"k{i}".encode(),
            value=rng.randbytes(rng.randint(900, 2100)),
            headers=(("seq", str(i).encode()),),
            timestamp_ms=base + i,
        )
        for i in range(30_000)
    ]
    produce_all(
        shared_broker.bootstrap,
        topic,
        sent,
        **{"linger.ms": 50, "batch.size": 1_000_000, "max.in.flight.requests.per.connection": 5},
    )
    check_received(sent, consume_all(shared_broker.bootstrap, topic, 8, len(sent)))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_round_trip(shared_broker: BrokerProcess, codec: str) -> None:
    topic = unique_topic(codec)
    create_topic(shared_broker.bootstrap, topic, 2)
    sent = make_messages(1500, 2)
    produce_all(shared_broker.bootstrap, topic, sent, **{"compression.type": codec})
    check_received(sent, consume_all(shared_broker.bootstrap, topic, 2, len(sent)))


def test_idempotent_producer(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("idem")
    create_topic(shared_broker.bootstrap, topic, 3)
    sent = make_messages(3000, 3)
    produce_all(
        shared_broker.bootstrap,
        topic,
        sent,
        **{"enable.idempotence": True, "max.in.flight.requests.per.connection": 5},
    )
    check_received(sent, consume_all(shared_broker.bootstrap, topic, 3, len(sent)))


def test_admin_topics_and_partitions(shared_broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    topic = unique_topic("admin")
    admin.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "3600000"})])[topic].result(
        15
    )
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 2

    with pytest.raises(KafkaException) as exists:
        admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)
    assert exists.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    admin.create_partitions([NewPartitions(topic, 5)])[topic].result(15)
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 5

    with pytest.raises(KafkaException) as bad:
        admin.create_topics([NewTopic("bad/name", 1, 1)])["bad/name"].result(15)
    assert bad.value.args[0].code() == KafkaError.TOPIC_EXCEPTION

    admin.delete_topics([topic])[topic].result(15)
    assert topic not in admin.list_topics(timeout=10).topics
    # its files are gone once the delete is acknowledged
    assert not (shared_broker.data_dir / "topics" / topic).exists()
    deleted = shared_broker.data_dir / "deleted"
    assert not any(p.name.startswith(f"{topic}-") for p in deleted.iterdir())


def test_offsets_for_times_and_watermarks(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("times")
    create_topic(shared_broker.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 100_000
    sent = make_messages(100, 1, base_ts=base)
    produce_all(shared_broker.bootstrap, topic, sent, **{"batch.num.messages": 7})
    consumer = Consumer(
        {"bootstrap.servers": shared_broker.bootstrap, "group.id": unique_topic("g")}
    )
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 100)
        found = consumer.offsets_for_times([TopicPartition(topic, 0, base + 42)], timeout=10)
        assert found[0].offset == 42
        beyond = consumer.offsets_for_times([TopicPartition(topic, 0, base + 10_000)], timeout=10)
        assert beyond[0].offset == -1
    finally:
        consumer.close()
