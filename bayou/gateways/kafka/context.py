"""What a Kafka handler sees: the core, this listener's settings, and the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bayou.core import Core
    from bayou.gateways.kafka.server import KafkaDoor
    from bayou.protocol.kafka import RequestHeader


@dataclass
class RequestContext:
    """One request: the door it came through, its header, and the connection's peer."""

    door: KafkaDoor
    header: RequestHeader
    peer: str

    @property
    def core(self) -> Core:
        return self.door.core

    @property
    def version(self) -> int:
        return int(self.header.api_version)
