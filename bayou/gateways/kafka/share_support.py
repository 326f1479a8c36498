"""Helpers the Kafka share-group handlers share: the driver, topic ids, acknowledgements,
and the share groups' configs (IncrementalAlterConfigs on GROUP resources; in a cluster,
applied by the broker coordinating the group — forwarded to it from any other)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from bayou.core.forwarding import SHARE_MEMBER_CLIENT_IDS
from bayou.core.groups import GroupCoordinatorError
from bayou.core.shares import Ack, ShareCoordinatorError
from bayou.core.shares.model import GROUP_CONFIGS, validate_group_config
from bayou.errors import ErrorCode, InvalidConfig, KafkaError
from bayou.gateways.kafka.config_changes import DELETE, SET
from bayou.protocol.kafka import messages as m

if TYPE_CHECKING:
    from bayou.core.shares import ShareDriver
    from bayou.core.types import BrokerAddress
    from bayou.gateways.kafka.context import RequestContext

GROUP_RESOURCE, INCREMENTAL_ALTER_CONFIGS = 32, 44


class AckBatch(Protocol):
    first_offset: int
    last_offset: int
    acknowledge_types: list[int]


def share_driver(ctx: RequestContext) -> ShareDriver:
    """The broker's share driver; COORDINATOR_NOT_AVAILABLE while it is not running."""
    shares = ctx.core.shares
    if shares is None or ctx.core.stopping or shares.closed:
        raise ShareCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
    return shares


def relayed_by(ctx: RequestContext) -> object:
    """The connection a relayed share request came over (its sessions are that
    connection's: ``share_sessions.py``), or None for a client's own request."""
    return ctx.connection if ctx.session.from_broker(ctx.header.client_id) else None


def topic_name(ctx: RequestContext, topic_id: uuid.UUID) -> str | None:
    meta = ctx.core.topic_by_id(topic_id)
    return None if meta is None else meta.name


def topic_id(ctx: RequestContext, name: str) -> uuid.UUID:
    meta = ctx.core.topics().get(name)
    return uuid.UUID(int=0) if meta is None else meta.topic_id


def to_acks(batches: Iterable[AckBatch]) -> list[Ack]:
    return [Ack(b.first_offset, b.last_offset, tuple(b.acknowledge_types)) for b in batches]


async def alter_group_configs(
    ctx: RequestContext,
    group_id: str,
    changes: Iterable[tuple[str, int, str | None]],
    *,
    incremental: bool,
    validate_only: bool,
) -> None:
    """A GROUP resource's config changes (the share groups' ``share.*`` configs): SET and
    DELETE, validated whole (INVALID_CONFIG naming the config) and applied all or nothing."""
    if not group_id:
        raise KafkaError("The group id must not be empty", ErrorCode.INVALID_REQUEST)
    error, owner = ctx.core.group_coordinator(group_id)
    forwarded = ctx.session.from_broker(ctx.header.client_id)  # never sent on again
    # a door's own setup relayed from another broker: values beyond Kafka's ranges allowed
    # (an AMQP classic queue without x-delivery-limit requeues forever: ``shares.md``)
    door_member = forwarded and ctx.header.client_id in SHARE_MEMBER_CLIENT_IDS
    if owner is not None and not forwarded:  # the coordinating broker applies them
        await _forward_group_configs(ctx, owner, group_id, changes, incremental, validate_only)
        return
    if error == ErrorCode.NOT_COORDINATOR and ctx.core.cluster.shared:
        raise KafkaError(f"Another broker coordinates group {group_id}", error)
    try:
        shares = share_driver(ctx)
    except ShareCoordinatorError as exc:
        raise KafkaError(str(exc), exc.code) from None
    coordinator = shares.coordinator
    current = dict(coordinator.configs.get(group_id, {})) if incremental else {}
    for name, op, value in changes:
        if op == DELETE:
            if name not in GROUP_CONFIGS:
                raise InvalidConfig(f"Unknown group config name: {name}")
            current.pop(name, None)
        elif op == SET:
            why = validate_group_config(
                coordinator.settings, name, value or "", bounded=not door_member
            )
            if why is not None:
                raise InvalidConfig(why)
            current[name] = value or ""
        else:
            raise InvalidConfig(f"Config {name} is not a list: APPEND/SUBTRACT do not apply")
    if not validate_only:
        await shares.run(lambda now: coordinator.alter_configs(now, group_id, current))


async def _forward_group_configs(
    ctx: RequestContext,
    owner: BrokerAddress,
    group_id: str,
    changes: Iterable[tuple[str, int, str | None]],
    incremental: bool,
    validate_only: bool,
) -> None:
    """The changes as one IncrementalAlterConfigs to the coordinating broker (a Kafka
    client may send a group's configs to any broker; only the coordinator keeps them)."""
    if not incremental:
        raise KafkaError(
            f"Another broker coordinates group {group_id}: use IncrementalAlterConfigs",
            ErrorCode.NOT_COORDINATOR,
        )
    config = m.IncrementalAlterConfigsRequestAlterableConfig
    request = m.IncrementalAlterConfigsRequest(
        resources=[
            m.IncrementalAlterConfigsRequestAlterConfigsResource(
                resource_type=GROUP_RESOURCE,
                resource_name=group_id,
                configs=[config(name=n, config_operation=op, value=v) for n, op, v in changes],
            )
        ],
        validate_only=validate_only,
    )
    try:
        answer = await ctx.core.group_link.call(owner, INCREMENTAL_ALTER_CONFIGS, 1, request)
    except GroupCoordinatorError as exc:
        raise KafkaError(str(exc), exc.code) from None
    for resource in answer.responses:
        if resource.error_code != ErrorCode.NONE:
            raise KafkaError(resource.error_message or "", ErrorCode(resource.error_code))
