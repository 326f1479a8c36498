"""OffsetFetch (key 9), v0-v9: a group's committed offsets.

v0-v7 ask about one group; v8+ about several at once (one entry per group).  A null topic
list (v2+) means every partition the group has committed.  Partitions without a commit (and
unknown groups) answer offset -1 with no error, as Kafka does.  v9 carries the member id and
epoch of a consumer-group member, checked (UNKNOWN_MEMBER_ID / STALE_MEMBER_EPOCH).
``RequireStable`` (v7+, what read_committed consumers send): a partition whose group holds
an offset committed inside a transaction still open (TxnOffsetCommit, KIP-447) answers
UNSTABLE_OFFSET_COMMIT — retriable: the consumer asks again once the transaction ended, so it
never starts from an offset the transaction may still move.
"""

from __future__ import annotations

from bayou.core.groups import FetchedOffset, GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

Wanted = list[tuple[str, int]] | None


def _wanted(
    topics: list[m.OffsetFetchRequestTopic] | list[m.OffsetFetchRequestTopics] | None,
) -> Wanted:
    if topics is None:
        return None
    return [(t.name, p) for t in topics for p in t.partition_indexes]


def _by_topic(fetched: list[FetchedOffset]) -> dict[str, list[FetchedOffset]]:
    out: dict[str, list[FetchedOffset]] = {}
    for f in fetched:
        out.setdefault(f.topic, []).append(f)
    return out


@handles(9, 0, 9)
async def handle_offset_fetch(
    ctx: RequestContext, request: m.OffsetFetchRequest
) -> m.OffsetFetchResponse:
    try:
        coordinator = driver(ctx).read()
    except GroupCoordinatorError as exc:
        return _failed(ctx, request, exc.code)
    if ctx.version < 8:
        error, fetched = coordinator.fetch_offsets(
            request.group_id,
            _wanted(request.topics),
            require_stable=ctx.version >= 7 and request.require_stable,
        )
        return m.OffsetFetchResponse(
            error_code=error,
            topics=[
                m.OffsetFetchResponseTopic(
                    name=topic,
                    partitions=[
                        m.OffsetFetchResponsePartition(
                            partition_index=f.partition,
                            committed_offset=f.offset,
                            committed_leader_epoch=f.leader_epoch,
                            metadata=f.metadata,
                            error_code=f.error,
                        )
                        for f in items
                    ],
                )
                for topic, items in _by_topic(fetched).items()
            ],
        )
    groups = []
    for g in request.groups:
        error, fetched = coordinator.fetch_offsets(
            g.group_id,
            _wanted(g.topics),
            member_id=g.member_id if ctx.version >= 9 else None,
            member_epoch=g.member_epoch,
            require_stable=request.require_stable,
        )
        groups.append(
            m.OffsetFetchResponseGroup(
                group_id=g.group_id,
                error_code=error,
                topics=[
                    m.OffsetFetchResponseTopics(
                        name=topic,
                        partitions=[
                            m.OffsetFetchResponsePartitions(
                                partition_index=f.partition,
                                committed_offset=f.offset,
                                committed_leader_epoch=f.leader_epoch,
                                metadata=f.metadata,
                                error_code=f.error,
                            )
                            for f in items
                        ],
                    )
                    for topic, items in _by_topic(fetched).items()
                ],
            )
        )
    return m.OffsetFetchResponse(groups=groups)


def _failed(
    ctx: RequestContext, request: m.OffsetFetchRequest, code: ErrorCode
) -> m.OffsetFetchResponse:
    if ctx.version < 8:
        return m.OffsetFetchResponse(error_code=code)
    return m.OffsetFetchResponse(
        groups=[
            m.OffsetFetchResponseGroup(group_id=g.group_id, error_code=code) for g in request.groups
        ]
    )
