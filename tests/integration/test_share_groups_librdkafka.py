"""Share groups (KIP-932) with librdkafka's share consumer (confluent-kafka's ShareConsumer,
librdkafka 2.16: "preview" there), and share groups as admin tools list them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

from confluent_kafka import AcknowledgeType, Producer, ShareConsumer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from bayou.cli._common import Connection
from bayou.cli.share_groups import describe_share_group
from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until


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
    setup_topic(b, "rk-work", "rk-workers", 2, 0)
    members = [consumer(b, "rk-workers", "rk-work") for _ in range(2)]
    conn = Connection(b.bootstrap, 10.0, False)

    def settled() -> bool:  # both joined, one partition each: then the records come
        for c in members:
            c.poll(0.1)
        view = describe_share_group(conn, "rk-workers")
        return view is not None and [len(mem["partitions"]) for mem in view.members] == [1, 1]

    wait_until("both members to be assigned a partition", settled)
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for i in range(300):
        producer.produce("rk-work", value=f"rk-work-{i}".encode(), partition=i % 2)
    assert producer.flush(15) == 0
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


def bayou_cli(b: BrokerProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bayou", "-b", b.bootstrap, *args],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_the_cli_lists_and_describes_share_groups(shared_broker: BrokerProcess) -> None:
    b = shared_broker
    setup_topic(b, "rk-shown", "rk-shown-group", 2, 10)
    c = consumer(b, "rk-shown-group", "rk-shown", **{"share.acknowledgement.mode": "explicit"})
    held: list[tuple[int, int]] = []
    deadline = time.monotonic() + 30
    while len(held) < 10 and time.monotonic() < deadline:
        held += [(msg.partition(), msg.offset()) for msg in c.poll(0.2) or []]
    try:
        assert len(held) == 10  # held, not acknowledged: in flight
        listed = [line.split() for line in bayou_cli(b, "group", "list").splitlines()]
        assert ["rk-shown-group", "Stable", "share", "10"] in listed
        info = json.loads(bayou_cli(b, "group", "describe", "rk-shown-group", "--format", "json"))
        assert (info["type"], info["state"], info["assignor"]) == ("share", "Stable", "simple")
        assert len(info["members"]) == 1
        assert sorted(info["members"][0]["partitions"]) == ["rk-shown-0", "rk-shown-1"]
        rows = {(p["topic"], p["partition"]): p for p in info["partitions"]}
        assert {k: (p["start_offset"], p["in_flight"], p["lag"]) for k, p in rows.items()} == {
            ("rk-shown", 0): (0, 5, 5),
            ("rk-shown", 1): (0, 5, 5),
        }
        text = bayou_cli(b, "group", "describe", "rk-shown-group")
        assert "Type:     share" in text and "IN-FLIGHT" in text
    finally:
        c.close()
