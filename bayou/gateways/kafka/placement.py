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
coordinator up again (FindCoordinator) and retry.  ShareFetch and ShareAcknowledge, which
share consumers send to partition leaders, not to the coordinator, are relayed to the
group's coordinator instead (``share_relay.py``).  Requests naming several groups (v8+
OffsetFetch, DescribeGroups, ConsumerGroupDescribe, DeleteGroups) are split: the served
ones go to the handler, the others are answered beside them.  On an engine no other broker
shares every key is served here and no check runs.

Every check is one of three shapes, built for each API from the fields its request names
the key(s) by and how its response says the error: one key (``_one``), one key answered per
partition (``_per_partition``), several keys split (``_split``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bayou.core.types import BrokerAddress
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.share_relay import relay
from bayou.protocol.kafka import API_KEYS
from bayou.protocol.kafka import messages as m

Handler = Callable[[RequestContext, Any], Awaitable[Any]]
Check = Callable[[RequestContext, Any, Handler], Awaitable[Any]]
GROUP, TRANSACTION = 0, 1
E = ErrorCode

CHECKS: dict[int, Check] = {}


def live_brokers(ctx: RequestContext) -> list[BrokerAddress]:
    """The brokers Metadata lists, at the listener the client is connected to (the TLS
    ports on the TLS listener): the cluster's live ones — on the TLS listener those with
    one, as Kafka lists only the brokers that have the listener asked through — or this
    one."""
    core = ctx.core
    if core.cluster.shared:
        tls = ctx.door.tls
        return [
            found
            for broker in core.cluster.brokers()
            if (found := broker.on_listener(tls)) is not None
        ]
    return [BrokerAddress(core.node_id, ctx.door.advertised_host, ctx.door.advertised_port)]


def coordinator_address(ctx: RequestContext, key_type: int, key: str) -> BrokerAddress | None:
    """The broker coordinating ``key`` at the client's listener (None: not known, or it has
    no TLS listener and the client is on the TLS one)."""
    cluster = ctx.core.cluster
    if not cluster.shared:
        return live_brokers(ctx)[0]
    found = cluster.broker(cluster.coordinator(key_type, key))
    return None if found is None else found.on_listener(ctx.door.tls)


def placing(handler: Handler) -> Handler:
    """``handler`` behind the coordinator check of its API (if it has one)."""

    async def placed(ctx: RequestContext, request: Any) -> Any:
        check = CHECKS.get(ctx.header.api_key)
        if check is None:
            return await handler(ctx, request)
        return await check(ctx, request, handler)

    return placed


def _error(ctx: RequestContext, key_type: int, key: str | None) -> ErrorCode:
    if key is None or not key:
        return E.NONE  # the handler answers what an empty or absent key deserves
    return ctx.core.cluster.coordinator_error(key_type, key)


Refusal = Callable[[Any, ErrorCode], Any]  # (request, error) -> the API's response


def _one(key_type: int, key_of: Callable[[Any], str | None], refuse: Refusal) -> Check:
    """A request about one key: refused as a whole when another broker serves it."""

    async def check(ctx: RequestContext, request: Any, handler: Handler) -> Any:
        error = _error(ctx, key_type, key_of(request))
        if error:
            return refuse(request, error)
        return await handler(ctx, request)

    return check


def _split(
    key_type: int,
    items: str,
    key_of: Callable[[Any], str | None],
    results: str,
    refused: Callable[[Any, ErrorCode], Any],
    empty: Callable[[], Any],
) -> Check:
    """A request naming several keys (its list field ``items``): the served ones go to the
    handler, the others are answered beside them (``refused``) in the response's list
    ``results``; ``empty`` is the response when none is served here."""

    async def check(ctx: RequestContext, request: Any, handler: Handler) -> Any:
        named = getattr(request, items)
        errors = [_error(ctx, key_type, key_of(item)) for item in named]
        if not any(errors):
            return await handler(ctx, request)
        served = [item for item, error in zip(named, errors, strict=True) if not error]
        setattr(request, items, served)
        response = await handler(ctx, request) if served else empty()
        getattr(response, results).extend(
            refused(item, error) for item, error in zip(named, errors, strict=True) if error
        )
        return response

    return check


def _top_level(response: Any, **fields: Any) -> Refusal:
    """The response with the error in its top-level ``error_code`` (and ``fields``)."""
    return lambda _request, error: response(error_code=error, **fields)


def _per_partition(response: Any, topic: Any, partition: Any) -> Refusal:
    """The response with the error on every partition the request named."""

    def refuse(request: Any, error: ErrorCode) -> Any:
        return response(
            topics=[
                topic(
                    name=t.name,
                    partitions=[
                        partition(partition_index=p.partition_index, error_code=error)
                        for p in t.partitions
                    ],
                )
                for t in request.topics
            ]
        )

    return refuse


def _group_id(request: Any) -> str | None:
    return request.group_id  # type: ignore[no-any-return]


def _transactional_id(request: Any) -> str | None:
    return request.transactional_id  # type: ignore[no-any-return]


def _same(key: str) -> str:
    return key


def _register(check: Check, *api_keys: int) -> None:
    for key in api_keys:
        CHECKS[key] = check


# -- groups -----------------------------------------------------------------------------------

for _key in (11, 12, 13, 14, 68, 76):  # share groups' heartbeats too: the group's owner
    _register(_one(GROUP, _group_id, _top_level(API_KEYS[_key].response)), _key)


def _relayed(refuse: Refusal) -> Check:
    """ShareFetch and ShareAcknowledge: sent by share consumers to each partition's
    leader, so relayed to the group's coordinator when it is another broker
    (``share_relay.py``); refused when no other broker can be asked, or when the request
    was relayed here already."""

    async def check(ctx: RequestContext, request: Any, handler: Handler) -> Any:
        group_id = request.group_id
        error = _error(ctx, GROUP, group_id)
        if not error:
            return await handler(ctx, request)
        if ctx.session.from_broker(ctx.header.client_id):
            return refuse(request, error)
        _why, owner = ctx.core.group_coordinator(group_id)
        if owner is None:
            return refuse(request, error)
        return await relay(ctx, request, owner, refuse)

    return check


for _key in (78, 79):
    _register(_relayed(_top_level(API_KEYS[_key].response)), _key)
_register(_one(GROUP, _group_id, _top_level(m.OffsetDeleteResponse)), 47)
_register(
    _one(
        GROUP,
        _group_id,
        _per_partition(
            m.OffsetCommitResponse, m.OffsetCommitResponseTopic, m.OffsetCommitResponsePartition
        ),
    ),
    8,
)
_register(
    _one(
        GROUP,
        _group_id,
        _per_partition(
            m.TxnOffsetCommitResponse,
            m.TxnOffsetCommitResponseTopic,
            m.TxnOffsetCommitResponsePartition,
        ),
    ),
    28,
)
_register(
    _split(
        GROUP,
        "groups",
        _same,
        "groups",
        lambda g, e: m.DescribeGroupsResponse.DescribedGroup(
            group_id=g, error_code=e, group_state="", protocol_type="", protocol_data=""
        ),
        m.DescribeGroupsResponse,
    ),
    15,
)
_register(
    _split(
        GROUP,
        "group_ids",
        _same,
        "groups",
        lambda g, e: m.ConsumerGroupDescribeResponse.DescribedGroup(group_id=g, error_code=e),
        m.ConsumerGroupDescribeResponse,
    ),
    69,
)
_register(
    _split(
        GROUP,
        "groups_names",
        _same,
        "results",
        lambda g, e: m.DeleteGroupsResponse.DeletableGroupResult(group_id=g, error_code=e),
        m.DeleteGroupsResponse,
    ),
    42,
)


def _offset_fetch_refused(request: m.OffsetFetchRequest, error: ErrorCode) -> Any:
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


_offset_fetch_one = _one(GROUP, _group_id, _offset_fetch_refused)  # v0-7: one group
_offset_fetch_groups = _split(  # v8+: several
    GROUP,
    "groups",
    _group_id,
    "groups",
    lambda g, e: m.OffsetFetchResponseGroup(group_id=g.group_id, error_code=e, topics=[]),
    lambda: m.OffsetFetchResponse(groups=[]),
)


async def _offset_fetch(ctx: RequestContext, request: Any, handler: Handler) -> Any:
    check = _offset_fetch_one if ctx.version < 8 else _offset_fetch_groups
    return await check(ctx, request, handler)


_register(_offset_fetch, 9)

# -- transactions -----------------------------------------------------------------------------

_register(
    _one(
        TRANSACTION,
        _transactional_id,
        _top_level(m.InitProducerIdResponse, producer_id=-1, producer_epoch=-1),
    ),
    22,
)
_register(_one(TRANSACTION, _transactional_id, _top_level(m.AddOffsetsToTxnResponse)), 25)
_register(
    _one(
        TRANSACTION,
        _transactional_id,
        _top_level(m.EndTxnResponse, producer_id=-1, producer_epoch=-1),
    ),
    26,
)
_register(
    _split(
        TRANSACTION,
        "transactional_ids",
        _same,
        "transaction_states",
        lambda t, e: m.DescribeTransactionsResponse.TransactionState(
            transactional_id=t, error_code=e
        ),
        m.DescribeTransactionsResponse,
    ),
    65,
)


def _add_partitions_v3_refused(request: m.AddPartitionsToTxnRequest, error: ErrorCode) -> Any:
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


_add_partitions_v3 = _one(
    TRANSACTION, lambda r: r.v3_and_below_transactional_id, _add_partitions_v3_refused
)


async def _add_partitions_to_txn(
    ctx: RequestContext, request: m.AddPartitionsToTxnRequest, handler: Handler
) -> Any:
    if ctx.version < 4:
        return await _add_partitions_v3(ctx, request, handler)
    for t in request.transactions:  # v4+ (brokers verifying): refused as a whole
        error = _error(ctx, TRANSACTION, t.transactional_id)
        if error:
            return m.AddPartitionsToTxnResponse(error_code=error)
    return await handler(ctx, request)


_register(_add_partitions_to_txn, 24)
