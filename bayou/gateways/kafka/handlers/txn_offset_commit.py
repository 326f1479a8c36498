"""TxnOffsetCommit (key 28), v0-v4: a group's offsets, committed inside a transaction.

KIP-447: the offsets are stored as *pending* in the group coordinator and become the group's
committed offsets only when the producer's transaction commits (dropped if it aborts);
meanwhile OffsetFetch with ``require_stable`` (what read_committed consumers send) answers
UNSTABLE_OFFSET_COMMIT for those partitions, so a consumer taking over waits for the outcome.

Checks, as Kafka makes them: the producer's transaction must include the group's offsets
partition (AddOffsetsToTxn first; KIP-890's verification, asked of the transactional id's
coordinator — in process, or over AddPartitionsToTxn v4 when another broker coordinates the
id, ``txn_check.py``): not so
INVALID_TXN_STATE; an unknown id or producer id INVALID_PRODUCER_ID_MAPPING; another epoch
INVALID_PRODUCER_EPOCH (what Kafka's verification answers a fenced producer here).  Then,
per partition, an unknown topic or partition UNKNOWN_TOPIC_OR_PARTITION; then the group
checks v3+'s generation, member id and instance id as OffsetCommit does (a commit for a
group that does not exist with a generation: ILLEGAL_GENERATION; a stale consumer-group
epoch: ILLEGAL_GENERATION, as Kafka maps it).  Metadata over 4096 bytes
OFFSET_METADATA_TOO_LARGE.  v3+ is flexible.
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError, OffsetCommit
from bayou.core.transactions import OFFSETS_PARTITION
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver, known_partition
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.txn_check import verify
from bayou.protocol.kafka import messages as m

E = ErrorCode


async def _verify(ctx: RequestContext, request: m.TxnOffsetCommitRequest) -> ErrorCode:
    """The transaction coordinator's answer (returns with no suspension after it)."""
    producer = (request.producer_id, request.producer_epoch)
    code = (await verify(ctx, request.transactional_id, {producer: [OFFSETS_PARTITION]}))[
        OFFSETS_PARTITION
    ]
    if code == E.TRANSACTION_ABORTABLE:
        return E.INVALID_TXN_STATE
    if code == E.PRODUCER_FENCED:
        return E.INVALID_PRODUCER_EPOCH
    return code


@handles(28, 0, 4)
async def handle_txn_offset_commit(
    ctx: RequestContext, request: m.TxnOffsetCommitRequest
) -> m.TxnOffsetCommitResponse:
    v = ctx.version
    codes: dict[tuple[str, int], ErrorCode] = {}
    commits: list[OffsetCommit] = []
    for topic in request.topics:
        for p in topic.partitions:
            if not known_partition(ctx, topic.name, p.partition_index):
                codes[(topic.name, p.partition_index)] = E.UNKNOWN_TOPIC_OR_PARTITION
                continue
            commits.append(
                OffsetCommit(
                    topic.name,
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch if v >= 2 else -1,
                    p.committed_metadata,
                )
            )
    results: list[ErrorCode]
    refused = await _verify(ctx, request)
    if refused != E.NONE:
        results = [refused] * len(commits)
    else:
        # no suspension between the verification's answer and the commit (whose pending
        # offsets are recorded as ``run`` starts): the transaction cannot end in between
        try:
            groups = driver(ctx)
            results = await groups.run(
                lambda now, _token: groups.coordinator.txn_commit_offsets(
                    now,
                    group_id=request.group_id,
                    producer_id=request.producer_id,
                    generation=request.generation_id if v >= 3 else -1,
                    member_id=request.member_id if v >= 3 else "",
                    instance_id=request.group_instance_id if v >= 3 else None,
                    offsets=commits,
                )
            )
        except GroupCoordinatorError as exc:
            results = [exc.code] * len(commits)
    for c, code in zip(commits, results, strict=True):
        codes[(c.topic, c.partition)] = code
    return m.TxnOffsetCommitResponse(
        topics=[
            m.TxnOffsetCommitResponseTopic(
                name=topic.name,
                partitions=[
                    m.TxnOffsetCommitResponsePartition(
                        partition_index=p.partition_index,
                        error_code=codes[(topic.name, p.partition_index)],
                    )
                    for p in topic.partitions
                ],
            )
            for topic in request.topics
        ]
    )
