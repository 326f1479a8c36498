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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bayou.errors import InvalidProducerEpoch, OutOfOrderSequence
from bayou.protocol.kafka.records import BatchHeader
from bayou.storage.files import read_json, write_json

CACHED_BATCHES = 5
_SEQUENCE_MOD = 2**31
_SNAPSHOT_VERSION = 1


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


Snapshot = dict[int, tuple[int, tuple[BatchMeta, ...]]]


class ProducerStateManager:
    """Producer id → ``ProducerEntry`` for one partition."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}

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

    def update(self, h: BatchHeader, base_offset: int, last_offset: int,
               append_time_ms: int) -> None:
        """Record a batch that was written (or replayed from the log)."""
        pid = h.producer_id
        if pid < 0:
            return
        entry = self.producers.get(pid)
        if entry is None or entry.epoch != h.producer_epoch:
            entry = self.producers[pid] = ProducerEntry(h.producer_epoch)
        entry.last_timestamp = append_time_ms if append_time_ms >= 0 else h.max_timestamp
        if not h.is_control and h.base_sequence >= 0:
            entry.batches.append(
                BatchMeta(h.base_sequence, h.last_sequence, base_offset, last_offset,
                          append_time_ms)
            )

    def snapshot(self) -> Snapshot:
        """An immutable copy of the state (cheap: five small tuples per producer)."""
        return {pid: (e.epoch, tuple(e.batches)) for pid, e in self.producers.items()}

    def restore(self, snap: Snapshot) -> None:
        self.producers = {
            pid: ProducerEntry(epoch, deque(batches, maxlen=CACHED_BATCHES))
            for pid, (epoch, batches) in snap.items()
        }


def save_snapshot(path: Path, offset: int, snap: Snapshot) -> None:
    """Write the state as of ``offset`` (every batch below it is included) atomically."""
    write_json(path, {
        "version": _SNAPSHOT_VERSION,
        "offset": offset,
        "producers": [
            [pid, epoch, [list(meta) for meta in batches]]
            for pid, (epoch, batches) in sorted(snap.items())
        ],
    })


def load_snapshot(path: Path) -> tuple[int, Snapshot] | None:
    """(offset, state) from a snapshot file, or None when missing or unreadable."""
    try:
        doc = read_json(path)
        if doc.get("version") != _SNAPSHOT_VERSION:
            return None
        snap: Snapshot = {
            int(pid): (int(epoch), tuple(BatchMeta(*map(int, m)) for m in batches))
            for pid, epoch, batches in doc["producers"]
        }
        return int(doc["offset"]), snap
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
