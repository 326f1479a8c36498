"""The connection-rate limit of client addresses (KIP-612), the same at every door.

Each door's connection asks ``admit`` first thing in ``connection_made``.  Over the
address's ``connection_creation_rate`` (``Quotas.connection_throttle_ms``), the connection is
not served: what it sends is ignored, reading stops and the socket is closed after the
throttle time, as Kafka's acceptor does — a client that reconnects in a loop is slowed down
to the rate instead of being answered with a flood of resets.  At most ``MAX_HELD``
connections wait to be closed; past that, a refused connection is closed at once, so a flood
cannot grow memory.
A refusal is logged once a minute per door and address (``RateLimitedLog``), repeats counted.
"""

from __future__ import annotations

import asyncio
import logging

from bayou.core.quotas import Quotas
from bayou.log_limits import RateLimitedLog

log = logging.getLogger("bayou.quotas")
refusals_log = RateLimitedLog(log)
MAX_HELD = 1024


def peer_host(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


def admit(quotas: Quotas, transport: asyncio.BaseTransport, door: str) -> bool:
    """True to serve this new connection; False when its address is over its connection
    rate (the connection is then held unread and closed: the caller does nothing more)."""
    host = peer_host(transport)
    delay_ms = quotas.connection_throttle_ms(host)
    if not delay_ms:
        return True
    refusals_log.warning(
        (door, host),
        "%s: refusing connections from %s: over its connection creation rate (closed after %d ms)",
        door,
        host,
        delay_ms,
    )
    if quotas.held_connections >= MAX_HELD:
        transport.abort()  # type: ignore[attr-defined]
        return False
    loop = asyncio.get_running_loop()
    pause = getattr(transport, "pause_reading", None)
    if pause is not None:

        def paused() -> None:
            if not transport.is_closing():
                pause()

        paused()
        loop.call_soon(paused)  # uvloop starts reading after connection_made returns
    quotas.held_connections += 1

    def close() -> None:
        quotas.held_connections -= 1
        transport.abort()  # type: ignore[attr-defined]

    loop.call_later(delay_ms / 1000, close)
    return False
