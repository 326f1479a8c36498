"""Helpers the Kafka group handlers share: the driver, the client's host, subscriptions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bayou.core.groups.model import GroupCoordinatorError
from bayou.errors import BayouError, ErrorCode
from bayou.protocol.kafka import decode_data
from bayou.protocol.kafka import messages as m

if TYPE_CHECKING:
    from bayou.core.groups.driver import GroupDriver
    from bayou.gateways.kafka.context import RequestContext

CONSUMER = "consumer"


def driver(ctx: RequestContext) -> GroupDriver:
    """The broker's group driver; COORDINATOR_NOT_AVAILABLE while it is not running."""
    groups = ctx.core.groups
    if groups is None or ctx.core.stopping:
        raise GroupCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
    return groups


def client_host(ctx: RequestContext) -> str:
    """Kafka shows a member's host as ``/address``."""
    host = ctx.peer.rsplit(":", 1)[0] if ":" in ctx.peer else ctx.peer
    return "/" + host


def subscribed_topics(protocol_type: str, protocols: list[tuple[str, bytes]]) -> frozenset[str]:
    """The topics of a consumer's subscription (empty when not the consumer protocol)."""
    if protocol_type != CONSUMER:
        return frozenset()
    topics: set[str] = set()
    for _name, metadata in protocols:
        try:
            _version, sub = decode_data(m.ConsumerProtocolSubscription, metadata)
        except BayouError:
            continue
        topics.update(sub.topics)
    return frozenset(topics)


def topic_sizes(ctx: RequestContext) -> dict[str, int]:
    return {name: meta.partitions for name, meta in ctx.core.topics().items()}


def known_partition(ctx: RequestContext, topic: str, partition: int) -> bool:
    meta = ctx.core.topics().get(topic)
    return meta is not None and 0 <= partition < meta.partitions
