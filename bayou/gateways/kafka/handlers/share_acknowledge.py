"""ShareAcknowledge (key 79), v1-v2: acknowledge a share consumer's records (KIP-932).

v1 is what kafka-clients 4.1+ speak; v2 adds renew acknowledgements (KIP-1222) and answers
the lock duration.  The request belongs to the member's share session (``share_sessions.py``):
epoch 0 is INVALID_SHARE_SESSION_EPOCH (a session is opened by ShareFetch), an unknown
session SHARE_SESSION_NOT_FOUND, a wrong epoch INVALID_SHARE_SESSION_EPOCH; -1 closes the
session once the acknowledgements are applied, releasing what the member still holds there.
Acknowledgements (0 GAP, 1 ACCEPT, 2 RELEASE, 3 REJECT, 4 RENEW) apply per partition, all or
nothing: INVALID_RECORD_STATE when an offset is not acquired by this member.
"""

from __future__ import annotations

from functools import partial

from bayou.core.shares import ShareCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.share_sessions import CLOSE, OPEN, next_epoch
from bayou.gateways.kafka.share_support import relayed_by, share_driver, to_acks, topic_name
from bayou.protocol.kafka import messages as m


def _error(code: ErrorCode, message: str | None = None) -> m.ShareAcknowledgeResponse:
    return m.ShareAcknowledgeResponse(error_code=code, error_message=message)


@handles(79, 1, 2)
async def handle_share_acknowledge(
    ctx: RequestContext, request: m.ShareAcknowledgeRequest
) -> m.ShareAcknowledgeResponse:
    group_id, member_id = request.group_id or "", request.member_id or ""
    if not group_id:
        return _error(ErrorCode.INVALID_GROUP_ID, "The group id must not be empty.")
    if not member_id:
        return _error(ErrorCode.INVALID_REQUEST, "The member id must not be empty.")
    try:
        shares = share_driver(ctx)
    except ShareCoordinatorError as exc:
        return _error(exc.code)
    epoch = request.share_session_epoch
    if epoch == OPEN:
        return _error(ErrorCode.INVALID_SHARE_SESSION_EPOCH)
    sessions = ctx.door.share_sessions
    session = sessions.get(group_id, member_id, relayed_by(ctx))
    if session is None and epoch != CLOSE:
        return _error(ErrorCode.SHARE_SESSION_NOT_FOUND)
    if session is not None and epoch != CLOSE:
        if epoch != session.epoch:
            return _error(ErrorCode.INVALID_SHARE_SESSION_EPOCH)
        session.epoch = next_epoch(epoch)
    coordinator = shares.coordinator
    responses = []
    for topic in request.topics:
        name = topic_name(ctx, topic.topic_id)
        parts = []
        for ap in topic.partitions:
            code = ErrorCode.UNKNOWN_TOPIC_ID
            if name is not None:
                acks = to_acks(ap.acknowledgement_batches)
                try:
                    code = await shares.run(
                        partial(
                            coordinator.acknowledge,
                            group_id=group_id,
                            member_id=member_id,
                            topic=name,
                            partition=ap.partition_index,
                            acks=acks,
                        )
                    )
                except ShareCoordinatorError as exc:
                    code = exc.code
            parts.append(
                m.ShareAcknowledgeResponsePartitionData(
                    partition_index=ap.partition_index,
                    error_code=code,
                    current_leader=m.ShareAcknowledgeResponseLeaderIdAndEpoch(
                        leader_id=ctx.core.node_id, leader_epoch=0
                    ),
                )
            )
        responses.append(
            m.ShareAcknowledgeResponseShareAcknowledgeTopicResponse(
                topic_id=topic.topic_id, partitions=parts
            )
        )
    if epoch == CLOSE and session is not None:
        sessions.close(session)
    return m.ShareAcknowledgeResponse(
        error_code=ErrorCode.NONE,
        acquisition_lock_timeout_ms=coordinator.lock_duration_ms(group_id),
        responses=responses,
    )
