"""DescribeLogDirs (key 35), v0-v4: the size of every partition on disk.

Bayou has one log directory, the broker's data directory.  ``topics`` null (or empty in
v0-v1 as Kafka's tools send it) means every partition; otherwise the named partitions
(unknown ones are simply absent, as in Kafka).  Each partition's size is the bytes of its
segment files; the offset lag is 0 (no replication, no future logs).  v3+ carry a top-level
error code; v4 adds the volume's total and usable bytes.  v2+ are flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(35, 0, 4)
async def handle_describe_log_dirs(
    ctx: RequestContext, request: m.DescribeLogDirsRequest
) -> m.DescribeLogDirsResponse:
    core = ctx.core
    wanted: dict[str, set[int] | None] = {}
    if request.topics:
        for t in request.topics:
            wanted.setdefault(t.topic, set())
            entry = wanted[t.topic]
            assert entry is not None
            entry.update(t.partitions)
    else:
        wanted = {name: None for name in core.topics()}
    topics: list[m.DescribeLogDirsResponseDescribeLogDirsTopic] = []
    for name, indexes in wanted.items():
        meta = core.topics().get(name)
        if meta is None:
            continue
        partitions = [
            m.DescribeLogDirsResponseDescribeLogDirsPartition(
                partition_index=p,
                partition_size=core.partition(name, p).size_bytes,
                offset_lag=0,
                is_future_key=False,
            )
            for p in range(meta.partitions)
            if indexes is None or p in indexes
        ]
        if partitions:
            topics.append(
                m.DescribeLogDirsResponseDescribeLogDirsTopic(name=name, partitions=partitions)
            )
    total, free = core.storage_usage()
    return m.DescribeLogDirsResponse(
        error_code=ErrorCode.NONE,
        results=[
            m.DescribeLogDirsResponseDescribeLogDirsResult(
                error_code=ErrorCode.NONE,
                log_dir=core.storage_location,
                topics=topics,
                total_bytes=total,
                usable_bytes=free,
            )
        ],
    )
