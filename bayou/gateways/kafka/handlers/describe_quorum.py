"""DescribeQuorum (key 55), v0-v2: the metadata quorum of a one-node cluster — this node.

Kafka answers this from its Raft metadata log, the single partition ``__cluster_metadata``-0.
Bayou keeps its metadata in files of the data directory (no Raft log), and this node is its
own controller (Metadata and DescribeCluster name it), so the truthful answer is a quorum of
one: this node leads it and is its only voter, at leader epoch 0, with no observers; as
there is no metadata log, the high watermark and the voter's log end offset are 0 and its
fetch and caught-up times (v1+) are now, as Kafka reports for the leader itself.  v2 adds
the voter's directory id (none: zero) and its listener.

A request for any other topic or partition — or for more than that one partition — answers
UNKNOWN_TOPIC_OR_PARTITION on each partition asked, as Kafka's Raft client does.  v0+ are
flexible.
"""

from __future__ import annotations

import uuid

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

METADATA_TOPIC = "__cluster_metadata"
LISTENER = "PLAINTEXT"


def _is_metadata_partition(request: m.DescribeQuorumRequest) -> bool:
    topics = request.topics
    return (
        len(topics) == 1
        and topics[0].topic_name == METADATA_TOPIC
        and len(topics[0].partitions) == 1
        and topics[0].partitions[0].partition_index == 0
    )


@handles(55, 0, 2)
async def handle_describe_quorum(
    ctx: RequestContext, request: m.DescribeQuorumRequest
) -> m.DescribeQuorumResponse:
    core, door = ctx.core, ctx.door
    if not _is_metadata_partition(request):
        return m.DescribeQuorumResponse(
            error_code=ErrorCode.NONE,
            topics=[
                m.DescribeQuorumResponseTopicData(
                    topic_name=t.topic_name,
                    partitions=[
                        m.DescribeQuorumResponsePartitionData(
                            partition_index=p.partition_index,
                            error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                            error_message="This server does not host this topic-partition.",
                        )
                        for p in t.partitions
                    ],
                )
                for t in request.topics
            ],
        )
    now = core.clock_ms()
    return m.DescribeQuorumResponse(
        error_code=ErrorCode.NONE,
        topics=[
            m.DescribeQuorumResponseTopicData(
                topic_name=METADATA_TOPIC,
                partitions=[
                    m.DescribeQuorumResponsePartitionData(
                        partition_index=0,
                        error_code=ErrorCode.NONE,
                        leader_id=core.node_id,
                        leader_epoch=0,
                        high_watermark=0,
                        current_voters=[
                            m.DescribeQuorumResponseReplicaState(
                                replica_id=core.node_id,
                                replica_directory_id=uuid.UUID(int=0),
                                log_end_offset=0,
                                last_fetch_timestamp=now,
                                last_caught_up_timestamp=now,
                            )
                        ],
                        observers=[],
                    )
                ],
            )
        ],
        nodes=[
            m.DescribeQuorumResponseNode(
                node_id=core.node_id,
                listeners=[
                    m.DescribeQuorumResponseListener(
                        name=LISTENER, host=door.advertised_host, port=door.advertised_port
                    )
                ],
            )
        ],
    )
