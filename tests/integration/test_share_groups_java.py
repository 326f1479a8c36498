"""Share groups (KIP-932) with the reference client: kafka-clients' ``KafkaShareConsumer``.

One JVM (``tests/support/kafka_java.py``) hosts the consumers of the module; a second one is
started where a consumer must die with kill -9.  Records are produced with confluent-kafka.
Every group starts at the log start (``share.auto.offset.reset=earliest``, set through the
Java Admin's IncrementalAlterConfigs on the group) so that what was produced before the
consumers joined is what they share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.broker import BrokerProcess
from tests.support.kafka_java import ShareClients, records, why_not

pytestmark = pytest.mark.skipif(why_not() is not None, reason=str(why_not()))


@pytest.fixture(scope="module")
def java(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareClients]:
    clients = ShareClients(tmp_path_factory.mktemp("java") / "java.log")
    try:
        yield clients
    finally:
        clients.close()


def make_topic(broker: BrokerProcess, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(15)


def produce(broker: BrokerProcess, topic: str, values: list[str], partitions: int = 1) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(topic, value=value.encode(), partition=i % partitions)
    assert producer.flush(15) == 0


def earliest(java: ShareClients, broker: BrokerProcess, group: str, *configs: str) -> None:
    java.call("config", broker.bootstrap, group, "share.auto.offset.reset=earliest", *configs)


def describe(java: ShareClients, broker: BrokerProcess, group: str) -> dict[str, object]:
    lines = java.call("describe", broker.bootstrap, group)
    out: dict[str, object] = {}
    for f in lines:
        if f[0] == "group":
            out["state"], out["members"] = f[2], int(f[3])
        elif f[0] == "offset":
            out[f"{f[1]}-{f[2]}"] = int(f[3])
    return out


def test_two_share_consumers_share_a_topic_and_a_consumer_group_still_sees_everything(
    shared_broker: BrokerProcess, java: ShareClients
) -> None:
    b = shared_broker
    make_topic(b, "work", 2)
    values = [f"job-{i}" for i in range(400)]
    produce(b, "work", values, partitions=2)
    earliest(java, b, "workers")
    for name in ("w1", "w2"):  # ten records at a time: neither takes everything at once
        java.call(
            "new",
            name,
            b.bootstrap,
            "workers",
            "work",
            "max.poll.records=10",
            "share.acquire.mode=record_limit",
        )
    first = java.send("consume", "w1", 400, 20_000, "accept")
    second = java.send("consume", "w2", 400, 20_000, "accept")
    got1, got2 = records(java.result(first, 40)), records(java.result(second, 40))
    seen = Counter(r[4] for r in got1 + got2)
    assert sorted(seen) == sorted(values)
    assert set(seen.values()) == {1}  # each record processed once
    assert got1 and got2  # both members got work
    assert {r[3] for r in got1 + got2} == {1}
    state = describe(java, b, "workers")
    assert state["state"] == "Stable" and state["members"] == 2
    assert (state["work-0"], state["work-1"]) == (200, 200)
    for name in ("w1", "w2"):
        java.call("close", name)
    # a consumer group reading the same topic sees every record regardless
    consumer = Consumer(
        {"bootstrap.servers": b.bootstrap, "group.id": "audit", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe(["work"])
    audited: list[str] = []
    for _ in range(200):
        if len(audited) >= len(values):
            break
        for msg in consumer.consume(500, 0.5):
            assert msg.error() is None
            audited.append(msg.value().decode())
    consumer.close()
    assert sorted(audited) == sorted(values)


def test_a_consumer_killed_while_holding_records_hands_them_over(
    shared_broker: BrokerProcess, java: ShareClients, tmp_path: Path
) -> None:
    b = shared_broker
    make_topic(b, "held", 1)
    values = [f"h{i}" for i in range(20)]
    produce(b, "held", values)
    earliest(java, b, "holders")
    doomed = ShareClients(tmp_path / "doomed.log")
    try:
        doomed.call("new", "holder", b.bootstrap, "holders", "held")
        held = records(doomed.call("consume", "holder", 20, 20_000, "hold"))
        assert held and {r[3] for r in held} == {1}
        doomed.kill()  # its connection drops: the broker releases what it held at once
    finally:
        doomed.kill()
    java.call("new", "taker", b.bootstrap, "holders", "held")
    taken = records(java.call("consume", "taker", 20, 20_000, "accept"))
    java.call("close", "taker")
    assert sorted(r[4] for r in taken) == sorted(values)
    counts = {r[4]: r[3] for r in taken}
    assert {counts[r[4]] for r in held} == {2}  # delivered a second time
    assert all(counts[v] == 1 for v in values if v not in {r[4] for r in held})


def test_released_records_come_back_and_rejected_ones_do_not(
    shared_broker: BrokerProcess, java: ShareClients
) -> None:
    b = shared_broker
    make_topic(b, "judged", 1)
    produce(b, "judged", ["a", "b", "c"])
    earliest(java, b, "judges")
    java.call("new", "j", b.bootstrap, "judges", "judged")
    first = records(java.call("consume", "j", 3, 20_000, "release"))
    assert [(r[4], r[3]) for r in first] == [("a", 1), ("b", 1), ("c", 1)]
    again = records(java.call("consume", "j", 3, 20_000, "reject"))
    assert [(r[4], r[3]) for r in again] == [("a", 2), ("b", 2), ("c", 2)]
    assert records(java.call("consume", "j", 1, 1_500, "accept")) == []
    java.call("close", "j")
    assert describe(java, b, "judges")["judged-0"] == 3  # all archived: the start moved past


def test_an_expired_lock_redelivers_to_another_member(
    shared_broker: BrokerProcess, java: ShareClients
) -> None:
    b = shared_broker
    make_topic(b, "slow", 1)
    produce(b, "slow", ["s0", "s1"])
    earliest(java, b, "slowpokes", "share.record.lock.duration.ms=1000")
    java.call("new", "sleepy", b.bootstrap, "slowpokes", "slow")
    held = records(java.call("consume", "sleepy", 2, 20_000, "hold"))
    assert [r[4] for r in held] == ["s0", "s1"]
    java.call("new", "eager", b.bootstrap, "slowpokes", "slow")  # the holder is still alive
    taken = records(java.call("consume", "eager", 2, 20_000, "accept"))
    assert [(r[4], r[3]) for r in taken] == [("s0", 2), ("s1", 2)]
    java.call("close", "eager")
    java.call("close", "sleepy")


def test_the_delivery_count_limit_archives_a_poison_record(
    shared_broker: BrokerProcess, java: ShareClients
) -> None:
    b = shared_broker
    make_topic(b, "poison", 1)
    produce(b, "poison", ["bad"])
    earliest(java, b, "medics", "share.delivery.count.limit=2")
    java.call("new", "m", b.bootstrap, "medics", "poison")
    tries = [
        records(java.call("consume", "m", 1, 20_000, "release"))[0][3],
        records(java.call("consume", "m", 1, 20_000, "release"))[0][3],
    ]
    assert tries == [1, 2]
    assert records(java.call("consume", "m", 1, 1_500, "accept")) == []  # archived
    produce(b, "poison", ["good"])
    assert [r[4] for r in records(java.call("consume", "m", 1, 20_000, "accept"))] == ["good"]
    java.call("close", "m")


def test_acknowledged_records_stay_acknowledged_across_a_broker_kill9(
    tmp_path: Path, java: ShareClients
) -> None:
    b = BrokerProcess(tmp_path / "data", doors=()).start()
    try:
        make_topic(b, "ledger", 1)
        produce(b, "ledger", [f"done{i}" for i in range(10)])
        earliest(java, b, "auditors")
        java.call("new", "before", b.bootstrap, "auditors", "ledger")
        accepted = records(java.call("consume", "before", 10, 20_000, "accept"))
        assert len(accepted) == 10
        produce(b, "ledger", [f"open{i}" for i in range(5)])
        held = records(java.call("consume", "before", 5, 20_000, "hold"))
        assert [r[4] for r in held] == [f"open{i}" for i in range(5)]
        b.kill()
        b.start()
        java.call("close", "before")
        java.call("new", "after", b.bootstrap, "auditors", "ledger")
        after = records(java.call("consume", "after", 5, 30_000, "accept"))
        java.call("close", "after")
        assert [(r[4], r[3]) for r in after] == [(f"open{i}", 2) for i in range(5)]
        assert describe(java, b, "auditors")["ledger-0"] == 15
    finally:
        b.kill()
