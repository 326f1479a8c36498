"""Consumer groups with real clients: confluent-kafka (classic and KIP-848), kafka-python,
aiokafka, a mixed group, cooperative-sticky, static membership, kill -9 of a member and of the
broker, and the ``bayou group`` CLI.  Every wait is on an event, bounded in time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_confluent_kafka import create_topic, produce_all
from tests.support.broker import BrokerProcess
from tests.support.kafka import make_messages, unique_topic

SESSION_MS = 6000
# a bound on waits for the group to settle, not a speed goal: two kafka-python members on a
# loaded machine (three test workers on two cores) once took longer than 30 s
DEADLINE_S = 60.0
GROUP_ENV = {
    "BAYOU_GROUP_INITIAL_REBALANCE_DELAY_MS": "300",
    "BAYOU_GROUP_CONSUMER_SESSION_TIMEOUT_MS": str(SESSION_MS),
    "BAYOU_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gbroker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("groups") / "data", env=GROUP_ENV).start()
    try:
        yield proc
    finally:
        proc.kill()


def wait_for(
    condition: Callable[[], bool], timeout: float, step: Callable[[], None], what: str
) -> float:
    """Run ``step`` (which blocks on a client event) until ``condition``; returns seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        step()
    return time.monotonic() - start


def group_consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 500,
            **extra,
        }
    )


def poll_all(consumers: list[Consumer], seen: dict[int, Any] | None = None) -> None:
    for c in consumers:
        msg = c.poll(0.05)
        if msg is not None and not msg.error() and seen is not None:
            seen.setdefault(id(c), []).append((msg.partition(), msg.offset()))


def owned(c: Consumer) -> set[int]:
    return {tp.partition for tp in c.assignment()}


# --------------------------------------------------------------------------- members as processes


class Member:
    """``tests/support/group_member.py`` in a child process, its events collected."""

    def __init__(self, bootstrap: str, topic: str, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.group_member",
                bootstrap,
                topic,
                json.dumps(config),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            text=True,
        )
        self.assigned: set[int] = set()
        self.messages: list[tuple[int, int]] = []
        self.changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with self.changed:
                if "assigned" in event:
                    self.assigned = {p for _t, p in event["assigned"]}
                else:
                    self.messages.append(tuple(event["m"]))  # type: ignore[arg-type]
                self.changed.notify_all()

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill9()
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def wait_members(
    members: list[Member], condition: Callable[[], bool], timeout: float, what: str
) -> float:
    start = time.monotonic()
    while not condition():
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            state = [(sorted(m.assigned), len(m.messages)) for m in members]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {state}")
        with members[0].changed:
            members[0].changed.wait(min(left, 0.2))
    return time.monotonic() - start


def test_three_members_own_two_partitions_each_and_survive_a_kill9(
    gbroker: BrokerProcess,
) -> None:
    topic, group = unique_topic("k9"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 6)
    first = make_messages(600, 6)
    produce_all(gbroker.bootstrap, topic, first)
    config = {
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500,
        "auto.commit.interval.ms": 200,
    }
    members = [Member(gbroker.bootstrap, topic, config) for _ in range(3)]
    try:
        wait_members(
            members,
            lambda: (
                sorted(len(m.assigned) for m in members) == [2, 2, 2]
                and set().union(*(m.assigned for m in members)) == set(range(6))
                and sum(len(m.messages) for m in members) >= 600
            ),
            DEADLINE_S,
            "two partitions each and the first 600 messages",
        )
        victim, survivors = members[0], members[1:]
        orphaned = set(victim.assigned)
        victim.kill9()
        took = wait_members(
            survivors,
            lambda: set().union(*(m.assigned for m in survivors)) == set(range(6)),
            SESSION_MS / 1000 + 10,
            "the survivors to take the victim's partitions",
        )
        assert took < SESSION_MS / 1000 + 5, took
        second = make_messages(600, 6, base_ts=int(time.time() * 1000))
        produce_all(gbroker.bootstrap, topic, second)
        everything = {(p, o) for p in range(6) for o in range(200)}
        wait_members(
            survivors,
            lambda: everything <= {x for m in members for x in m.messages},
            DEADLINE_S,
            "every message, including the victim's partitions' new ones",
        )
        for p in orphaned:  # the new messages of the victim's partitions went to a survivor
            assert {(p, o) for o in range(100, 200)} <= {x for m in survivors for x in m.messages}
    finally:
        for m in members:
            m.stop()


# --------------------------------------------------------------------------- durability


def test_commit_survives_broker_kill9_and_consumption_resumes_exactly_there(
    tmp_path: Path,
) -> None:
    broker = BrokerProcess(tmp_path / "data", env=GROUP_ENV).start()
    try:
        topic, group = unique_topic("dur"), unique_topic("g")
        create_topic(broker.bootstrap, topic, 2)
        produce_all(broker.bootstrap, topic, make_messages(400, 2))
        c = group_consumer(broker.bootstrap, group, **{"enable.auto.commit": False})
        c.subscribe([topic])
        seen: dict[int, Any] = {}
        wait_for(
            lambda: len(seen.get(id(c), [])) >= 150,
            DEADLINE_S,
            lambda: poll_all([c], seen),
            "150 messages",
        )
        offsets = [TopicPartition(topic, 0, 37), TopicPartition(topic, 1, 123)]
        c.commit(offsets=offsets, asynchronous=False)
        c.close()
        broker.kill()  # kill -9 right after the acknowledged commit
        broker.start()
        c2 = group_consumer(broker.bootstrap, group, **{"enable.auto.commit": False})
        c2.subscribe([topic])
        seen2: dict[int, Any] = {}
        wait_for(
            lambda: {p for p, _ in seen2.get(id(c2), [])} == {0, 1},
            DEADLINE_S,
            lambda: poll_all([c2], seen2),
            "messages from both partitions",
        )
        firsts: dict[int, int] = {}
        for p, o in seen2[id(c2)]:
            firsts.setdefault(p, o)
        assert firsts == {tp.partition: tp.offset for tp in offsets}
        committed = c2.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == firsts
        c2.close()
    finally:
        broker.kill()


# --------------------------------------------------------------------------- other clients


def test_kafka_python_group_consumes_everything_and_commits(gbroker: BrokerProcess) -> None:
    from kafka import KafkaConsumer

    topic, group = unique_topic("kp"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 4)
    produce_all(gbroker.bootstrap, topic, make_messages(800, 4))
    consumers = [
        KafkaConsumer(
            topic,
            bootstrap_servers=gbroker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=500,
        )
        for _ in range(2)
    ]
    got: set[tuple[int, int]] = set()

    def step() -> None:
        for c in consumers:
            for records in c.poll(timeout_ms=100).values():
                got.update((r.partition, r.offset) for r in records)

    try:
        wait_for(
            lambda: len(got) == 800 and all(len(c.assignment()) == 2 for c in consumers),
            DEADLINE_S,
            step,
            "800 messages over two kafka-python members",
        )
        for c in consumers:
            c.commit()
        c = consumers[0]
        from kafka import TopicPartition as KTP

        assert {c.committed(KTP(topic, p)) for p in range(4)} == {200}
    finally:
        for c in consumers:
            c.close()


def test_aiokafka_group_consumes_everything_and_commits(gbroker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as ATP

    topic, group = unique_topic("aio"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 4)
    produce_all(gbroker.bootstrap, topic, make_messages(800, 4))

    async def run() -> None:
        consumers = [
            AIOKafkaConsumer(
                topic,
                bootstrap_servers=gbroker.bootstrap,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=SESSION_MS,
                heartbeat_interval_ms=500,
            )
            for _ in range(2)
        ]
        for c in consumers:
            await c.start()
        got: set[tuple[int, int]] = set()
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not (len(got) == 800 and all(len(c.assignment()) == 2 for c in consumers)):
                assert time.monotonic() < deadline, (len(got), [c.assignment() for c in consumers])
                for c in consumers:
                    batch = await c.getmany(timeout_ms=100)
                    for records in batch.values():
                        got.update((r.partition, r.offset) for r in records)
            for c in consumers:
                await c.commit()
            assert {await consumers[0].committed(ATP(topic, p)) for p in range(4)} == {200}
        finally:
            for c in consumers:
                await c.stop()

    asyncio.run(run())


def test_mixed_group_of_three_client_libraries(gbroker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaConsumer

    topic, group = unique_topic("mix"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 6)
    produce_all(gbroker.bootstrap, topic, make_messages(600, 6))
    rd = group_consumer(gbroker.bootstrap, group, **{"partition.assignment.strategy": "roundrobin"})
    rd.subscribe([topic])
    kp = KafkaConsumer(
        topic,
        bootstrap_servers=gbroker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=500,
    )
    got: set[tuple[int, int]] = set()

    async def run() -> None:
        aio = AIOKafkaConsumer(
            topic,
            bootstrap_servers=gbroker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=500,
        )
        await aio.start()
        try:
            deadline = time.monotonic() + DEADLINE_S
            while True:
                sizes = sorted([len(owned(rd)), len(kp.assignment()), len(aio.assignment())])
                if sizes == [2, 2, 2] and len(got) == 600:
                    break
                assert time.monotonic() < deadline, (sizes, len(got))
                msg = rd.poll(0.05)
                if msg is not None and not msg.error():
                    got.add((msg.partition(), msg.offset()))
                for records in kp.poll(timeout_ms=50).values():
                    got.update((r.partition, r.offset) for r in records)
                for records in (await aio.getmany(timeout_ms=50)).values():
                    got.update((r.partition, r.offset) for r in records)
            parts = [
                owned(rd),
                {tp.partition for tp in kp.assignment()},
                {tp.partition for tp in aio.assignment()},
            ]
            assert set().union(*parts) == set(range(6))
        finally:
            await aio.stop()

    try:
        asyncio.run(run())
    finally:
        rd.close()
        kp.close()


# --------------------------------------------------------------------------- assignors


def test_cooperative_sticky_moves_only_what_must_move(gbroker: BrokerProcess) -> None:
    topic, group = unique_topic("coop"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 6)
    events: dict[str, list[tuple[str, set[int]]]] = {"a": [], "b": []}

    def make(name: str) -> Consumer:
        c = group_consumer(
            gbroker.bootstrap, group, **{"partition.assignment.strategy": "cooperative-sticky"}
        )

        def on_assign(_c: Any, ps: list[TopicPartition]) -> None:
            events[name].append(("assign", {tp.partition for tp in ps}))

        def on_revoke(_c: Any, ps: list[TopicPartition]) -> None:
            events[name].append(("revoke", {tp.partition for tp in ps}))

        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        return c

    a = make("a")
    b: Consumer | None = None
    try:
        wait_for(lambda: len(owned(a)) == 6, DEADLINE_S, lambda: poll_all([a]), "a owns all")
        before = owned(a)
        b = make("b")
        consumers = [a, b]
        wait_for(
            lambda: len(owned(a)) == 3 and len(owned(b)) == 3,
            DEADLINE_S,
            lambda: poll_all(consumers),
            "three partitions each",
        )
        revoked = set().union(*(ps for kind, ps in events["a"] if kind == "revoke"))
        assert len(revoked) == 3 and revoked <= before  # only what had to move
        assert owned(a) == before - revoked and owned(b) == revoked
        assert all(kind == "assign" for kind, _ in events["b"])
    finally:
        a.close()
        if b is not None:
            b.close()


def test_static_member_quick_restart_causes_no_rebalance(gbroker: BrokerProcess) -> None:
    topic, group = unique_topic("static"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 4)
    assigns: dict[str, int] = {"a": 0}

    def make(instance: str, count: str | None = None) -> Consumer:
        c = group_consumer(gbroker.bootstrap, group, **{"group.instance.id": instance})

        def on_assign(_c: Any, _ps: Any) -> None:
            if count is not None:
                assigns[count] += 1

        c.subscribe([topic], on_assign=on_assign)
        return c

    a = make("static-a", "a")
    b = make("static-b")
    try:
        wait_for(
            lambda: len(owned(a)) == 2 and len(owned(b)) == 2,
            DEADLINE_S,
            lambda: poll_all([a, b]),
            "two partitions each",
        )
        a_before, b_before, rebalances = owned(a), owned(b), assigns["a"]
        b.close()  # a static member leaves no LeaveGroup behind
        b = make("static-b")
        wait_for(
            lambda: owned(b) == b_before,
            DEADLINE_S,
            lambda: poll_all([a, b]),
            "the restarted member to get its partitions back",
        )
        deadline = time.monotonic() + 2  # a few heartbeats of a: still no rebalance
        while time.monotonic() < deadline:
            poll_all([a, b])
        assert assigns["a"] == rebalances and owned(a) == a_before
    finally:
        a.close()
        b.close()


def test_kip848_consumer_protocol_with_librdkafka(gbroker: BrokerProcess) -> None:
    from confluent_kafka.admin import AdminClient

    topic, group = unique_topic("kip848"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 4)
    produce_all(gbroker.bootstrap, topic, make_messages(400, 4))

    def make() -> Consumer:
        c = Consumer(
            {
                "bootstrap.servers": gbroker.bootstrap,
                "group.id": group,
                "group.protocol": "consumer",
                "auto.offset.reset": "earliest",
            }
        )
        c.subscribe([topic])
        return c

    a, b = make(), make()
    seen: dict[int, Any] = {}
    try:
        wait_for(
            lambda: (
                len(owned(a)) == 2
                and len(owned(b)) == 2
                and sum(len(v) for v in seen.values()) >= 400
            ),
            DEADLINE_S,
            lambda: poll_all([a, b], seen),
            "two partitions each",
        )
        assert owned(a) | owned(b) == set(range(4))
        admin = AdminClient({"bootstrap.servers": gbroker.bootstrap})
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
        assert desc.type.name == "CONSUMER" and len(desc.members) == 2
        b.close()  # leaves (epoch -1): a takes everything
        wait_for(lambda: len(owned(a)) == 4, DEADLINE_S, lambda: poll_all([a]), "a owns all")
    finally:
        a.close()


# --------------------------------------------------------------------------- CLI


def bayou(
    broker: BrokerProcess, *args: str, tz: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TZ": tz} if tz else None
    return subprocess.run(
        [sys.executable, "-m", "bayou", *args, "-b", broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_group_list_shows_lag(gbroker: BrokerProcess) -> None:
    topic, group, idle = unique_topic("lag"), unique_topic("g"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 2)
    produce_all(gbroker.bootstrap, topic, make_messages(10, 2))  # 5 in each partition
    for name, offsets in ((group, [(0, 2), (1, 5)]), (idle, [])):
        c = Consumer(
            {"bootstrap.servers": gbroker.bootstrap, "group.id": name, "enable.auto.commit": False}
        )
        if offsets:
            c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets], asynchronous=False)
        c.close()
    listed = bayou(gbroker, "group", "list")
    assert listed.returncode == 0, listed.stderr
    lags = {line.split()[0]: line.split()[-1] for line in listed.stdout.splitlines()}
    assert lags[group] == "3"  # 5 - 2 in partition 0, nothing left in partition 1


def test_a_time_without_a_zone_is_utc_in_every_command(gbroker: BrokerProcess) -> None:
    """Run on a machine whose local time is UTC+5:30: a zone-less time still means UTC."""
    topic, group = unique_topic("utc"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 3_600_000
    produce_all(gbroker.bootstrap, topic, make_messages(100, 1, base_ts=base))
    naive = datetime.fromtimestamp((base + 60) / 1000, UTC).replace(tzinfo=None).isoformat()
    india = "IST-5:30"  # POSIX TZ: needs no time zone database
    consumed = bayou(gbroker, "consume", topic, "--from", naive, "--format", "json", tz=india)
    assert consumed.returncode == 0, consumed.stderr
    assert [json.loads(line)["offset"] for line in consumed.stdout.splitlines()] == list(
        range(60, 100)
    )
    plan = bayou(
        gbroker, "group", "reset-offsets", group, "--topic", topic, "--to-datetime", naive, tz=india
    )
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[1].split()[-1] == "60", plan.stdout
    trimmed = bayou(gbroker, "topic", "trim", topic, "--before", naive, tz=india)
    assert trimmed.returncode == 0, trimmed.stderr
    assert trimmed.stdout.strip() == "Partition 0: earliest offset is now 60."


def test_reset_offsets_to_datetime_replays_from_that_time(gbroker: BrokerProcess) -> None:
    topic, group = unique_topic("reset"), unique_topic("g")
    create_topic(gbroker.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 3_600_000
    produce_all(gbroker.bootstrap, topic, make_messages(100, 1, base_ts=base))
    c = group_consumer(gbroker.bootstrap, group, **{"enable.auto.commit": False})
    c.subscribe([topic])
    seen: dict[int, Any] = {}
    wait_for(
        lambda: len(seen.get(id(c), [])) == 100,
        DEADLINE_S,
        lambda: poll_all([c], seen),
        "100 messages",
    )
    c.commit(asynchronous=False)
    refused = bayou(
        gbroker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute"
    )
    assert refused.returncode == 1 and "stop its consumers" in refused.stderr
    c.close()
    assert group in bayou(gbroker, "group", "list").stdout
    when = datetime.fromtimestamp((base + 60) / 1000, UTC).isoformat()
    dry = bayou(gbroker, "group", "reset-offsets", group, "--topic", topic, "--to-datetime", when)
    assert dry.returncode == 0 and "Dry run" in dry.stdout and " 60" in dry.stdout
    assert " 100 " in bayou(gbroker, "group", "describe", group).stdout  # nothing changed
    done = bayou(
        gbroker,
        "group",
        "reset-offsets",
        group,
        "--topic",
        topic,
        "--to-datetime",
        when,
        "--execute",
    )
    assert done.returncode == 0, done.stderr
    described = bayou(gbroker, "group", "describe", group, "--format", "json")
    rows = json.loads(described.stdout)["partitions"]
    assert [(r["committed"], r["log_end"], r["lag"]) for r in rows] == [(60, 100, 40)]
    c2 = group_consumer(gbroker.bootstrap, group, **{"enable.auto.commit": False})
    c2.subscribe([topic])
    seen2: dict[int, Any] = {}
    wait_for(
        lambda: len(seen2.get(id(c2), [])) == 40,
        DEADLINE_S,
        lambda: poll_all([c2], seen2),
        "the replayed messages",
    )
    assert [o for _p, o in seen2[id(c2)]] == list(range(60, 100))
    c2.close()
    assert bayou(gbroker, "group", "delete", group).returncode == 0
    assert group not in bayou(gbroker, "group", "list").stdout
