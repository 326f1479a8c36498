"""The transaction coordinator's data: states, one transactional id's metadata, settings.

Nothing here knows Kafka's wire format: the Kafka handlers translate requests into the
coordinator's calls and its answers (error codes, dataclasses) into responses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bayou.errors import ErrorCode

T = TypeVar("T")

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
MAX_EPOCH = 32767  # Short.MaxValue: an epoch at MAX_EPOCH - 1 or above is exhausted

#: the partition of a transaction that stands for its consumer-offset commits (Kafka adds
#: ``__consumer_offsets``' partition of the group; Bayou's offsets log has one partition)
OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITION = (OFFSETS_TOPIC, 0)

TopicPartition = tuple[str, int]


class TxnState(enum.StrEnum):
    """Kafka's ``TransactionState`` names, as DescribeTransactions and ListTransactions
    show them."""

    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"

    @property
    def preparing(self) -> bool:
        return self in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)

    @property
    def expiration_allowed(self) -> bool:
        return self in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)


@dataclass(frozen=True)
class TxnSettings:
    """Kafka's transaction-coordinator broker options (Kafka's names and defaults)."""

    max_timeout_ms: int = 900_000  # transaction.max.timeout.ms
    #: transaction.abort.timed.out.transaction.cleanup.interval.ms
    abort_check_interval_ms: int = 10_000
    transactional_id_expiration_ms: int = 7 * 24 * 3600 * 1000  # transactional.id.expiration.ms
    #: transaction.remove.expired.transaction.cleanup.interval.ms
    expiration_check_interval_ms: int = 3600 * 1000


@dataclass
class TxnMetadata:
    """One transactional id (Kafka's ``TransactionMetadata``): everything here is durable,
    written whole on every transition."""

    transactional_id: str
    producer_id: int
    last_producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    timeout_ms: int = 60_000
    state: TxnState = TxnState.EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    start_ms: int = -1  # when the first partition joined the current transaction
    update_ms: int = -1  # the last transition (transactional.id.expiration.ms counts from it)
    #: the consumer groups whose offsets the transaction commits (AddOffsetsToTxn): the
    #: offsets partition's "marker" goes to each group's coordinator
    groups: set[str] = field(default_factory=set)

    @property
    def epoch_exhausted(self) -> bool:
        return self.producer_epoch >= MAX_EPOCH - 1

    def to_value(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "last_producer_id": self.last_producer_id,
            "producer_epoch": self.producer_epoch,
            "last_producer_epoch": self.last_producer_epoch,
            "timeout_ms": self.timeout_ms,
            "state": str(self.state),
            "partitions": [[t, p] for t, p in sorted(self.partitions)],
            "start_ms": self.start_ms,
            "update_ms": self.update_ms,
            "groups": sorted(self.groups),
        }

    @classmethod
    def from_value(cls, transactional_id: str, v: dict[str, Any]) -> TxnMetadata:
        return cls(
            transactional_id,
            int(v["producer_id"]),
            int(v["last_producer_id"]),
            int(v["producer_epoch"]),
            int(v["last_producer_epoch"]),
            int(v["timeout_ms"]),
            TxnState(v["state"]),
            {(str(t), int(p)) for t, p in v["partitions"]},
            int(v["start_ms"]),
            int(v["update_ms"]),
            {str(g) for g in v.get("groups", ())},  # absent in records of older versions
        )


@dataclass(frozen=True)
class TxnRecord:
    """What the coordinator writes: a transactional id's whole metadata, or ``None`` (a
    tombstone: the id expired)."""

    transactional_id: str
    value: TxnMetadata | None


@dataclass(frozen=True)
class MarkerJob:
    """Markers to write for a transaction that reached PrepareCommit/PrepareAbort: the
    driver writes them, then runs ``complete``."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: bool
    partitions: frozenset[TopicPartition]
    groups: frozenset[str] = frozenset()  # whose coordinators complete the offsets


@dataclass
class Result(Generic[T]):
    """What an operation returns: records to make durable, markers to write, the answer.

    The driver writes ``records`` before it answers or starts ``markers``.
    """

    response: T | None = None
    records: list[TxnRecord] = field(default_factory=list)
    markers: list[MarkerJob] = field(default_factory=list)

    def absorb(self, other: Result[Any]) -> None:
        self.records.extend(other.records)
        self.markers.extend(other.markers)


@dataclass(frozen=True)
class InitPidResult:
    error: ErrorCode
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    #: the request ended an ongoing transaction to fence it (Kafka's PrepareEpochFence):
    #: once that abort completes, the driver runs InitProducerId again for the answer
    fenced: bool = False


@dataclass(frozen=True)
class TxnListing:
    transactional_id: str
    producer_id: int
    state: TxnState


class TxnCoordinatorError(Exception):
    """The coordinator cannot serve (not loaded, or the broker is stopping)."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.code = code
