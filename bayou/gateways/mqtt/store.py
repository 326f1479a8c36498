"""Durable MQTT state: retained messages, session documents, session positions.

Theory of operation
-------------------
Everything durable goes through the core, in the engine's ``StateStore`` (compacted
key-value logs the engine keeps and cleans — ``DATA/internal/<name>/0/`` on the local
engine, as before this module used them) and the group coordinator:

- ``__mqtt_retained``: key = MQTT topic, value = payload, headers = its properties (the
  same headers a record of it carries); a tombstone clears it.  ``RetainedStore``.
- ``__mqtt_sessions``: key = client id, value = the session's JSON document (subscriptions,
  expiry, in-flight rows, QoS 2 ids); a tombstone drops it.  Written one batch per save,
  fsynced, and only for the documents that changed since they were last written.
- a persistent session's **positions** are the committed offsets of the consumer group
  ``mqtt:<client id>``, committed as a reader outside the group's membership (generation
  -1, as Kafka's ``assign()`` consumers do) — so ``bayou group describe``, Kafka's admin
  API and every lag tool see MQTT subscribers and their lag.  Only offsets that moved since
  the last commit are committed.  Group offsets expire (``offsets.retention.minutes``) when
  nobody commits them, and an offline MQTT session may outlive that (3.1.1 sessions never
  expire): every session's offsets are committed again once per half retention
  (``refresh_due``), and soon after a restart.  Dropping a session deletes its group.

A version 1 document (before positions were group offsets) still holds them: they are used
for every partition the group has no offset for, and committed on the first save.

**Brokers sharing an engine** write the same two logs, and each follows them
(``Core.follow_state_log``): a retained message set or cleared through one broker is what a
new subscriber on any other gets.  A session is held by one broker at a time — the one that
wrote its document last (the document names its ``node``).  The others keep that document in
``remote`` only; when the session's client connects to one of them, it ``adopt``s it (the
document, and the positions committed by the previous holder, read from the group's
coordinator) and its next save tells the previous holder, which lets its copy go
(``forget``) — and, if the client was still connected there, disconnects it as a session
taken over (``server.py``).  Each adoption raises the document's handover generation
(``gen``; a tombstone carries it, and the node, as headers): a write of a session held here
by another broker is a takeover only when it is ``newer`` — else it is the previous holder's
late write (its save as its client left, its expiry), ignored and overwritten.  At start a
broker restores only the sessions it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from bayou.core import Core
from bayou.core.groups import GroupCoordinatorError
from bayou.core.types import StateEntry, StateLog, latest
from bayou.errors import ErrorCode
from bayou.gateways.mqtt.messages import TP
from bayou.log_limits import RateLimitedLog

log = logging.getLogger("bayou.mqtt")

RETAINED_LOG = "__mqtt_retained"
SESSIONS_LOG = "__mqtt_sessions"
GROUP_PREFIX = "mqtt:"
REFRESH_BATCH = 1000  # sessions whose offsets are re-committed per refresh round
# How long a start waits in all for its sessions' positions while their group is between
# coordinators: one hanging (a forwarded call's timeout) until its lease lapsed, the next one
# loading the group; asked again every LOAD_RETRY_S.
LOAD_WAIT_S, LOAD_RETRY_S = 30.0, 0.2

Headers = Sequence[tuple[str, bytes | None]]


def group_of(client_id: str) -> str:
    """The consumer group that holds a session's positions."""
    return GROUP_PREFIX + client_id


class PersistedSession(Protocol):
    """A session, as the store sees it."""

    client_id: str

    def document(self) -> dict[str, Any]: ...

    def positions(self) -> dict[TP, int]: ...


class RetainedStore:
    """``__mqtt_retained``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._log: StateLog | None = None

    async def open(self) -> list[StateEntry]:
        """Open the log; the retained messages it holds."""
        self._log = await self.core.open_state_log(RETAINED_LOG)
        return list((await latest(self._log)).values())

    def follow(self, apply: Callable[[list[StateEntry]], None]) -> None:
        """Hand ``apply`` what other brokers of a shared engine write from now on."""
        if self._log is not None:
            self.core.follow_state_log(self._log, apply)

    def put(self, topic: str, payload: bytes | None, headers: Headers) -> asyncio.Task[None]:
        """Store (or, with ``payload`` None, clear) the retained message of ``topic``; the
        write starts now, so writes land in call order; the task ends once it is durable."""
        entry = StateEntry(topic.encode(), payload, tuple(headers))
        # put is called now (not when the task first runs): the write is in flight from the
        # moment the retained tree changed (``Core.follow_state_log``)
        write = None if self._log is None else self._log.put([entry], durable=True)
        return asyncio.ensure_future(self._put(write))

    @staticmethod
    async def _put(write: Awaitable[int] | None) -> None:
        if write is not None:
            await write


def _int(value: object) -> int:
    """A whole number from a document or a header (0 when absent or unreadable)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, int | str):
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


def _document(value: bytes | None) -> dict[str, Any]:
    doc = json.loads(value or b"{}")
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


class SessionStore:
    """``__mqtt_sessions`` and the ``mqtt:<client id>`` groups (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.refresh_ms = core.group_settings.offsets_retention_ms // 2
        self._log: StateLog | None = None
        self._documents: dict[str, bytes] = {}  # client id → its document as last written
        self._committed: dict[str, dict[TP, int]] = {}  # client id → offsets as committed
        self._committed_at: dict[str, int] = {}  # client id → last full commit (clock ms)
        #: sessions another broker of a shared engine wrote last (it holds them): client id
        #: → their document, taken over (``adopt``) when their client connects here
        self.remote: dict[str, bytes] = {}
        #: client id → the handover generation of a session held here: each adoption adds
        #: one, so a late write of a previous holder is told from a newer holder's
        self.gens: dict[str, int] = {}
        self._limited = RateLimitedLog(log)

    async def open(self) -> list[tuple[str, dict[str, Any], dict[TP, int]]]:
        """Open the log; (client id, document, positions) of every stored session this
        broker holds — on a shared engine those it wrote last (the others go to
        ``remote``; a document from before brokers were named in it is held here)."""
        self._log = await self.core.open_state_log(SESSIONS_LOG)
        out = []
        deadline = time.monotonic() + LOAD_WAIT_S
        shared = self.core.cluster.shared
        for entry in (await latest(self._log)).values():
            client_id = entry.key.decode("utf-8", "replace")
            try:
                doc = _document(entry.value)
            except ValueError as exc:
                log.warning(
                    "MQTT session %r: unreadable document (%s); dropping it", client_id, exc
                )
                continue
            if shared and doc.get("node", self.core.node_id) != self.core.node_id:
                self.remote[client_id] = entry.value or b""
                continue
            positions = await self.committed(client_id, deadline)
            self.gens[client_id] = _int(doc.get("gen"))
            self._documents[client_id] = entry.value or b""
            self._committed[client_id] = dict(positions)
            self._committed_at[client_id] = 0  # unknown: commit again soon
            out.append((client_id, doc, positions))
        return out

    def follow(self, apply: Callable[[list[StateEntry]], None]) -> None:
        """Hand ``apply`` what other brokers of a shared engine write from now on — also a
        write of a session this broker wrote since: ``newer`` decides."""
        if self._log is not None:
            self.core.follow_state_log(self._log, apply, own_wins=False)

    def newer(self, entry: StateEntry) -> bool:
        """Whether another broker's write of a session held here is newer than this
        broker's hold (a takeover), not a late write of a previous holder: by handover
        generation, then node id."""
        client_id = entry.key.decode("utf-8", "replace")
        if entry.value is None:
            fields = dict(entry.headers)
            theirs = (_int(fields.get("gen")), _int(fields.get("node")))
        else:
            try:
                doc = _document(entry.value)
            except ValueError:
                return True
            theirs = (_int(doc.get("gen")), _int(doc.get("node")))
        return theirs > (self.gens.get(client_id, 0), self.core.node_id)

    def rewrite(self, client_id: str) -> None:
        """Write the session's document again at its next save (the log must end on it)."""
        self._documents.pop(client_id, None)

    async def caught_up(self) -> bool:
        """Until what other brokers wrote so far is applied here (bounded)."""
        return self._log is None or await self.core.state_caught_up(self._log)

    def forget(self, client_id: str) -> None:
        """Let the session go without writing anything: another broker holds it now."""
        self.gens.pop(client_id, None)
        self._documents.pop(client_id, None)
        self._committed.pop(client_id, None)
        self._committed_at.pop(client_id, None)

    async def adopt(self, client_id: str) -> tuple[dict[str, Any], dict[TP, int]] | None:
        """Take over a session another broker wrote last: its document and positions (None:
        there is none, or it is unreadable).  Its next save writes the document, which
        tells the other brokers this one holds it now."""
        data = self.remote.pop(client_id, None)
        if data is None:
            return None
        try:
            doc = _document(data)
        except ValueError as exc:
            log.warning("MQTT session %r: unreadable document (%s)", client_id, exc)
            return None
        positions = await self.committed(client_id, time.monotonic() + LOAD_WAIT_S)
        self._committed[client_id] = dict(positions)
        self._committed_at[client_id] = 0  # commit again soon: this broker holds it now
        self.gens[client_id] = _int(doc.get("gen")) + 1
        return doc, positions

    async def committed(self, client_id: str, deadline: float) -> dict[TP, int]:
        """The positions the session's group has committed, asked of whichever broker
        coordinates it — again until ``deadline`` (monotonic) while the group is between
        coordinators: one still loading it, or NOT_COORDINATOR (the owner did not answer,
        or moved) while this broker's own lease runs, so that the cluster can be asked."""
        offsets = self.core.offsets(group_of(client_id))
        while True:
            try:
                found = await offsets.fetch_committed(None)
            except GroupCoordinatorError as exc:
                retriable = exc.code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS or (
                    exc.code == ErrorCode.NOT_COORDINATOR and self.core.cluster.active()
                )
                if retriable and time.monotonic() + LOAD_RETRY_S < deadline:
                    await asyncio.sleep(LOAD_RETRY_S)
                    continue
                log.warning("MQTT session %s: cannot read its positions: %s", client_id, exc)
                return {}
            return {tp: offset for tp, (offset, _meta) in found.items()}

    async def save(self, sessions: Iterable[PersistedSession], *, full: bool = False) -> None:
        """Commit the positions that moved (all of them with ``full``) and write the
        documents that changed (one fsynced batch).  Everything is taken from the sessions
        and issued now, before the first wait, so saves land in the order they were made
        (a later save never lands under an earlier one)."""
        now = self.core.clock_ms()
        entries: list[StateEntry] = []
        jobs: list[Awaitable[object]] = []
        for session in sessions:
            client_id = session.client_id
            job = self._commit(client_id, session.positions(), full, now)
            if job is not None:
                jobs.append(job)
            doc = session.document()
            doc["node"] = self.core.node_id  # who holds it (``open``, ``remote``)
            doc["gen"] = self.gens.get(client_id, 0)  # its handover generation (``newer``)
            data = json.dumps(doc, separators=(",", ":")).encode()
            if self._documents.get(client_id) != data:
                self._documents[client_id] = data
                entries.append(StateEntry(client_id.encode(), data))
        if entries and self._log is not None:
            jobs.insert(0, self._log.put(entries, durable=True))  # in flight from now on
        if jobs:
            await asyncio.gather(*jobs)

    def _commit(
        self, client_id: str, positions: dict[TP, int], full: bool, now: int
    ) -> Awaitable[None] | None:
        done = self._committed.setdefault(client_id, {})
        self._committed_at.setdefault(client_id, now)
        moved = positions if full else {tp: o for tp, o in positions.items() if done.get(tp) != o}
        if not moved:
            if full:
                self._committed_at[client_id] = now
            return None
        return self._send_commit(client_id, moved, full, now)

    async def _send_commit(
        self, client_id: str, moved: dict[TP, int], full: bool, now: int
    ) -> None:
        try:
            await self.core.offsets(group_of(client_id)).commit(moved)
        except GroupCoordinatorError as exc:
            # e.g. a Kafka consumer joined the group: the positions stay in memory
            self._limited.warning(
                (client_id, "commit"),
                "MQTT session %s: cannot commit its positions to group %s: %s",
                client_id,
                group_of(client_id),
                exc,
            )
            return
        done = self._committed.get(client_id)
        if done is not None:  # not dropped meanwhile
            done.update(moved)
            if full:
                self._committed_at[client_id] = now

    def refresh_due(self, now: int) -> list[str]:
        """Client ids whose offsets should be committed again before they expire."""
        due = []
        for client_id, at in self._committed_at.items():
            if now - at >= self.refresh_ms:
                due.append(client_id)
                if len(due) >= REFRESH_BATCH:
                    break
        return due

    def drop(self, client_id: str) -> asyncio.Future[tuple[None, None]]:
        """Forget the session: a tombstone for its document, its group deleted — both issued
        now, so a new session of the same client id saved later lands after them."""
        gen = self.gens.get(client_id)
        if gen is None:  # dropping a session another broker holds (a clean start here)
            try:
                gen = _int(_document(self.remote.get(client_id)).get("gen")) + 1
            except ValueError:
                gen = 0
        self.forget(client_id)
        self.remote.pop(client_id, None)
        headers = (("gen", str(gen).encode()), ("node", str(self.core.node_id).encode()))
        tombstone = (
            None
            if self._log is None
            else self._log.put([StateEntry(client_id.encode(), None, headers)], durable=True)
        )
        return asyncio.gather(self._tombstone(tombstone), self._delete_group(client_id))

    @staticmethod
    async def _tombstone(write: Awaitable[int] | None) -> None:
        if write is not None:
            await write

    async def _delete_group(self, client_id: str) -> None:
        group = group_of(client_id)
        try:
            driver = self.core.group_driver(group)
            codes = await driver.run(
                lambda now, _token: driver.coordinator.delete_groups(now, [group])
            )
        except GroupCoordinatorError as exc:
            codes = [exc.code]
        if codes and codes[0] not in (ErrorCode.NONE, ErrorCode.GROUP_ID_NOT_FOUND):
            log.warning(
                "MQTT session %s dropped, but its group %s stays: %s",
                client_id,
                group,
                codes[0].name,
            )
