"""ShareFetch (key 78), v1-v2: acquire records for a share consumer, and acknowledge (KIP-932).

v1 is what kafka-clients 4.1+ speak (Kafka 4.0's early-access v0 was removed); v2 adds the
acquire mode and renew acknowledgements (KIP-1222).  One request does, in order:

1. **the share session** (``share_sessions.py``): epoch 0 opens one with the request's
   partitions (replacing, and releasing, an earlier one of the member), a later epoch must
   be the session's next (INVALID_SHARE_SESSION_EPOCH; no session: SHARE_SESSION_NOT_FOUND)
   and adds ``Topics``/drops ``ForgottenTopicsData`` (releasing what the member holds in the
   partitions dropped), -1 closes it after the acknowledgements — releasing what the member
   still holds there;
2. **piggy-backed acknowledgements** (types 0 GAP, 1 ACCEPT, 2 RELEASE, 3 REJECT, 4 RENEW),
   per partition, all or nothing: ``AcknowledgeErrorCode`` INVALID_RECORD_STATE when an offset
   is not acquired by this member (its lock expired, it was never delivered to it);
3. **acquisition** from the session's partitions, each in turn starting one further every
   request: up to ``MaxRecords`` (500 when absent) — whole stored batches in the default
   ``batch_optimized`` mode (``ShareAcquireMode`` 0), exactly ``MaxRecords`` in
   ``record_limit`` mode (1) — within ``MaxBytes`` and the broker's ``fetch.max.bytes``.
   Records go out as the stored batches that hold them (never decoded here), with
   ``AcquiredRecords`` ranges and delivery counts; the client keeps only acquired offsets.
   With nothing acquired and ``MaxWaitMs`` left, the request waits for data to land or for
   records to be released, then tries again.  A renew-only request (``IsRenewAck``) and a
   closing one acquire nothing.

Partitions answered: every one named by the request, and those of the session that got
records.  ``AcquisitionLockTimeoutMs`` is the group's ``share.record.lock.duration.ms``.
Unknown topic ids answer UNKNOWN_TOPIC_ID; unknown partitions UNKNOWN_TOPIC_OR_PARTITION.
A member acquires only from partitions assigned to it now: one whose assignment just
changed may still name a partition it lost until its next heartbeat tells it.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

from bayou.core.forwarding import SHARE_READER_CLIENT_ID
from bayou.core.shares import ShareCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.share_sessions import CLOSE, OPEN, ShareSession, next_epoch
from bayou.gateways.kafka.share_support import (
    relayed_by,
    share_driver,
    to_acks,
    topic_id,
    topic_name,
)
from bayou.protocol.kafka import messages as m

DEFAULT_MAX_RECORDS = 500
BATCH_OPTIMIZED = 0

Key = tuple[str, int]


def _error(code: ErrorCode, message: str | None = None) -> m.ShareFetchResponse:
    return m.ShareFetchResponse(error_code=code, error_message=message)


def _partition(ctx: RequestContext, index: int) -> m.ShareFetchResponsePartitionData:
    return m.ShareFetchResponsePartitionData(
        partition_index=index,
        current_leader=m.ShareFetchResponseLeaderIdAndEpoch(
            leader_id=ctx.core.node_id, leader_epoch=0
        ),
        records=b"",
    )


@handles(78, 1, 2)
async def handle_share_fetch(
    ctx: RequestContext, request: m.ShareFetchRequest
) -> m.ShareFetchResponse:
    group_id, member_id = request.group_id or "", request.member_id or ""
    if not group_id:
        return _error(ErrorCode.INVALID_GROUP_ID, "The group id must not be empty.")
    if not member_id:
        return _error(ErrorCode.INVALID_REQUEST, "The member id must not be empty.")
    try:
        shares = share_driver(ctx)
    except ShareCoordinatorError as exc:
        return _error(exc.code)
    coordinator = shares.coordinator
    sessions = ctx.door.share_sessions
    epoch = request.share_session_epoch

    # the partitions named, with their acknowledgements
    named: dict[Key, m.ShareFetchRequestFetchPartition] = {}
    answers: dict[Key, m.ShareFetchResponsePartitionData] = {}
    ids: dict[str, uuid.UUID] = {}
    unknown: dict[uuid.UUID, list[m.ShareFetchResponsePartitionData]] = {}
    for topic in request.topics:
        name = topic_name(ctx, topic.topic_id)
        for fp in topic.partitions:
            if name is None:
                part = _partition(ctx, fp.partition_index)
                part.error_code = ErrorCode.UNKNOWN_TOPIC_ID
                unknown.setdefault(topic.topic_id, []).append(part)
                continue
            ids[name] = topic.topic_id
            named[(name, fp.partition_index)] = fp
            answers[(name, fp.partition_index)] = _partition(ctx, fp.partition_index)

    # 1. the session
    session: ShareSession | None
    via = relayed_by(ctx)
    if epoch == OPEN:
        session = sessions.open(group_id, member_id, ctx.connection, via)
        session.add(named)
    else:
        session = sessions.get(group_id, member_id, via)
        if session is None:
            if epoch != CLOSE:
                return _error(ErrorCode.SHARE_SESSION_NOT_FOUND)
        elif epoch != CLOSE and epoch != session.epoch:
            return _error(ErrorCode.INVALID_SHARE_SESSION_EPOCH)
        if session is not None and epoch != CLOSE:
            session.epoch = next_epoch(epoch)
            session.add(named)
            forgotten: list[Key] = []
            for ft in request.forgotten_topics_data:
                name = topic_name(ctx, ft.topic_id)
                if name is not None:
                    forgotten.extend((name, p) for p in ft.partitions)
            session.forget(forgotten)
            if forgotten:  # what the member still holds there goes back at once
                await shares.run(
                    lambda now: coordinator.release(now, group_id, member_id, forgotten)
                )

    # 2. acknowledgements
    for key, fp in named.items():
        if not fp.acknowledgement_batches:
            continue
        acks = to_acks(fp.acknowledgement_batches)
        try:
            code: ErrorCode = await shares.run(
                partial(
                    coordinator.acknowledge,
                    group_id=group_id,
                    member_id=member_id,
                    topic=key[0],
                    partition=key[1],
                    acks=acks,
                )
            )
        except ShareCoordinatorError as exc:
            code = exc.code
        answers[key].acknowledge_error_code = code
    if epoch == CLOSE:
        if session is not None:
            sessions.close(session)
        return _response(ctx, coordinator.lock_duration_ms(group_id), answers, ids, unknown)

    # 3. acquisition
    assert session is not None
    if not (ctx.version >= 2 and request.is_renew_ack):
        await _acquire(ctx, request, session, answers, ids)
    return _response(ctx, coordinator.lock_duration_ms(group_id), answers, ids, unknown)


async def _acquire(
    ctx: RequestContext,
    request: m.ShareFetchRequest,
    session: ShareSession,
    answers: dict[Key, m.ShareFetchResponsePartitionData],
    ids: dict[str, uuid.UUID],
) -> None:
    shares = share_driver(ctx)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0, request.max_wait_ms) / 1000
    max_records = request.max_records if request.max_records > 0 else DEFAULT_MAX_RECORDS
    whole = not (ctx.version >= 2 and request.share_acquire_mode != BATCH_OPTIMIZED)
    budget = min(request.max_bytes, ctx.door.settings.fetch_max_bytes)
    topics = ctx.core.topics()
    traffic = ctx.core.metrics.door("kafka")
    # a door's member on another broker names the partitions it reads (every partition of
    # an MQTT shared subscription's topics), as it would in its own broker
    anywhere = ctx.header.client_id == SHARE_READER_CLIENT_ID and ctx.session.from_broker(
        ctx.header.client_id
    )
    while True:
        taken = 0
        used = 0
        keys = []
        assigned = shares.coordinator.assigned(session.group_id, session.member_id)
        if anywhere:
            assigned = None
        for topic, p in session.ordered():
            meta = topics.get(topic)
            if meta is None or not 0 <= p < meta.partitions:
                if (topic, p) in answers:
                    answers[(topic, p)].error_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            if assigned is not None and p not in assigned.get(topic, ()):
                continue  # moved to another member meanwhile: it learns so on its heartbeat
            keys.append((topic, p))
            if taken >= max_records or used >= budget:
                continue
            got = await shares.acquire(
                session.group_id,
                session.member_id,
                topic,
                p,
                max_records=max_records - taken,
                whole_batches=whole,
                max_bytes=max(1, budget - used),
            )
            if got is None:
                continue
            raw = got.raw()
            taken += got.count
            used += len(raw)
            traffic.sent(topic, got.count, len(raw))  # /metrics: messages and bytes out
            part = answers.get((topic, p))
            if part is None:
                part = answers[(topic, p)] = _partition(ctx, p)
                ids[topic] = meta.topic_id
            part.records = raw
            part.acquired_records = [
                m.ShareFetchResponseAcquiredRecords(
                    first_offset=r.first, last_offset=r.last, delivery_count=r.count
                )
                for r in got.ranges
            ]
        remaining = deadline - loop.time()
        if taken or remaining <= 0 or not keys or ctx.core.stopping:
            return
        await shares.wait(keys, remaining)


def _response(
    ctx: RequestContext,
    lock_ms: int,
    answers: dict[Key, m.ShareFetchResponsePartitionData],
    ids: dict[str, uuid.UUID],
    unknown: dict[uuid.UUID, list[m.ShareFetchResponsePartitionData]],
) -> m.ShareFetchResponse:
    by_topic: dict[str, list[m.ShareFetchResponsePartitionData]] = {}
    for (topic, _p), part in sorted(answers.items()):
        by_topic.setdefault(topic, []).append(part)
    responses = [
        m.ShareFetchResponseShareFetchableTopicResponse(
            topic_id=ids.get(topic) or topic_id(ctx, topic), partitions=parts
        )
        for topic, parts in by_topic.items()
    ]
    responses.extend(
        m.ShareFetchResponseShareFetchableTopicResponse(topic_id=tid, partitions=parts)
        for tid, parts in unknown.items()
    )
    return m.ShareFetchResponse(
        error_code=ErrorCode.NONE, acquisition_lock_timeout_ms=lock_ms, responses=responses
    )
