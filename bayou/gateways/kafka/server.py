"""The Kafka door: a listener whose connections speak the Kafka protocol to the core.

``KafkaDoor`` binds ``host:port``, makes a ``KafkaConnection`` per client, keeps the share
sessions of share consumers (``share_sessions.py``) and, at ``stop``,
stops accepting, lets every connection's in-flight requests answer (bounded by
``SHUTDOWN_GRACE_S``) and closes them.  What clients are told to connect to (the advertised
host and port, this node's id) and the per-request limits are this door's settings.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bayou.gateways.kafka.connection import KafkaConnection
from bayou.gateways.kafka.context import KafkaSettings
from bayou.gateways.kafka.share_sessions import ShareSession, ShareSessions

if TYPE_CHECKING:
    from bayou.core import Core

SHUTDOWN_GRACE_S = 10.0


__all__ = ["KafkaDoor", "KafkaSettings"]


class KafkaDoor:
    name = "kafka"

    def __init__(self, core: Core, settings: KafkaSettings) -> None:
        self.core = core
        self.settings = settings
        self.port = settings.port
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[KafkaConnection] = set()
        self.share_sessions = ShareSessions(self._release_session)

    def _release_session(self, session: ShareSession) -> None:
        """A share session ended: its member's records go back to the group at once."""
        shares = self.core.shares
        if shares is None or shares.closed or not session.partitions:
            return
        parts = list(session.partitions)
        self.core.background(
            shares.run(
                lambda now: shares.coordinator.release(
                    now, session.group_id, session.member_id, parts
                )
            )
        )

    @property
    def node_id(self) -> int:
        return self.core.node_id

    @property
    def advertised_host(self) -> str:
        return self.settings.advertised_host or self.settings.host

    @property
    def advertised_port(self) -> int:
        return self.port

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: KafkaConnection(self, self._connections),
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            backlog=1024,
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    def close_listener(self) -> None:
        """Stop accepting (first thing at shutdown: no new clients while the rest stops)."""
        if self._server is not None:
            self._server.close()

    async def stop(self) -> None:
        self.close_listener()
        if self._connections:
            await asyncio.gather(
                *(c.finish(SHUTDOWN_GRACE_S) for c in list(self._connections)),
                return_exceptions=True,
            )

    def health(self) -> dict[str, object]:
        return {
            "listening": self._server is not None and self._server.is_serving(),
            "connections": len(self._connections),
        }
