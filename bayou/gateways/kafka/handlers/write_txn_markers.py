"""WriteTxnMarkers (key 27), v0-v1: a transaction coordinator's markers, on their leader.

In Kafka the transaction coordinator sends WriteTxnMarkers to partition leaders, and only a
principal holding CLUSTER_ACTION (the brokers) may.  Bayou's coordinators do the same in a
cluster (``bayou/core/transactions/markers.py``): they send the markers of the partitions
another broker leads to that broker, logged in as the internal user.  That principal alone is
served — any other caller gets CLUSTER_AUTHORIZATION_FAILED for every partition and nothing
is written, with or without an authorizer (a client-made marker would end or abort another
producer's transaction; Kafka without an authorizer would write it, Bayou does not open that
door).

Per partition: a topic or partition that does not exist is UNKNOWN_TOPIC_OR_PARTITION; a
partition this broker does not lead NOT_LEADER_OR_FOLLOWER (the coordinator retries at the
leader it finds next); otherwise the marker is written through the leader's fenced handle
(``Core.write_marker``) and the engine's error, if any, is the answer.  The partition
``__consumer_offsets``-0 stands for the consumer groups this broker coordinates: the
producer's pending offsets in them are completed (``Core.complete_offsets``) —
COORDINATOR_LOAD_IN_PROGRESS while this broker is still taking over a change of the live
brokers (the coordinator retries; a group it is loading finds its pending offsets in the
log).  v1 is flexible.
"""

from __future__ import annotations

import asyncio

from bayou.core.transactions import OFFSETS_PARTITION
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

E = ErrorCode
Marker = m.WriteTxnMarkersRequestWritableTxnMarker
PartitionResult = m.WriteTxnMarkersResponseWritableTxnMarkerPartitionResult
TopicResult = m.WriteTxnMarkersResponseWritableTxnMarkerTopicResult


async def _write(ctx: RequestContext, marker: Marker, topic: str, index: int) -> ErrorCode:
    core = ctx.core
    pid, commit = marker.producer_id, marker.transaction_result
    if (topic, index) == OFFSETS_PARTITION:
        if not core.cluster.settled():
            return E.COORDINATOR_LOAD_IN_PROGRESS
        return await core.complete_offsets(pid, commit)
    meta = core.topics().get(topic)
    if meta is None or not 0 <= index < meta.partitions:
        return E.UNKNOWN_TOPIC_OR_PARTITION
    return await core.write_marker(topic, index, pid, marker.producer_epoch, commit)


@handles(27, 0, 1)
async def handle_write_txn_markers(
    ctx: RequestContext, request: m.WriteTxnMarkersRequest
) -> m.WriteTxnMarkersResponse:
    allowed = ctx.core.security.is_broker(ctx.session.principal)
    results: list[m.WriteTxnMarkersResponseWritableTxnMarkerResult] = []
    for marker in request.markers:
        wanted = [(t.name, p) for t in marker.topics for p in t.partition_indexes]
        if allowed:
            codes = await asyncio.gather(*(_write(ctx, marker, t, p) for t, p in wanted))
        else:
            codes = [E.CLUSTER_AUTHORIZATION_FAILED] * len(wanted)
        by_topic: dict[str, list[PartitionResult]] = {}
        for (t, p), code in zip(wanted, codes, strict=True):
            by_topic.setdefault(t, []).append(PartitionResult(partition_index=p, error_code=code))
        results.append(
            m.WriteTxnMarkersResponseWritableTxnMarkerResult(
                producer_id=marker.producer_id,
                topics=[TopicResult(name=t, partitions=ps) for t, ps in by_topic.items()],
            )
        )
    return m.WriteTxnMarkersResponse(markers=results)
