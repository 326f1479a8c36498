"""The handler registry: which Kafka APIs this broker serves, at which versions.

Each handler module registers itself with ``@handles(api_key, min_version, max_version)``;
ApiVersions is answered from this table, so what is advertised is exactly what is served.
``advertised_min`` lets an API advertise versions it then rejects (Produce v0-v2, as Kafka 4
does, so that older librdkafka keeps compression on — KAFKA-18659).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bayou.gateways.kafka.context import RequestContext

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@dataclass(frozen=True)
class Registration:
    api_key: int
    min_version: int
    max_version: int
    advertised_min: int
    handler: Handler


HANDLERS: dict[int, Registration] = {}


def handles(
    api_key: int, min_version: int, max_version: int, *, advertised_min: int | None = None
) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the server of ``api_key`` for versions min..max inclusive."""

    def register(handler: Handler) -> Handler:
        if api_key in HANDLERS:
            raise RuntimeError(f"API {api_key} registered twice")
        HANDLERS[api_key] = Registration(
            api_key,
            min_version,
            max_version,
            min_version if advertised_min is None else advertised_min,
            handler,
        )
        return handler

    return register
