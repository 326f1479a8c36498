"""Where things are in a cluster, as the Kafka door answers it: the live brokers' addresses,
a coordinator's address, and NOT_COORDINATOR for group and transaction requests that reached
a broker which does not coordinate their key.

Theory of operation
-------------------
In a shared cluster every request of a group or transactional-id API goes through the
check ``placing`` puts before its
handler (after the ACL check): the keys it names are looked up in ``Core.cluster``
(``coordinator_error``) and a request about a key this broker does not serve is answered
with NOT_COORDINATOR (another broker owns it, or this one lost its lease) or
COORDINATOR_LOAD_IN_PROGRESS (this one is taking it over) — both make clients look the
coordinator up again (FindCoordinator) and retry.  Requests naming several groups (v8+
OffsetFetch, DescribeGroups, ConsumerGroupDescribe, DeleteGroups) are split: the served
ones go to the handler, the others are answered beside them.  On an engine no other broker
shares every key is served here and no check runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.protocol.kafka import API_KEYS
from bayou.protocol.kafka import messages as m
from bayou.storage.cluster import BrokerAddress

Handler = Callable[[RequestContext, Any], Awaitable[Any]]
Check = Callable[[RequestContext, Any, Handler], Awaitable[Any]]
GROUP, TRANSACTION = 0, 1
E = ErrorCode

CHECKS: dict[int, Check] = {}


def live_brokers(ctx: RequestContext) -> list[BrokerAddress]:
    """The brokers Metadata lists: the cluster's live ones, or this one as the listener
    the client is connected to advertises itself (its TLS port on the TLS listener)."""
    core = ctx.core
    if core.cluster.shared:
        return core.cluster.brokers()
    return [BrokerAddress(core.node_id, ctx.door.advertised_host, ctx.door.advertised_port)]


def coordinator_address(ctx: RequestContext, key_type: int, key: str) -> BrokerAddress | None:
    cluster = ctx.core.cluster
    if not cluster.shared:
        return live_brokers(ctx)[0]
    return cluster.broker(cluster.coordinator(key_type, key))


def placing(handler: Handler) -> Handler:
    """``handler`` behind the coordinator check of its API (if it has one)."""

    async def placed(ctx: RequestContext, request: Any) -> Any:
        check = CHECKS.get(ctx.header.api_key)
        if check is None:
            return await handler(ctx, request)
        return await check(ctx, request, handler)

    return placed


def _check(*api_keys: int) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        for key in api_keys:
            CHECKS[key] = fn
        return fn

    return register


def _error(ctx: RequestContext, key_type: int, key: str | None) -> ErrorCode:
    if key is None or not key:
        return E.NONE  # the handler answers what an empty or absent key deserves
    return ctx.core.cluster.coordinator_error(key_type, key)


def _refused(ctx: RequestContext, error: ErrorCode, **fields: Any) -> Any:
    response: Any = API_KEYS[ctx.header.api_key].response
    return response(error_code=error, **fields)


# -- groups -----------------------------------------------------------------------------------


@_check(11, 12, 13, 14, 68, 76, 78, 79)  # share groups too: served by the group's owner
async def _one_group(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    error = _error(ctx, GROUP, request.group_id)
    if error:
        return _refused(ctx, error)
    return await handler(ctx, request)


@_check(47)
async def _offset_delete(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    error = _error(ctx, GROUP, request.group_id)
    if error:
        return m.OffsetDeleteResponse(error_code=error)
    return await handler(ctx, request)


@_check(8)
async def _offset_commit(
    ctx: RequestContext, request: m.OffsetCommitRequest, handler: Handler
) -> Any:
    error = _error(ctx, GROUP, request.group_id)
    if not error:
        return await handler(ctx, request)
    return m.OffsetCommitResponse(
        topics=[
            m.OffsetCommitResponseTopic(
                name=t.name,
                partitions=[
                    m.OffsetCommitResponsePartition(
                        partition_index=p.partition_index, error_code=error
                    )
                    for p in t.partitions
                ],
            )
            for t in request.topics
        ]
    )


@_check(28)
async def _txn_offset_commit(
    ctx: RequestContext, request: m.TxnOffsetCommitRequest, handler: Handler
) -> Any:
    error = _error(ctx, GROUP, request.group_id)
    if not error:
        return await handler(ctx, request)
    return m.TxnOffsetCommitResponse(
        topics=[
            m.TxnOffsetCommitResponseTopic(
                name=t.name,
                partitions=[
                    m.TxnOffsetCommitResponsePartition(
                        partition_index=p.partition_index, error_code=error
                    )
                    for p in t.partitions
                ],
            )
            for t in request.topics
        ]
    )


@_check(9)
async def _offset_fetch(
    ctx: RequestContext, request: m.OffsetFetchRequest, handler: Handler
) -> Any:
    if ctx.version < 8:
        error = _error(ctx, GROUP, request.group_id)
        if not error:
            return await handler(ctx, request)
        return m.OffsetFetchResponse(
            error_code=error,
            topics=[
                m.OffsetFetchResponseTopic(
                    name=t.name,
                    partitions=[
                        m.OffsetFetchResponsePartition(
                            partition_index=i, committed_offset=-1, error_code=error
                        )
                        for i in t.partition_indexes
                    ],
                )
                for t in request.topics or []
            ],
        )
    refused = [(g, e) for g in request.groups if (e := _error(ctx, GROUP, g.group_id))]
    if not refused:
        return await handler(ctx, request)
    request.groups = [g for g in request.groups if not _error(ctx, GROUP, g.group_id)]
    response = await handler(ctx, request) if request.groups else m.OffsetFetchResponse(groups=[])
    response.groups.extend(
        m.OffsetFetchResponseGroup(group_id=g.group_id, error_code=e, topics=[]) for g, e in refused
    )
    return response


@_check(15)
async def _describe_groups(
    ctx: RequestContext, request: m.DescribeGroupsRequest, handler: Handler
) -> Any:
    refused = [(g, e) for g in request.groups if (e := _error(ctx, GROUP, g))]
    if not refused:
        return await handler(ctx, request)
    request.groups = [g for g in request.groups if not _error(ctx, GROUP, g)]
    response = await handler(ctx, request) if request.groups else m.DescribeGroupsResponse()
    response.groups.extend(
        m.DescribeGroupsResponse.DescribedGroup(
            group_id=g, error_code=e, group_state="", protocol_type="", protocol_data=""
        )
        for g, e in refused
    )
    return response


@_check(69)
async def _consumer_group_describe(
    ctx: RequestContext, request: m.ConsumerGroupDescribeRequest, handler: Handler
) -> Any:
    refused = [(g, e) for g in request.group_ids if (e := _error(ctx, GROUP, g))]
    if not refused:
        return await handler(ctx, request)
    request.group_ids = [g for g in request.group_ids if not _error(ctx, GROUP, g)]
    response = (
        await handler(ctx, request) if request.group_ids else m.ConsumerGroupDescribeResponse()
    )
    response.groups.extend(
        m.ConsumerGroupDescribeResponse.DescribedGroup(group_id=g, error_code=e) for g, e in refused
    )
    return response


@_check(42)
async def _delete_groups(
    ctx: RequestContext, request: m.DeleteGroupsRequest, handler: Handler
) -> Any:
    refused = [(g, e) for g in request.groups_names if (e := _error(ctx, GROUP, g))]
    if not refused:
        return await handler(ctx, request)
    request.groups_names = [g for g in request.groups_names if not _error(ctx, GROUP, g)]
    response = await handler(ctx, request) if request.groups_names else m.DeleteGroupsResponse()
    response.results.extend(
        m.DeleteGroupsResponse.DeletableGroupResult(group_id=g, error_code=e) for g, e in refused
    )
    return response


# -- transactions -----------------------------------------------------------------------------


@_check(22)
async def _init_producer_id(
    ctx: RequestContext, request: m.InitProducerIdRequest, handler: Handler
) -> Any:
    error = _error(ctx, TRANSACTION, request.transactional_id)
    if error:
        return m.InitProducerIdResponse(error_code=error, producer_id=-1, producer_epoch=-1)
    return await handler(ctx, request)


@_check(25, 26)
async def _one_txn(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    error = _error(ctx, TRANSACTION, request.transactional_id)
    if error:
        if ctx.header.api_key == 26:
            return m.EndTxnResponse(error_code=error, producer_id=-1, producer_epoch=-1)
        return _refused(ctx, error)
    return await handler(ctx, request)


@_check(24)
async def _add_partitions_to_txn(
    ctx: RequestContext, request: m.AddPartitionsToTxnRequest, handler: Handler
) -> Any:
    if ctx.version >= 4:
        for t in request.transactions:
            error = _error(ctx, TRANSACTION, t.transactional_id)
            if error:
                return m.AddPartitionsToTxnResponse(error_code=error)
        return await handler(ctx, request)
    error = _error(ctx, TRANSACTION, request.v3_and_below_transactional_id)
    if not error:
        return await handler(ctx, request)
    result = m.AddPartitionsToTxnResponse.AddPartitionsToTxnTopicResult
    part = m.AddPartitionsToTxnResponse.AddPartitionsToTxnPartitionResult
    return m.AddPartitionsToTxnResponse(
        results_by_topic_v3_and_below=[
            result(
                name=t.name,
                results_by_partition=[
                    part(partition_index=p, partition_error_code=error) for p in t.partitions
                ],
            )
            for t in request.v3_and_below_topics
        ]
    )


@_check(65)
async def _describe_transactions(
    ctx: RequestContext, request: m.DescribeTransactionsRequest, handler: Handler
) -> Any:
    refused = [(t, e) for t in request.transactional_ids if (e := _error(ctx, TRANSACTION, t))]
    if not refused:
        return await handler(ctx, request)
    request.transactional_ids = [
        t for t in request.transactional_ids if not _error(ctx, TRANSACTION, t)
    ]
    response = await handler(ctx, request)
    response.transaction_states.extend(
        m.DescribeTransactionsResponse.TransactionState(transactional_id=t, error_code=e)
        for t, e in refused
    )
    return response
