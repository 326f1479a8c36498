"""WriteTxnMarkers (key 27), v0-v1: refused to clients — markers are the coordinator's.

In Kafka the transaction coordinator sends WriteTxnMarkers to partition leaders, and only a
principal holding CLUSTER_ACTION (the brokers) may: any other caller gets
CLUSTER_AUTHORIZATION_FAILED for every partition.  Bayou's coordinator writes markers in
process (``bayou/core/transactions/markers.py``), so no request ever needs this API; a client
that sends one is answered as Kafka answers a client without CLUSTER_ACTION, and nothing is
written — a client-made marker would end (or abort) another producer's transaction.  (Kafka
without an authorizer would write it; Bayou does not open that door.)  v1 is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(27, 0, 1)
async def handle_write_txn_markers(
    ctx: RequestContext, request: m.WriteTxnMarkersRequest
) -> m.WriteTxnMarkersResponse:
    return m.WriteTxnMarkersResponse(
        markers=[
            m.WriteTxnMarkersResponseWritableTxnMarkerResult(
                producer_id=marker.producer_id,
                topics=[
                    m.WriteTxnMarkersResponseWritableTxnMarkerTopicResult(
                        name=topic.name,
                        partitions=[
                            m.WriteTxnMarkersResponseWritableTxnMarkerPartitionResult(
                                partition_index=p,
                                error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                            )
                            for p in topic.partition_indexes
                        ],
                    )
                    for topic in marker.topics
                ],
            )
            for marker in request.markers
        ]
    )
