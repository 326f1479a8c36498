"""Share groups (KIP-932) with librdkafka's share consumer (confluent-kafka's ShareConsumer,
librdkafka 2.16: "preview" there), and share groups as admin tools list them."""

from __future__ import annotations

import time
from collections import Counter

from confluent_kafka import AcknowledgeType, Producer, ShareConsumer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from tests.support.broker import BrokerProcess


def setup_topic(b: BrokerProcess, topic: str, group: str, partitions: int, count: int) -> None:
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(15)
    # start the group at the log start: a GROUP config (kafka-python's admin has the resource
    # type; confluent-kafka's has not)
    kadmin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        kadmin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.GROUP, group, {"share.auto.offset.reset": "earliest"}
                )
            ],
            incremental=True,
        )
    finally:
        kadmin.close()
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, value=f"{topic}-{i}".encode(), partition=i % partitions)
    assert producer.flush(15) == 0


def consumer(b: BrokerProcess, group: str, topic: str, **extra: str) -> ShareConsumer:
    c = ShareConsumer({"bootstrap.servers": b.bootstrap, "group.id": group, **extra})
    c.subscribe([topic])
    return c


def test_two_librdkafka_share_consumers_split_the_records(shared_broker: BrokerProcess) -> None:
    b = shared_broker
    setup_topic(b, "rk-work", "rk-workers", 2, 300)
    members = [consumer(b, "rk-workers", "rk-work") for _ in range(2)]
    got: list[list[str]] = [[], []]
    deadline = time.monotonic() + 30
    while sum(map(len, got)) < 300 and time.monotonic() < deadline:
        for i, c in enumerate(members):  # implicit mode: the next poll accepts this one's
            for msg in c.poll(0.2) or []:
                assert msg.error() is None
                assert msg.delivery_count() == 1
                got[i].append(msg.value().decode())
    for c in members:
        c.close()
    seen = Counter(got[0] + got[1])
    assert sorted(seen) == sorted(f"rk-work-{i}" for i in range(300))
    assert set(seen.values()) == {1}
    assert got[0] and got[1]


def test_a_released_record_comes_back_with_its_delivery_count(
    shared_broker: BrokerProcess,
) -> None:
    b = shared_broker
    setup_topic(b, "rk-retry", "rk-retriers", 1, 1)
    c = consumer(b, "rk-retriers", "rk-retry", **{"share.acknowledgement.mode": "explicit"})
    counts: list[int] = []
    deadline = time.monotonic() + 30
    while len(counts) < 3 and time.monotonic() < deadline:
        for msg in c.poll(0.2) or []:
            assert msg.error() is None and msg.value() == b"rk-retry-0"
            counts.append(msg.delivery_count())
            kind = AcknowledgeType.RELEASE if len(counts) < 3 else AcknowledgeType.ACCEPT
            c.acknowledge(msg, kind)
            c.commit_sync()
    c.close()
    assert counts == [1, 2, 3]
