"""Writing a transaction's markers: Kafka's WriteTxnMarkers, in process.

Theory of operation
-------------------
Once a transaction is decided (PrepareCommit/PrepareAbort is durable), every partition of it
gets a COMMIT or ABORT control batch carrying the producer's id and current epoch
(``Partition.write_marker``: it ends the producer's open transaction there, records an abort
in the partition's aborted-transaction index and moves its last stable offset).  The offsets
partition stands for the consumer groups: its "marker" is the group coordinator's
``complete_txn``, which makes the transaction's pending offsets visible (commit) or drops
them (abort).  All partitions are written concurrently.

``write`` returns the partitions done; the driver retries the others later.  A partition
whose topic was deleted is done (Kafka drops it as well); a marker refused for a stale epoch
means the partition already saw a newer producer epoch — nothing more can be written there,
so it is logged and counted done rather than retried forever.  Anything else (an I/O error)
is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from bayou.core.groups import GroupDriver
from bayou.core.transactions.model import OFFSETS_PARTITION, MarkerJob, TopicPartition
from bayou.errors import ErrorCode, KafkaError
from bayou.log_limits import RateLimitedLog
from bayou.storage.engine import LogEngine

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)

#: Kafka's coordinator epoch is the leader epoch of the ``__transaction_state`` partition;
#: one coordinator that never moves keeps epoch 0.
COORDINATOR_EPOCH = 0


class MarkerWriter(Protocol):
    async def write(
        self, job: MarkerJob, partitions: frozenset[TopicPartition]
    ) -> set[TopicPartition]:
        """Write ``job``'s markers to ``partitions``; the partitions done."""
        ...


class EngineMarkers:
    """Markers through the engine's partitions and the group coordinator."""

    def __init__(self, engine: LogEngine, groups: Callable[[], GroupDriver]) -> None:
        self.engine = engine
        self.groups = groups

    async def write(
        self, job: MarkerJob, partitions: frozenset[TopicPartition]
    ) -> set[TopicPartition]:
        ordered = sorted(partitions)
        done = await asyncio.gather(*(self._one(job, tp) for tp in ordered))
        return {tp for tp, ok in zip(ordered, done, strict=True) if ok}

    async def _one(self, job: MarkerJob, tp: TopicPartition) -> bool:
        try:
            if tp == OFFSETS_PARTITION:
                driver = self.groups()
                await driver.run(
                    lambda now, _token: driver.coordinator.complete_txn(
                        now, job.producer_id, job.commit
                    )
                )
                return True
            partition = self.engine.partition(*tp)
            await partition.write_marker(
                job.producer_id, job.producer_epoch, job.commit, COORDINATOR_EPOCH
            )
            return True
        except KafkaError as exc:
            if exc.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                return True
            if exc.code == ErrorCode.INVALID_PRODUCER_EPOCH:
                log.error(
                    "transaction %r: %s-%d refused its %s marker (producer %d epoch %d): %s",
                    job.transactional_id,
                    tp[0],
                    tp[1],
                    "COMMIT" if job.commit else "ABORT",
                    job.producer_id,
                    job.producer_epoch,
                    exc.message,
                )
                return True
            failures.warning(
                tp,
                "transaction %r: writing a marker to %s-%d failed (%s); retrying",
                job.transactional_id,
                tp[0],
                tp[1],
                exc,
            )
            return False
        except Exception as exc:  # an I/O error, a closed engine: retried
            failures.warning(
                tp,
                "transaction %r: writing a marker to %s-%d failed (%r); retrying",
                job.transactional_id,
                tp[0],
                tp[1],
                exc,
            )
            return False
