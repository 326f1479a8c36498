"""ACL checks on every Kafka API, as Kafka's ``KafkaApis`` makes them.

Theory of operation
-------------------
With an authorizer, every request goes through ``checked`` before its handler: the request
is split into what the principal may do and what it may not; the handler serves the first
part unchanged and the refused part is answered beside it with Kafka's per-entity error
(TOPIC_, GROUP_, CLUSTER_, TRANSACTIONAL_ID_AUTHORIZATION_FAILED).  Requests about one group
or one transactional id are answered with the error alone; listings (Metadata without
topic names, ListGroups, ListTransactions, OffsetFetch of all topics) leave out what the
principal may not describe; ``*_authorized_operations`` fields become the principal's real
sets.  Handlers themselves know nothing of ACLs, so one table here is the whole policy:
the operation each API needs on which resource follows Kafka's (see
``docs/design/security.md``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bayou.core.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from bayou.errors import ErrorCode
from bayou.gateways.kafka.authorization import NOT_PROVIDED, bit_field
from bayou.gateways.kafka.context import RequestContext
from bayou.protocol.kafka import API_KEYS
from bayou.protocol.kafka import messages as m

Op = AclOperation
RT = ResourceType
E = ErrorCode
Handler = Callable[[RequestContext, Any], Awaitable[Any]]
Check = Callable[[RequestContext, Any, Handler], Awaitable[Any]]

TOPIC_DENIED = E.TOPIC_AUTHORIZATION_FAILED
GROUP_DENIED = E.GROUP_AUTHORIZATION_FAILED
CLUSTER_DENIED = E.CLUSTER_AUTHORIZATION_FAILED
TXN_DENIED = E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
CONFIG_TOPIC, CONFIG_BROKER, CONFIG_BROKER_LOGGER = 2, 4, 8

CHECKS: dict[int, Check] = {}


async def checked(ctx: RequestContext, handler: Handler, request: Any) -> Any:
    check = CHECKS.get(ctx.header.api_key)
    if check is None:
        return await handler(ctx, request)
    return await check(ctx, request, handler)


def check(*api_keys: int) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        for key in api_keys:
            CHECKS[key] = fn
        return fn

    return register


def topic_ok(ctx: RequestContext, op: AclOperation, name: str) -> bool:
    return ctx.session.allowed(op, RT.TOPIC, name)


def group_ok(ctx: RequestContext, op: AclOperation, name: str) -> bool:
    return ctx.session.allowed(op, RT.GROUP, name)


def cluster_ok(ctx: RequestContext, op: AclOperation) -> bool:
    return ctx.session.allowed(op, RT.CLUSTER, CLUSTER_NAME)


def txn_ok(ctx: RequestContext, op: AclOperation, name: str) -> bool:
    return ctx.session.allowed(op, RT.TRANSACTIONAL_ID, name)


def refused(ctx: RequestContext, error: ErrorCode, **fields: Any) -> Any:
    """The API's response with ``error_code`` (and ``fields``), everything else default."""
    response: Any = API_KEYS[ctx.header.api_key].response
    return response(error_code=error, **fields)


def operations(ctx: RequestContext, resource_type: ResourceType, name: str) -> int:
    s = ctx.session
    assert s.principal is not None
    ops = s.security.authorizer.operations(s.principal, s.host, resource_type, name)
    return bit_field(ops)


# -- data ----------------------------------------------------------------------------------


@check(0)
async def _produce(ctx: RequestContext, request: m.ProduceRequest, handler: Handler) -> Any:
    txn = request.transactional_id
    txn_refused = txn is not None and not txn_ok(ctx, Op.WRITE, txn)
    denied = [t for t in request.topic_data if txn_refused or not topic_ok(ctx, Op.WRITE, t.name)]
    if not denied:
        return await handler(ctx, request)
    error = TXN_DENIED if txn_refused else TOPIC_DENIED
    if request.acks == 0:  # no answer: write what may be written
        request.topic_data = [t for t in request.topic_data if t not in denied]
        return await handler(ctx, request) if request.topic_data else None
    return await _serve_allowed_topics(ctx, request, handler, PRODUCE, denied, error)


@check(1)
async def _fetch(ctx: RequestContext, request: m.FetchRequest, handler: Handler) -> Any:
    follower = request.replica_id >= 0 or request.replica_state.replica_id >= 0
    if follower and not cluster_ok(ctx, Op.CLUSTER_ACTION):
        return m.FetchResponse(error_code=CLUSTER_DENIED, responses=[])
    core = ctx.core

    def name_of(t: Any) -> str | None:
        if ctx.version >= 13:
            found = core.topic_by_id(t.topic_id)
            return None if found is None else found.name
        return str(t.topic)

    denied = []
    for t in request.topics:
        name = name_of(t)
        if name is not None and not topic_ok(ctx, Op.READ, name):
            denied.append(t)
    if not denied:
        return await handler(ctx, request)
    request.topics = [t for t in request.topics if t not in denied]
    response = await handler(ctx, request)
    response.responses.extend(
        m.FetchResponse.FetchableTopicResponse(
            topic=t.topic,
            topic_id=t.topic_id,
            partitions=[
                m.FetchResponse.PartitionData(
                    partition_index=p.partition,
                    error_code=TOPIC_DENIED,
                    high_watermark=-1,
                    last_stable_offset=-1,
                    log_start_offset=-1,
                    records=b"",
                )
                for p in t.partitions
            ],
        )
        for t in denied
    )
    return response


@dataclass(frozen=True)
class TopicRefusal:
    """How a request of topics of partitions names them, and how its response answers a
    refused topic: every partition with the error, its other fields at Kafka's unknown
    values (``unknown``).  One row per API in the table below."""

    topic: Any  # the response's topic entry
    partition: Any  # the response's partition entry
    unknown: Mapping[str, Any] = field(default_factory=dict)
    name: str = "name"  # the topic's name, in the request and the response
    index: str = "partition_index"  # a partition's index, in the request and the response
    partitions: str = "partitions"  # the request topic's partitions ("…_indexes": ints)
    answers: str = "partitions"  # the response topic's partitions
    request_topics: str = "topics"
    response_topics: str = "topics"
    #: a request left with no topic is answered ``empty()`` without its handler (one whose
    #: handler would fail on the group or transaction alone); None: the handler serves it
    empty: Callable[[], Any] | None = None

    def refused(self, topic: Any, error: int) -> Any:
        index = self.index
        parts = [
            self.partition(
                **{index: p if isinstance(p, int) else getattr(p, index)},
                error_code=error,
                **self.unknown,
            )
            for p in getattr(topic, self.partitions)
        ]
        return self.topic(**{self.name: getattr(topic, self.name), self.answers: parts})


async def _serve_allowed_topics(
    ctx: RequestContext,
    request: Any,
    handler: Handler,
    how: TopicRefusal,
    denied: list[Any],
    error: int,
) -> Any:
    """Serve ``request`` without its ``denied`` topics and answer those beside the others,
    each partition with ``error``."""
    kept = [t for t in getattr(request, how.request_topics) if t not in denied]
    setattr(request, how.request_topics, kept)
    if kept or how.empty is None:
        response = await handler(ctx, request)
    else:
        response = how.empty()
    getattr(response, how.response_topics).extend(how.refused(t, error) for t in denied)
    return response


def _per_topic(op: AclOperation, how: TopicRefusal) -> Check:
    """A request of topics and partitions: each topic needs ``op``."""

    async def run(ctx: RequestContext, request: Any, handler: Handler) -> Any:
        topics = getattr(request, how.request_topics)
        denied = [t for t in topics if not topic_ok(ctx, op, getattr(t, how.name))]
        if not denied:
            return await handler(ctx, request)
        return await _serve_allowed_topics(ctx, request, handler, how, denied, TOPIC_DENIED)

    return run


PRODUCE = TopicRefusal(
    m.ProduceResponse.TopicProduceResponse,
    m.ProduceResponse.PartitionProduceResponse,
    index="index",
    partitions="partition_data",
    answers="partition_responses",
    request_topics="topic_data",
    response_topics="responses",
    empty=lambda: m.ProduceResponse(responses=[]),
)
OFFSET_COMMIT = TopicRefusal(
    m.OffsetCommitResponseTopic,
    m.OffsetCommitResponsePartition,
    empty=lambda: m.OffsetCommitResponse(topics=[]),
)
TXN_OFFSET_COMMIT = TopicRefusal(
    m.TxnOffsetCommitResponseTopic,
    m.TxnOffsetCommitResponsePartition,
    empty=lambda: m.TxnOffsetCommitResponse(topics=[]),
)
OFFSET_DELETE = TopicRefusal(m.OffsetDeleteResponseTopic, m.OffsetDeleteResponsePartition)

CHECKS[2] = _per_topic(  # ListOffsets
    Op.DESCRIBE,
    TopicRefusal(
        m.ListOffsetsResponse.ListOffsetsTopicResponse,
        m.ListOffsetsResponse.ListOffsetsPartitionResponse,
        {"timestamp": -1, "offset": -1},
    ),
)
CHECKS[21] = _per_topic(  # DeleteRecords
    Op.DELETE,
    TopicRefusal(
        m.DeleteRecordsResponse.DeleteRecordsTopicResult,
        m.DeleteRecordsResponse.DeleteRecordsPartitionResult,
        {"low_watermark": -1},
    ),
)
CHECKS[23] = _per_topic(  # OffsetForLeaderEpoch
    Op.DESCRIBE,
    TopicRefusal(
        m.OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult,
        m.OffsetForLeaderEpochResponse.EpochEndOffset,
        {"leader_epoch": -1, "end_offset": -1},
        name="topic",
        index="partition",
    ),
)
CHECKS[61] = _per_topic(  # DescribeProducers
    Op.READ,
    TopicRefusal(
        m.DescribeProducersResponse.TopicResponse,
        m.DescribeProducersResponse.PartitionResponse,
        partitions="partition_indexes",
    ),
)


# -- metadata and topic admin -------------------------------------------------------------


@check(3)
async def _metadata(ctx: RequestContext, request: m.MetadataRequest, handler: Handler) -> Any:
    core = ctx.core
    denied: list[m.MetadataResponseTopic] = []
    if request.topics is not None and not (ctx.version == 0 and not request.topics):
        known = core.topics()
        internal = core.internal_topics()
        keep = []
        for item in request.topics:
            name = item.name
            if name is None:
                found = core.topic_by_id(item.topic_id)
                name = None if found is None else found.name
            if name is None:
                keep.append(item)
            elif not topic_ok(ctx, Op.DESCRIBE, name):
                denied.append(
                    m.MetadataResponseTopic(
                        error_code=TOPIC_DENIED, name=name, topic_id=item.topic_id
                    )
                )
            elif (
                name not in known
                and name not in internal
                and not (
                    ctx.session.security.authorizer.authorize(
                        ctx.session.principal or "",
                        ctx.session.host,
                        Op.CREATE,
                        RT.CLUSTER,
                        CLUSTER_NAME,
                    )
                    or ctx.session.security.authorizer.authorize(
                        ctx.session.principal or "", ctx.session.host, Op.CREATE, RT.TOPIC, name
                    )
                )
            ):
                denied.append(
                    m.MetadataResponseTopic(
                        error_code=E.UNKNOWN_TOPIC_OR_PARTITION, name=name, topic_id=item.topic_id
                    )
                )
            else:
                keep.append(item)
        request.topics = keep
        response = await handler(ctx, request)
        if ctx.version == 0 and not keep:  # v0's empty list asked for every topic
            response.topics = []
        response.topics.extend(denied)
    else:
        response = await handler(ctx, request)
        response.topics = [
            t for t in response.topics if t.name is None or topic_ok_quiet(ctx, Op.DESCRIBE, t.name)
        ]
    for t in response.topics:
        if t.topic_authorized_operations != NOT_PROVIDED and t.error_code == E.NONE:
            t.topic_authorized_operations = operations(ctx, RT.TOPIC, t.name or "")
    if response.cluster_authorized_operations != NOT_PROVIDED:
        response.cluster_authorized_operations = operations(ctx, RT.CLUSTER, CLUSTER_NAME)
    return response


def topic_ok_quiet(ctx: RequestContext, op: AclOperation, name: str) -> bool:
    """Like ``topic_ok`` but without an audit line: listings filter silently (as Kafka)."""
    s = ctx.session
    return s.principal is not None and s.security.authorizer.authorize(
        s.principal, s.host, op, RT.TOPIC, name
    )


def group_ok_quiet(ctx: RequestContext, op: AclOperation, name: str) -> bool:
    s = ctx.session
    return s.principal is not None and s.security.authorizer.authorize(
        s.principal, s.host, op, RT.GROUP, name
    )


@check(75)
async def _describe_topic_partitions(
    ctx: RequestContext, request: m.DescribeTopicPartitionsRequest, handler: Handler
) -> Any:
    denied = [t for t in request.topics if not topic_ok(ctx, Op.DESCRIBE, t.name)]
    request.topics = [t for t in request.topics if t not in denied]
    response = await handler(ctx, request)
    response.topics = [
        t for t in response.topics if t.name is None or topic_ok_quiet(ctx, Op.DESCRIBE, t.name)
    ]
    response.topics.extend(
        m.DescribeTopicPartitionsResponseTopic(error_code=TOPIC_DENIED, name=t.name) for t in denied
    )
    for t in response.topics:
        if t.error_code == E.NONE:
            t.topic_authorized_operations = operations(ctx, RT.TOPIC, t.name or "")
    return response


@check(19)
async def _create_topics(
    ctx: RequestContext, request: m.CreateTopicsRequest, handler: Handler
) -> Any:
    on_cluster = cluster_ok_quiet(ctx, Op.CREATE)
    denied = [t for t in request.topics if not (on_cluster or topic_ok(ctx, Op.CREATE, t.name))]
    request.topics = [t for t in request.topics if t not in denied]
    response = await handler(ctx, request)
    response.topics.extend(
        m.CreateTopicsResponse.CreatableTopicResult(
            name=t.name,
            error_code=TOPIC_DENIED,
            error_message="Authorization failed.",
            num_partitions=-1,
            replication_factor=-1,
        )
        for t in denied
    )
    return response


def cluster_ok_quiet(ctx: RequestContext, op: AclOperation) -> bool:
    s = ctx.session
    return s.principal is not None and s.security.authorizer.authorize(
        s.principal, s.host, op, RT.CLUSTER, CLUSTER_NAME
    )


@check(20)
async def _delete_topics(
    ctx: RequestContext, request: m.DeleteTopicsRequest, handler: Handler
) -> Any:
    core = ctx.core
    if ctx.version < 6:
        denied_names = [n for n in request.topic_names if not topic_ok(ctx, Op.DELETE, n)]
        request.topic_names = [n for n in request.topic_names if n not in denied_names]
        response = await handler(ctx, request)
        response.responses.extend(
            m.DeleteTopicsResponse.DeletableTopicResult(name=n, error_code=TOPIC_DENIED)
            for n in denied_names
        )
        return response
    denied = []
    for t in request.topics:
        name = t.name
        if name is None:
            found = core.topic_by_id(t.topic_id)
            name = None if found is None else found.name
        if name is not None and not topic_ok(ctx, Op.DELETE, name):
            denied.append((t, name))
    request.topics = [t for t in request.topics if all(t is not d for d, _ in denied)]
    response = await handler(ctx, request)
    response.responses.extend(
        m.DeleteTopicsResponse.DeletableTopicResult(
            name=t.name, topic_id=t.topic_id, error_code=TOPIC_DENIED
        )
        for t, _ in denied
    )
    return response


@check(37)
async def _create_partitions(
    ctx: RequestContext, request: m.CreatePartitionsRequest, handler: Handler
) -> Any:
    denied = [t for t in request.topics if not topic_ok(ctx, Op.ALTER, t.name)]
    request.topics = [t for t in request.topics if t not in denied]
    response = await handler(ctx, request)
    response.results.extend(
        m.CreatePartitionsResponse.CreatePartitionsTopicResult(
            name=t.name, error_code=TOPIC_DENIED, error_message="Authorization failed."
        )
        for t in denied
    )
    return response


def _config_resource_ok(ctx: RequestContext, op: AclOperation, rtype: int, name: str) -> int:
    """NONE, or the error for a config resource the principal may not ``op``."""
    if rtype == CONFIG_TOPIC:
        return E.NONE if topic_ok(ctx, op, name) else TOPIC_DENIED
    if rtype in (CONFIG_BROKER, CONFIG_BROKER_LOGGER):
        return E.NONE if cluster_ok(ctx, op) else CLUSTER_DENIED
    return E.NONE


@check(32)
async def _describe_configs(
    ctx: RequestContext, request: m.DescribeConfigsRequest, handler: Handler
) -> Any:
    denied = []
    for r in request.resources:
        error = _config_resource_ok(ctx, Op.DESCRIBE_CONFIGS, r.resource_type, r.resource_name)
        if error:
            denied.append((r, error))
    request.resources = [r for r in request.resources if all(r is not d for d, _ in denied)]
    response = await handler(ctx, request)
    response.results.extend(
        m.DescribeConfigsResponse.DescribeConfigsResult(
            error_code=error,
            error_message="Authorization failed.",
            resource_type=r.resource_type,
            resource_name=r.resource_name,
            configs=[],
        )
        for r, error in denied
    )
    return response


@check(33, 44)
async def _alter_configs(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    denied = []
    for r in request.resources:
        error = _config_resource_ok(ctx, Op.ALTER_CONFIGS, r.resource_type, r.resource_name)
        if error:
            denied.append((r, error))
    request.resources = [r for r in request.resources if all(r is not d for d, _ in denied)]
    response = await handler(ctx, request)
    result = type(response).AlterConfigsResourceResponse
    response.responses.extend(
        result(
            error_code=error,
            error_message="Authorization failed.",
            resource_type=r.resource_type,
            resource_name=r.resource_name,
        )
        for r, error in denied
    )
    return response


# -- groups ---------------------------------------------------------------------------------


@check(11, 12, 13, 14)
async def _group_member(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    if not group_ok(ctx, Op.READ, request.group_id):
        return refused(ctx, GROUP_DENIED)
    return await handler(ctx, request)


@check(68)
async def _consumer_group_heartbeat(
    ctx: RequestContext, request: m.ConsumerGroupHeartbeatRequest, handler: Handler
) -> Any:
    if not group_ok(ctx, Op.READ, request.group_id):
        return refused(ctx, GROUP_DENIED, error_message="Authorization failed.")
    for name in request.subscribed_topic_names or []:
        if not topic_ok(ctx, Op.DESCRIBE, name):
            return refused(ctx, TOPIC_DENIED, error_message="Authorization failed.")
    return await handler(ctx, request)


@check(8)
async def _offset_commit(
    ctx: RequestContext, request: m.OffsetCommitRequest, handler: Handler
) -> Any:
    group_refused = not group_ok(ctx, Op.READ, request.group_id)
    denied = [t for t in request.topics if group_refused or not topic_ok(ctx, Op.READ, t.name)]
    if not denied:
        return await handler(ctx, request)
    error = GROUP_DENIED if group_refused else TOPIC_DENIED
    return await _serve_allowed_topics(ctx, request, handler, OFFSET_COMMIT, denied, error)


@check(28)
async def _txn_offset_commit(
    ctx: RequestContext, request: m.TxnOffsetCommitRequest, handler: Handler
) -> Any:
    error = E.NONE
    if not txn_ok(ctx, Op.WRITE, request.transactional_id):
        error = TXN_DENIED
    elif not group_ok(ctx, Op.READ, request.group_id):
        error = GROUP_DENIED
    denied = [t for t in request.topics if error or not topic_ok(ctx, Op.READ, t.name)]
    if not denied:
        return await handler(ctx, request)
    return await _serve_allowed_topics(
        ctx, request, handler, TXN_OFFSET_COMMIT, denied, error or TOPIC_DENIED
    )


@check(9)
async def _offset_fetch(
    ctx: RequestContext, request: m.OffsetFetchRequest, handler: Handler
) -> Any:
    if ctx.version < 8:
        if not group_ok(ctx, Op.DESCRIBE, request.group_id):
            response = m.OffsetFetchResponse(error_code=GROUP_DENIED, topics=[])
            if ctx.version < 2:
                response.topics = [
                    m.OffsetFetchResponseTopic(
                        name=t.name,
                        partitions=[
                            m.OffsetFetchResponsePartition(
                                partition_index=i, committed_offset=-1, error_code=GROUP_DENIED
                            )
                            for i in t.partition_indexes
                        ],
                    )
                    for t in request.topics or []
                ]
            return response
        response = await handler(ctx, request)
        for t in response.topics:
            if not topic_ok_quiet(ctx, Op.DESCRIBE, t.name):
                for p in t.partitions:
                    p.error_code, p.committed_offset, p.metadata = TOPIC_DENIED, -1, ""
        if request.topics is None:
            response.topics = [
                t for t in response.topics if topic_ok_quiet(ctx, Op.DESCRIBE, t.name)
            ]
        return response
    denied_groups = [g for g in request.groups if not group_ok(ctx, Op.DESCRIBE, g.group_id)]
    request.groups = [g for g in request.groups if g not in denied_groups]
    response = await handler(ctx, request) if request.groups else m.OffsetFetchResponse(groups=[])
    wanted_all = {g.group_id for g in request.groups if g.topics is None}
    for g in response.groups:
        if g.group_id in wanted_all:
            g.topics = [t for t in g.topics if topic_ok_quiet(ctx, Op.DESCRIBE, t.name)]
        for t in g.topics:
            if not topic_ok_quiet(ctx, Op.DESCRIBE, t.name):
                for p in t.partitions:
                    p.error_code, p.committed_offset, p.metadata = TOPIC_DENIED, -1, ""
    response.groups.extend(
        m.OffsetFetchResponseGroup(group_id=g.group_id, error_code=GROUP_DENIED, topics=[])
        for g in denied_groups
    )
    return response


@check(15)
async def _describe_groups(
    ctx: RequestContext, request: m.DescribeGroupsRequest, handler: Handler
) -> Any:
    denied = [g for g in request.groups if not group_ok(ctx, Op.DESCRIBE, g)]
    request.groups = [g for g in request.groups if g not in denied]
    response = await handler(ctx, request) if request.groups else m.DescribeGroupsResponse()
    for g in response.groups:
        if g.authorized_operations != NOT_PROVIDED and g.error_code == E.NONE:
            g.authorized_operations = operations(ctx, RT.GROUP, g.group_id)
    response.groups.extend(
        m.DescribeGroupsResponse.DescribedGroup(
            group_id=g, error_code=GROUP_DENIED, group_state="", protocol_type="", protocol_data=""
        )
        for g in denied
    )
    return response


@check(69)
async def _consumer_group_describe(
    ctx: RequestContext, request: m.ConsumerGroupDescribeRequest, handler: Handler
) -> Any:
    denied = [g for g in request.group_ids if not group_ok(ctx, Op.DESCRIBE, g)]
    request.group_ids = [g for g in request.group_ids if g not in denied]
    response = (
        await handler(ctx, request) if request.group_ids else m.ConsumerGroupDescribeResponse()
    )
    for g in response.groups:
        if g.authorized_operations != NOT_PROVIDED and g.error_code == E.NONE:
            g.authorized_operations = operations(ctx, RT.GROUP, g.group_id)
    response.groups.extend(
        m.ConsumerGroupDescribeResponse.DescribedGroup(
            group_id=g, error_code=GROUP_DENIED, error_message="Authorization failed."
        )
        for g in denied
    )
    return response


@check(16)
async def _list_groups(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    response = await handler(ctx, request)
    if not cluster_ok_quiet(ctx, Op.DESCRIBE):
        response.groups = [
            g for g in response.groups if group_ok_quiet(ctx, Op.DESCRIBE, g.group_id)
        ]
    return response


@check(42)
async def _delete_groups(
    ctx: RequestContext, request: m.DeleteGroupsRequest, handler: Handler
) -> Any:
    denied = [g for g in request.groups_names if not group_ok(ctx, Op.DELETE, g)]
    request.groups_names = [g for g in request.groups_names if g not in denied]
    response = await handler(ctx, request) if request.groups_names else m.DeleteGroupsResponse()
    response.results.extend(
        m.DeleteGroupsResponse.DeletableGroupResult(group_id=g, error_code=GROUP_DENIED)
        for g in denied
    )
    return response


@check(47)
async def _offset_delete(
    ctx: RequestContext, request: m.OffsetDeleteRequest, handler: Handler
) -> Any:
    if not group_ok(ctx, Op.DELETE, request.group_id):
        return m.OffsetDeleteResponse(error_code=GROUP_DENIED)
    denied = [t for t in request.topics if not topic_ok(ctx, Op.READ, t.name)]
    return await _serve_allowed_topics(ctx, request, handler, OFFSET_DELETE, denied, TOPIC_DENIED)


@check(10)
async def _find_coordinator(
    ctx: RequestContext, request: m.FindCoordinatorRequest, handler: Handler
) -> Any:
    def error_for(key: str) -> int:
        if request.key_type == 1:
            return E.NONE if txn_ok(ctx, Op.DESCRIBE, key) else TXN_DENIED
        return E.NONE if group_ok(ctx, Op.DESCRIBE, key) else GROUP_DENIED

    if ctx.version < 4:
        error = error_for(request.key)
        if error:
            return m.FindCoordinatorResponse(
                error_code=error,
                error_message="Authorization failed.",
                node_id=-1,
                host="",
                port=-1,
            )
        return await handler(ctx, request)
    denied = [(k, e) for k in request.coordinator_keys if (e := error_for(k))]
    refused_keys = {k for k, _ in denied}
    request.coordinator_keys = [k for k in request.coordinator_keys if k not in refused_keys]
    response = await handler(ctx, request)
    response.coordinators.extend(
        m.FindCoordinatorResponse.Coordinator(
            key=k, node_id=-1, host="", port=-1, error_code=e, error_message="Authorization failed."
        )
        for k, e in denied
    )
    return response


def error_for_quiet(ctx: RequestContext, key_type: int, key: str) -> bool:
    s = ctx.session
    rtype = RT.TRANSACTIONAL_ID if key_type == 1 else RT.GROUP
    return not (
        s.principal is not None
        and s.security.authorizer.authorize(s.principal, s.host, Op.DESCRIBE, rtype, key)
    )


# -- transactions ----------------------------------------------------------------------------


@check(22)
async def _init_producer_id(
    ctx: RequestContext, request: m.InitProducerIdRequest, handler: Handler
) -> Any:
    txn = request.transactional_id
    if txn is not None:
        if not txn_ok(ctx, Op.WRITE, txn):
            return m.InitProducerIdResponse(
                error_code=TXN_DENIED, producer_id=-1, producer_epoch=-1
            )
    else:
        s = ctx.session
        assert s.principal is not None
        authorizer = s.security.authorizer
        if not (
            authorizer.authorize(s.principal, s.host, Op.IDEMPOTENT_WRITE, RT.CLUSTER, CLUSTER_NAME)
            or authorizer.authorize_any(s.principal, s.host, Op.WRITE, RT.TOPIC)
        ):
            s.security.audit.denied(
                "kafka", s.principal, s.host, "IDEMPOTENT_WRITE", "CLUSTER", CLUSTER_NAME
            )
            return m.InitProducerIdResponse(
                error_code=CLUSTER_DENIED, producer_id=-1, producer_epoch=-1
            )
    return await handler(ctx, request)


@check(24)
async def _add_partitions_to_txn(
    ctx: RequestContext, request: m.AddPartitionsToTxnRequest, handler: Handler
) -> Any:
    if ctx.version >= 4:
        if any(t.verify_only for t in request.transactions) and not cluster_ok(
            ctx, Op.CLUSTER_ACTION
        ):
            return m.AddPartitionsToTxnResponse(error_code=CLUSTER_DENIED)
        for t in request.transactions:
            if not txn_ok(ctx, Op.WRITE, t.transactional_id) or not all(
                topic_ok(ctx, Op.WRITE, tp.name) for tp in t.topics
            ):
                return m.AddPartitionsToTxnResponse(error_code=TXN_DENIED)
        return await handler(ctx, request)
    txn_refused = not txn_ok(ctx, Op.WRITE, request.v3_and_below_transactional_id)
    denied = {t.name for t in request.v3_and_below_topics if not topic_ok(ctx, Op.WRITE, t.name)}
    if not txn_refused and not denied:
        return await handler(ctx, request)
    result = m.AddPartitionsToTxnResponse.AddPartitionsToTxnTopicResult
    part = m.AddPartitionsToTxnResponse.AddPartitionsToTxnPartitionResult

    def code(name: str) -> int:
        if txn_refused:
            return TXN_DENIED
        return TOPIC_DENIED if name in denied else E.OPERATION_NOT_ATTEMPTED

    return m.AddPartitionsToTxnResponse(
        results_by_topic_v3_and_below=[
            result(
                name=t.name,
                results_by_partition=[
                    part(partition_index=p, partition_error_code=code(t.name)) for p in t.partitions
                ],
            )
            for t in request.v3_and_below_topics
        ]
    )


@check(25)
async def _add_offsets_to_txn(
    ctx: RequestContext, request: m.AddOffsetsToTxnRequest, handler: Handler
) -> Any:
    if not txn_ok(ctx, Op.WRITE, request.transactional_id):
        return m.AddOffsetsToTxnResponse(error_code=TXN_DENIED)
    if not group_ok(ctx, Op.READ, request.group_id):
        return m.AddOffsetsToTxnResponse(error_code=GROUP_DENIED)
    return await handler(ctx, request)


@check(26)
async def _end_txn(ctx: RequestContext, request: m.EndTxnRequest, handler: Handler) -> Any:
    if not txn_ok(ctx, Op.WRITE, request.transactional_id):
        return m.EndTxnResponse(error_code=TXN_DENIED, producer_id=-1, producer_epoch=-1)
    return await handler(ctx, request)


@check(65)
async def _describe_transactions(
    ctx: RequestContext, request: m.DescribeTransactionsRequest, handler: Handler
) -> Any:
    denied = [t for t in request.transactional_ids if not txn_ok(ctx, Op.DESCRIBE, t)]
    request.transactional_ids = [t for t in request.transactional_ids if t not in denied]
    response = await handler(ctx, request)
    response.transaction_states.extend(
        m.DescribeTransactionsResponse.TransactionState(
            transactional_id=t,
            error_code=TXN_DENIED,
            transaction_state="",
            producer_id=-1,
            producer_epoch=-1,
            transaction_timeout_ms=-1,
            transaction_start_time_ms=-1,
        )
        for t in denied
    )
    return response


@check(66)
async def _list_transactions(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    response = await handler(ctx, request)
    s = ctx.session
    assert s.principal is not None
    authorizer = s.security.authorizer
    response.transaction_states = [
        t
        for t in response.transaction_states
        if authorizer.authorize(
            s.principal, s.host, Op.DESCRIBE, RT.TRANSACTIONAL_ID, t.transactional_id
        )
    ]
    return response


# -- the cluster ------------------------------------------------------------------------------


def _cluster(op: AclOperation, **fields: Any) -> Check:
    async def run(ctx: RequestContext, request: Any, handler: Handler) -> Any:
        if not cluster_ok(ctx, op):
            return refused(ctx, CLUSTER_DENIED, **fields)
        return await handler(ctx, request)

    return run


CHECKS[29] = _cluster(Op.DESCRIBE, error_message="Authorization failed.")  # DescribeAcls
CHECKS[43] = _cluster(Op.ALTER)  # ElectLeaders
CHECKS[48] = _cluster(Op.DESCRIBE_CONFIGS, error_message="Authorization failed.")
CHECKS[50] = _cluster(Op.DESCRIBE, error_message="Authorization failed.")
CHECKS[55] = _cluster(Op.DESCRIBE, error_message="Authorization failed.")  # DescribeQuorum


@check(60)
async def _describe_cluster(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    if not cluster_ok(ctx, Op.DESCRIBE):
        return refused(ctx, CLUSTER_DENIED, error_message="Authorization failed.")
    response = await handler(ctx, request)
    if response.cluster_authorized_operations != NOT_PROVIDED:
        response.cluster_authorized_operations = operations(ctx, RT.CLUSTER, CLUSTER_NAME)
    return response


@check(35)
async def _describe_log_dirs(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    if not cluster_ok(ctx, Op.DESCRIBE):
        return m.DescribeLogDirsResponse(error_code=CLUSTER_DENIED, results=[])
    return await handler(ctx, request)


@check(30)
async def _create_acls(ctx: RequestContext, request: m.CreateAclsRequest, handler: Handler) -> Any:
    if not cluster_ok(ctx, Op.ALTER):
        return m.CreateAclsResponse(
            results=[
                m.CreateAclsResponse.AclCreationResult(
                    error_code=CLUSTER_DENIED, error_message="Authorization failed."
                )
                for _ in request.creations
            ]
        )
    return await handler(ctx, request)


@check(31)
async def _delete_acls(ctx: RequestContext, request: m.DeleteAclsRequest, handler: Handler) -> Any:
    if not cluster_ok(ctx, Op.ALTER):
        return m.DeleteAclsResponse(
            filter_results=[
                m.DeleteAclsResponse.DeleteAclsFilterResult(
                    error_code=CLUSTER_DENIED, error_message="Authorization failed."
                )
                for _ in request.filters
            ]
        )
    return await handler(ctx, request)


@check(49)
async def _alter_client_quotas(
    ctx: RequestContext, request: m.AlterClientQuotasRequest, handler: Handler
) -> Any:
    if not cluster_ok(ctx, Op.ALTER_CONFIGS):
        return m.AlterClientQuotasResponse(
            entries=[
                m.AlterClientQuotasResponse.EntryData(
                    error_code=CLUSTER_DENIED,
                    error_message="Authorization failed.",
                    entity=[
                        m.AlterClientQuotasResponse.EntityData(
                            entity_type=e.entity_type, entity_name=e.entity_name
                        )
                        for e in entry.entity
                    ],
                )
                for entry in request.entries
            ]
        )
    return await handler(ctx, request)


@check(51)
async def _alter_user_scram_credentials(
    ctx: RequestContext, request: m.AlterUserScramCredentialsRequest, handler: Handler
) -> Any:
    if not cluster_ok(ctx, Op.ALTER):
        names = dict.fromkeys(
            [d.name for d in request.deletions] + [u.name for u in request.upsertions]
        )
        return m.AlterUserScramCredentialsResponse(
            results=[
                m.AlterUserScramCredentialsResponse.AlterUserScramCredentialsResult(
                    user=n, error_code=CLUSTER_DENIED, error_message="Authorization failed."
                )
                for n in names
            ]
        )
    return await handler(ctx, request)


# -- share groups (KIP-932) -------------------------------------------------------------------


@check(76)
async def _share_group_heartbeat(
    ctx: RequestContext, request: m.ShareGroupHeartbeatRequest, handler: Handler
) -> Any:
    if not group_ok(ctx, Op.READ, request.group_id):
        return refused(ctx, GROUP_DENIED, error_message="Authorization failed.")
    for name in request.subscribed_topic_names or []:
        if not topic_ok(ctx, Op.DESCRIBE, name):
            return refused(ctx, TOPIC_DENIED, error_message="Authorization failed.")
    return await handler(ctx, request)


@check(77)
async def _share_group_describe(
    ctx: RequestContext, request: m.ShareGroupDescribeRequest, handler: Handler
) -> Any:
    denied = [g for g in request.group_ids if not group_ok(ctx, Op.DESCRIBE, g)]
    request.group_ids = [g for g in request.group_ids if g not in denied]
    response = await handler(ctx, request) if request.group_ids else m.ShareGroupDescribeResponse()
    for g in response.groups:
        if g.authorized_operations != NOT_PROVIDED and g.error_code == E.NONE:
            g.authorized_operations = operations(ctx, RT.GROUP, g.group_id)
    response.groups.extend(
        m.ShareGroupDescribeResponse.DescribedGroup(
            group_id=g, error_code=GROUP_DENIED, error_message="Authorization failed."
        )
        for g in denied
    )
    return response


def _share_topics_ok(ctx: RequestContext, group_id: str, member_id: str, topics: Any) -> bool:
    """READ on every topic the request names and every topic its share session fetches.

    A share session keeps its partitions between requests, so a topic whose READ was revoked
    after the session named it is checked again at every fetch (as a revoked ACL must take
    effect on open connections)."""
    core = ctx.core
    names: set[str] = set()
    for t in topics:
        found = core.topic_by_id(t.topic_id)
        if found is not None:
            names.add(found.name)
    session = ctx.door.share_sessions.get(group_id, member_id)
    if session is not None:
        names.update(topic for topic, _ in session.partitions)
    return all(topic_ok(ctx, Op.READ, name) for name in sorted(names))


@check(78, 79)
async def _share_fetch_or_acknowledge(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    group_id = request.group_id or ""
    if not group_ok(ctx, Op.READ, group_id):
        return refused(ctx, GROUP_DENIED, error_message="Authorization failed.")
    if not _share_topics_ok(ctx, group_id, request.member_id or "", request.topics):
        return refused(ctx, TOPIC_DENIED, error_message="Authorization failed.")
    return await handler(ctx, request)


@check(90)
async def _describe_share_group_offsets(
    ctx: RequestContext, request: m.DescribeShareGroupOffsetsRequest, handler: Handler
) -> Any:
    denied = [g for g in request.groups if not group_ok(ctx, Op.DESCRIBE, g.group_id)]
    request.groups = [g for g in request.groups if g not in denied]
    response = (
        await handler(ctx, request) if request.groups else m.DescribeShareGroupOffsetsResponse()
    )
    for g in response.groups:
        for t in g.topics:
            if not topic_ok_quiet(ctx, Op.DESCRIBE, t.topic_name):
                for p in t.partitions:
                    p.error_code, p.start_offset, p.lag = TOPIC_DENIED, -1, -1
    response.groups.extend(
        m.DescribeShareGroupOffsetsResponse.Group(
            group_id=g.group_id, error_code=GROUP_DENIED, error_message="Authorization failed."
        )
        for g in denied
    )
    return response


def _share_offsets_admin(group_op: AclOperation) -> Check:
    """Alter (READ on the group) and Delete (DELETE on the group) share-group offsets; both
    need READ on every topic named."""

    async def run(ctx: RequestContext, request: Any, handler: Handler) -> Any:
        if not group_ok(ctx, group_op, request.group_id):
            return refused(ctx, GROUP_DENIED, error_message="Authorization failed.")
        if not all(topic_ok(ctx, Op.READ, t.topic_name) for t in request.topics or []):
            return refused(ctx, TOPIC_DENIED, error_message="Authorization failed.")
        return await handler(ctx, request)

    return run


CHECKS[91] = _share_offsets_admin(Op.READ)  # AlterShareGroupOffsets
CHECKS[92] = _share_offsets_admin(Op.DELETE)  # DeleteShareGroupOffsets
