"""KIP-848 consumer groups and the server-side assignors, on a fake clock."""

from __future__ import annotations

import itertools
from typing import Any

from bayou.core.groups import ConsumerState, GroupCoordinator, GroupSettings
from bayou.core.groups.assignors import range_assign, uniform_assign
from bayou.core.groups.model import ConsumerGroup, ConsumerHeartbeatResponse, Partitions
from bayou.errors import ErrorCode as E

TOPICS = {"t": 6}


class Harness:
    def __init__(self) -> None:
        ids = itertools.count(1)
        self.c = GroupCoordinator(
            GroupSettings(consumer_session_timeout_ms=6000), new_id=lambda: f"m{next(ids)}"
        )
        self.now = 1_000_000
        self.owned: dict[str, Partitions] = {}
        self.epochs: dict[str, int] = {}

    def hb(
        self,
        member: str,
        epoch: int | None = None,
        subscribed: list[str] | None = None,
        owned: Partitions | None = None,
        assignor: str | None = None,
        instance: str | None = None,
    ) -> ConsumerHeartbeatResponse:
        result = self.c.consumer_heartbeat(
            self.now,
            group_id="g",
            member_id=member,
            member_epoch=self.epochs.get(member, 0) if epoch is None else epoch,
            instance_id=instance,
            rack_id=None,
            rebalance_timeout_ms=10_000,
            subscribed=subscribed,
            server_assignor=assignor,
            owned=self.owned.get(member, {}) if owned is None else owned,
            client_id="c",
            client_host="/h",
            topic_sizes=TOPICS,
        )
        resp = result.response
        assert resp is not None
        if resp.error == E.NONE and resp.member_id:
            self.epochs[resp.member_id] = resp.member_epoch
            if resp.assignment is not None:
                self.owned[resp.member_id] = resp.assignment  # a client applies it at once
        return resp

    def settle(self, members: list[str], rounds: int = 10) -> None:
        for _ in range(rounds):
            for m in members:
                self.hb(m)

    def group(self) -> ConsumerGroup:
        g = self.c.group("g")
        assert isinstance(g, ConsumerGroup)
        return g


def count(parts: Partitions) -> int:
    return sum(len(p) for p in parts.values())


def test_members_converge_on_a_balanced_assignment_with_no_partition_owned_twice() -> None:
    h = Harness()
    members = [h.hb(f"m{i}", 0, ["t"]).member_id or "" for i in range(3)]
    h.settle(members)
    assert sorted(count(h.owned[m]) for m in members) == [2, 2, 2]
    assert h.group().state == ConsumerState.STABLE
    union = [p for m in members for p in h.owned[m].get("t", ())]
    assert sorted(union) == list(range(6))


def test_joining_member_only_takes_what_must_move_and_never_double_owns() -> None:
    h = Harness()
    a = h.hb("a", 0, ["t"]).member_id or ""
    h.settle([a])
    assert count(h.owned[a]) == 6
    b = h.hb("b", 0, ["t"]).member_id or ""
    for _ in range(10):
        for m in (a, b):
            h.hb(m)
            both = set(h.owned.get(a, {}).get("t", ())) & set(h.owned.get(b, {}).get("t", ()))
            assert not both  # a partition is released before it is handed on
    assert count(h.owned[a]) == count(h.owned[b]) == 3


def test_fencing_unknown_member_and_stale_epochs() -> None:
    h = Harness()
    a = h.hb("a", 0, ["t"]).member_id or ""
    assert h.hb("zzz", 5).error == E.UNKNOWN_MEMBER_ID
    assert h.hb(a, h.epochs[a] + 1).error == E.FENCED_MEMBER_EPOCH
    assert h.hb(a, 0, ["t"], assignor="bogus").error == E.UNSUPPORTED_ASSIGNOR


def test_session_timeout_removes_a_silent_member_and_its_partitions_move() -> None:
    h = Harness()
    a = h.hb("a", 0, ["t"]).member_id or ""
    b = h.hb("b", 0, ["t"]).member_id or ""
    h.settle([a, b])
    for _ in range(4):  # b is silent for 8 s > 6 s
        h.now += 2000
        h.c.tick(h.now)
        h.hb(a)
    h.settle([a])
    assert b not in h.group().members and count(h.owned[a]) == 6


def test_leave_and_static_rejoin_keeps_the_assignment() -> None:
    h = Harness()
    a = h.hb("a", 0, ["t"], instance="i-a").member_id or ""
    b = h.hb("b", 0, ["t"]).member_id or ""
    h.settle([a, b])
    before = h.owned[a]
    epoch = h.group().epoch
    assert h.hb(a, -2, instance="i-a").member_epoch == -2
    resp = h.hb("a2", 0, ["t"], instance="i-a")
    assert resp.error == E.NONE and resp.assignment == before
    assert h.group().epoch == epoch  # no rebalance
    assert h.hb(b, -1).member_epoch == -1
    assert b not in h.group().members


def test_uniform_is_sticky_and_range_is_by_ranges() -> None:
    subs = {"a": ("t",), "b": ("t",)}
    first = uniform_assign(subs, {"t": 6}, {})
    assert sorted(count(v) for v in first.values()) == [3, 3]
    third = uniform_assign({**subs, "c": ("t",)}, {"t": 6}, first)
    for m in ("a", "b"):  # each keeps two of the three it had
        assert len(third[m]["t"] & first[m]["t"]) == 2
    assert range_assign({"b": ("t",), "a": ("t",)}, {"t": 5}) == {
        "a": {"t": frozenset({0, 1, 2})},
        "b": {"t": frozenset({3, 4})},
    }


def test_replaying_the_emitted_records_rebuilds_the_group() -> None:
    h = Harness()
    records: list[Any] = []
    for name in ("a", "b"):
        records.extend(
            h.c.consumer_heartbeat(
                h.now,
                group_id="g",
                member_id=name,
                member_epoch=0,
                instance_id=None,
                rack_id=None,
                rebalance_timeout_ms=1000,
                subscribed=["t"],
                server_assignor=None,
                owned=None,
                client_id="c",
                client_host="/h",
                topic_sizes=TOPICS,
            ).records
        )
    fresh = GroupCoordinator()
    fresh.load(records, h.now)
    assert fresh.durable_view() == h.c.durable_view()
