"""Helpers the Kafka share-group handlers share: the driver, topic ids, acknowledgements,
and the share groups' configs (IncrementalAlterConfigs on GROUP resources)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from bayou.core.shares import Ack, ShareCoordinatorError
from bayou.core.shares.model import GROUP_CONFIGS, validate_group_config
from bayou.errors import ErrorCode, InvalidConfig, KafkaError
from bayou.gateways.kafka.config_changes import DELETE, SET

if TYPE_CHECKING:
    from bayou.core.shares import ShareDriver
    from bayou.gateways.kafka.context import RequestContext


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
            why = validate_group_config(coordinator.settings, name, value or "")
            if why is not None:
                raise InvalidConfig(why)
            current[name] = value or ""
        else:
            raise InvalidConfig(f"Config {name} is not a list: APPEND/SUBTRACT do not apply")
    if not validate_only:
        await shares.run(lambda now: coordinator.alter_configs(now, group_id, current))
