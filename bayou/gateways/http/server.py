"""The HTTP listener: uvicorn's server driven inside the broker's event loop.

``HttpGateway(core, host, options)`` is the door ``bayou.app`` builds; it sees the broker only
through the ``Core``.  ``start`` binds the socket itself (so a busy port is an ordinary
``OSError`` for ``App.start``, not uvicorn's ``sys.exit``), then runs uvicorn's ``startup`` and its
once-a-tenth-second ``main_loop`` as a task.  uvicorn's ``serve()`` is not used: it installs
its own SIGINT/SIGTERM handlers, and the broker owns signals.  ``stop`` (called after the
broker has set ``stopping`` and woken every long poll, which ends streams and record reads)
asks the loop to exit, makes subscribed consumer instances leave their groups, and lets
uvicorn close connections, bounded by ``GRACE_S``.
With a TLS certificate a second uvicorn server serves the same application on
``tls_port`` over the broker's one TLS context (``bayou.core.security.tls``).
uvicorn's HTTP protocol is ``protocol.HttpProtocol`` (its httptools protocol, with warnings a
client can trigger rate-limited).  A background task heartbeats subscribed consumer instances
and expires idle ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time

import uvicorn
from starlette.routing import BaseRoute

from bayou.broker_config import HttpOptions
from bayou.core import Core
from bayou.core.partitioner import Partitioner
from bayou.gateways.http.app import create_app
from bayou.gateways.http.consumers import ConsumerRegistry
from bayou.gateways.http.context import Gateway
from bayou.gateways.http.protocol import HttpProtocol

log = logging.getLogger(__name__)

GRACE_S = 5
EXPIRY_CHECK_S = 1.0
MAINTENANCE_S = 0.2


class HttpGateway:
    name = "http"

    @property
    def address(self) -> str:
        plain = f"{self.host}:{self.port}"
        return f"{plain} tls {self.host}:{self.tls_port}" if self._tls_server else plain

    def health(self) -> dict[str, object]:
        return {"listening": self.port != 0}

    def __init__(self, core: Core, host: str, options: HttpOptions) -> None:
        self.core = core
        self.host = host
        self.options = options
        self.consumers = ConsumerRegistry(core, options.consumer_instance_timeout_ms)
        self.gateway = Gateway(
            core, self.consumers, Partitioner(), options.max_body_bytes, options.cors_origins
        )
        self.app = create_app(self.gateway)
        core.metrics.door("http").connections = self._connection_count
        self._server: uvicorn.Server | None = None
        self._tls_server: uvicorn.Server | None = None
        self.tls_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    def add_routes(self, routes: list[BaseRoute], *, link: tuple[str, str] | None = None) -> None:
        """Serve ``routes`` beside REST Proxy (before ``start``): an application over the
        core that is not REST Proxy (the console), behind the same login.  ``link``: (name,
        path) added to ``GET /``'s index."""
        self.app.router.routes.extend(routes)
        if link is not None:
            self.gateway.links[link[0]] = link[1]

    def _connection_count(self) -> int:
        return sum(
            len(server.server_state.connections)
            for server in (self._server, self._tls_server)
            if server is not None
        )

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        address = (self.host, port)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            # the sentence asyncio's create_server gives the other doors, naming the port
            reason = (exc.strerror or str(exc)).lower()
            raise OSError(
                exc.errno, f"error while attempting to bind on address {address!r}: {reason}"
            ) from None
        return sock

    async def _serve(self, sock: socket.socket, tls: ssl.SSLContext | None) -> uvicorn.Server:
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                http=HttpProtocol,
                lifespan="off",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=GRACE_S,
                server_header=False,
                backlog=1024,
                ws_max_size=1024 * 1024,
                ws_ping_interval=20.0,
            )
        )
        server.config.load()
        server.config.ssl = tls  # the broker's one context, reloaded in place on SIGHUP
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[sock])
        return server

    async def start(self) -> None:
        HttpProtocol.security = self.core.security
        HttpProtocol.quotas = self.core.quotas
        sock = self._bind(self.options.port)
        tls = self.core.security.tls
        tls_sock = (
            self._bind(self.options.tls_port) if tls is not None and self.options.tls_port else None
        )
        self.port = sock.getsockname()[1]
        self._server = await self._serve(sock, None)
        self._tasks = [
            asyncio.create_task(self._server.main_loop()),
            asyncio.create_task(self._maintain_instances()),
        ]
        if tls_sock is not None and tls is not None:
            self.tls_port = tls_sock.getsockname()[1]
            self._tls_server = await self._serve(tls_sock, tls.context)
            self._tasks.append(asyncio.create_task(self._tls_server.main_loop()))

    async def stop(self) -> None:
        server = self._server
        if server is None:
            return
        server.should_exit = True
        if self._tls_server is not None:
            self._tls_server.should_exit = True
        self._tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.consumers.close()
        await server.shutdown()
        if self._tls_server is not None:
            await self._tls_server.shutdown()
        self._server = self._tls_server = None

    async def _maintain_instances(self) -> None:
        """Heartbeat subscribed instances and expire idle ones."""
        last_expiry = 0.0
        while True:
            await asyncio.sleep(MAINTENANCE_S)
            try:
                await self.consumers.heartbeat_due()
                now = time.monotonic()
                if now - last_expiry >= EXPIRY_CHECK_S:
                    last_expiry = now
                    for instance in await self.consumers.expire(now):
                        log.info(
                            "consumer instance %s of group %s expired",
                            instance.name,
                            instance.group,
                        )
            except Exception:
                log.exception("consumer instance maintenance failed")
