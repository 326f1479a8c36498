"""The Kafka door: listeners whose connections speak the Kafka protocol to the core.

``KafkaDoor`` binds ``host:port`` (PLAINTEXT, or SASL_PLAINTEXT with an authorizer) and,
when the broker has a TLS certificate, ``host:tls_port`` (SSL, or SASL_SSL) beside it.  Each
listener is a ``KafkaListener``: what a connection sees of the listener it came through —
the advertised host and *that listener's* port, so a client connected over TLS is told the
TLS address in Metadata and stays on TLS.  At ``stop`` the door stops accepting, lets every
connection's in-flight requests answer (bounded by ``SHUTDOWN_GRACE_S``) and closes them.
The door also keeps the share sessions of share consumers (``share_sessions.py``) and, in a
cluster, the connections relaying their requests to another coordinator (``share_relay.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING

from bayou.buffer_pool import BufferPool
from bayou.core.shares import ShareCoordinatorError
from bayou.gateways.kafka.connection import KafkaConnection
from bayou.gateways.kafka.context import KafkaSettings
from bayou.gateways.kafka.frames import FRAME_POOL_BYTES
from bayou.gateways.kafka.share_relay import ShareRelays
from bayou.gateways.kafka.share_sessions import ShareSession, ShareSessions

if TYPE_CHECKING:
    from bayou.core import Core

SHUTDOWN_GRACE_S = 10.0


__all__ = ["KafkaDoor", "KafkaListener", "KafkaSettings"]


class KafkaListener:
    """One listener of the door (plain or TLS), as its connections see it."""

    def __init__(self, door: KafkaDoor, tls: bool) -> None:
        self.door = door
        self.tls = tls
        self.server: asyncio.AbstractServer | None = None

    @property
    def core(self) -> Core:
        return self.door.core

    @property
    def settings(self) -> KafkaSettings:
        return self.door.settings

    @property
    def advertised_host(self) -> str:
        return self.door.advertised_host

    @property
    def advertised_port(self) -> int:
        return self.door.tls_port if self.tls else self.door.port

    @property
    def share_sessions(self) -> ShareSessions:
        return self.door.share_sessions

    @property
    def share_relays(self) -> ShareRelays:
        return self.door.share_relays

    @property
    def security_protocol(self) -> str:
        sasl = "SASL_" if self.door.core.security.enabled else ""
        return f"{sasl}SSL" if self.tls else f"{sasl}PLAINTEXT"


class KafkaDoor:
    name = "kafka"

    def __init__(self, core: Core, settings: KafkaSettings) -> None:
        self.core = core
        self.settings = settings
        self.port = settings.port
        self.tls_port = settings.tls_port
        self.plain = KafkaListener(self, tls=False)
        self.secure = KafkaListener(self, tls=True)
        self._connections: set[KafkaConnection] = set()
        self._frame_pool = BufferPool(FRAME_POOL_BYTES)  # large request frames (frames.py)
        core.metrics.door("kafka").connections = self._connections.__len__
        self.share_sessions = ShareSessions(self._release_session, self._member_gone)
        self.share_relays = ShareRelays(core.security.internal_login)

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

    def _member_gone(self, group_id: str, member_id: str) -> None:
        """A door's member of another broker lost its connection: it leaves its group (what
        it held goes to the others at once)."""
        shares = self.core.shares
        if shares is None or shares.closed:
            return

        async def leave() -> None:
            with contextlib.suppress(ShareCoordinatorError):  # the group moved meanwhile
                await shares.run(
                    lambda now: shares.coordinator.heartbeat(
                        now,
                        group_id=group_id,
                        member_id=member_id,
                        member_epoch=-1,
                        rack_id=None,
                        subscribed=None,
                        client_id="",
                        client_host="",
                        topic_sizes=shares.topic_sizes(),
                        log_bounds=shares.log_bounds,
                        topic_ids=shares.topic_ids(),
                    )
                )

        self.core.background(leave())

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
        plain = f"{self.settings.host}:{self.port}"
        return f"{plain} tls {self.settings.host}:{self.tls_port}" if self.tls_enabled else plain

    @property
    def tls_enabled(self) -> bool:
        return self.secure.server is not None

    async def _bind(self, listener: KafkaListener, port: int, tls: ssl.SSLContext | None) -> int:
        loop = asyncio.get_running_loop()
        listener.server = await loop.create_server(
            lambda: KafkaConnection(listener, self._connections, self._frame_pool),
            self.settings.host,
            port,
            reuse_address=True,
            backlog=1024,
            ssl=tls,
        )
        return int(listener.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.port = await self._bind(self.plain, self.settings.port, None)
        tls = self.core.security.tls
        if tls is not None and self.settings.tls_enabled:
            self.tls_port = await self._bind(self.secure, self.settings.tls_port, tls.context)

    def close_listener(self) -> None:
        """Stop accepting (first thing at shutdown: no new clients while the rest stops)."""
        for listener in (self.plain, self.secure):
            if listener.server is not None:
                listener.server.close()

    async def stop(self) -> None:
        self.close_listener()
        if self._connections:
            await asyncio.gather(
                *(c.finish(SHUTDOWN_GRACE_S) for c in list(self._connections)),
                return_exceptions=True,
            )
        self.share_relays.close()

    def health(self) -> dict[str, object]:
        server = self.plain.server
        return {
            "listening": server is not None and server.is_serving(),
            "connections": len(self._connections),
        }
