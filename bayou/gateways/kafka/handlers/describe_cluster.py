"""DescribeCluster (key 60), v0-v1: the live brokers (``Core.cluster``) and the controller
(the lowest live node id: Bayou has no controller of its own; Kafka clients only show it).

v1 adds the endpoint type; only brokers (1) are described, a controller endpoint request
gets MISMATCHED_ENDPOINT_TYPE.  Cluster authorized operations, when asked for, are every
operation that applies to the cluster (no authorizer: ``bayou/gateways/kafka/authorization.py``).
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.authorization import cluster_operations
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.placement import live_brokers
from bayou.protocol.kafka import messages as m

BROKER_ENDPOINT = 1


@handles(60, 0, 1)
async def handle_describe_cluster(
    ctx: RequestContext, request: m.DescribeClusterRequest
) -> m.DescribeClusterResponse:
    core = ctx.core
    if ctx.version >= 1 and request.endpoint_type != BROKER_ENDPOINT:
        return m.DescribeClusterResponse(
            error_code=ErrorCode.MISMATCHED_ENDPOINT_TYPE,
            error_message="only broker endpoints are served",
            cluster_id=core.cluster_id,
        )
    return m.DescribeClusterResponse(
        error_code=ErrorCode.NONE,
        cluster_id=core.cluster_id,
        controller_id=core.cluster.controller_id,
        brokers=[
            m.DescribeClusterResponseDescribeClusterBroker(
                broker_id=b.node_id, host=b.host, port=b.port, rack=b.rack
            )
            for b in live_brokers(ctx)
        ],
        cluster_authorized_operations=cluster_operations(
            request.include_cluster_authorized_operations
        ),
    )
