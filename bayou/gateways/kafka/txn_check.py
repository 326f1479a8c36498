"""The transactional check of Produce and TxnOffsetCommit (KIP-890 part 1, server side).

Kafka's partition leaders ask the transaction coordinator (AddPartitionsToTxn v4,
verify-only) whether a transactional batch's partition is in its producer's ongoing
transaction before appending it; without that check a producer that skipped
AddPartitionsToTxn (a client bug, or a late retry after its transaction ended) leaves an
open transaction on a partition the coordinator will never write a marker to, and the last
stable offset stalls forever.  The group coordinator asks the same about the offsets
partition before storing a TxnOffsetCommit.

``verify`` asks the transactional id's coordinator: this broker's, synchronously, when it is
the one (nothing runs between the answer and the caller's append); another broker's over
AddPartitionsToTxn v4 (``TxnLink``), bracketed by the ``MarkerFence`` — a marker of the
producer queued here during the round trip makes it ask again, and once the answer stands
it returns with no suspension, so the caller's append is queued before any later marker
(``bayou/core/transactions/fence.py``).  A producer's verifications take turns
(``MarkerFence.in_order``): pipelined Produce requests of one producer reach the engine in
the order they came, as they would with no verification.  Errors as Kafka's
``ReplicaManager``/``AddPartitionsToTxnManager`` map them for producers; a coordinator that
cannot be asked (moving, loading, unreachable) is NOT_ENOUGH_REPLICAS, which every producer
retries.
"""

from __future__ import annotations

import asyncio
import contextlib

from bayou.core.transactions import TxnCoordinatorError
from bayou.core.types import Buffer
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.txn_support import txn_driver
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import (
    ATTR_CONTROL,
    ATTR_TRANSACTIONAL,
    HEADER_SIZE,
    LOG_OVERHEAD,
    length_and_attributes,
    parse_header,
)

E = ErrorCode
Refusal = tuple[ErrorCode, str | None]
TP = tuple[str, int]
Producer = tuple[int, int]  # producer id, epoch
TRANSACTION = 1
VERIFY_ATTEMPTS = 3
#: the coordinator could not be asked: the leader answers NOT_ENOUGH_REPLICAS (retriable)
UNREACHABLE = frozenset(
    {E.NOT_COORDINATOR, E.COORDINATOR_LOAD_IN_PROGRESS, E.COORDINATOR_NOT_AVAILABLE}
)

NOT_ADDED = "Partition was not added to the transaction"


def transactional_producer(records: Buffer) -> tuple[int, int] | None:
    """(producer id, epoch) of the first transactional data batch, if any (headers only;
    a malformed payload is left to the engine's validation)."""
    pos, end = 0, len(records)
    while end - pos >= HEADER_SIZE:
        length, attributes = length_and_attributes(records, pos)  # every Produce asks
        if attributes & ATTR_TRANSACTIONAL and not attributes & ATTR_CONTROL:
            h = parse_header(records, pos)
            return h.producer_id, h.producer_epoch
        if length <= 0:
            return None
        pos += length + LOG_OVERHEAD
    return None


async def verify(
    ctx: RequestContext, transactional_id: str, wanted: dict[Producer, list[TP]]
) -> dict[TP, ErrorCode]:
    """The coordinator's answer for each partition (see the module docstring); returns
    without a suspension after the answer stands, after every earlier verification of the
    same producers returned."""
    core = ctx.core
    cluster = core.cluster
    fence = core.marker_fence

    def every(code: ErrorCode) -> dict[TP, ErrorCode]:
        return {tp: code for tps in wanted.values() for tp in tps}

    async with fence.in_order(pid for pid, _epoch in wanted):
        for _attempt in range(VERIFY_ATTEMPTS):
            owner = cluster.coordinator(TRANSACTION, transactional_id)
            if not cluster.shared or owner == cluster.node_id:
                error = cluster.coordinator_error(TRANSACTION, transactional_id)
                if error != E.NONE:
                    return every(error)
                try:
                    coordinator = txn_driver(ctx).read()
                except TxnCoordinatorError as exc:
                    return every(exc.code)
                out: dict[TP, ErrorCode] = {}
                for (pid, epoch), tps in wanted.items():
                    out.update(coordinator.verify(transactional_id, pid, epoch, tps))
                return out
            address = cluster.broker(owner)
            if address is None:
                return every(E.COORDINATOR_NOT_AVAILABLE)
            with contextlib.ExitStack() as stack:
                seen = {pid: stack.enter_context(fence.watch(pid)) for pid, _epoch in wanted}
                answers = await asyncio.gather(
                    *(
                        core.txn_link.verify(address, transactional_id, pid, epoch, tps)
                        for (pid, epoch), tps in wanted.items()
                    )
                )
                if not any(fence.moved(pid, count) for pid, count in seen.items()):
                    out = {}
                    for answer in answers:
                        out.update(answer)
                    return out
        return every(E.CONCURRENT_TRANSACTIONS)  # the transaction kept ending meanwhile


class TxnCheck:
    """One Produce request's verification of its transactional batches: ``prepare`` asks
    the coordinator about all of them at once, ``refusal`` answers per partition."""

    def __init__(self, ctx: RequestContext, transactional_id: str | None) -> None:
        self.ctx = ctx
        self.transactional_id = transactional_id
        self.codes: dict[TP, ErrorCode] = {}

    async def prepare(self, request: m.ProduceRequest) -> None:
        """Verify every partition holding a transactional batch (the caller appends right
        after, with no suspension in between)."""
        tid = self.transactional_id
        if tid is None:
            return
        wanted: dict[Producer, list[TP]] = {}
        for topic_data in request.topic_data:
            for data in topic_data.partition_data:
                if data.records is None or len(data.records) == 0:
                    continue
                producer = transactional_producer(data.records)
                if producer is not None:
                    wanted.setdefault(producer, []).append((topic_data.name, data.index))
        if wanted:
            self.codes = await verify(self.ctx, tid, wanted)

    def refusal(self, topic: str, partition: int, records: Buffer) -> Refusal | None:
        producer = transactional_producer(records)
        if producer is None:
            return None
        if self.transactional_id is None:
            return (
                E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                "transactional records need the request's transactional id",
            )
        code = self.codes.get((topic, partition), E.COORDINATOR_NOT_AVAILABLE)
        if code == E.NONE:
            return None
        if code == E.TRANSACTION_ABORTABLE:
            return (
                E.TRANSACTION_ABORTABLE if self.ctx.version >= 11 else E.INVALID_TXN_STATE,
                NOT_ADDED,
            )
        if code in (E.PRODUCER_FENCED, E.INVALID_PRODUCER_EPOCH):
            return E.INVALID_PRODUCER_EPOCH, None
        if code == E.CONCURRENT_TRANSACTIONS or code in UNREACHABLE:
            return (
                E.NOT_ENOUGH_REPLICAS,
                "Unable to verify the partition has been added to "
                f"the transaction. Underlying error: {code.name}",
            )
        return code, None
