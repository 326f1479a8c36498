"""The in-flight window: QoS 1/2 PUBLISHes sent to a client and not yet acknowledged.

Theory of operation
-------------------
Each entry is a ``Delivery`` under a packet id, until the client's PUBACK (QoS 1) or PUBREC
then PUBCOMP (QoS 2; after PUBREC the entry is *released*: the broker owes a PUBREL, not the
message).  The session sends while the window has room: the client's Receive Maximum (5.0)
or ``DEFAULT_INFLIGHT`` (3.1.1 announces none).  Packet ids are allocated round robin over
1..65535, skipping the ones in use.

The window is part of a persistent session's durable state: ``dump`` gives one row per entry
— (topic, partition, offset, packet id, QoS, released, subscription ids) — and after a
restart those rows come back as ``restored`` until the session reads the messages back from
the log (``Session.restore_inflight``) and ``put``s them again.
"""

from __future__ import annotations

from typing import Any

from bayou.gateways.mqtt.messages import Delivery

DEFAULT_INFLIGHT = 20  # 3.1.1 clients announce no Receive Maximum
Row = list[Any]  # [topic, partition, offset, packet id, qos, released, [sub ids]]


class Inflight:
    __slots__ = ("delivery", "released")

    def __init__(self, delivery: Delivery, released: bool = False) -> None:
        self.delivery = delivery
        self.released = released  # QoS 2: PUBREC received, PUBREL sent


class InflightWindow:
    """Packet id → ``Inflight`` (see the module docstring)."""

    def __init__(self) -> None:
        self.entries: dict[int, Inflight] = {}
        self.restored: list[Row] = []  # rows of a restarted session not yet read back
        self._next_pid = 1

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, delivery: Delivery) -> int:
        """Track ``delivery`` under a free packet id, which is returned."""
        entries = self.entries
        pid = self._next_pid
        if pid not in entries:  # the usual case: the next id round is free
            self._next_pid = pid % 65535 + 1
            entries[pid] = Inflight(delivery)
            return pid
        for _ in range(65535):
            pid = self._next_pid
            self._next_pid = pid % 65535 + 1
            if pid not in entries:
                entries[pid] = Inflight(delivery)
                return pid
        raise RuntimeError("no free packet identifier")

    def put(self, pid: int, entry: Inflight) -> None:
        self.entries[pid] = entry

    def clear(self) -> None:
        self.entries.clear()

    def on_puback(self, pid: int) -> bool:
        entry = self.entries.get(pid)
        if entry is None or entry.delivery.qos != 1:
            return False
        del self.entries[pid]
        return True

    def on_pubrec(self, pid: int, failed: bool) -> bool:
        """QoS 2 step one; a failed PUBREC (reason ≥ 0x80) ends the exchange."""
        entry = self.entries.get(pid)
        if entry is None or entry.delivery.qos != 2:
            return False
        if failed:
            del self.entries[pid]
        else:
            entry.released = True
        return True

    def on_pubcomp(self, pid: int) -> bool:
        return self.entries.pop(pid, None) is not None

    def dump(self) -> list[Row]:
        rows = []
        for pid, entry in self.entries.items():
            d = entry.delivery
            if d.tp is not None and d.share is None:  # a share group keeps its own
                rows.append(
                    [d.tp[0], d.tp[1], d.offset, pid, d.qos, entry.released, list(d.sub_ids)]
                )
        return rows + self.restored
