"""kafka-python, aiokafka and kcat against a real broker: keys, headers, timestamps, order."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.integration.test_confluent_kafka import (
    check_received,
    consume_all,
    create_topic,
    produce_all,
)
from tests.support.broker import BrokerProcess
from tests.support.kafka import Sent, by_partition, make_messages, unique_topic

COUNT = 2000


def assert_same(
    sent: list[Sent], got: dict[int, list[tuple[int, bytes | None, bytes, tuple, int]]]
) -> None:
    expected = by_partition(sent)
    assert sorted(got) == sorted(expected)
    for partition, messages in expected.items():
        actual = got[partition]
        assert [offset for offset, *_ in actual] == list(range(len(messages)))
        assert [(k, v, h, ts) for _, k, v, h, ts in actual] == [
            (m.key, m.value, m.headers, m.timestamp_ms) for m in messages
        ]


def test_kafka_python_produce_and_consume(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("kp")
    create_topic(shared_broker.bootstrap, topic, 3)
    sent = make_messages(COUNT, 3)
    producer = KafkaProducer(bootstrap_servers=shared_broker.bootstrap, acks="all", linger_ms=5)
    futures = [
        producer.send(
            topic,
            value=m.value,
            key=m.key,
            partition=m.partition,
            headers=list(m.headers),
            timestamp_ms=m.timestamp_ms,
        )
        for m in sent
    ]
    producer.flush(30)
    for future in futures:
        future.get(timeout=30)
    producer.close(10)

    consumer = KafkaConsumer(
        bootstrap_servers=shared_broker.bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        auto_offset_reset="earliest",
    )
    consumer.assign([TopicPartition(topic, p) for p in range(3)])
    consumer.seek_to_beginning()
    got: dict[int, list] = {}
    for i, record in enumerate(consumer):
        got.setdefault(record.partition, []).append(
            (record.offset, record.key, record.value, tuple(record.headers), record.timestamp)
        )
        if i + 1 == COUNT:
            break
    consumer.close()
    assert_same(sent, got)
    # and what kafka-python wrote, librdkafka reads
    check_received(sent, consume_all(shared_broker.bootstrap, topic, 3, COUNT))


def test_kafka_python_idempotent_producer_default(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("kpidem")
    create_topic(shared_broker.bootstrap, topic, 2)
    producer = KafkaProducer(
        bootstrap_servers=shared_broker.bootstrap, enable_idempotence=True, acks="all"
    )
    futures = [producer.send(topic, value=f"v{i}".encode(), partition=i % 2) for i in range(500)]
    producer.flush(30)
    offsets = sorted((f.get(30).partition, f.get(30).offset) for f in futures)
    producer.close(10)
    assert offsets == sorted([(p, o) for p in range(2) for o in range(250)])


def test_aiokafka_produce_and_consume(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("aio")
    create_topic(shared_broker.bootstrap, topic, 3)
    sent = make_messages(COUNT, 3)

    async def run() -> dict[int, list]:
        producer = AIOKafkaProducer(
            bootstrap_servers=shared_broker.bootstrap, acks="all", linger_ms=5
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    topic,
                    value=m.value,
                    key=m.key,
                    partition=m.partition,
                    headers=list(m.headers),
                    timestamp_ms=m.timestamp_ms,
                )
                for m in sent
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=shared_broker.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        got: dict[int, list] = {}
        try:
            consumer.assign([AioTopicPartition(topic, p) for p in range(3)])
            await consumer.seek_to_beginning()
            count = 0
            async with asyncio.timeout(60):
                while count < COUNT:
                    batches = await consumer.getmany(timeout_ms=1000)
                    for records in batches.values():
                        for r in records:
                            got.setdefault(r.partition, []).append(
                                (r.offset, r.key, r.value, tuple(r.headers), r.timestamp)
                            )
                            count += 1
        finally:
            await consumer.stop()
        return got

    assert_same(sent, asyncio.run(run()))


@pytest.mark.skipif(
    shutil.which("kcat") is None and not os.environ.get("CI"),  # in CI, missing is a failure
    reason="kcat is installed by make test",
)
def test_kcat_produce_and_consume(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("kcat")
    create_topic(shared_broker.bootstrap, topic, 2)
    lines = [f"key{i % 7}:value {i}" for i in range(COUNT)]
    subprocess.run(
        [
            "kcat",
            "-b",
            shared_broker.bootstrap,
            "-t",
            topic,
            "-P",
            "-K:",
            "-H",
            "origin=kcat",
            "-X",
            "linger.ms=5",
        ],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        timeout=60,
    )
    out = subprocess.run(
        [
            "kcat",
            "-b",
            shared_broker.bootstrap,
            "-t",
            topic,
            "-C",
            "-e",
            "-o",
            "beginning",
            "-J",
            "-c",
            str(COUNT),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(records) == COUNT
    assert sorted(f"{r['key']}:{r['payload']}" for r in records) == sorted(lines)
    for r in records:
        assert r["headers"] == ["origin", "kcat"]
    # per key, order is kept (same key → same partition)
    per_key: dict[str, list[int]] = {}
    for r in sorted(records, key=lambda r: (r["partition"], r["offset"])):
        per_key.setdefault(r["key"], []).append(int(r["payload"].split()[1]))
    for values in per_key.values():
        assert values == sorted(values)
    # kcat-produced records read by librdkafka through the Python client too
    produced = consume_all(shared_broker.bootstrap, topic, 2, COUNT)
    assert len(produced) == COUNT
    # and a produce through the Python client is visible to kcat
    produce_all(shared_broker.bootstrap, topic, make_messages(10, 2))
