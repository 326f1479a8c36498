"""The Kafka door on the memory engine (``bayou serve --storage memory://``): the same broker
behaviour with nothing on disk — produce and consume every message back with its key,
headers and timestamp, commit offsets in a group, replay by time; and a restart forgets it
all, which is the memory engine's contract."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_confluent_kafka import consume_all, create_topic, produce_all
from tests.support.broker import BrokerProcess
from tests.support.kafka import by_partition, make_messages, unique_topic

TIMEOUT_S = 15


def test_kafka_clients_on_the_memory_engine(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", extra_args=["--storage", "memory://"], doors=())
    broker.start()
    try:
        topic = unique_topic()
        create_topic(broker.bootstrap, topic, 3)
        sent = make_messages(300, 3)
        produce_all(broker.bootstrap, topic, sent, **{"enable.idempotence": True})
        received = consume_all(broker.bootstrap, topic, 3, len(sent))
        for p, expected in by_partition(sent).items():
            got = [m for m in received if m.partition() == p]
            assert [(m.key(), m.value(), m.timestamp()[1], m.headers() or []) for m in got] == [
                (s.key, s.value, s.timestamp_ms, list(s.headers)) for s in expected
            ]
        group = unique_topic("g")
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
        try:
            committed = [TopicPartition(topic, p, 10 + p) for p in range(3)]
            consumer.commit(offsets=committed, asynchronous=False)
            back = consumer.committed(
                [TopicPartition(topic, p) for p in range(3)], timeout=TIMEOUT_S
            )
            assert [(tp.partition, tp.offset) for tp in back] == [(0, 10), (1, 11), (2, 12)]
            middle = sorted(s.timestamp_ms for s in sent)[150]
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, middle) for p in range(3)], timeout=TIMEOUT_S
            )
            assert all(tp.offset >= 0 for tp in found)
        finally:
            consumer.close()
        assert not any(tmp_path.glob("data/topics/*"))  # nothing on disk
        broker.restart()
        fresh = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
        try:
            assert topic not in fresh.list_topics(timeout=TIMEOUT_S).topics
        finally:
            fresh.close()
    finally:
        broker.kill()
