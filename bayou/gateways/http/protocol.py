"""uvicorn's HTTP/1.1 protocol (httptools) with what a client can trigger logged rate-limited.

uvicorn logs a WARNING for every connection that does not speak HTTP ("Invalid HTTP request
received.") — a Kafka client pointed at the HTTP port by mistake reconnects every few tens of
milliseconds, which is a line per attempt, forever.  ``HttpProtocol`` is uvicorn's
``HttpToolsProtocol`` whose per-connection logger sends such warnings through a
``RateLimitedLog`` keyed by the peer's host and the message: the first one is logged, naming
the peer and what probably happened, and repeats within the interval are counted into the next
line.  Everything else (errors with tracebacks, debug and trace lines) passes unchanged.

On a TLS listener with client certificates, the certificate's principal is put in each
request's scope (``extensions["bayou.principal"]``) for ``auth.AuthMiddleware``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bayou.core.quotas import Quotas
from bayou.core.security import Security
from bayou.gateways.admission import admit
from bayou.log_limits import RateLimitedLog

log = logging.getLogger("bayou.gateways.http")

# One per process: the key holds the peer, so every HTTP door of the process shares it.
CLIENT_WARNINGS = RateLimitedLog(log)

HINTS = {
    "Invalid HTTP request received.": " (not HTTP: a Kafka, MQTT or AMQP client pointed at the "
    "HTTP port?)",
}


class _PeerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """uvicorn's logger for one connection: client-triggered warnings rate-limited."""

    def __init__(self, logger: logging.Logger, peer: str) -> None:
        super().__init__(logger, {})
        self.peer = peer

    @property
    def level(self) -> int:  # uvicorn reads ``logger.level`` to decide on trace lines
        return int(self.logger.level)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level == logging.WARNING and not kwargs.get("exc_info") and not args:
            text = str(msg)
            CLIENT_WARNINGS.warning(
                (self.peer, text),
                "HTTP client %s: %s%s",
                self.peer,
                text.rstrip("."),
                HINTS.get(text, ""),
            )
            return
        super().log(level, msg, *args, **kwargs)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


class HttpProtocol(HttpToolsProtocol):
    #: the broker's security, set by the gateway: a TLS client certificate's principal
    security: Security | None = None
    #: the broker's quotas, set by the gateway: the connection rate of an address
    quotas: Quotas | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else "unknown"
        self.logger = _PeerLog(logging.getLogger("uvicorn.error"), host)  # type: ignore[assignment]
        security = self.security
        self.cert_principal = (
            security.certificate_principal(transport.get_extra_info("ssl_object"))
            if security is not None
            else None
        )
        self.refused = self.quotas is not None and not admit(self.quotas, transport, "http")

    def data_received(self, data: bytes) -> None:
        if self.refused:  # over its address's connection rate: held unread, then closed
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.cert_principal is not None:  # for auth.AuthMiddleware
            self.scope["extensions"] = {"bayou.principal": {"principal": self.cert_principal}}
