"""Offsets committed inside transactions (TxnOffsetCommit, KIP-447) in the group coordinator:
pending until the transaction's outcome, fenced like OffsetCommit, durable by replay."""

from __future__ import annotations

from typing import Any

from bayou.core.groups import GroupCoordinator, OffsetCommit, Result
from bayou.core.groups.records import GroupRecord, decode, encode_key, encode_value
from bayou.errors import ErrorCode as E

PID, OTHER = 4000, 4001


class Log:
    def __init__(self) -> None:
        self.c = GroupCoordinator()
        self.records: list[GroupRecord] = []

    def take(self, result: Result[Any]) -> Any:
        self.records.extend(decode(encode_key(r.key), encode_value(r)) for r in result.records)
        return result.response

    def txn_commit(
        self,
        now: int,
        pid: int,
        offsets: dict[tuple[str, int], int],
        group: str = "g",
        generation: int = -1,
        member: str = "",
    ) -> list[E]:
        return self.take(
            self.c.txn_commit_offsets(  # type: ignore[no-any-return]
                now,
                group_id=group,
                producer_id=pid,
                generation=generation,
                member_id=member,
                instance_id=None,
                offsets=[OffsetCommit(t, p, o, metadata="tx") for (t, p), o in offsets.items()],
            )
        )

    def commit(self, now: int, offsets: dict[tuple[str, int], int], group: str = "g") -> None:
        self.take(
            self.c.commit_offsets(
                now,
                group_id=group,
                generation=-1,
                member_id="",
                instance_id=None,
                offsets=[OffsetCommit(t, p, o) for (t, p), o in offsets.items()],
            )
        )

    def complete(self, now: int, pid: int, commit: bool) -> int:
        return self.take(self.c.complete_txn(now, pid, commit))  # type: ignore[no-any-return]

    def offsets(self, group: str = "g", stable: bool = False) -> dict[tuple[str, int], Any]:
        _error, fetched = self.c.fetch_offsets(group, [("in", 0), ("in", 1)], require_stable=stable)
        return {(f.topic, f.partition): f.offset if f.error == E.NONE else f.error for f in fetched}

    def check_replay(self) -> None:
        fresh = GroupCoordinator()
        fresh.load(self.records, 0)
        assert fresh.durable_view() == self.c.durable_view()


def test_pending_offsets_are_invisible_until_the_commit() -> None:
    log = Log()
    log.commit(0, {("in", 0): 3})
    assert log.txn_commit(1, PID, {("in", 0): 10, ("in", 1): 20}) == [E.NONE, E.NONE]
    assert log.offsets() == {("in", 0): 3, ("in", 1): -1}
    # a read_committed consumer (RequireStable) waits for the transaction
    assert log.offsets(stable=True) == {
        ("in", 0): E.UNSTABLE_OFFSET_COMMIT,
        ("in", 1): E.UNSTABLE_OFFSET_COMMIT,
    }
    log.check_replay()
    assert log.complete(2, PID, commit=True) == 2
    assert log.offsets(stable=True) == {("in", 0): 10, ("in", 1): 20}
    assert log.c.pending == {}
    log.check_replay()


def test_an_abort_drops_the_pending_offsets() -> None:
    log = Log()
    log.commit(0, {("in", 0): 3})
    log.txn_commit(1, PID, {("in", 0): 10})
    assert log.complete(2, PID, commit=False) == 0
    assert log.offsets(stable=True) == {("in", 0): 3, ("in", 1): -1}
    log.check_replay()


def test_transactions_of_other_producers_are_separate() -> None:
    log = Log()
    log.txn_commit(1, PID, {("in", 0): 10})
    log.txn_commit(2, OTHER, {("in", 1): 20})
    log.complete(3, OTHER, commit=True)
    assert log.offsets() == {("in", 0): -1, ("in", 1): 20}
    assert log.offsets(stable=True)[("in", 0)] == E.UNSTABLE_OFFSET_COMMIT
    log.check_replay()


def test_a_later_regular_commit_wins_over_an_earlier_pending_one() -> None:
    log = Log()
    log.txn_commit(1, PID, {("in", 0): 10})
    log.commit(2, {("in", 0): 50})
    log.complete(3, PID, commit=True)
    assert log.offsets() == {("in", 0): 50, ("in", 1): -1}
    log.check_replay()


def test_a_pending_offset_survives_a_replay_and_then_commits() -> None:
    log = Log()
    log.txn_commit(1, PID, {("in", 0): 10})
    reloaded = GroupCoordinator()
    reloaded.load(log.records, 0)
    result = reloaded.complete_txn(2, PID, True)
    assert result.response == 1
    assert reloaded.fetch_offsets("g", [("in", 0)])[1][0].offset == 10


def test_fenced_by_generation_and_member_like_offset_commit() -> None:
    log = Log()
    # an unknown group with a generation: ILLEGAL_GENERATION (Kafka's TxnOffsetCommit)
    assert log.txn_commit(1, PID, {("in", 0): 1}, group="nope", generation=2, member="m") == [
        E.ILLEGAL_GENERATION
    ]
    assert log.c.pending == {}


def test_deleting_the_group_drops_its_pending_offsets() -> None:
    log = Log()
    log.txn_commit(1, PID, {("in", 0): 10})
    assert log.take(log.c.delete_groups(2, ["g"])) == [E.NONE]
    log.complete(3, PID, commit=True)
    assert log.offsets() == {("in", 0): -1, ("in", 1): -1}
    log.check_replay()


def test_offsets_with_a_pending_transaction_do_not_expire() -> None:
    log = Log()
    log.commit(0, {("in", 0): 3})
    log.txn_commit(1, PID, {("in", 0): 10})
    week = 8 * 24 * 3600 * 1000
    log.take(log.c.tick(0))
    log.take(log.c.tick(week))
    assert log.offsets() == {("in", 0): 3, ("in", 1): -1}
    assert log.c.group("g") is not None
