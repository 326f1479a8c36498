"""The storage-engine interface: what the core needs from wherever the data lives.

Theory of operation
-------------------
Everything above storage (the core, and through it every door) sees data through two async
interfaces, and nothing else:

``LogEngine`` — topics of partitions of Kafka v2 record batches.

- Topic admin (create, delete, add partitions, alter configs, dynamic broker defaults) and a
  synchronous snapshot of the topics (``topics()``): metadata is small and read on every
  request, so an engine keeps it in memory and refreshes it itself.
- ``partition(topic, index)`` gives a ``Partition`` handle.  Its offsets (log start, log end
  = high watermark) are synchronous properties — an engine keeps them current in memory —
  and everything that touches data is async: ``append`` returns once the write is as durable
  as the topic's flush policy asks (**the engine owns durability**: fsync policy and group
  commit are its business, not the caller's), ``read`` returns whole stored batches from the
  one holding an offset (never blocking the event loop: a local engine reads the page cache
  on the loop and cold data in a worker thread; a remote engine does async I/O), and the
  lookups by time and DeleteRecords are async too.
- ``append_many`` appends to several partitions at once and waits for their durability
  together (one Produce request; one PostgreSQL transaction; one object per flush).  Appends
  are applied in call order: an engine whose append suspends before it assigns offsets must
  keep a per-partition queue.
- ``wait_for_data`` is the "data landed" notification: it returns as soon as any of the
  named partitions grows (or the timeout passes).  Readers re-read after it; it carries no
  data and may wake spuriously.
- ``maintain`` runs one retention and compaction round now (an engine also runs rounds on
  its own schedule between ``start`` and ``close``).

``StateStore`` — named compacted key-value logs for the broker's own state (group offsets
and metadata, producer ids, MQTT sessions and retained messages, AMQP topology, later
transactions and share groups).  A ``StateLog`` replays every entry in append order
(``read_all``; loading a coordinator is replaying its log) and appends entries as one
all-or-nothing batch (``put``).  Entries are keyed; a value of ``None`` is a tombstone, so
"the last entry of every key" is the state, and the engine may compact away anything else.

An engine is chosen by URL (``local`` — the segment log in the data directory, the default —
or ``memory://``); ``tests/contract/`` runs one engine-neutral suite over every engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bayou.config import TopicConfig
from bayou.errors import BayouError, KafkaError
from bayou.protocol.kafka.records import iter_batches, iter_records
from bayou.storage.broker_configs import DynamicBrokerConfigs
from bayou.storage.metadata import TopicMeta
from bayou.storage.producer_state import ProducerEntry

Buffer = bytes | bytearray | memoryview
PartitionKey = tuple[str, int]


class PageCacheMiss(BayouError):
    """A ``nowait`` read found its first bytes outside memory (a cold segment): the caller
    should repeat the read where blocking is allowed (a worker thread)."""


class RecordSet(Protocol):
    """Whole batches for a response, possibly left where they are stored until sent (the
    local engine's ``FileRecords``: file slices read chunk by chunk as the socket drains)."""

    def __len__(self) -> int: ...

    @property
    def remaining(self) -> bool:
        """Whether ``read`` has bytes left to return."""
        ...

    def read(self, max_bytes: int, *, nowait: bool = False) -> Buffer:
        """The next bytes (at most ``max_bytes``; ``b""`` at the end).  With ``nowait`` only
        what is in memory: ``PageCacheMiss`` when none is — read again in a worker thread."""
        ...

    def read_all(self, *, nowait: bool = False) -> Buffer: ...

    def close(self) -> None:
        """Release what holds the batches in place (idempotent, any thread)."""
        ...


@dataclass(frozen=True)
class AppendResult:
    """What a produce call answers: offsets of the first and last record appended."""

    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 for CreateTime topics
    log_start_offset: int
    record_count: int


@dataclass(frozen=True)
class AbortedTxn:
    """An aborted transaction of one partition (Kafka's ``AbortedTxn``, its ``.txnindex``
    entry): the producer's records in ``[first_offset, last_offset]`` are aborted;
    ``last_offset`` is the ABORT marker's offset."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


@dataclass(frozen=True)
class MaintenanceReport:
    """One partition's share of a maintenance round."""

    topic: str
    partition: int
    segments_deleted: int
    log_start_offset: int
    cleaned: str | None = None  # a one-line summary of a compaction pass
    error: Exception | None = None


@runtime_checkable
class Partition(Protocol):
    """One topic partition of a ``LogEngine`` (see the module docstring)."""

    @property
    def topic(self) -> str: ...

    @property
    def index(self) -> int: ...

    @property
    def config(self) -> TopicConfig: ...

    @property
    def log_start_offset(self) -> int: ...

    @property
    def log_end_offset(self) -> int:
        """The next offset to be assigned; also the high watermark (one replica)."""
        ...

    @property
    def last_stable_offset(self) -> int:
        """The first offset of the earliest transaction still open on this partition, else
        the log end: READ_COMMITTED readers never read at or past it."""
        ...

    @property
    def size_bytes(self) -> int: ...

    async def append(self, records: Buffer) -> AppendResult:
        """Validate, assign offsets, store; return once durable per the topic's policy.
        Raises ``KafkaError`` (corrupt batch, too large, out-of-order sequence, a stale
        producer epoch, a control batch — clients may not write markers …).  A
        transactional batch opens (or continues) its producer's transaction here."""
        ...

    async def write_marker(
        self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int
    ) -> int:
        """End ``producer_id``'s open transaction with a COMMIT or ABORT control batch (the
        transaction coordinator's WriteTxnMarkers); returns the marker's offset once it is
        as durable as the topic asks.  An abort is recorded in the aborted-transaction index.
        Writing a marker when the producer has no open transaction is allowed (Kafka writes
        markers to every partition of a transaction, some of which got no data)."""
        ...

    async def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions with data in ``[start, end)`` (a READ_COMMITTED Fetch
        answers them so the consumer can skip those producers' records)."""
        ...

    async def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> Buffer:
        """Whole stored batches from the one holding ``offset``, up to ``max_bytes`` —
        always at least one whole batch when there is one (KIP-74) — and only batches that
        start below ``max_offset`` when given (READ_COMMITTED readers pass the last stable
        offset).  ``b""`` at the log end; ``OffsetOutOfRange`` outside
        ``[log_start_offset, log_end_offset]``."""
        ...

    async def fetch(
        self, offset: int, max_bytes: int, *, min_one: bool, max_offset: int | None = None
    ) -> Buffer | RecordSet:
        """Whole batches from the one holding ``offset`` for a Fetch response, up to
        ``max_bytes`` (and at least one when ``min_one``, KIP-74), only batches that start
        below ``max_offset`` when given (READ_COMMITTED: the last stable offset): bytes, or a
        ``RecordSet`` the caller sends (and closes) as its socket drains."""
        ...

    async def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp ≥ ``timestamp_ms``."""
        ...

    async def max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record holding the largest timestamp."""
        ...

    async def delete_records(self, offset: int) -> int:
        """Move the log start offset up to ``offset`` (-1: the log end); the new start."""
        ...

    def producers(self) -> Mapping[int, ProducerEntry]:
        """The idempotent producers this partition knows (id → epoch, sequences, …)."""
        ...


@runtime_checkable
class Segmented(Protocol):
    """A partition that can say how many segments it holds (the local and memory engines;
    the console and ``/metrics`` show it where an engine has it)."""

    @property
    def segment_count(self) -> int: ...


@runtime_checkable
class FsyncObserved(Protocol):
    """An engine that reports the duration of each fsync it runs (seconds) to a hook."""

    def observe_fsync(self, hook: Callable[[float], None]) -> None: ...


class LogEngine(Protocol):
    """Topics, partitions and their record batches (see the module docstring)."""

    #: "local", "memory", … (shown by DescribeLogDirs and the console)
    kind: str
    #: where the data lives, as an operator would name it (a directory, a URL)
    location: str

    @property
    def cluster_id(self) -> str: ...

    def storage_usage(self) -> tuple[int, int]:
        """(total, usable) bytes where the data lives; -1 when unknown."""
        ...

    @property
    def defaults(self) -> Mapping[str, Any]:
        """Topic-config defaults in force: static, then dynamic default, then per broker."""
        ...

    @property
    def static_defaults(self) -> Mapping[str, Any]:
        """Topic-config defaults from the broker's own configuration."""
        ...

    @property
    def dynamic(self) -> DynamicBrokerConfigs:
        """Configs altered through the admin API: topic-config defaults and Kafka's other
        dynamic broker configs, cluster-wide (``default``) and for this broker."""
        ...

    async def open(self) -> None:
        """Load metadata and recover every partition (once, before anything else)."""
        ...

    async def start(self) -> None:
        """Start background work (flush timers, checkpoints, retention, compaction)."""
        ...

    async def close(self) -> None:
        """Stop background work, make everything durable, release the storage."""
        ...

    # -- topics ------------------------------------------------------------------------------

    def topics(self) -> Mapping[str, TopicMeta]:
        """The user topics (a snapshot)."""
        ...

    def internal_topics(self) -> Mapping[str, TopicMeta]:
        """State logs opened as public (``__consumer_offsets``): readable like a topic of
        one partition (``partition``, ``topic_by_id``), never writable or listed as a user
        topic, and no user topic may take their names."""
        ...

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMeta | None: ...

    def topic_config(self, name: str) -> TopicConfig: ...

    def resolve_config(self, overrides: Mapping[str, Any]) -> TopicConfig:
        """The effective config of a topic with these (parsed) overrides."""
        ...

    async def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> TopicMeta: ...

    async def delete_topic(self, name: str) -> None: ...

    async def create_partitions(
        self, name: str, total: int, *, validate_only: bool = False
    ) -> None: ...

    async def alter_topic_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicMeta: ...

    async def alter_broker_configs(
        self,
        scope: str,
        configs: Mapping[str, Any],
        *,
        validate_only: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace the dynamic topic-config defaults of ``scope`` ("default" or "broker")
        — every topic without its own override follows at once — and, when ``options`` is
        given, that scope's other dynamic broker configs (Kafka names, parsed values)."""
        ...

    # -- data --------------------------------------------------------------------------------

    def partition(self, topic: str, index: int) -> Partition:
        """The partition's handle; ``UnknownTopicOrPartition`` when there is none."""
        ...

    async def append_many(
        self, writes: Sequence[tuple[str, int, Buffer]], *, owned: bool = False
    ) -> list[AppendResult | KafkaError]:
        """Append to several partitions; one result (or the partition's error) per write,
        returned once all of them are as durable as their topics ask.  ``owned``: the
        caller hands the buffers over (writable ones are never used by it again), so the
        engine may patch them in place instead of copying them first."""
        ...

    async def wait_for_data(self, keys: Iterable[PartitionKey], timeout_s: float) -> bool:
        """Until one of ``keys`` grows or the timeout passes; True when woken."""
        ...

    def wake_all(self) -> None:
        """Wake every ``wait_for_data`` (shutdown)."""
        ...

    async def allocate_producer_id(self) -> int:
        """A producer id never handed out before, across restarts."""
        ...

    async def maintain(self, now_ms: int | None = None) -> list[MaintenanceReport]:
        """One retention and compaction round over every partition, now."""
        ...

    # -- internal state ----------------------------------------------------------------------

    @property
    def state(self) -> StateStore: ...


@dataclass(frozen=True)
class StateEntry:
    """One entry of a ``StateLog``: a key, a value (None: tombstone), optional headers."""

    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


class StateLog(Protocol):
    """A compacted key-value log of internal state (see the module docstring)."""

    @property
    def name(self) -> str: ...

    async def read_all(self) -> list[StateEntry]:
        """Every entry still in the log, in append order (call before the first ``put``)."""
        ...

    @property
    def partition(self) -> Partition:
        """The log as a partition (offsets, reads, "data landed" under its name), for a
        reader that follows what other brokers of a shared engine append (``Cursor``);
        never listed nor readable as a topic unless opened ``public``."""
        ...

    async def sync(self) -> None:
        """Bring ``partition``'s offsets up to what other brokers of a shared engine have
        committed (they are otherwise learned from notifications, a moment later)."""
        ...

    async def put(self, entries: Sequence[StateEntry], *, durable: bool = False) -> int:
        """Append ``entries`` as one all-or-nothing batch; puts apply in call order.
        Returns once written (and fsynced when ``durable`` — else per the log's own flush
        policy: a process crash loses nothing written, a power loss may): the offset of the
        last entry (-1 when ``entries`` is empty; the batch holds the offsets before it)."""
        ...

    async def close(self) -> None: ...


class StateStore(Protocol):
    """Named ``StateLog``s (one per internal state: ``__consumer_offsets``, …)."""

    async def open_log(self, name: str, *, public: bool = False) -> StateLog:
        """Open (creating, recovering) the named log; ``public``: readable as an internal
        topic of one partition (``LogEngine.internal_topics``)."""
        ...


async def latest(log: StateLog) -> dict[bytes, StateEntry]:
    """The last entry of every key still alive (tombstoned keys are absent)."""
    state: dict[bytes, StateEntry] = {}
    for entry in await log.read_all():
        if entry.value is None:
            state.pop(entry.key, None)
        else:
            state[entry.key] = entry
    return state


def decode_state_entries(chunk: Buffer, offset: int, out: list[StateEntry]) -> int:
    """Append to ``out`` the keyed records of ``chunk`` (whole stored batches, as a read
    returns them) at or after ``offset``, skipping control batches; the next offset to read.
    A state log's ``read_all`` is this over its reads (CPU work: off the event loop)."""
    view = memoryview(chunk)
    for pos, header in iter_batches(view):
        if header.last_offset >= offset and not header.is_control:
            for rec in iter_records(view[pos : pos + header.size]):
                if rec.offset >= offset and rec.key is not None:
                    out.append(StateEntry(rec.key, rec.value, tuple(rec.headers)))
        offset = max(offset, header.last_offset + 1)
    return offset
