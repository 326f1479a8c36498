"""Internal topic names: no door creates them as user topics; ``__consumer_offsets`` exists,
is shown as internal (one partition, this node), can be read, and cannot be written."""

from __future__ import annotations

import json

import httpx
import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from pika.exceptions import ChannelClosedByBroker

from tests.support.amqp import connect
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic

TIMEOUT_S = 15
RESERVED = ["__mqtt_retained", "__mqtt_sessions", "__cluster_metadata"]
EXISTING = ["__consumer_offsets", "__transaction_state"]  # the coordinators' logs


@pytest.fixture(scope="module")
def admin(shared_broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": shared_broker.bootstrap})


def create_error(admin: AdminClient, name: str) -> KafkaError:
    future = admin.create_topics([NewTopic(name, 1, 1)])[name]
    with pytest.raises(KafkaException) as info:
        future.result(timeout=TIMEOUT_S)
    err: KafkaError = info.value.args[0]
    return err


def test_create_topics_refuses_internal_names(admin: AdminClient) -> None:
    for name in EXISTING:
        assert create_error(admin, name).code() == KafkaError.TOPIC_ALREADY_EXISTS, name
    for name in RESERVED:
        err = create_error(admin, name)
        assert err.code() == KafkaError.TOPIC_EXCEPTION, name
        assert "reserved" in err.str()
    # '.' and '_' collide (Kafka's rule), internal names included
    assert create_error(admin, "__consumer.offsets").code() == KafkaError.TOPIC_EXCEPTION
    assert not set(RESERVED) & set(admin.list_topics(timeout=TIMEOUT_S).topics)


def test_consumer_offsets_is_shown_as_internal(
    admin: AdminClient, shared_broker: BrokerProcess
) -> None:
    listed = admin.list_topics(timeout=TIMEOUT_S).topics
    assert len(listed["__consumer_offsets"].partitions) == 1
    described = admin.describe_topics(TopicCollection(["__consumer_offsets"]))
    info = described["__consumer_offsets"].result(timeout=TIMEOUT_S)
    assert info.is_internal
    [partition] = info.partitions
    assert (partition.id, partition.leader.id) == (0, 0)
    user = unique_topic("plain")
    admin.create_topics([NewTopic(user, 1, 1)])[user].result(timeout=TIMEOUT_S)
    plain = admin.describe_topics(TopicCollection([user]))[user].result(timeout=TIMEOUT_S)
    assert not plain.is_internal


def test_consumer_offsets_can_be_read_but_not_written(
    admin: AdminClient, shared_broker: BrokerProcess
) -> None:
    topic, group = unique_topic("src"), unique_topic("g")
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=TIMEOUT_S)
    committer = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 42)], asynchronous=False)
    committer.close()

    reader = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": unique_topic("r"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    reader.assign([TopicPartition("__consumer_offsets", 0, 0)])
    keys = []
    try:
        for _ in range(200):
            msg = reader.poll(0.1)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF
                break
            keys.append(json.loads(msg.key()))
    finally:
        reader.close()
    assert ["o", group, topic, 0] in keys

    producer = Producer({"bootstrap.servers": shared_broker.bootstrap})
    reports: list[KafkaError | None] = []
    producer.produce(
        "__consumer_offsets", value=b"x", key=b"k", on_delivery=lambda err, _m: reports.append(err)
    )
    producer.flush(TIMEOUT_S)
    assert len(reports) == 1 and reports[0] is not None
    assert reports[0].code() == KafkaError.TOPIC_EXCEPTION

    [trimmed] = admin.delete_records([TopicPartition("__consumer_offsets", 0, 1)]).values()
    with pytest.raises(KafkaException) as info:
        trimmed.result(timeout=TIMEOUT_S)
    assert info.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    watcher = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": group})
    try:
        low, _high = watcher.get_watermark_offsets(
            TopicPartition("__consumer_offsets", 0), timeout=TIMEOUT_S
        )
    finally:
        watcher.close()
    assert low == 0


def test_other_doors_cannot_create_internal_names(shared_broker: BrokerProcess) -> None:
    with httpx.Client(base_url=shared_broker.http_url, timeout=TIMEOUT_S) as http:
        for name in ["__consumer_offsets", "__mqtt_sessions"]:
            answer = http.post(
                f"/topics/{name}",
                headers={"Content-Type": "application/vnd.kafka.json.v2+json"},
                json={"records": [{"value": {"a": 1}}]},
            )
            # a well-formed name the broker keeps for itself: a conflict, as for 'a.b'/'a_b'
            assert answer.status_code == 409, (name, answer.text)
            assert name in answer.json()["message"]
    conn = connect(shared_broker)
    try:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as info:
            ch.queue_declare("__cluster_metadata", durable=True)
        assert info.value.reply_code == 406 and "reserved" in info.value.reply_text
    finally:
        conn.close()
    assert (
        "__cluster_metadata"
        not in AdminClient({"bootstrap.servers": shared_broker.bootstrap})
        .list_topics(timeout=TIMEOUT_S)
        .topics
    )
