"""Fetch (key 1), v4-v16: whole stored batches out, long-polling for data.

Reads go straight to ``PartitionLog.read``, which returns whole record batches as stored —
no record is decoded here.  The event loop reads only from the page cache (``nowait``); a
partition whose data is cold is read in a worker thread, so a cold segment never stalls the
loop for other clients.  Limits: ``partition_max_bytes`` per partition and ``max_bytes``
(v3+) for the response, except that the first partition with data may exceed both by one
batch so a consumer can always make progress (KIP-74).

Long poll: with fewer than ``min_bytes`` ready and ``max_wait_ms`` > 0, the request waits on
the partitions it reads until an append lands or the time is up, then reads again.  An error
on any partition answers at once.

Isolation: there are no transactions yet, so the last stable offset equals the high
watermark and ``aborted_transactions`` is empty for read_committed and read_uncommitted alike.
Fetch sessions (v7+, KIP-227) are not kept: every response carries session id 0, which tells
clients to send full fetch requests.  v13+ address topics by id.  Follower fetches (replica
id >= 0) are not expected and are served like a consumer's.
"""

from __future__ import annotations

import asyncio

from bayou.broker.context import RequestContext
from bayou.broker.handlers.registry import handles
from bayou.errors import ErrorCode, KafkaError
from bayou.protocol.kafka import messages as m


async def _read(
    ctx: RequestContext, request: m.FetchRequest
) -> tuple[list[m.FetchResponseFetchableTopicResponse], int, bool, list[tuple[str, int]]]:
    logs = ctx.broker.logs
    by_id = ctx.version >= 13
    budget = request.max_bytes if ctx.version >= 3 else 0x7FFFFFFF
    total = 0
    errors = False
    keys: list[tuple[str, int]] = []
    topics: list[m.FetchResponseFetchableTopicResponse] = []
    for fetch_topic in request.topics:
        if by_id:
            meta = logs.topic_by_id(fetch_topic.topic_id)
            name = meta.name if meta is not None else None
            missing = ErrorCode.UNKNOWN_TOPIC_ID
        else:
            name = fetch_topic.topic
            missing = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        partitions: list[m.FetchResponsePartitionData] = []
        topics.append(
            m.FetchResponseFetchableTopicResponse(
                topic=fetch_topic.topic, topic_id=fetch_topic.topic_id, partitions=partitions
            )
        )
        for fp in fetch_topic.partitions:
            if name is None:
                partitions.append(
                    m.FetchResponsePartitionData(
                        partition_index=fp.partition,
                        error_code=missing,
                        high_watermark=-1,
                        records=None,
                    )
                )
                errors = True
                continue
            try:
                log = logs.partition(name, fp.partition)
            except KafkaError as exc:
                partitions.append(
                    m.FetchResponsePartitionData(
                        partition_index=fp.partition,
                        error_code=exc.code,
                        high_watermark=-1,
                        records=None,
                    )
                )
                errors = True
                continue
            keys.append((name, fp.partition))
            code = ErrorCode.NONE
            data: bytes | bytearray | memoryview = b""
            try:
                remaining = budget - total
                if remaining > 0 or total == 0:
                    limit = max(1, min(fp.partition_max_bytes, remaining))
                    data = await ctx.broker.read(log, fp.fetch_offset, limit)
                    if total > 0 and len(data) > remaining:
                        data = b""
            except KafkaError as exc:
                code = exc.code
                errors = True
            total += len(data)
            # after the read: a cold read (worker thread) sees appends that land meanwhile,
            # and the high watermark must cover every record returned
            high_watermark = log.log_end_offset
            partitions.append(
                m.FetchResponsePartitionData(
                    partition_index=fp.partition,
                    error_code=code,
                    high_watermark=high_watermark,
                    last_stable_offset=high_watermark,
                    log_start_offset=log.log_start_offset,
                    aborted_transactions=None,
                    preferred_read_replica=-1,
                    records=data,
                )
            )
    return topics, total, errors, keys


@handles(1, 4, 16)
async def handle_fetch(ctx: RequestContext, request: m.FetchRequest) -> m.FetchResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0, request.max_wait_ms) / 1000
    min_bytes = max(1, request.min_bytes)
    while True:
        topics, total, errors, keys = await _read(ctx, request)
        remaining = deadline - loop.time()
        if total >= min_bytes or errors or remaining <= 0 or not keys or ctx.broker.stopping:
            break
        if not await ctx.broker.waiters.wait_any(keys, remaining):
            topics, total, errors, keys = await _read(ctx, request)
            break
    return m.FetchResponse(error_code=ErrorCode.NONE, session_id=0, responses=topics)
