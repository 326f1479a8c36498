"""A compacted topic refuses records without a key, as Kafka does: INVALID_RECORD for the
batch, and (Produce v8+) ``record_errors`` naming the keyless records."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import Record, build_batch
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.kafka_raw import RawKafka, produce_request

TIMEOUT_S = 15


def compacted_topic(bootstrap: str) -> str:
    name = unique_topic("compacted")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, 1, 1, config={"cleanup.policy": "compact"})
    admin.create_topics([topic])[name].result(timeout=TIMEOUT_S)
    return name


def end_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g")})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def test_confluent_kafka_sees_the_keyless_records_refused(shared_broker: BrokerProcess) -> None:
    topic = compacted_topic(shared_broker.bootstrap)
    producer = Producer(
        {"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 200, "retries": 0}
    )
    reports: dict[bytes, KafkaError | None] = {}
    for value, key in ((b"a", b"k1"), (b"b", None), (b"c", b"k2"), (b"d", None)):
        producer.produce(
            topic,
            value=value,
            key=key,
            partition=0,
            on_delivery=lambda err, msg: reports.__setitem__(msg.value(), err),
        )
    assert producer.flush(TIMEOUT_S) == 0
    # librdkafka fails exactly the records named in record_errors (the Python binding shows
    # the code's text, not the broker's per-record message: the raw test below checks that)
    for keyless in (b"b", b"d"):
        err = reports[keyless]
        assert err is not None and err.code() == KafkaError.INVALID_RECORD
    for keyed in (b"a", b"c"):  # failed with them: the batch is refused whole
        err = reports[keyed]
        assert err is not None and err.code() == KafkaError._INVALID_DIFFERENT_RECORD
    assert end_offset(shared_broker.bootstrap, topic) == 0

    producer.produce(topic, value=b"e", key=b"k3", partition=0)
    assert producer.flush(TIMEOUT_S) == 0
    assert end_offset(shared_broker.bootstrap, topic) == 1


def test_raw_produce_lists_the_keyless_records(shared_broker: BrokerProcess) -> None:
    topic = compacted_topic(shared_broker.bootstrap)
    now = int(time.time() * 1000)
    batch = build_batch(
        [
            Record(now, b"k", b"1"),
            Record(now, None, b"2"),
            Record(now, b"k", b"3"),
            Record(now, None, b"4"),
        ],
        compression=4,
    )

    def produce(version: int) -> m.ProduceResponsePartitionProduceResponse:
        request = produce_request(topic, batch, timeout_ms=5000)
        with RawKafka(shared_broker.bootstrap) as raw:
            answer = raw.call(request, version)
            assert raw.metadata_ok()
        result: m.ProduceResponsePartitionProduceResponse = answer.responses[0].partition_responses[
            0
        ]
        return result

    answer = produce(9)
    assert answer.error_code == ErrorCode.INVALID_RECORD
    reason = f"Compacted topic cannot accept message without key in topic partition {topic}-0."
    assert [(e.batch_index, e.batch_index_error_message) for e in answer.record_errors] == [
        (1, reason),
        (3, reason),
    ]
    assert answer.error_message is not None
    assert answer.error_message.startswith(
        "One or more records have been rejected due to 2 record errors in total"
    )
    older = produce(7)  # before v8 there is only the error code
    assert (older.error_code, older.record_errors) == (ErrorCode.INVALID_RECORD, [])
    assert end_offset(shared_broker.bootstrap, topic) == 0
