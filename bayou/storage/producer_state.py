"""Idempotent-producer state of one partition: duplicate and sequence checks.

Theory of operation
-------------------
An idempotent producer stamps every batch with its producer id, epoch and the sequence
number of the batch's first record (per partition, wrapping from 2**31-1 to 0).  For each
producer id the partition keeps the epoch and the metadata of its last five batches
(Kafka's ``max.in.flight.requests.per.connection`` limit): first and last sequence, first
and last offset, and the LogAppendTime it got.

``check`` decides, before anything is written, what a produce call's batches mean:

* same epoch, sequences equal to one of the five cached batches → a retry of a batch that
  was already written: the caller writes nothing and answers with the cached offsets;
* an epoch lower than the known one → ``InvalidProducerEpoch`` (a fenced zombie);
* a higher epoch, or a producer id this partition has never seen, must start at sequence 0,
  else ``OutOfOrderSequence``.  (Kafka answers UNKNOWN_PRODUCER_ID in some cases where a
  producer's state was removed by retention; Bayou has no retention yet, so an unknown id
  with a non-zero sequence is a gap: ``OutOfOrderSequence``.)
* otherwise the first sequence must follow the last one, else ``OutOfOrderSequence``.

Control batches (transaction markers) carry no sequence: they only check and advance the
epoch; a marker with a new epoch resets the expected sequence to 0.  ``update`` records a
batch once it is written, and is also how the state is rebuilt on startup: the snapshot
taken at the last checkpoint (``save``/``load``, state as of an offset) plus a replay of
the batch headers after that offset.

Transactions (KIP-98): a producer's first transactional data batch opens its transaction
(``current_txn_first_offset``, also kept in ``ongoing`` for the last stable offset); its
COMMIT or ABORT marker (``update`` with ``marker``) closes it and returns the completed
transaction, which for an abort becomes an entry of the aborted-transaction index.  The
*first unstable offset* is the smallest first offset of the open transactions: readers at
READ_COMMITTED stop there.  Open transactions are in the snapshot, so the last stable offset
survives a restart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bayou.errors import InvalidProducerEpoch, OutOfOrderSequence
from bayou.protocol.kafka.records import CONTROL_ABORT, BatchHeader
from bayou.storage.files import read_json, write_json

CACHED_BATCHES = 5
_SEQUENCE_MOD = 2**31
_SNAPSHOT_VERSION = 2
_SNAPSHOT_VERSIONS = (1, 2)  # version 1 had no open transactions


class BatchMeta(NamedTuple):
    """What a retried batch must be answered with."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    append_time_ms: int


@dataclass
class ProducerEntry:
    epoch: int
    batches: deque[BatchMeta] = field(default_factory=lambda: deque(maxlen=CACHED_BATCHES))
    current_txn_first_offset: int = -1  # the open transaction's first offset, -1: none
    coordinator_epoch: int = -1  # of the last marker written for it
    # the max timestamp of its last batch (DescribeProducers); kept in memory only, so -1
    # ("unknown") for a producer restored from a snapshot until it writes again
    last_timestamp: int = -1

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def find_duplicate(self, header: BatchHeader) -> BatchMeta | None:
        for meta in self.batches:
            if meta.first_seq == header.base_sequence and meta.last_seq == header.last_sequence:
                return meta
        return None


# producer id → (epoch, last batches, open transaction's first offset, coordinator epoch)
Snapshot = dict[int, tuple[int, tuple[BatchMeta, ...], int, int]]


class CompletedTxn(NamedTuple):
    """A transaction a marker closed: the producer's records in [first, last] (last = the
    marker's offset) are committed or aborted."""

    producer_id: int
    first_offset: int
    last_offset: int
    aborted: bool


class ProducerStateManager:
    """Producer id → ``ProducerEntry`` for one partition."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        self.ongoing: dict[int, int] = {}  # producer id → its open transaction's first offset

    def first_unstable_offset(self) -> int | None:
        """The first offset of the earliest open transaction (None: none is open)."""
        return min(self.ongoing.values()) if self.ongoing else None

    def check(self, headers: Sequence[BatchHeader]) -> BatchMeta | None:
        """Validate a produce call's batches; return the cached metadata if it is a retry.

        Raises InvalidProducerEpoch or OutOfOrderSequence; changes nothing.
        """
        pending: dict[int, tuple[int, int]] = {}  # pid → (epoch, last seq) after this call
        for h in headers:
            pid = h.producer_id
            if pid < 0:
                continue
            entry = self.producers.get(pid)
            if pid in pending:
                known: tuple[int, int] | None = pending[pid]
            else:
                known = (entry.epoch, entry.last_seq) if entry is not None else None
            if known is not None and h.producer_epoch < known[0]:
                raise InvalidProducerEpoch(
                    f"producer {pid} epoch {h.producer_epoch} is older than {known[0]}"
                )
            if h.is_control:
                same = known is not None and known[0] == h.producer_epoch
                pending[pid] = (h.producer_epoch, known[1] if same and known else -1)
                continue
            if h.base_sequence < 0:
                continue
            if known is None or h.producer_epoch > known[0] or known[1] < 0:
                expected = 0
            else:
                if entry is not None and pid not in pending:
                    duplicate = entry.find_duplicate(h)
                    if duplicate is not None:
                        return duplicate
                expected = (known[1] + 1) % _SEQUENCE_MOD
            if h.base_sequence != expected:
                raise OutOfOrderSequence(
                    f"producer {pid} epoch {h.producer_epoch}: sequence {h.base_sequence}, "
                    f"expected {expected}"
                )
            pending[pid] = (h.producer_epoch, h.last_sequence)
        return None

    def update(
        self,
        h: BatchHeader,
        base_offset: int,
        last_offset: int,
        append_time_ms: int,
        *,
        marker: int | None = None,
        coordinator_epoch: int = -1,
    ) -> CompletedTxn | None:
        """Record a batch that was written (or replayed from the log).  For a control batch
        ``marker`` is its type (``records.CONTROL_COMMIT``/``CONTROL_ABORT``); the
        transaction it closes is returned."""
        pid = h.producer_id
        if pid < 0:
            return None
        entry = self.producers.get(pid)
        if entry is None or entry.epoch != h.producer_epoch:
            previous = entry
            entry = self.producers[pid] = ProducerEntry(h.producer_epoch)
            if previous is not None:  # a new epoch (a marker's bump) keeps an open txn
                entry.current_txn_first_offset = previous.current_txn_first_offset
                entry.coordinator_epoch = previous.coordinator_epoch
        entry.last_timestamp = append_time_ms if append_time_ms >= 0 else h.max_timestamp
        if h.is_control:
            return self._complete(pid, entry, last_offset, marker, coordinator_epoch)
        if h.is_transactional and entry.current_txn_first_offset < 0:
            entry.current_txn_first_offset = base_offset
            self.ongoing[pid] = base_offset
        if h.base_sequence >= 0:
            entry.batches.append(
                BatchMeta(
                    h.base_sequence, h.last_sequence, base_offset, last_offset, append_time_ms
                )
            )
        return None

    def _complete(
        self,
        pid: int,
        entry: ProducerEntry,
        marker_offset: int,
        marker: int | None,
        coordinator_epoch: int,
    ) -> CompletedTxn | None:
        if coordinator_epoch >= 0:
            entry.coordinator_epoch = coordinator_epoch
        first = entry.current_txn_first_offset
        entry.current_txn_first_offset = -1
        self.ongoing.pop(pid, None)
        if first < 0:
            return None  # a marker for a partition the transaction wrote nothing to
        return CompletedTxn(pid, first, marker_offset, marker == CONTROL_ABORT)

    def snapshot(self) -> Snapshot:
        """An immutable copy of the state (cheap: five small tuples per producer)."""
        return {
            pid: (e.epoch, tuple(e.batches), e.current_txn_first_offset, e.coordinator_epoch)
            for pid, e in self.producers.items()
        }

    def restore(self, snap: Snapshot) -> None:
        self.producers = {
            pid: ProducerEntry(epoch, deque(batches, maxlen=CACHED_BATCHES), txn, coord)
            for pid, (epoch, batches, txn, coord) in snap.items()
        }
        self.ongoing = {
            pid: e.current_txn_first_offset
            for pid, e in self.producers.items()
            if e.current_txn_first_offset >= 0
        }


def save_snapshot(path: Path, offset: int, snap: Snapshot) -> None:
    """Write the state as of ``offset`` (every batch below it is included) atomically."""
    write_json(
        path,
        {
            "version": _SNAPSHOT_VERSION,
            "offset": offset,
            "producers": [
                [pid, epoch, [list(meta) for meta in batches], txn, coordinator_epoch]
                for pid, (epoch, batches, txn, coordinator_epoch) in sorted(snap.items())
            ],
        },
    )


def load_snapshot(path: Path) -> tuple[int, Snapshot] | None:
    """(offset, state) from a snapshot file, or None when missing or unreadable."""
    try:
        doc = read_json(path)
        if doc.get("version") not in _SNAPSHOT_VERSIONS:
            return None
        snap: Snapshot = {}
        for pid, epoch, batches, *txn in doc["producers"]:
            first, coordinator_epoch = (int(txn[0]), int(txn[1])) if txn else (-1, -1)
            snap[int(pid)] = (
                int(epoch),
                tuple(BatchMeta(*map(int, m)) for m in batches),
                first,
                coordinator_epoch,
            )
        return int(doc["offset"]), snap
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
