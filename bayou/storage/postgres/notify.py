"""Change notifications between brokers sharing one database: LISTEN/NOTIFY.

Theory of operation
-------------------
Metadata is synchronous in the engine interface, so every broker keeps it in memory; what
keeps those caches true across brokers is one channel, ``bayou_changes``.  Every
transaction that changes something another broker caches sends, inside the transaction
(PostgreSQL delivers it only if and when it commits, in commit order), one or more
notifications of this shape::

    <sender> P <partition>:<version>:<log start>:<next offset>:<first unstable>:<size>:<aborted>;…
    <sender> T          topics, partitions or topic configs changed: reload them
    <sender> C          dynamic broker configs changed: reload them

``<sender>`` is the sending engine's random id: a broker skips its own notifications (it
updated its cache when its transaction committed).  A partition's state carries the row's
``version`` (incremented by every change of the row), so a cache applies a state only if it
is newer than what it has — notifications and a broker's own commits may arrive in any
order.  A payload holds at most ``MAX_PAYLOAD`` bytes (PostgreSQL's limit is 8000), so a
transaction touching many partitions sends several.

``Listener`` keeps one dedicated connection (not from the pool) in LISTEN.  When it breaks
(PostgreSQL restarted) it reconnects with a bounded backoff and, because notifications sent
meanwhile are lost, asks the engine to resynchronise everything (``on_reconnect``) once it
listens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "bayou_changes"
MAX_PAYLOAD = 7900
RECONNECT_MAX_S = 2.0


@dataclass(frozen=True, slots=True)
class PartitionState:
    """What a broker caches of one partition row (everything else is read when needed)."""

    version: int
    log_start_offset: int
    next_offset: int
    first_unstable_offset: int  # -1: no open transaction
    size_bytes: int
    has_aborted: bool

    def encode(self, partition_id: int) -> str:
        return (
            f"{partition_id}:{self.version}:{self.log_start_offset}:{self.next_offset}:"
            f"{self.first_unstable_offset}:{self.size_bytes}:{int(self.has_aborted)}"
        )

    @classmethod
    def decode(cls, text: str) -> tuple[int, PartitionState]:
        pid, version, start, end, unstable, size, aborted = (int(x) for x in text.split(":"))
        return pid, cls(version, start, end, unstable, size, bool(aborted))


def partition_payloads(sender: str, states: Iterable[tuple[int, PartitionState]]) -> list[str]:
    """The notifications announcing ``states`` (partition id, new state)."""
    head = f"{sender} P "
    out: list[str] = []
    parts: list[str] = []
    size = len(head)
    for pid, state in states:
        text = state.encode(pid)
        if parts and size + len(text) + 1 > MAX_PAYLOAD:
            out.append(head + ";".join(parts))
            parts, size = [], len(head)
        parts.append(text)
        size += len(text) + 1
    if parts:
        out.append(head + ";".join(parts))
    return out


def topics_payload(sender: str) -> str:
    return f"{sender} T"


def configs_payload(sender: str) -> str:
    return f"{sender} C"


def leaders_payload(sender: str) -> str:
    """Partition leaders or the live brokers changed (the cluster layer, ``cluster.py``)."""
    return f"{sender} L"


def parse(payload: str) -> tuple[str, str, Iterator[tuple[int, PartitionState]]]:
    """(sender, kind, partition states) of a notification; raises ValueError."""
    sender, kind, *rest = payload.split(" ", 2)
    if kind != "P":
        return sender, kind, iter(())
    body = rest[0] if rest else ""
    return sender, kind, (PartitionState.decode(item) for item in body.split(";") if item)


class Listener:
    """LISTEN on ``CHANNEL`` over a connection of its own, reconnecting forever."""

    def __init__(
        self,
        conninfo: str,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], Awaitable[None]],
        connect_kwargs: dict[str, Any],
    ) -> None:
        self._conninfo = conninfo
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._kwargs = connect_kwargs
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def start(self) -> None:
        """Connect and LISTEN (raises when the database cannot be reached), then keep
        listening in a task."""
        conn = await self._connect()
        self.listening.set()
        self._task = asyncio.create_task(self._run(conn))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, **self._kwargs
        )
        await conn.execute(f"LISTEN {CHANNEL}")
        return conn

    async def _run(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        delay = 0.05
        while True:
            try:
                if conn is None:
                    conn = await self._connect()
                    self.listening.set()
                    log.info("listening for changes again")
                    await self._on_reconnect()
                delay = 0.05
                async for note in conn.notifies():
                    try:
                        self._on_notify(note.payload)
                    except Exception:
                        log.exception("bad change notification %r", note.payload[:200])
            except psycopg.Error as exc:
                if self.listening.is_set():
                    log.warning("change notifications interrupted: %s", exc)
                self.listening.clear()
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                    conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)
