"""Fetch (key 1), v4-v16: whole stored batches out, long-polling for data.

Records are whole batches as stored — no record is decoded here — and are not read into
memory either: the engine's ``Partition.fetch`` finds them (by their headers, for the local
engine) and hands back a ``RecordSet`` (the local engine's file slices, ``FileRecords``),
which the connection reads and sends in chunks as the socket drains
(``response_stream.py``); only small, cached sets are copied into the frame.  The engine
never blocks the loop: a cold header or chunk is read in a worker thread.

Limits: ``partition_max_bytes`` per partition (the consumer's ``max.partition.fetch.bytes``)
and, for the response, the smaller of the request's ``max_bytes`` and the broker's
``fetch_max_bytes`` (Kafka's ``fetch.max.bytes``; 16 MiB by default, see
``docs/design/limits.md``).  KIP-74: the first batch of the
first partition with data is returned whole even when it exceeds both, so a consumer always
makes progress; any later partition's batches must fit both limits, or it returns nothing
this time.

Long poll: with fewer than ``min_bytes`` ready and ``max_wait_ms`` > 0, the request waits on
the partitions it reads until an append lands or the time is up, then reads again.  An error
on any partition answers at once.

Isolation: READ_UNCOMMITTED (0) reads up to the high watermark.  READ_COMMITTED (1) reads
only batches that start below the partition's last stable offset (the first offset of the
earliest open transaction) and answers the aborted transactions with data in that range
(producer id, first offset), so the consumer skips those producers' records up to their
ABORT markers.  Every answer carries the last stable offset.
Quota (``consumer_byte_rate``, ``throttling.py``): a client with one gets at most what one
quota window allows per response (as Kafka caps it); the records' bytes are recorded and
the throttle time they leave goes into the response.  A fetch that completes while the
client is still over its rate from earlier responses (pipelined, or from another
connection) is answered empty, with the throttle time, as Kafka's ``getThrottledResponse``.
Kafka also answers empty the fetch whose own bytes put the client over; here that fetch is
served and the throttle follows it, so a batch larger than a window's worth (sent whole,
KIP-74) cannot be refused for ever.
Fetch sessions (v7+, KIP-227) are not kept: every response carries session id 0, which tells
clients to send full fetch requests.  v13+ address topics by id.  Follower fetches (replica
id >= 0) are not expected and are served like a consumer's.
"""

from __future__ import annotations

import asyncio

from bayou.core.types import Buffer, RecordSet
from bayou.errors import ErrorCode, KafkaError, NotLeaderOrFollower
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.primitives import deferred

READ_COMMITTED = 1

# (topics answered, bytes, any error, partitions read, record bytes per topic)
Read = tuple[
    list[m.FetchResponseFetchableTopicResponse],
    int,
    bool,
    list[tuple[str, int]],
    dict[str, int],
]


def _close_records(topics: list[m.FetchResponseFetchableTopicResponse]) -> None:
    """Return the leases of records a response will not send (a long poll reads again)."""
    for topic in topics:
        for partition in topic.partitions:
            records = partition.records
            if records is not None and not isinstance(records, (bytes, bytearray, memoryview)):
                records.close()


async def _read(ctx: RequestContext, request: m.FetchRequest) -> Read:
    topics: list[m.FetchResponseFetchableTopicResponse] = []
    try:
        return await _read_into(ctx, request, topics)
    except BaseException:
        _close_records(topics)
        raise


async def _read_into(
    ctx: RequestContext,
    request: m.FetchRequest,
    topics: list[m.FetchResponseFetchableTopicResponse],
) -> Read:
    core = ctx.core
    committed = request.isolation_level == READ_COMMITTED
    by_id = ctx.version >= 13
    budget = min(request.max_bytes, ctx.door.settings.fetch_max_bytes)
    quota = ctx.quota.fetch if ctx.quota is not None else None
    if quota is not None:
        budget = min(budget, max(1, int(quota.window_value)))
    total = 0
    errors = False
    keys: list[tuple[str, int]] = []
    sizes: dict[str, int] = {}
    positions = ctx.fetch_positions
    moved: dict[str, int] = {}  # offsets this connection's fetches moved past, per topic
    for fetch_topic in request.topics:
        if by_id:
            meta = core.topic_by_id(fetch_topic.topic_id)
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
                        records=b"",  # empty, not null: librdkafka drops a response with a null set
                    )
                )
                errors = True
                continue
            try:
                log = core.partition(name, fp.partition)
                if not core.leads(name, fp.partition):
                    raise NotLeaderOrFollower(f"{name}-{fp.partition} is led by another broker")
            except KafkaError as exc:
                partitions.append(
                    m.FetchResponsePartitionData(
                        partition_index=fp.partition,
                        error_code=exc.code,
                        high_watermark=-1,
                        records=b"",  # empty, not null: librdkafka drops a response with a null set
                    )
                )
                errors = True
                continue
            keys.append((name, fp.partition))
            before = positions.get((name, fp.partition))
            if before is not None and fp.fetch_offset > before:
                moved[name] = moved.get(name, 0) + fp.fetch_offset - before
            positions[(name, fp.partition)] = fp.fetch_offset
            code = ErrorCode.NONE
            data: Buffer | RecordSet = b""
            # READ_COMMITTED reads below the last stable offset as it is before the read
            upper = log.last_stable_offset if committed else None
            aborted: list[m.FetchResponseAbortedTransaction] | None = None
            try:
                remaining = budget - total
                if remaining > 0 or total == 0:
                    limit = max(1, min(fp.partition_max_bytes, remaining))
                    data = await log.fetch(
                        fp.fetch_offset, limit, min_one=total == 0, max_offset=upper
                    )
                if upper is not None:
                    aborted = [
                        m.FetchResponseAbortedTransaction(
                            producer_id=t.producer_id, first_offset=t.first_offset
                        )
                        for t in await log.aborted_transactions(fp.fetch_offset, upper)
                    ]
            except KafkaError as exc:
                code = exc.code
                errors = True
            total += len(data)
            if data:
                sizes[name] = sizes.get(name, 0) + len(data)
            # after the read: a cold read (worker thread) sees appends that land meanwhile,
            # and the high watermark must cover every record returned
            high_watermark = log.log_end_offset
            partitions.append(
                m.FetchResponsePartitionData(
                    partition_index=fp.partition,
                    error_code=code,
                    high_watermark=high_watermark,
                    last_stable_offset=log.last_stable_offset,
                    log_start_offset=log.log_start_offset,
                    aborted_transactions=aborted,
                    preferred_read_replica=-1,
                    records=data
                    if isinstance(data, (bytes, bytearray, memoryview))
                    else deferred(data),
                )
            )
    if moved:
        traffic = ctx.core.metrics.door("kafka")
        for topic, count in moved.items():
            traffic.sent(topic, count, 0)
    return topics, total, errors, keys, sizes


@handles(1, 4, 16)
async def handle_fetch(ctx: RequestContext, request: m.FetchRequest) -> m.FetchResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0, request.max_wait_ms) / 1000
    min_bytes = max(1, request.min_bytes)
    metrics = ctx.core.metrics
    while True:
        topics, total, errors, keys, sizes = await _read(ctx, request)
        remaining = deadline - loop.time()
        if total >= min_bytes or errors or remaining <= 0 or not keys or ctx.core.stopping:
            break
        _close_records(topics)  # read again after the wait
        metrics.purgatory.fetch += 1
        try:
            woken = await ctx.core.wait_for_data(keys, remaining)
        finally:
            metrics.purgatory.fetch -= 1
        if not woken:
            topics, total, errors, keys, sizes = await _read(ctx, request)
            break
    quota = ctx.quota.fetch if ctx.quota is not None else None
    if quota is not None and total:
        throttle = quota.throttle_ms()
        if throttle:  # still over its rate from earlier responses: nothing this time
            _close_records(topics)
            ctx.throttle_ms = max(ctx.throttle_ms, throttle)
            return m.FetchResponse(
                throttle_time_ms=throttle, error_code=ErrorCode.NONE, session_id=0, responses=[]
            )
        ctx.throttle_ms = max(ctx.throttle_ms, quota.record(total))
    if sizes:
        traffic = metrics.door("kafka")
        for topic, size in sizes.items():
            traffic.sent(topic, 0, size)
    return m.FetchResponse(error_code=ErrorCode.NONE, session_id=0, responses=topics)
