"""The share coordinator (KIP-932) as a state machine: a fake clock, a fake log of batches,
and after every operation the records written so far — through the state log's encoding —
replayed into a fresh coordinator, which must hold the same durable state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bayou.core.shares import Ack, AckType, AcquiredRange, Batch, ShareCoordinator, ShareSettings
from bayou.core.shares.assignor import simple_assign
from bayou.core.shares.partition import SharePartition
from bayou.core.shares.store import decode, encode
from bayou.errors import ErrorCode

T = "orders"
TID = "6b1f8f2e-0000-4000-8000-000000000001"


class Harness:
    """A coordinator, a clock, a log of 1-record batches ``[0, end)`` per partition, and
    the state log written so far (replayed and compared after every operation)."""

    def __init__(self, settings: ShareSettings | None = None, partitions: int = 1) -> None:
        self.settings = settings or ShareSettings()
        self.c = ShareCoordinator(self.settings)
        self.now = 1_000
        self.partitions = partitions
        self.log_start = 0
        self.log_end = 0
        self.undeliverable: set[int] = set()  # offsets holding a marker (1-offset batches)
        self.missing: set[int] = set()  # offsets compacted away
        self.written: list[Any] = []

    def bounds(self, topic: str, p: int) -> tuple[int, int] | None:
        return (self.log_start, self.log_end) if topic == T and p < self.partitions else None

    def run(self, op: Callable[[int], Any]) -> Any:
        result = op(self.now)
        self.written.extend(encode(r) for r in result.records)
        fresh = ShareCoordinator(self.settings)
        fresh.load([decode(e) for e in self.written], self.now)
        assert fresh.durable_view() == self.c.durable_view()
        return result.response

    def heartbeat(self, group: str, member: str, epoch: int, topics: list[str] | None = None):
        return self.run(
            lambda now: self.c.heartbeat(
                now,
                group_id=group,
                member_id=member,
                member_epoch=epoch,
                rack_id=None,
                subscribed=topics,
                client_id="c",
                client_host="/127.0.0.1",
                topic_sizes={T: self.partitions},
                log_bounds=self.bounds,
                topic_ids={T: TID},
            )
        )

    def join(self, group: str, member: str) -> int:
        resp = self.heartbeat(group, member, 0, [T])
        assert resp.error == ErrorCode.NONE, resp
        return resp.member_epoch

    def batches(self, read_from: int) -> list[Batch]:
        return [
            Batch(o, o, o not in self.undeliverable)
            for o in range(max(read_from, self.log_start), self.log_end)
            if o not in self.missing
        ]

    def acquire(
        self, group: str, member: str, n: int, p: int = 0, whole: bool = True
    ) -> list[AcquiredRange]:
        plan = self.c.plan(group, T, p)
        if plan is None:
            return []
        read_from, epoch = plan
        return self.run(  # type: ignore[no-any-return]
            lambda now: self.c.acquire(
                now,
                group_id=group,
                member_id=member,
                topic=T,
                partition=p,
                state_epoch=epoch,
                batches=self.batches(read_from),
                read_from=read_from,
                log_start=self.log_start,
                max_records=n,
                whole_batches=whole,
            )
        )

    def ack(self, group: str, member: str, first: int, last: int, kind: AckType, p: int = 0):
        return self.run(
            lambda now: self.c.acknowledge(
                now,
                group_id=group,
                member_id=member,
                topic=T,
                partition=p,
                acks=[Ack(first, last, (int(kind),))],
            )
        )

    def tick_to(self, when: int) -> None:
        self.now = when
        self.run(self.c.tick)

    def sp(self, group: str = "g", p: int = 0):  # type: ignore[no-untyped-def]
        return self.c.partitions[(group, T, p)]


def offsets(ranges: list[AcquiredRange]) -> list[tuple[int, int]]:
    """(offset, delivery count) of every acquired offset."""
    return [(o, r.count) for r in ranges for o in range(r.first, r.last + 1)]


def test_members_compete_for_records_and_accepted_ones_are_done() -> None:
    h = Harness()
    h.log_end = 10  # records before the group existed: latest → not delivered
    h.join("g", "a")
    h.join("g", "b")
    assert h.sp().start == 10
    h.log_end = 16
    got_a = h.acquire("g", "a", 4)
    got_b = h.acquire("g", "b", 4)
    assert offsets(got_a) == [(10, 1), (11, 1), (12, 1), (13, 1)]
    assert offsets(got_b) == [(14, 1), (15, 1)]
    assert h.acquire("g", "a", 4) == []  # nothing left to hand out
    assert h.ack("g", "b", 14, 15, AckType.ACCEPT) == ErrorCode.NONE
    assert h.sp().start == 10  # a still holds 10..13
    assert h.ack("g", "a", 10, 13, AckType.ACCEPT) == ErrorCode.NONE
    assert (h.sp().start, h.sp().end, h.sp().in_flight()) == (16, 16, 0)


def test_earliest_starts_at_the_log_start() -> None:
    h = Harness()
    h.log_start, h.log_end = 3, 8
    h.run(lambda now: h.c.alter_configs(now, "g", {"share.auto.offset.reset": "earliest"}))
    h.join("g", "a")
    assert offsets(h.acquire("g", "a", 100)) == [(o, 1) for o in range(3, 8)]


def test_released_and_expired_records_go_again_with_a_higher_count() -> None:
    h = Harness(ShareSettings(record_lock_duration_ms=30_000))
    h.join("g", "a")
    h.join("g", "b")
    h.log_end = 3
    assert offsets(h.acquire("g", "a", 10)) == [(0, 1), (1, 1), (2, 1)]
    assert h.ack("g", "a", 1, 1, AckType.RELEASE) == ErrorCode.NONE
    h.now += 10_000
    assert offsets(h.acquire("g", "b", 10)) == [(1, 2)]
    h.tick_to(h.now + 20_000)  # a's locks on 0 and 2 expire, not b's
    assert h.sp().available == 2
    assert offsets(h.acquire("g", "b", 10)) == [(0, 2), (2, 2)]
    # a's late acknowledgement is refused, whole: nothing changes
    assert h.ack("g", "a", 0, 0, AckType.ACCEPT) == ErrorCode.INVALID_RECORD_STATE
    assert h.ack("g", "b", 0, 2, AckType.ACCEPT) == ErrorCode.NONE
    assert h.sp().start == 3


def test_reject_archives_and_the_delivery_limit_archives_a_poison_record() -> None:
    h = Harness(ShareSettings(delivery_count_limit=3))
    h.join("g", "a")
    h.log_end = 2
    assert offsets(h.acquire("g", "a", 10)) == [(0, 1), (1, 1)]
    assert h.ack("g", "a", 1, 1, AckType.REJECT) == ErrorCode.NONE
    for count in (2, 3):
        assert h.ack("g", "a", 0, 0, AckType.RELEASE) == ErrorCode.NONE
        assert offsets(h.acquire("g", "a", 10)) == [(0, count)]
    assert h.ack("g", "a", 0, 0, AckType.RELEASE) == ErrorCode.NONE  # the third delivery
    assert h.acquire("g", "a", 10) == []
    assert (h.sp().start, h.sp().in_flight()) == (2, 0)


def test_a_member_leaving_or_expiring_releases_what_it_holds() -> None:
    h = Harness(ShareSettings(session_timeout_ms=45_000))
    h.join("g", "a")
    h.join("g", "b")
    h.log_end = 4
    h.acquire("g", "a", 2)
    h.acquire("g", "b", 2)
    assert h.heartbeat("g", "a", -1).error == ErrorCode.NONE
    assert h.sp().available == 2
    assert offsets(h.acquire("g", "b", 10)) == [(0, 2), (1, 2)]
    # b stops heartbeating: its session expires, its four records go back
    h.tick_to(h.now + 45_000)
    assert "b" not in h.c.groups["g"].members
    assert h.sp().available == 4
    assert h.c.groups["g"].state == "Empty"


def test_acknowledgement_rules() -> None:
    h = Harness()
    h.join("g", "a")
    h.join("g", "b")
    h.log_end = 3
    h.acquire("g", "a", 3)
    assert h.ack("g", "b", 0, 0, AckType.ACCEPT) == ErrorCode.INVALID_RECORD_STATE
    assert h.ack("g", "a", 0, 5, AckType.ACCEPT) == ErrorCode.INVALID_RECORD_STATE
    assert h.ack("g", "a", 2, 1, AckType.ACCEPT) == ErrorCode.INVALID_REQUEST
    assert h.ack("g", "a", 0, 0, AckType(4)) == ErrorCode.NONE  # RENEW keeps it acquired
    assert h.sp().acquired == 3
    per_offset = Ack(0, 2, (AckType.ACCEPT, AckType.RELEASE, AckType.GAP))
    assert (
        h.run(
            lambda now: h.c.acknowledge(
                now, group_id="g", member_id="a", topic=T, partition=0, acks=[per_offset]
            )
        )
        == ErrorCode.NONE
    )
    assert (h.sp().start, h.sp().available) == (1, 1)


def test_renew_extends_the_lock() -> None:
    h = Harness(ShareSettings(record_lock_duration_ms=10_000))
    h.join("g", "a")
    h.log_end = 1
    h.acquire("g", "a", 1)
    h.now += 8_000
    assert h.ack("g", "a", 0, 0, AckType.RENEW) == ErrorCode.NONE
    h.tick_to(h.now + 5_000)  # past the first lock, within the renewed one
    assert h.sp().acquired == 1
    h.tick_to(h.now + 5_000)
    assert h.sp().available == 1


def test_markers_and_compacted_offsets_are_never_delivered() -> None:
    h = Harness()
    h.join("g", "a")
    h.log_end = 6
    h.undeliverable = {2}
    h.missing = {4}
    assert offsets(h.acquire("g", "a", 10)) == [(0, 1), (1, 1), (3, 1), (5, 1)]
    h.ack("g", "a", 0, 1, AckType.RELEASE)
    h.missing |= {1}  # compacted meanwhile: the read proves it gone
    assert offsets(h.acquire("g", "a", 10)) == [(0, 2)]
    assert 1 not in h.sp().records


def test_retention_moves_the_start() -> None:
    h = Harness()
    h.join("g", "a")
    h.log_end = 4
    h.acquire("g", "a", 2)
    h.ack("g", "a", 0, 1, AckType.RELEASE)
    h.log_start = 3
    assert offsets(h.acquire("g", "a", 10)) == [(3, 1)]
    assert h.sp().start == 3


def test_the_in_flight_limit_bounds_new_acquisitions() -> None:
    h = Harness(ShareSettings(record_lock_partition_limit=5))
    h.join("g", "a")
    h.log_end = 20
    assert len(offsets(h.acquire("g", "a", 100))) == 5
    assert h.c.plan("g", T, 0) is None
    h.ack("g", "a", 0, 0, AckType.ACCEPT)  # the window moves by one
    assert offsets(h.acquire("g", "a", 100)) == [(5, 1)]


def test_exact_record_counts_when_asked() -> None:
    h = Harness()
    h.join("g", "a")
    h.log_end = 10
    assert len(offsets(h.acquire("g", "a", 3, whole=False))) == 3
    assert h.sp().end == 3


def test_heartbeat_errors_and_epochs() -> None:
    h = Harness()
    assert h.heartbeat("g", "", 0, [T]).error == ErrorCode.INVALID_REQUEST
    assert h.heartbeat("g", "a", 3, None).error == ErrorCode.UNKNOWN_MEMBER_ID
    epoch = h.join("g", "a")
    assert h.heartbeat("g", "a", epoch + 1, None).error == ErrorCode.FENCED_MEMBER_EPOCH
    resp = h.heartbeat("g", "a", epoch, None)
    assert (resp.error, resp.member_epoch, resp.assignment) == (ErrorCode.NONE, epoch, None)
    h.join("g", "b")
    resp = h.heartbeat("g", "a", epoch, None)  # the group moved on: a learns its epoch
    assert resp.member_epoch > epoch and resp.assignment == {T: frozenset({0})}
    foreign = ShareCoordinator(foreign=lambda g: g == "classic")
    result = foreign.heartbeat(
        0,
        group_id="classic",
        member_id="x",
        member_epoch=0,
        rack_id=None,
        subscribed=[T],
        client_id="c",
        client_host="h",
        topic_sizes={T: 1},
        log_bounds=h.bounds,
        topic_ids={T: TID},
    )
    assert result.response is not None and result.response.error == ErrorCode.GROUP_ID_NOT_FOUND


def test_groups_and_members_are_bounded() -> None:
    h = Harness(ShareSettings(max_groups=2, max_members_per_group=2))
    h.join("g1", "a")
    h.join("g1", "b")
    full = h.heartbeat("g1", "c", 0, [T])
    assert full.error == ErrorCode.GROUP_MAX_SIZE_REACHED and "group.share.max.size" in full.message
    h.join("g2", "a")
    refused = h.heartbeat("g3", "a", 0, [T])
    assert refused.error == ErrorCode.GROUP_MAX_SIZE_REACHED
    assert "group.share.max.groups" in refused.message and "g3" not in h.c.groups
    code, _ = h.run(lambda now: h.c.alter_offsets(now, "g4", {(T, 0): 0}, h.bounds, {T: TID}))
    assert code == ErrorCode.GROUP_MAX_SIZE_REACHED and "g4" not in h.c.groups
    # a member leaving makes room in its group; a deleted group makes room on the broker
    assert h.heartbeat("g1", "b", -1, None).error == ErrorCode.NONE
    h.join("g1", "c")
    assert h.heartbeat("g2", "a", -1, None).error == ErrorCode.NONE
    h.run(lambda now: h.c.delete_groups(now, ["g2"]))
    h.join("g3", "a")


def test_admin_offsets_and_deletion() -> None:
    h = Harness(partitions=2)
    h.join("g", "a")
    h.log_end = 10
    h.acquire("g", "a", 3)
    listed = h.c.offsets("g", lambda t, p: h.log_end)
    assert [(o.partition, o.start_offset, o.lag, o.acquired) for o in listed] == [
        (0, 0, 10, 3),
        (1, 0, 10, 0),
    ]
    assert h.run(lambda now: h.c.alter_offsets(now, "g", {(T, 0): 5}, h.bounds, {T: TID}))[0] == (
        ErrorCode.NON_EMPTY_GROUP
    )
    assert h.run(lambda now: h.c.delete_groups(now, ["g"])) == {"g": ErrorCode.NON_EMPTY_GROUP}
    h.heartbeat("g", "a", -1)
    code, per = h.run(lambda now: h.c.alter_offsets(now, "g", {(T, 0): 5}, h.bounds, {T: TID}))
    assert (code, per) == (ErrorCode.NONE, {(T, 0): ErrorCode.NONE})
    assert (h.sp().start, h.sp().in_flight()) == (5, 0)
    code2, per2 = h.run(lambda now: h.c.delete_offsets(now, "g", [T, "nope"]))
    assert code2 == ErrorCode.NONE
    assert per2 == {T: ErrorCode.NONE, "nope": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    assert ("g", T, 0) not in h.c.partitions
    assert h.run(lambda now: h.c.delete_groups(now, ["g", "other"])) == {"g": ErrorCode.NONE}
    assert h.c.groups == {}


@pytest.mark.parametrize(
    ("members", "partitions", "per_member", "per_partition"),
    [
        (1, 4, {4}, {1}),
        (2, 4, {2}, {1}),
        (3, 4, {1, 2}, {1}),
        (3, 1, {1}, {3}),
        (5, 2, {1, 2}, {3}),
    ],
)
def test_simple_assignor_serves_every_partition_and_every_member(
    members: int, partitions: int, per_member: set[int], per_partition: set[int]
) -> None:
    subs = {f"m{i}": (T,) for i in range(members)}
    out = simple_assign(subs, {T: partitions}, {})
    assert {len(a.get(T, ())) for a in out.values()} == per_member
    sharing = [sum(p in a.get(T, ()) for a in out.values()) for p in range(partitions)]
    assert set(sharing) == per_partition
    # sticky: the same inputs with the result as the current assignment change nothing
    assert simple_assign(subs, {T: partitions}, out) == out


def test_purge_drops_what_is_ready_and_leaves_what_members_hold() -> None:
    h = Harness()
    h.join("g", "a")
    h.log_end = 6
    assert offsets(h.acquire("g", "a", 3, whole=False)) == [(0, 1), (1, 1), (2, 1)]
    assert h.ack("g", "a", 1, 1, AckType.RELEASE) == ErrorCode.NONE  # 1 ready again
    # ready: 1 (released) and 3..5 (never handed out); 0 and 2 stay with a
    assert h.run(lambda now: h.c.purge(now, "g", lambda t, p: h.log_end)) == 4
    assert (h.sp().start, h.sp().end, sorted(h.sp().records)) == (0, 6, [0, 2])
    h.log_end = 8
    assert offsets(h.acquire("g", "a", 10)) == [(6, 1), (7, 1)]  # only what came after
    assert h.ack("g", "a", 0, 0, AckType.ACCEPT) == ErrorCode.NONE  # still a's to settle
    assert h.ack("g", "a", 2, 2, AckType.ACCEPT) == ErrorCode.NONE
    assert h.ack("g", "a", 6, 7, AckType.ACCEPT) == ErrorCode.NONE
    assert (h.sp().start, h.sp().in_flight()) == (8, 0)


def test_lock_entries_of_settled_records_do_not_pile_up() -> None:
    sp = SharePartition(T, 0, TID, 0)
    lock = 1_800_000

    def take(offset: int) -> None:
        ranges, _changed = sp.acquire(
            1_000,
            "a",
            [Batch(offset, offset, True)],
            read_from=offset,
            max_records=1,
            lock_ms=lock,
            limit=10_000,
            whole_batches=False,
        )
        assert offsets(ranges) == [(offset, 1)]

    take(0)  # held throughout: the window never empties
    for offset in range(1, 5001):  # one at a time, accepted at once
        take(offset)
        code, _ = sp.acknowledge(
            1_000,
            "a",
            [Ack(offset, offset, (int(AckType.ACCEPT),))],
            delivery_limit=5,
            lock_ms=lock,
        )
        assert code == ErrorCode.NONE
    assert len(sp._locks) <= 1024 + 4 + 1
    assert sp.next_deadline() == 1_000 + lock  # the held record's lock is still there
    assert sp.expire(1_000 + lock, 5) == 1 and sp.available == 1


def test_forget_group_removes_partitions_created_before_anyone_joined_and_configs() -> None:
    h = Harness()
    h.log_end = 4
    h.run(lambda now: h.c.alter_configs(now, "q", {"share.delivery.count.limit": "7"}))
    assert h.run(lambda now: h.c.ensure_partition(now, "q", T, 0, h.bounds, TID, reset="earliest"))
    assert h.sp("q").start == 0
    h.join("q", "a")
    assert h.run(lambda now: h.c.forget_group(now, "q")) is False  # a member: kept
    h.heartbeat("q", "a", -1)
    assert h.run(lambda now: h.c.forget_group(now, "q")) is True
    assert h.c.durable_view() == {"groups": {}, "partitions": {}, "configs": {}}
