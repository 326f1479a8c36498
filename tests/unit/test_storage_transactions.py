"""Transactions in the local segment log across crashes: after a kill -9 (nothing closed,
no checkpoint) or with a lost ``.txnindex`` file, recovery reopens the transactions still
open — the last stable offset is where it was — and puts every ABORT back into the
aborted-transaction index."""

from __future__ import annotations

from pathlib import Path

from bayou.protocol.kafka import records as R
from bayou.storage.engine import AbortedTxn
from bayou.storage.log import PartitionLog
from tests.unit.test_storage_log import open_log

SMALL = {"segment.bytes": 400, "index.interval.bytes": 100}


def txn(pid: int, seq: int, n: int = 2) -> bytes:
    return R.build_batch(
        [R.Record(1000 + i, b"k", b"v" * 40) for i in range(n)],
        producer_id=pid,
        producer_epoch=0,
        base_sequence=seq,
        is_transactional=True,
    )


def write_history(log: PartitionLog) -> list[AbortedTxn]:
    log.append(txn(1, 0))  # 0-1 producer 1
    log.append(txn(2, 0))  # 2-3 producer 2
    log.write_marker(1, 0, False, 0)  # 4: abort 1
    log.append(txn(1, 2))  # 5-6 producer 1 again
    log.write_marker(2, 0, True, 0)  # 7: commit 2
    log.write_marker(1, 0, False, 0)  # 8: abort 1 again
    log.append(txn(3, 0))  # 9-10 producer 3: open at the crash
    return log.aborted_transactions(0, log.log_end_offset)


def crash(log: PartitionLog) -> None:
    """kill -9: the files stay as written, nothing is closed cleanly or checkpointed."""
    log.close_without_flush()


def test_kill_minus_9_recovers_open_transactions_and_aborts(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p", **SMALL)
    aborted = write_history(log)
    assert [(a.producer_id, a.first_offset, a.last_offset) for a in aborted] == [
        (1, 0, 4),
        (1, 5, 8),
    ]
    assert log.last_stable_offset == 9 and len(log.segments) > 1
    crash(log)
    again = open_log(tmp_path / "p", **SMALL)
    assert again.aborted_transactions(0, again.log_end_offset) == aborted
    assert again.last_stable_offset == 9
    assert again.producer_state.producers[3].current_txn_first_offset == 9
    again.write_marker(3, 0, True, 0)
    assert again.last_stable_offset == again.log_end_offset == 12
    again.close()


def test_an_unflushed_txnindex_is_rebuilt_and_a_checkpoint_keeps_open_transactions(
    tmp_path: Path,
) -> None:
    log = open_log(tmp_path / "p", **SMALL)
    log.append(txn(3, 0))  # 0-1 producer 3: still open at the crash
    log.flush()
    log.checkpoint()  # the snapshot (version 2) holds producer 3's open transaction
    log.append(txn(1, 0))  # 2-3 producer 1
    log.write_marker(1, 0, False, 0)  # 4: abort, after the recovery point
    log.append(txn(2, 0))  # 5-6 producer 2
    log.write_marker(2, 0, False, 0)  # 7: abort
    aborted = log.aborted_transactions(0, log.log_end_offset)
    assert [(a.producer_id, a.first_offset) for a in aborted] == [(1, 2), (2, 5)]
    crash(log)
    for index in (tmp_path / "p").glob("*.txnindex"):
        index.unlink()  # never fsynced: a power cut may lose it
    again = open_log(tmp_path / "p", **SMALL)
    assert again.last_stable_offset == 0  # producer 3, from the snapshot
    assert again.aborted_transactions(0, again.log_end_offset) == aborted
    again.close()
