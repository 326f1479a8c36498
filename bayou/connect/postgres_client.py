"""Connections for the PostgreSQL connectors (``postgres-sink``, ``postgres-cdc-source``):
psycopg's own, with its connection errors turned into the ones the connect runtime acts on."""

from __future__ import annotations

from typing import Any

import psycopg

from bayou.connect.api import ConfigError, RetriableError

CONNECT_TIMEOUT_S = 10


def connect(url: str, connector: str, **options: Any) -> psycopg.Connection[Any]:
    """A connection to ``url`` (``options`` as ``psycopg.connect`` takes them).  A server that
    cannot be reached is a ``RetriableError`` (the runtime tries again after a back-off); a
    malformed ``connection.url`` is a ``ConfigError`` (trying again cannot help)."""
    try:
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, **options)
    except psycopg.OperationalError as exc:
        raise RetriableError(f"cannot connect to PostgreSQL: {exc}") from exc
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"connector {connector!r}: connection.url: {exc}") from exc
