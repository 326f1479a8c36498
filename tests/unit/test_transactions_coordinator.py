"""The transaction coordinator's state machine, driven with a fake clock (no I/O).

Every test replays the records the coordinator emitted — through the state log's encoding —
into a fresh coordinator and checks it reproduces the live durable state.
"""

from __future__ import annotations

from typing import Any

import pytest

from bayou.core.transactions import (
    OFFSETS_PARTITION,
    MarkerJob,
    Result,
    TransactionCoordinator,
    TxnMetadata,
    TxnRecord,
    TxnSettings,
    TxnState,
)
from bayou.core.transactions.store import decode, encode
from bayou.errors import ErrorCode

E = ErrorCode
S = TxnState
T0 = 1_000_000
TID = "app-1"


class Harness:
    def __init__(self, settings: TxnSettings | None = None) -> None:
        self.c = TransactionCoordinator(settings)
        self.records: list[TxnRecord] = []
        self.next_pid = 1000

    def take(self, result: Result[Any]) -> Any:
        self.records.extend(decode(encode(r)) for r in result.records)
        return result.response

    def init(
        self,
        now: int = T0,
        tid: str = TID,
        timeout: int = 60_000,
        expected: tuple[int, int] | None = None,
    ) -> Any:
        fresh = None
        if self.c.wants_producer_id(tid):
            fresh = self.next_pid
            self.next_pid += 1
        result = self.c.init_producer_id(now, tid, timeout, expected, fresh)
        self.take(result)
        return result

    def add(
        self, now: int, pid: int, epoch: int, *parts: tuple[str, int], tid: str = TID
    ) -> ErrorCode:
        return self.take(self.c.add_partitions(now, tid, pid, epoch, parts))  # type: ignore[no-any-return]

    def end(
        self, now: int, pid: int, epoch: int, commit: bool, tid: str = TID
    ) -> tuple[ErrorCode, list[MarkerJob]]:
        result = self.c.end_txn(now, tid, pid, epoch, commit)
        return self.take(result), result.markers

    def complete(self, now: int, job: MarkerJob) -> None:
        self.take(self.c.complete(now, job))

    def check_replay(self) -> None:
        fresh = TransactionCoordinator(self.c.settings)
        fresh.load(self.records)
        assert fresh.durable_view() == self.c.durable_view()


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_init_gives_a_producer_id_at_epoch_zero_then_bumps(h: Harness) -> None:
    first = h.init().response
    assert (first.error, first.producer_id, first.producer_epoch) == (E.NONE, 1000, 0)
    again = h.init(T0 + 1).response
    assert (again.error, again.producer_id, again.producer_epoch) == (E.NONE, 1000, 1)
    assert h.c.txns[TID].state == S.EMPTY
    h.check_replay()


def test_init_refuses_bad_timeouts_and_empty_ids(h: Harness) -> None:
    assert h.init(timeout=0).response.error == E.INVALID_TRANSACTION_TIMEOUT
    assert h.init(timeout=900_001).response.error == E.INVALID_TRANSACTION_TIMEOUT
    assert h.init(tid="").response.error == E.INVALID_REQUEST
    assert h.c.txns == {}


def test_a_committed_transaction_goes_prepare_then_complete(h: Harness) -> None:
    pid = h.init().response.producer_id
    assert h.add(T0 + 10, pid, 0, ("orders", 0), ("orders", 1)) == E.NONE
    meta = h.c.txns[TID]
    assert (meta.state, meta.start_ms) == (S.ONGOING, T0 + 10)
    assert h.add(T0 + 20, pid, 0, ("orders", 1), ("audit", 0)) == E.NONE
    assert h.c.txns[TID].partitions == {("orders", 0), ("orders", 1), ("audit", 0)}
    assert h.c.txns[TID].start_ms == T0 + 10  # the transaction started with its first add
    code, jobs = h.end(T0 + 30, pid, 0, True)
    assert code == E.NONE
    assert jobs == [
        MarkerJob(TID, pid, 0, True, frozenset({("orders", 0), ("orders", 1), ("audit", 0)}))
    ]
    assert h.c.txns[TID].state == S.PREPARE_COMMIT
    # while the markers are written, the producer waits
    assert h.add(T0 + 31, pid, 0, ("orders", 0)) == E.CONCURRENT_TRANSACTIONS
    assert h.end(T0 + 31, pid, 0, True)[0] == E.CONCURRENT_TRANSACTIONS
    assert h.end(T0 + 31, pid, 0, False)[0] == E.INVALID_TXN_STATE
    assert h.init(T0 + 31).response.error == E.CONCURRENT_TRANSACTIONS
    assert h.c.pending_markers() == jobs
    h.complete(T0 + 40, jobs[0])
    meta = h.c.txns[TID]
    assert (meta.state, meta.partitions) == (S.COMPLETE_COMMIT, set())
    # a retried EndTxn of the finished commit is fine; an abort of it is not
    assert h.end(T0 + 50, pid, 0, True) == (E.NONE, [])
    assert h.end(T0 + 50, pid, 0, False)[0] == E.INVALID_TXN_STATE
    # the next transaction starts from CompleteCommit
    assert h.add(T0 + 60, pid, 0, ("orders", 0)) == E.NONE
    assert h.c.txns[TID].start_ms == T0 + 60
    h.check_replay()


def test_end_of_a_transaction_never_begun_is_invalid_txn_state(h: Harness) -> None:
    pid = h.init().response.producer_id
    assert h.end(T0, pid, 0, True) == (E.INVALID_TXN_STATE, [])
    assert h.end(T0, pid, 0, False) == (E.INVALID_TXN_STATE, [])


def test_unknown_ids_and_producers_are_refused(h: Harness) -> None:
    pid = h.init().response.producer_id
    assert h.add(T0, pid, 0, ("t", 0), tid="nobody") == E.INVALID_PRODUCER_ID_MAPPING
    assert h.add(T0, pid + 7, 0, ("t", 0)) == E.INVALID_PRODUCER_ID_MAPPING
    assert h.add(T0, pid, 3, ("t", 0)) == E.PRODUCER_FENCED
    assert h.add(T0, pid, 0, ("t", 0), tid="") == E.INVALID_REQUEST
    assert h.end(T0, pid + 7, 0, True)[0] == E.INVALID_PRODUCER_ID_MAPPING


def test_a_new_producer_fences_the_ongoing_transaction(h: Harness) -> None:
    pid = h.init().response.producer_id
    h.add(T0 + 1, pid, 0, ("t", 0))
    result = h.init(T0 + 2)
    answer = result.response
    assert (answer.error, answer.fenced) == (E.CONCURRENT_TRANSACTIONS, True)
    # aborted with the bumped epoch: the abort markers fence the old producer everywhere
    assert result.markers == [MarkerJob(TID, pid, 1, False, frozenset({("t", 0)}))]
    assert h.c.txns[TID].state == S.PREPARE_ABORT
    # the zombie cannot touch it any more
    assert h.add(T0 + 3, pid, 0, ("t", 1)) == E.PRODUCER_FENCED
    assert h.end(T0 + 3, pid, 0, True)[0] == E.PRODUCER_FENCED
    h.complete(T0 + 4, result.markers[0])
    assert h.c.txns[TID].state == S.COMPLETE_ABORT
    second = h.init(T0 + 5).response
    assert (second.error, second.producer_id, second.producer_epoch) == (E.NONE, pid, 2)
    assert h.end(T0 + 6, pid, 1, True)[0] == E.PRODUCER_FENCED
    h.check_replay()


def test_kip360_bump_with_the_expected_epoch_and_its_retry(h: Harness) -> None:
    pid = h.init().response.producer_id  # epoch 0
    bumped = h.init(T0 + 1, expected=(pid, 0)).response
    assert (bumped.error, bumped.producer_epoch) == (E.NONE, 1)
    # the same request retried (its answer was lost): the same epoch, no second bump
    retried = h.init(T0 + 2, expected=(pid, 0)).response
    assert (retried.error, retried.producer_epoch) == (E.NONE, 1)
    # an epoch that is neither the current nor the previous one is a zombie
    assert h.init(T0 + 3, expected=(pid, 7)).response.error == E.PRODUCER_FENCED
    assert h.init(T0 + 3, expected=(pid + 1, 1)).response.error == E.PRODUCER_FENCED
    h.check_replay()


def test_an_exhausted_epoch_gets_a_new_producer_id(h: Harness) -> None:
    pid = h.init().response.producer_id
    h.c.txns[TID].producer_epoch = 32766
    assert h.c.wants_producer_id(TID)
    rotated = h.init(T0 + 1).response
    assert rotated.error == E.NONE
    assert rotated.producer_id != pid and rotated.producer_epoch == 0
    assert h.c.txns[TID].last_producer_id == pid


def test_timed_out_transactions_are_fenced_and_aborted_on_the_check_interval() -> None:
    h = Harness(TxnSettings(abort_check_interval_ms=10_000))
    pid = h.init(timeout=5_000).response.producer_id
    h.add(T0, pid, 0, ("t", 0))
    assert h.take(h.c.tick(T0)) is None  # arms the timers
    assert h.c.next_deadline() == T0 + 10_000
    result = h.c.tick(T0 + 10_000)
    h.take(result)
    assert result.markers == [MarkerJob(TID, pid, 1, False, frozenset({("t", 0)}))]
    assert h.c.txns[TID].state == S.PREPARE_ABORT
    h.complete(T0 + 10_001, result.markers[0])
    assert h.c.txns[TID].state == S.COMPLETE_ABORT
    # the abandoned producer is fenced when it comes back
    assert h.end(T0 + 10_002, pid, 0, True)[0] == E.PRODUCER_FENCED
    h.check_replay()


def test_a_transaction_within_its_timeout_is_left_alone() -> None:
    h = Harness(TxnSettings(abort_check_interval_ms=1_000))
    pid = h.init(timeout=60_000).response.producer_id
    h.add(T0, pid, 0, ("t", 0))
    h.c.tick(T0)
    assert h.c.tick(T0 + 1_000).markers == []
    assert h.c.txns[TID].state == S.ONGOING


def test_idle_transactional_ids_expire_but_not_ongoing_ones() -> None:
    h = Harness(
        TxnSettings(
            transactional_id_expiration_ms=100_000,
            expiration_check_interval_ms=1_000,
            max_timeout_ms=10**9,
        )
    )
    h.init(T0, tid="idle")
    busy = h.init(T0, tid="busy", timeout=10**9).response.producer_id
    h.add(T0, busy, 0, ("t", 0), tid="busy")
    h.c.tick(T0)
    h.take(h.c.tick(T0 + 200_000))
    assert set(h.c.txns) == {"busy"}
    assert h.records[-1] == TxnRecord("idle", None)
    h.check_replay()


def test_verify_answers_per_partition(h: Harness) -> None:
    pid = h.init().response.producer_id
    assert h.c.verify(TID, pid, 0, [("t", 0)]) == {("t", 0): E.TRANSACTION_ABORTABLE}
    h.add(T0, pid, 0, ("t", 0))
    assert h.c.verify(TID, pid, 0, [("t", 0), ("t", 1)]) == {
        ("t", 0): E.NONE,
        ("t", 1): E.TRANSACTION_ABORTABLE,
    }
    assert h.c.verify(TID, pid, 1, [("t", 0)]) == {("t", 0): E.PRODUCER_FENCED}
    assert h.c.verify("x", pid, 0, [("t", 0)]) == {("t", 0): E.INVALID_PRODUCER_ID_MAPPING}
    h.end(T0, pid, 0, True)
    assert h.c.verify(TID, pid, 0, [("t", 0)]) == {("t", 0): E.CONCURRENT_TRANSACTIONS}


def test_add_offsets_adds_the_offsets_partition(h: Harness) -> None:
    pid = h.init().response.producer_id
    assert h.take(h.c.add_offsets(T0, TID, pid, 0)) == E.NONE
    assert h.c.txns[TID].partitions == {OFFSETS_PARTITION}


def test_add_offsets_records_the_groups_for_their_coordinators(h: Harness) -> None:
    pid = h.init().response.producer_id
    assert h.take(h.c.add_offsets(T0, TID, pid, 0, "g1")) == E.NONE
    assert h.take(h.c.add_offsets(T0 + 1, TID, pid, 0, "g2")) == E.NONE
    assert h.c.txns[TID].groups == {"g1", "g2"}
    h.check_replay()  # the groups are durable: a coordinator taking the id over needs them
    _code, [job] = h.end(T0 + 2, pid, 0, True)
    assert job.groups == frozenset({"g1", "g2"}) and OFFSETS_PARTITION in job.partitions
    h.complete(T0 + 3, job)
    assert h.c.txns[TID].groups == set()
    h.check_replay()


def test_a_record_without_groups_loads_with_none() -> None:
    value = {
        "producer_id": 7,
        "last_producer_id": -1,
        "producer_epoch": 0,
        "last_producer_epoch": -1,
        "timeout_ms": 60000,
        "state": "Ongoing",
        "partitions": [["__consumer_offsets", 0]],
        "start_ms": 1,
        "update_ms": 1,
    }
    assert TxnMetadata.from_value(TID, value).groups == set()


def test_list_and_describe(h: Harness) -> None:
    a = h.init(T0, tid="a").response.producer_id
    h.init(T0, tid="b")
    h.add(T0 + 100, a, 0, ("t", 0), tid="a")
    assert [x.transactional_id for x in h.c.list_transactions(T0 + 200)] == ["a", "b"]
    assert [x.transactional_id for x in h.c.list_transactions(T0 + 200, states=[S.ONGOING])] == [
        "a"
    ]
    assert [x.transactional_id for x in h.c.list_transactions(T0 + 200, producer_ids=[a])] == ["a"]
    assert [x.transactional_id for x in h.c.list_transactions(T0 + 200, min_duration_ms=50)] == [
        "a",
        "b",
    ]  # b never started: Kafka lists it too
    assert [x.transactional_id for x in h.c.list_transactions(T0 + 120, min_duration_ms=50)] == [
        "b"
    ]
    assert h.c.describe("zzz") == E.TRANSACTIONAL_ID_NOT_FOUND
    assert h.c.describe("") == E.INVALID_REQUEST
    meta = h.c.describe("a")
    assert not isinstance(meta, ErrorCode) and meta.state == S.ONGOING


def test_complete_of_a_superseded_job_writes_nothing(h: Harness) -> None:
    pid = h.init().response.producer_id
    h.add(T0, pid, 0, ("t", 0))
    _code, jobs = h.end(T0, pid, 0, False)
    h.complete(T0 + 1, jobs[0])
    before = len(h.records)
    h.complete(T0 + 2, jobs[0])  # a second writer (after a restart) finished too
    assert len(h.records) == before
