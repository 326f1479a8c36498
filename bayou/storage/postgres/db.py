"""The connection pool, and what a PostgreSQL failure becomes for a Kafka client.

Theory of operation
-------------------
One ``psycopg_pool.AsyncConnectionPool`` per engine, connections in autocommit mode
(statements that must be atomic run in an explicit transaction).  The pool reconnects by
itself; what this module adds is the rule for failures:

* a connection that turns out to be dead (PostgreSQL restarted: every idle connection of the
  pool is gone at once) fails its statement with ``OperationalError``.  Reads are retried
  (bounded): the pool is asked to check its idle connections, and the read runs again on a
  fresh one.  Writes decide themselves (``writer.py``): a transaction is retried only when
  it failed before its COMMIT was sent.
* while PostgreSQL is unreachable, taking a connection waits at most ``ACQUIRE_TIMEOUT_S``;
* whatever still fails reaches the caller as ``KafkaStorageError`` (KAFKA_STORAGE_ERROR, a
  retriable error: Kafka clients retry, refreshing their metadata) with the reason, logged
  at most once per ten seconds so an outage under load is not a log flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql as _sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bayou.errors import KafkaError, KafkaStorageError
from bayou.log_limits import RateLimitedLog

log = logging.getLogger(__name__)
limited = RateLimitedLog(log, 10.0)

ACQUIRE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5
POOL_MIN = 2
POOL_MAX = 12
READ_ATTEMPTS = 3
LOCK_TIMEOUT_MS = 10_000
IDLE_IN_TRANSACTION_MS = 30_000

Connection = psycopg.AsyncConnection[Any]
Query = str | _sql.Composed
Params = Sequence[Any] | dict[str, Any] | None


def redacted(url: str) -> str:
    """The URL without its password (what the broker logs and shows)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def storage_error(what: str, exc: BaseException) -> KafkaError:
    """The retriable Kafka error a PostgreSQL failure becomes (logged, rate-limited)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    limited.warning(what, "%s failed: PostgreSQL: %s", what, reason)
    return KafkaStorageError(f"{what} failed: PostgreSQL: {reason}")


class Database:
    """The pool and a few helpers over it."""

    def __init__(self, url: str, *, application_name: str = "bayou") -> None:
        self.url = url
        self.connect_kwargs: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": application_name,
            # a row lock held by a broker that hangs or vanished mid-transaction fails the
            # waiting append (retriable) instead of blocking it; PostgreSQL ends a session
            # idle inside a transaction, and keepalives find a peer that is gone
            "options": f"-c lock_timeout={LOCK_TIMEOUT_MS} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        self.pool = AsyncConnectionPool(
            url,
            kwargs={"autocommit": True, **self.connect_kwargs},
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            open=False,
            timeout=ACQUIRE_TIMEOUT_S,
            reconnect_timeout=24 * 3600,
            name="bayou",
        )
        self._checking: asyncio.Task[None] | None = None

    async def open(self, timeout_s: float = 10.0) -> None:
        await self.pool.open(wait=True, timeout=timeout_s)

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._checking
        await self.pool.close()

    def check_soon(self) -> None:
        """Have the pool drop its dead idle connections (after a failure), once at a time."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._check())

    async def _check(self) -> None:
        with contextlib.suppress(Exception):
            await self.pool.check()

    @contextlib.asynccontextmanager
    async def connection(self, what: str) -> AsyncIterator[Connection]:
        """A pooled connection; an unreachable database is ``KafkaStorageError``."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            self.check_soon()
            raise storage_error(what, exc) from None

    async def fetch(
        self, what: str, query: Query, params: Params = None, *, binary: bool = False
    ) -> list[tuple[Any, ...]]:
        """Rows of a read-only statement, retried on a dead connection (bounded)."""
        for attempt in range(READ_ATTEMPTS):
            try:
                async with self.connection(what) as conn:
                    cur = await conn.execute(query, params, binary=binary)
                    return await cur.fetchall()
            except psycopg.OperationalError as exc:
                self.check_soon()
                if attempt + 1 == READ_ATTEMPTS:
                    raise storage_error(what, exc) from None
                await asyncio.sleep(0.05 * (attempt + 1))
            except psycopg.Error as exc:
                raise storage_error(what, exc) from None
        raise AssertionError("unreachable")

    async def run(self, what: str, query: Query, params: Params = None) -> None:
        """One statement in autocommit mode (not retried: the caller knows if that is safe)."""
        try:
            async with self.connection(what) as conn:
                await conn.execute(query, params)
        except psycopg.Error as exc:
            self.check_soon()
            raise storage_error(what, exc) from None
