"""Writing a transaction's markers: Kafka's WriteTxnMarkers, to each partition's leader.

Theory of operation
-------------------
Once a transaction is decided (PrepareCommit/PrepareAbort is durable), every partition of it
gets a COMMIT or ABORT control batch carrying the producer's id and current epoch
(``Partition.write_marker``: it ends the producer's open transaction there, records an abort
in the partition's aborted-transaction index and moves its last stable offset).  The offsets
partition stands for the consumer groups: its "marker" is the group coordinator's
``complete_txn``, which makes the transaction's pending offsets visible (commit) or drops
them (abort).  All partitions are written concurrently.

**Who writes.**  A marker is written by the partition's leader, as in Kafka: this broker
writes those it leads itself (``MarkerHost.write_marker``), and sends the others to their
leaders in one WriteTxnMarkers per leader (``TxnLink``), whose handler writes them the same
way.  The leader's write is fenced by its leader epoch in the engine, and it passes through
the leader's ``MarkerFence``, which is what keeps a batch verified with this coordinator
from landing after the marker (``fence.py``).  Writing through the shared engine from here
would also be ordered by the partition's row lock, but it would bypass that fence — a batch
the leader had verified just before the transaction ended could then open a transaction
nobody closes — so it is not done.  Likewise the offsets of each group of the transaction
are completed by the group's coordinator: this broker's group coordinator for the groups it
serves, the owning broker's (WriteTxnMarkers naming ``__consumer_offsets``) for the others.

``write`` returns the partitions done; the driver retries the others every second, for as
long as it coordinates the transactional id — a leader that died is replaced within a lease
and its successor takes the marker.  A partition whose topic was deleted is done (Kafka
drops it as well); a marker refused for a stale epoch means the partition already saw a
newer producer epoch — nothing more can be written there, so it is logged and counted done
rather than retried forever.  Anything else (an I/O error, no leader, a leader that does not
answer, a group coordinator still loading) is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from bayou.core.forwarding import TxnLink
from bayou.core.transactions.model import OFFSETS_PARTITION, MarkerJob, TopicPartition
from bayou.errors import ErrorCode, KafkaError
from bayou.log_limits import RateLimitedLog
from bayou.storage.cluster import BrokerAddress, Cluster
from bayou.storage.metadata import TopicMeta

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)

#: Kafka's coordinator epoch is the leader epoch of the ``__transaction_state`` partition;
#: Bayou's markers carry 0 (see ``transactions.md``).
COORDINATOR_EPOCH = 0
GROUP = 0


class MarkerWriter(Protocol):
    async def write(
        self, job: MarkerJob, partitions: frozenset[TopicPartition]
    ) -> set[TopicPartition]:
        """Write ``job``'s markers to ``partitions``; the partitions done."""
        ...


class MarkerHost(Protocol):
    """What the marker writer needs of the broker (the ``Core``)."""

    cluster: Cluster
    txn_link: TxnLink

    def topics(self) -> Mapping[str, TopicMeta]: ...

    async def write_marker(
        self, topic: str, index: int, producer_id: int, producer_epoch: int, commit: bool
    ) -> ErrorCode:
        """Write a marker on a partition this broker leads; its error."""
        ...

    async def complete_offsets(self, producer_id: int, commit: bool) -> ErrorCode:
        """Complete a producer's pending offsets in the groups this broker serves."""
        ...


def _done(code: ErrorCode) -> bool:
    return code in (
        ErrorCode.NONE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.INVALID_PRODUCER_EPOCH,
    )


class EngineMarkers:
    """Markers written by the partitions' leaders and the groups' coordinators."""

    def __init__(self, host: MarkerHost) -> None:
        self.host = host

    async def write(
        self, job: MarkerJob, partitions: frozenset[TopicPartition]
    ) -> set[TopicPartition]:
        host, cluster = self.host, self.host.cluster
        topics = host.topics()
        local: list[TopicPartition] = []
        remote: dict[BrokerAddress, list[TopicPartition]] = {}
        done: set[TopicPartition] = set()
        for tp in sorted(partitions):
            if tp == OFFSETS_PARTITION:
                continue
            meta = topics.get(tp[0])
            if meta is None or not 0 <= tp[1] < meta.partitions:
                done.add(tp)  # deleted meanwhile: nothing to end there
            elif cluster.leads(*tp):
                local.append(tp)
            else:
                leader = cluster.leadership(*tp).leader
                address = cluster.broker(leader) if leader != cluster.node_id else None
                if address is None:
                    failures.warning(
                        tp, "transaction %r: %s-%d has no leader yet", job.transactional_id, *tp
                    )
                else:
                    remote.setdefault(address, []).append(tp)
        calls = [self._local(job, tp) for tp in local]
        calls += [self._remote(job, address, tps) for address, tps in remote.items()]
        if OFFSETS_PARTITION in partitions:
            calls.append(self._offsets(job))
        for answers in await asyncio.gather(*calls):
            for tp, code in answers.items():
                if _done(code):
                    done.add(tp)
                    if code == ErrorCode.INVALID_PRODUCER_EPOCH:
                        log.error(
                            "transaction %r: %s-%d refused its %s marker (producer %d epoch %d)",
                            job.transactional_id,
                            *tp,
                            "COMMIT" if job.commit else "ABORT",
                            job.producer_id,
                            job.producer_epoch,
                        )
                else:
                    failures.warning(
                        tp,
                        "transaction %r: the marker of %s-%d was not written (%s); retrying",
                        job.transactional_id,
                        *tp,
                        code.name,
                    )
        return done

    async def _local(self, job: MarkerJob, tp: TopicPartition) -> dict[TopicPartition, ErrorCode]:
        try:
            code = await self.host.write_marker(
                tp[0], tp[1], job.producer_id, job.producer_epoch, job.commit
            )
        except Exception as exc:  # an I/O error, a closed engine: retried
            log.debug("marker of %s-%d: %r", *tp, exc)
            code = ErrorCode.KAFKA_STORAGE_ERROR
        return {tp: code}

    async def _remote(
        self, job: MarkerJob, address: BrokerAddress, tps: list[TopicPartition]
    ) -> dict[TopicPartition, ErrorCode]:
        return await self.host.txn_link.write_markers(
            address, job.producer_id, job.producer_epoch, job.commit, tps, COORDINATOR_EPOCH
        )

    async def _offsets(self, job: MarkerJob) -> dict[TopicPartition, ErrorCode]:
        """The offsets "marker": every group's coordinator completes the producer's pending
        offsets.  A transaction recorded before groups were (an older version) is completed
        here, as it was then."""
        cluster = self.host.cluster
        owners: set[int] = set()
        for group in job.groups:
            owner = cluster.coordinator(GROUP, group)
            if owner == cluster.node_id and cluster.coordinator_error(GROUP, group):
                return {OFFSETS_PARTITION: ErrorCode.COORDINATOR_LOAD_IN_PROGRESS}
            owners.add(owner)
        if not job.groups:
            owners.add(cluster.node_id)
        codes: list[ErrorCode] = []
        for owner in sorted(owners):
            if owner == cluster.node_id:
                try:
                    codes.append(await self.host.complete_offsets(job.producer_id, job.commit))
                except KafkaError as exc:
                    codes.append(exc.code)
                except Exception as exc:
                    log.debug("completing offsets: %r", exc)
                    codes.append(ErrorCode.KAFKA_STORAGE_ERROR)
                continue
            address = cluster.broker(owner)
            if address is None or not cluster.settled():
                codes.append(ErrorCode.COORDINATOR_NOT_AVAILABLE)
                continue
            answer = await self.host.txn_link.write_markers(
                address,
                job.producer_id,
                job.producer_epoch,
                job.commit,
                [OFFSETS_PARTITION],
                COORDINATOR_EPOCH,
            )
            codes.append(answer[OFFSETS_PARTITION])
        worst = next((c for c in codes if c != ErrorCode.NONE), ErrorCode.NONE)
        return {OFFSETS_PARTITION: worst}
