"""MQTT sessions: the state of a client id, which may outlive its connections.

Theory of operation
-------------------
A ``Session`` holds a client's subscriptions (its own, and its places in shared
subscriptions: ``shared``, members of share groups while it is connected, ``shared.py``), its
expiry, the QoS 2 packet ids it published and has not released yet (``pubrel_wait``: a
resent PUBLISH with one of those ids is not stored twice), and its ``Outbox``
(``delivery.py``): the queue, the catch-up state, the positions and the in-flight window
(``inflight.py``).  It talks to its connection and to the door only through the
``Connection`` and ``SessionHost`` interfaces (``interfaces.py``).

Clean sessions (3.1.1 clean session, 5.0 session expiry 0) end with their connection.
Persistent ones outlive connections and broker restarts.  Their durable state, like a Kafka
consumer's, is in two places (``store.py``): a *document* in ``__mqtt_sessions`` —
``document()``: subscriptions, expiry, when it went offline, in-flight rows, QoS 2 ids — and
its *positions* (``positions()``: per partition, the first offset not yet handed to the
client) as the committed offsets of the consumer group ``mqtt:<client id>``.  After a
restart every partition with a position starts behind there, and the in-flight messages are
read back from the log (``restore_inflight``, off the event loop's critical path: the
session sends nothing until they are back) and resent with DUP set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bayou.gateways.mqtt.delivery import Outbox
from bayou.gateways.mqtt.inflight import Inflight, Row
from bayou.gateways.mqtt.interfaces import Connection, SessionHost
from bayou.gateways.mqtt.messages import TP, Delivery, Message
from bayou.gateways.mqtt.shared import SharedMember
from bayou.gateways.mqtt.subscriptions import ShareGroup, SubOptions
from bayou.protocol.mqtt.topics import matches

log = logging.getLogger("bayou.mqtt")

NEVER_EXPIRES = 0xFFFFFFFF
DOCUMENT_VERSION = 2  # 1: positions were in the document (read when the group has none)


class Session:
    """One client id's session (see the module docstring)."""

    def __init__(self, host: SessionHost, client_id: str, expiry_s: int = 0) -> None:
        self.host = host
        self.client_id = client_id
        self.expiry_s = expiry_s
        self.subs: dict[str, SubOptions] = {}
        self.groups: dict[str, ShareGroup] = {}  # for $SYS messages (in no log)
        self.shared: dict[str, SharedMember] = {}  # shared filter → its share-group member
        self.pubrel_wait: set[int] = set()
        self.disconnected_at: int | None = None
        self.dirty = False  # durable state changed since the last save
        self.stored = False  # it may have a document or a group: dropping it removes them
        self.outbox = Outbox(self, host)
        self._restoring: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Session({self.client_id!r})"

    @property
    def persistent(self) -> bool:
        return self.expiry_s > 0

    @property
    def conn(self) -> Connection | None:
        return self.outbox.conn

    # ------------------------------------------------------------------ messages in

    def can_take(self) -> bool:
        return self.outbox.can_take()

    def offer(self, msg: Message, options: list[SubOptions], tp: TP, offset: int) -> None:
        self.outbox.offer(msg, options, tp, offset)

    def offer_unlogged(self, msg: Message, options: list[SubOptions]) -> None:
        self.outbox.offer_unlogged(msg, options)

    def enqueue(self, delivery: Delivery, pump: bool = True) -> None:
        self.outbox.enqueue(delivery, pump)

    def schedule_pump(self) -> None:
        self.outbox.schedule_pump()

    def own_match(self, topic: str) -> list[SubOptions]:
        return [
            opts
            for f, opts in self.subs.items()
            if not f.startswith("$share/") and matches(f, topic)
        ]

    def pull_shared(self) -> bool:
        return any(group.pull(self) for group in self.groups.values())

    def inflight_limit(self) -> int:
        return self.outbox.inflight_limit()

    # ------------------------------------------------------------------ acknowledgements

    def on_puback(self, pid: int) -> bool:
        return self.outbox.on_puback(pid)

    def on_pubacks(self, pids: list[int]) -> None:
        self.outbox.on_pubacks(pids)

    def on_pubrec(self, pid: int, failed: bool) -> bool:
        return self.outbox.on_pubrec(pid, failed)

    def on_pubcomp(self, pid: int) -> bool:
        return self.outbox.on_pubcomp(pid)

    # ------------------------------------------------------------------ connections

    def attach(self, conn: Connection, *, present: bool) -> None:
        """``conn`` now owns the session; resend what was in flight (``present``), read
        back first what a restart left in the document."""
        self.outbox.conn = conn
        self.disconnected_at = None
        self.dirty = True
        if self.outbox.window.restored or self._restoring is not None:
            self._start_restore()
        elif present:
            self.outbox.resend_inflight()
        else:
            self.outbox.window.clear()
        for member in self.shared.values():
            member.connect()
        self.outbox.schedule_pump()

    def go_offline(self, now_ms: int | None) -> None:
        """The connection ended (``now_ms``: when, for the expiry; None: not counted)."""
        for member in self.shared.values():
            member.disconnect()
        self.outbox.go_offline()
        if now_ms is not None:
            self.disconnected_at = now_ms

    def _start_restore(self) -> None:
        self.outbox.held = True
        if self._restoring is None:
            self._restoring = asyncio.ensure_future(self._restore())

    async def _restore(self) -> None:
        try:
            await self.restore_inflight()
        except Exception:
            log.exception(
                "MQTT session %s: reading back its in-flight messages failed", self.client_id
            )
        finally:
            self._restoring = None
            self.outbox.held = False
        self.outbox.resend_inflight()
        self.outbox.schedule_pump()

    async def restore_inflight(self) -> None:
        """Read back from the log the in-flight messages a restarted session had; each row
        leaves ``window.restored`` as its entry enters the window (a save meanwhile keeps
        every one of them)."""
        window = self.outbox.window
        rows = window.restored
        while rows:
            topic, partition, offset, pid, qos, released, sub_ids = rows[0]
            tp = (str(topic), int(partition))
            msg = await self.host.message_at(tp, int(offset))
            if msg is not None:
                delivery = Delivery(msg, int(qos), False, tuple(sub_ids), tp, int(offset), True)
                window.put(int(pid), Inflight(delivery, bool(released)))
            rows.pop(0)

    # ------------------------------------------------------------------ durable state

    def document(self) -> dict[str, Any]:
        """What ``__mqtt_sessions`` keeps (positions are the group's committed offsets)."""
        return {
            "v": DOCUMENT_VERSION,
            "expiry": self.expiry_s,
            "disconnected_at": self.disconnected_at,
            "subs": {f: o.dump() for f, o in self.subs.items()},
            "inflight": self.outbox.window.dump(),
            "pubrel": sorted(self.pubrel_wait),
        }

    def positions(self) -> dict[TP, int]:
        return self.outbox.positions(self.host.interest_of(self.subs))

    def load(self, doc: dict[str, Any], positions: dict[TP, int], now_ms: int) -> None:
        """Take back the state of ``doc`` (subscriptions are the caller's: they go into the
        door's index) and the committed ``positions``."""
        self.expiry_s = int(doc.get("expiry", 0))
        self.disconnected_at = doc.get("disconnected_at") or now_ms
        self.stored = True
        self.outbox.behind.update(positions)
        rows: list[Row] = [list(row) for row in doc.get("inflight", [])]
        self.outbox.window.restored = rows
        self.pubrel_wait = {int(pid) for pid in doc.get("pubrel", [])}


def subscriptions_of(doc: dict[str, Any]) -> dict[str, SubOptions]:
    return {f: SubOptions.load(raw) for f, raw in doc.get("subs", {}).items()}


def legacy_positions(doc: dict[str, Any]) -> dict[TP, int]:
    """The positions a version 1 document kept (before they were group offsets)."""
    return {(str(t), int(p)): int(o) for t, p, o in doc.get("positions", [])}
