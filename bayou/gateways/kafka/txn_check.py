"""The produce path's transactional check (KIP-890 part 1, server side), in process.

Kafka's partition leaders ask the transaction coordinator (AddPartitionsToTxn v4,
verify-only) whether a transactional batch's partition is in its producer's ongoing
transaction before appending it; without that check a producer that skipped
AddPartitionsToTxn (a client bug, or a late retry after its transaction ended) leaves an
open transaction on a partition the coordinator will never write a marker to, and the last
stable offset stalls forever.  Bayou's coordinator is in the same process, so the check is a
synchronous call; errors as Kafka's ``ReplicaManager``/``AddPartitionsToTxnManager`` map them
for producers.
"""

from __future__ import annotations

from bayou.core.transactions import TxnCoordinatorError
from bayou.core.types import Buffer
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.txn_support import txn_driver
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


class TxnCheck:
    """One Produce request's verification of its transactional batches."""

    def __init__(self, ctx: RequestContext, transactional_id: str | None) -> None:
        self.ctx = ctx
        self.transactional_id = transactional_id

    def refusal(self, topic: str, partition: int, records: Buffer) -> Refusal | None:
        producer = transactional_producer(records)
        if producer is None:
            return None
        tid = self.transactional_id
        if tid is None:
            return (
                E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                "transactional records need the request's transactional id",
            )
        try:
            coordinator = txn_driver(self.ctx).read()
        except TxnCoordinatorError as exc:
            return E.NOT_ENOUGH_REPLICAS, f"Unable to verify the transaction: {exc.code.name}"
        code = coordinator.verify(tid, producer[0], producer[1], [(topic, partition)])[
            (topic, partition)
        ]
        if code == E.NONE:
            return None
        if code == E.TRANSACTION_ABORTABLE:
            return (
                E.TRANSACTION_ABORTABLE if self.ctx.version >= 11 else E.INVALID_TXN_STATE,
                NOT_ADDED,
            )
        if code == E.PRODUCER_FENCED:
            return E.INVALID_PRODUCER_EPOCH, None
        if code == E.CONCURRENT_TRANSACTIONS:
            return (
                E.NOT_ENOUGH_REPLICAS,
                "Unable to verify the partition has been added to "
                "the transaction. Underlying error: CONCURRENT_TRANSACTIONS",
            )
        return code, None
