"""The Connect runtime's sink semantics against a real broker, with a tiny in-test sink
(``tests/support/connect_tasks.py``) that records what the runtime hands it: converters,
seeking to ``open()``'s offsets, committing to ``connect-{name}`` only after ``flush``,
tasks sharing partitions through the group, retries with back-off, errors.tolerance and the
dead-letter topic with Kafka Connect's error headers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bayou.connect.api import ConnectorConfig
from bayou.connect.runtime.connector import ConnectorRunner
from tests.support.broker import BrokerProcess
from tests.support.connect_tasks import RecordingSink, Target
from tests.support.wait import wait_until

SINK = "tests.support.connect_tasks:RecordingSink"


def new_topic(broker: BrokerProcess, partitions: int = 1) -> str:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions)]).values():
        future.result(30)
    return name


def produce(
    broker: BrokerProcess,
    topic: str,
    records: list[tuple[bytes | None, bytes | None]],
    partition: int = 0,
) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, value, key, partition=partition, headers=[("h", b"v")])
    assert producer.flush(30) == 0


def committed(broker: BrokerProcess, group: str, topic: str, partitions: int = 1) -> list[int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        return [tp.offset for tp in parts]
    finally:
        consumer.close()


@pytest.fixture
def running() -> Iterator[list[ConnectorRunner]]:
    runners: list[ConnectorRunner] = []
    yield runners
    for runner in runners:
        runner.stop(10)


def start(
    broker: BrokerProcess, runners: list[ConnectorRunner], name: str, **values: Any
) -> ConnectorRunner:
    config = ConnectorConfig.from_mapping(
        name, {"connector.class": SINK, "offset.flush.interval.ms": 200, **values}
    )
    runner = ConnectorRunner(config, {"bootstrap.servers": broker.bootstrap}, "test-worker")
    runners.append(runner)
    runner.start()
    return runner


def target(name: str) -> Target:
    return RecordingSink.targets.setdefault(name, Target())


def rows(n: int, start: int = 0) -> list[tuple[bytes | None, bytes | None]]:
    return [(f"k{i}".encode(), json.dumps({"n": i}).encode()) for i in range(start, start + n)]


def test_seek_to_open_offsets_and_convert(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker)
    produce(shared_broker, topic, rows(100))
    name = f"seek-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    tgt.stored_offsets[(topic, 0)] = 40  # the target already holds 0..39
    start(shared_broker, running, name, topics=topic, **{"key.converter": "string"})
    wait_until("60 records durable", lambda: len(tgt.durable) >= 60)
    assert [r.offset for r in tgt.durable] == list(range(40, 100))
    first = tgt.durable[0]
    assert (first.key, first.value, first.headers) == ("k40", {"n": 40}, (("h", b"v"),))
    assert first.topic == topic and first.partition == 0 and first.timestamp_ms > 0
    assert tgt.opened == [[(topic, 0)]]
    wait_until(
        "the group commit", lambda: committed(shared_broker, f"connect-{name}", topic) == [100]
    )


def test_commit_only_after_flush(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker)
    name = f"gate-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    tgt.flush_gate.clear()  # flush blocks until the test lets it go
    produce(shared_broker, topic, rows(50))
    start(shared_broker, running, name, topics=topic)
    wait_until("50 records put", lambda: len(tgt.buffered) == 50)
    time.sleep(0.6)  # three flush intervals pass with flush() held: nothing may be committed
    assert committed(shared_broker, f"connect-{name}", topic) == [-1001]
    assert tgt.durable == []
    tgt.flush_gate.set()
    wait_until(
        "the commit after flush", lambda: committed(shared_broker, f"connect-{name}", topic) == [50]
    )
    assert [r.offset for r in tgt.durable] == list(range(50))


def test_restart_resumes_from_committed_offsets(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker)
    name = f"resume-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    produce(shared_broker, topic, rows(30))
    runner = start(shared_broker, running, name, topics=topic)
    wait_until("30 durable", lambda: len(tgt.durable) == 30)
    runner.stop(10)
    tgt.stored_offsets.clear()  # the sink keeps no offsets: the group's are used
    produce(shared_broker, topic, rows(20, 30))
    runner2 = start(shared_broker, running, name, topics=topic)
    wait_until("50 durable", lambda: len(tgt.durable) >= 50)
    assert [r.offset for r in tgt.durable] == list(range(50))  # nothing twice
    assert runner2.status()["tasks"][0]["state"] == "RUNNING"


def test_tasks_share_partitions_in_the_group(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker, partitions=4)
    name = f"scale-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    for p in range(4):
        produce(shared_broker, topic, rows(25, p * 25), partition=p)
    runner = start(shared_broker, running, name, topics=topic, **{"tasks.max": 2})
    wait_until("100 durable", lambda: len(tgt.durable) >= 100, timeout=60)
    assert sorted(json.loads(json.dumps(r.value))["n"] for r in tgt.durable) == list(range(100))
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})

    def two_members() -> bool:
        desc = admin.describe_consumer_groups([f"connect-{name}"])[f"connect-{name}"].result(10)
        sizes = sorted(len(m.assignment.topic_partitions) for m in desc.members)
        return sizes == [2, 2]

    wait_until("two members with two partitions each", two_members, timeout=60)
    assert [t["state"] for t in runner.status()["tasks"]] == ["RUNNING", "RUNNING"]
    wait_until(
        "every partition committed",
        lambda: committed(shared_broker, f"connect-{name}", topic, 4) == [25, 25, 25, 25],
    )


def test_retriable_put_is_retried(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker)
    name = f"retry-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    tgt.put_failures = 3
    produce(shared_broker, topic, rows(10))
    start(shared_broker, running, name, topics=topic, **{"errors.retry.delay.max.ms": 500})
    wait_until("10 durable", lambda: len(tgt.durable) == 10)
    assert tgt.put_attempts >= 4
    assert [r.offset for r in tgt.durable] == list(range(10))


def test_retry_timeout_fails_the_task(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker)
    name = f"retryfail-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    tgt.put_failures = 10**6
    produce(shared_broker, topic, rows(3))
    runner = start(shared_broker, running, name, topics=topic, **{"errors.retry.timeout": 1000})
    wait_until("the task fails", lambda: runner.status()["tasks"][0]["state"] == "FAILED")
    task = runner.status()["tasks"][0]
    assert "errors.retry.timeout" in task["trace"] and "the target is busy" in task["trace"]
    assert committed(shared_broker, f"connect-{name}", topic) == [-1001]


def read_all(broker: BrokerProcess, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < count and time.monotonic() < deadline:
            out += [m for m in consumer.consume(100, 0.5) if m.error() is None]
    finally:
        consumer.close()
    return out


def test_dead_letter_topic_with_error_headers(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker)
    dlq = f"{topic}-dlq"
    name = f"dlq-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    tgt.refuse_value = {"n": 7}
    records = rows(10)
    records[3] = (b"bad", b"{not json")
    produce(shared_broker, topic, records)
    start(
        shared_broker,
        running,
        name,
        topics=topic,
        **{
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": dlq,
            "errors.deadletterqueue.context.headers.enable": True,
        },
    )
    wait_until("8 durable", lambda: len(tgt.durable) == 8)
    assert [r.offset for r in tgt.durable] == [0, 1, 2, 4, 5, 6, 8, 9]
    dead = read_all(shared_broker, dlq, 2)
    assert [(m.key(), m.value()) for m in dead] == [(b"bad", b"{not json"), (b"k7", b'{"n": 7}')]
    converter_headers = dict(dead[0].headers())
    assert converter_headers["h"] == b"v"  # the record's own headers stay
    assert converter_headers["__connect.errors.topic"] == topic.encode()
    assert converter_headers["__connect.errors.partition"] == b"0"
    assert converter_headers["__connect.errors.offset"] == b"3"
    assert converter_headers["__connect.errors.connector.name"] == name.encode()
    assert converter_headers["__connect.errors.task.id"] == b"0"
    assert converter_headers["__connect.errors.stage"] == b"VALUE_CONVERTER"
    assert b"not JSON" in converter_headers["__connect.errors.exception.message"]
    assert converter_headers["__connect.errors.exception.class.name"].endswith(b"ConversionError")
    assert b"Traceback" in converter_headers["__connect.errors.exception.stacktrace"]
    put_headers = dict(dead[1].headers())
    assert put_headers["__connect.errors.stage"] == b"TASK_PUT"
    assert (
        put_headers["__connect.errors.class.name"] == b"tests.support.connect_tasks.RecordingSink"
    )
    assert put_headers["__connect.errors.exception.message"] == b"refused"
    wait_until(
        "the commit past the dead letters",
        lambda: committed(shared_broker, f"connect-{name}", topic) == [10],
    )


def test_tolerance_none_fails_the_task(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker)
    name = f"strict-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    produce(shared_broker, topic, [*rows(2), (b"bad", b"{not json"), *rows(2, 3)])
    runner = start(shared_broker, running, name, topics=topic)
    wait_until("the task fails", lambda: runner.status()["tasks"][0]["state"] == "FAILED")
    assert "Tolerance exceeded" in runner.status()["tasks"][0]["trace"]
    assert [r.offset for r in tgt.durable + tgt.buffered if r.offset > 1] == []


def test_transforms_on_the_way_to_a_sink(
    shared_broker: BrokerProcess, running: list[ConnectorRunner]
) -> None:
    topic = new_topic(shared_broker)
    name = f"smt-{uuid.uuid4().hex[:6]}"
    tgt = target(name)
    values = [
        {
            "id": f"o{i}",
            "amt": i,
            "secret": "x",
            "env": "test" if i % 3 == 0 else "live",
            "at": 1_767_225_600_000 + i,
        }
        for i in range(9)
    ]
    produce(shared_broker, topic, [(None, json.dumps(v).encode()) for v in values])
    kafka = "org.apache.kafka.connect.transforms."
    start(
        shared_broker,
        running,
        name,
        topics=topic,
        transforms="key,extract,rename,dropTests,ts,route",
        predicates="isTest",
        **{
            "transforms.key.type": kafka + "ValueToKey",
            "transforms.key.fields": "id",
            "transforms.extract.type": kafka + "ExtractField$Key",
            "transforms.extract.field": "id",
            "transforms.rename.type": kafka + "ReplaceField$Value",
            "transforms.rename.renames": "amt:amount",
            "transforms.rename.exclude": "secret",
            "transforms.dropTests.type": kafka + "Filter",
            "transforms.dropTests.predicate": "isTest",
            "predicates.isTest.type": "FieldValueMatches",
            "predicates.isTest.field": "env",
            "predicates.isTest.value": "test",
            "transforms.ts.type": kafka + "TimestampConverter$Value",
            "transforms.ts.field": "at",
            "transforms.ts.target.type": "string",
            "transforms.ts.format": "yyyy-MM-dd HH:mm:ss.SSS",
            "transforms.route.type": kafka + "RegexRouter",
            "transforms.route.regex": "rt-(.*)",
            "transforms.route.replacement": "lake-$1",
        },
    )
    wait_until("6 durable", lambda: len(tgt.durable) == 6)
    kept = [i for i in range(9) if i % 3 != 0]
    assert [r.key for r in tgt.durable] == [f"o{i}" for i in kept]
    assert [r.value for r in tgt.durable] == [
        {"id": f"o{i}", "amount": i, "env": "live", "at": f"2026-01-01 00:00:00.{i:03d}"}
        for i in kept
    ]
    assert {r.topic for r in tgt.durable} == {"lake-" + topic.removeprefix("rt-")}
    # the dropped records count as handled: the group moves past them
    wait_until("all 9 committed", lambda: committed(shared_broker, f"connect-{name}", topic) == [9])


def test_source_routes_by_field(
    shared_broker: BrokerProcess, running: list[ConnectorRunner], tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    (tmp_path / "events.jsonl").write_text(
        "".join(
            json.dumps({"region": region, "n": i}) + "\n"
            for i, region in enumerate(["eu", "us", "eu", "ap"])
        )
    )
    config = ConnectorConfig.from_mapping(
        f"route-{suffix}",
        {
            "connector.class": "file-source",
            "path": str(tmp_path),
            "topic": "unused",
            "key.field": "n",
            "transforms": "byRegion,prefix",
            "transforms.byRegion.type": "io.confluent.connect.transforms.ExtractTopic$Value",
            "transforms.byRegion.field": "region",
            "transforms.prefix.type": "RegexRouter",
            "transforms.prefix.regex": "(.*)",
            "transforms.prefix.replacement": f"events-$1-{suffix}",
        },
    )
    runner = ConnectorRunner(config, {"bootstrap.servers": shared_broker.bootstrap}, "w")
    running.append(runner)
    runner.start()
    eu = read_all(shared_broker, f"events-eu-{suffix}", 2)
    assert [(m.key(), json.loads(m.value())["n"]) for m in eu] == [(b"0", 0), (b"2", 2)]
    assert [
        json.loads(m.value())["n"] for m in read_all(shared_broker, f"events-ap-{suffix}", 1)
    ] == [3]
