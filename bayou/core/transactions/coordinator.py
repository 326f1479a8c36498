"""TransactionCoordinator: the deterministic core of Kafka transactions (KIP-98/447/890).

Theory of operation
-------------------
One ``TxnMetadata`` per transactional id — Kafka's ``TransactionMetadata`` — holds the
producer id and epoch handed to the id's producer, the state (Kafka's names), the partitions
of the current transaction and its timestamps.  Every operation is a plain method taking the
time (``now``, ms) and returning a ``Result``: the records to write (an id's whole metadata
after the transition, or a tombstone), marker jobs, and the answer.  Nothing here does I/O,
sleeps or reads a clock; producer ids come from the caller (``fresh_id``), which allocates
them from the engine.  Durable state changes only through ``replay``: ``emit`` replays a
record at once and queues it, so loading after a restart is replaying the log.

The state machine, as Kafka's coordinator runs it::

    Empty / CompleteCommit / CompleteAbort ──AddPartitions/AddOffsets──> Ongoing
    Ongoing ──AddPartitions──> Ongoing
    Ongoing ──EndTxn(commit)──> PrepareCommit ──markers written──> CompleteCommit
    Ongoing ──EndTxn(abort) / timeout / a new producer's InitProducerId──> PrepareAbort
            ──markers written──> CompleteAbort
    Empty / Complete* ──InitProducerId──> Empty (epoch + 1; a new producer id once the
                                           epoch is exhausted)
    Empty / Complete* ──transactional.id.expiration.ms idle──> (tombstone)

- **Fencing.** InitProducerId bumps the epoch; every later call must carry the current
  (producer id, epoch): another id is INVALID_PRODUCER_ID_MAPPING, another epoch
  PRODUCER_FENCED.  A new producer arriving while its predecessor's transaction is Ongoing
  fences it as Kafka does (``PrepareEpochFence``, a state never written): the epoch goes up by
  one and the transaction is aborted *with the new epoch*, so the abort markers also fence
  the old producer on every partition it wrote; once the abort completes InitProducerId runs
  again and bumps once more.  A timed-out transaction is fenced and aborted the same way.
- **Markers.** PrepareCommit/PrepareAbort is written (durable) before any marker: the
  decision survives a crash.  The driver then writes a marker to every partition (the offsets
  partition stands for the groups' pending offsets, completed in the group coordinator) and
  runs ``complete``, which writes CompleteCommit/CompleteAbort.  After a restart every
  transaction found in a Prepare state is completed again (``pending_markers``): writing a
  marker twice is harmless.
- **KIP-890 (server side).** ``verify`` answers whether partitions belong to a producer's
  ongoing transaction (AddPartitionsToTxn verify-only; the produce and TxnOffsetCommit paths),
  without writing anything.
- **Timers.** ``tick`` aborts transactions older than their timeout (checked every
  ``abort_check_interval_ms``, Kafka's 10 s) and expires idle transactional ids (every
  ``expiration_check_interval_ms``); ``next_deadline`` says when it must run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from bayou.core.transactions.model import (
    MAX_EPOCH,
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    OFFSETS_PARTITION,
    InitPidResult,
    MarkerJob,
    Result,
    TopicPartition,
    TxnListing,
    TxnMetadata,
    TxnRecord,
    TxnSettings,
    TxnState,
)
from bayou.errors import ErrorCode

E = ErrorCode
S = TxnState


def _marker_job(meta: TxnMetadata) -> MarkerJob:
    return MarkerJob(
        meta.transactional_id,
        meta.producer_id,
        meta.producer_epoch,
        meta.state == S.PREPARE_COMMIT,
        frozenset(meta.partitions),
        frozenset(meta.groups),
    )


class TransactionCoordinator:
    def __init__(self, settings: TxnSettings | None = None) -> None:
        self.settings = settings or TxnSettings()
        self.txns: dict[str, TxnMetadata] = {}
        self.next_abort_check_ms: int | None = None
        self.next_expiry_check_ms: int | None = None

    # ------------------------------------------------------------------ replay

    def load(self, records: Iterable[TxnRecord]) -> int:
        """Replay the state log; returns how many records were applied."""
        count = 0
        for record in records:
            self.replay(record)
            count += 1
        return count

    def replay(self, record: TxnRecord) -> None:
        if record.value is None:
            self.txns.pop(record.transactional_id, None)
        else:
            value = record.value
            self.txns[record.transactional_id] = replace(
                value, partitions=set(value.partitions), groups=set(value.groups)
            )

    def emit(self, result: Result[Any], meta: TxnMetadata) -> None:
        record = TxnRecord(
            meta.transactional_id,
            replace(meta, partitions=set(meta.partitions), groups=set(meta.groups)),
        )
        self.replay(record)
        result.records.append(record)

    def durable_view(self) -> dict[str, dict[str, object]]:
        """Everything a restart must reproduce (tests compare live and replayed)."""
        return {tid: meta.to_value() for tid, meta in sorted(self.txns.items())}

    def pending_markers(self) -> list[MarkerJob]:
        """Transactions decided but not completed (after a restart: write their markers)."""
        return [_marker_job(m) for _tid, m in sorted(self.txns.items()) if m.state.preparing]

    # ------------------------------------------------------------------ InitProducerId

    def valid_timeout(self, timeout_ms: int) -> bool:
        return 0 < timeout_ms <= self.settings.max_timeout_ms

    def wants_producer_id(self, transactional_id: str) -> bool:
        """Whether InitProducerId for this id may need a fresh producer id (a new id, or an
        exhausted epoch): the driver allocates one first, as allocation is I/O."""
        meta = self.txns.get(transactional_id)
        return meta is None or meta.epoch_exhausted

    def init_producer_id(
        self,
        now: int,
        transactional_id: str,
        timeout_ms: int,
        expected: tuple[int, int] | None = None,
        fresh_id: int | None = None,
    ) -> Result[InitPidResult]:
        """InitProducerId with a transactional id (``expected``: the producer's current id
        and epoch, v3+, KIP-360)."""
        result: Result[InitPidResult] = Result()

        def fail(code: ErrorCode) -> Result[InitPidResult]:
            result.response = InitPidResult(code)
            return result

        if not transactional_id:
            return fail(E.INVALID_REQUEST)
        if not self.valid_timeout(timeout_ms):
            return fail(E.INVALID_TRANSACTION_TIMEOUT)
        meta = self.txns.get(transactional_id)
        if meta is None:
            if fresh_id is None:
                return fail(E.CONCURRENT_TRANSACTIONS)  # the driver allocates and retries
            meta = TxnMetadata(transactional_id, fresh_id, timeout_ms=timeout_ms, update_ms=now)
        if expected is not None and not (
            meta.producer_epoch == NO_PRODUCER_EPOCH
            or expected[0] == meta.producer_id
            or (expected[0] == meta.last_producer_id and expected[1] >= MAX_EPOCH - 1)
        ):
            return fail(E.PRODUCER_FENCED)
        if meta.state.preparing:
            return fail(E.CONCURRENT_TRANSACTIONS)
        if meta.state == S.ONGOING:
            # Kafka's PrepareEpochFence: abort the predecessor's transaction with a bumped
            # epoch (fencing it everywhere), then InitProducerId runs again.
            self._fence_and_abort(result, now, meta)
            result.response = InitPidResult(E.CONCURRENT_TRANSACTIONS, fenced=True)
            return result
        if meta.epoch_exhausted and (expected is None or expected[1] == meta.producer_epoch):
            if fresh_id is None:
                return fail(E.CONCURRENT_TRANSACTIONS)
            new = replace(
                meta,
                producer_id=fresh_id,
                last_producer_id=meta.producer_id,
                producer_epoch=0,
                last_producer_epoch=meta.producer_epoch
                if expected is not None
                else NO_PRODUCER_EPOCH,
            )
        else:
            bumped = meta.producer_epoch + 1
            if expected is None:
                epochs = (bumped, NO_PRODUCER_EPOCH)
            elif meta.producer_epoch == NO_PRODUCER_EPOCH or expected[1] == meta.producer_epoch:
                epochs = (bumped, meta.producer_epoch)
            elif expected[1] == meta.last_producer_epoch:
                epochs = (meta.producer_epoch, meta.last_producer_epoch)  # a retried bump
            else:
                return fail(E.PRODUCER_FENCED)
            new = replace(meta, producer_epoch=epochs[0], last_producer_epoch=epochs[1])
        new = replace(
            new,
            timeout_ms=timeout_ms,
            state=S.EMPTY,
            partitions=set(),
            groups=set(),
            start_ms=-1,
            update_ms=now,
        )
        self.emit(result, new)
        result.response = InitPidResult(E.NONE, new.producer_id, new.producer_epoch)
        return result

    def _fence_and_abort(self, result: Result[Any], now: int, meta: TxnMetadata) -> None:
        epoch = meta.producer_epoch + 1 if meta.producer_epoch < MAX_EPOCH else meta.producer_epoch
        fenced = replace(
            meta,
            producer_epoch=epoch,
            last_producer_epoch=NO_PRODUCER_EPOCH,
            state=S.PREPARE_ABORT,
            update_ms=now,
        )
        self.emit(result, fenced)
        result.markers.append(_marker_job(fenced))

    # ------------------------------------------------------------------ the transaction

    def _check_producer(
        self, transactional_id: str, producer_id: int, producer_epoch: int
    ) -> TxnMetadata | ErrorCode:
        if not transactional_id:
            return E.INVALID_REQUEST
        meta = self.txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return E.INVALID_PRODUCER_ID_MAPPING
        if meta.producer_epoch != producer_epoch:
            return E.PRODUCER_FENCED
        return meta

    def add_partitions(
        self,
        now: int,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
        groups: Iterable[str] = (),
    ) -> Result[ErrorCode]:
        """AddPartitionsToTxn (and AddOffsetsToTxn, with the offsets partition and the
        group)."""
        result: Result[ErrorCode] = Result()
        meta = self._check_producer(transactional_id, producer_id, producer_epoch)
        if isinstance(meta, ErrorCode):
            result.response = meta
            return result
        if meta.state.preparing:
            result.response = E.CONCURRENT_TRANSACTIONS
            return result
        wanted, wanted_groups = set(partitions), set(groups)
        if meta.state == S.ONGOING and wanted <= meta.partitions and wanted_groups <= meta.groups:
            result.response = E.NONE
            return result
        starting = meta.state != S.ONGOING
        self.emit(
            result,
            replace(
                meta,
                state=S.ONGOING,
                partitions=meta.partitions | wanted,
                groups=meta.groups | wanted_groups,
                start_ms=now if starting else meta.start_ms,
                update_ms=now,
            ),
        )
        result.response = E.NONE
        return result

    def add_offsets(
        self,
        now: int,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        group_id: str | None = None,
    ) -> Result[ErrorCode]:
        """AddOffsetsToTxn: the group's offsets partition joins the transaction (and the
        group, whose coordinator completes its offsets)."""
        return self.add_partitions(
            now,
            transactional_id,
            producer_id,
            producer_epoch,
            [OFFSETS_PARTITION],
            () if group_id is None else (group_id,),
        )

    def verify(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
    ) -> dict[TopicPartition, ErrorCode]:
        """KIP-890: is each partition in the producer's ongoing transaction?  Kafka's answers:
        TRANSACTION_ABORTABLE for a partition not added; the producer's own error (unknown
        id, fenced epoch, a transaction being completed) for all of them."""
        wanted = list(partitions)
        meta = self._check_producer(transactional_id, producer_id, producer_epoch)
        if isinstance(meta, ErrorCode):
            return dict.fromkeys(wanted, meta)
        if meta.state.preparing:
            return dict.fromkeys(wanted, E.CONCURRENT_TRANSACTIONS)
        ongoing = meta.state == S.ONGOING
        return {
            tp: E.NONE if ongoing and tp in meta.partitions else E.TRANSACTION_ABORTABLE
            for tp in wanted
        }

    def end_txn(
        self,
        now: int,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
    ) -> Result[ErrorCode]:
        """EndTxn: Ongoing → PrepareCommit/PrepareAbort and the markers to write; a retried
        EndTxn of a transaction already completed the same way is answered NONE."""
        result: Result[ErrorCode] = Result()
        meta = self._check_producer(transactional_id, producer_id, producer_epoch)
        if isinstance(meta, ErrorCode):
            result.response = meta
            return result
        state = meta.state
        if state == S.ONGOING:
            prepared = replace(
                meta, state=S.PREPARE_COMMIT if commit else S.PREPARE_ABORT, update_ms=now
            )
            self.emit(result, prepared)
            result.markers.append(_marker_job(prepared))
            result.response = E.NONE
        elif state == (S.COMPLETE_COMMIT if commit else S.COMPLETE_ABORT):
            result.response = E.NONE
        elif state == (S.PREPARE_COMMIT if commit else S.PREPARE_ABORT):
            result.response = E.CONCURRENT_TRANSACTIONS
        else:  # Empty, or the other outcome
            result.response = E.INVALID_TXN_STATE
        return result

    def complete(self, now: int, job: MarkerJob) -> Result[None]:
        """Every marker of ``job`` is written: PrepareX → CompleteX."""
        result: Result[None] = Result()
        meta = self.txns.get(job.transactional_id)
        wanted = S.PREPARE_COMMIT if job.commit else S.PREPARE_ABORT
        if (
            meta is None
            or meta.producer_id != job.producer_id
            or meta.producer_epoch != job.producer_epoch
            or meta.state != wanted
        ):
            return result  # already completed (a second writer), or superseded
        self.emit(
            result,
            replace(
                meta,
                state=S.COMPLETE_COMMIT if job.commit else S.COMPLETE_ABORT,
                partitions=set(),
                groups=set(),
                update_ms=now,
            ),
        )
        return result

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        times = [t for t in (self.next_abort_check_ms, self.next_expiry_check_ms) if t is not None]
        return min(times, default=None)

    def tick(self, now: int) -> Result[None]:
        """Abort timed-out transactions and expire idle transactional ids when due."""
        result: Result[None] = Result()
        s = self.settings
        if self.next_abort_check_ms is None:
            self.next_abort_check_ms = now + s.abort_check_interval_ms
        elif self.next_abort_check_ms <= now:
            self.abort_timed_out(result, now)
            self.next_abort_check_ms = now + s.abort_check_interval_ms
        if self.next_expiry_check_ms is None:
            self.next_expiry_check_ms = now + s.expiration_check_interval_ms
        elif self.next_expiry_check_ms <= now:
            self.expire_ids(result, now)
            self.next_expiry_check_ms = now + s.expiration_check_interval_ms
        return result

    def abort_timed_out(self, result: Result[None], now: int) -> None:
        for _tid, meta in sorted(self.txns.items()):
            if meta.state == S.ONGOING and meta.start_ms + meta.timeout_ms < now:
                self._fence_and_abort(result, now, meta)

    def expire_ids(self, result: Result[None], now: int) -> None:
        limit = now - self.settings.transactional_id_expiration_ms
        for tid, meta in sorted(self.txns.items()):
            if meta.state.expiration_allowed and meta.update_ms <= limit:
                self.replay(TxnRecord(tid, None))
                result.records.append(TxnRecord(tid, None))

    # ------------------------------------------------------------------ reading

    def describe(self, transactional_id: str) -> TxnMetadata | ErrorCode:
        if not transactional_id:
            return E.INVALID_REQUEST
        meta = self.txns.get(transactional_id)
        return E.TRANSACTIONAL_ID_NOT_FOUND if meta is None else meta

    def list_transactions(
        self,
        now: int,
        states: Iterable[TxnState] = (),
        producer_ids: Iterable[int] = (),
        min_duration_ms: int = -1,
    ) -> list[TxnListing]:
        """ListTransactions' filters, as Kafka applies them: state, producer id, and (v1)
        transactions running longer than ``min_duration_ms``."""
        wanted_states, wanted_pids = set(states), set(producer_ids)
        out = []
        for tid, meta in sorted(self.txns.items()):
            if wanted_pids and meta.producer_id not in wanted_pids:
                continue
            if wanted_states and meta.state not in wanted_states:
                continue
            if min_duration_ms >= 0 and now - meta.start_ms <= min_duration_ms:
                continue
            out.append(TxnListing(tid, meta.producer_id, meta.state))
        return out

    def producer_of(self, transactional_id: str) -> tuple[int, int]:
        meta = self.txns.get(transactional_id)
        return (
            (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
            if meta is None
            else (meta.producer_id, meta.producer_epoch)
        )
