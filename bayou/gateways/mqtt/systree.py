"""The MQTT door's ``$SYS/broker/...`` statistics, as mosquitto publishes them.

Theory of operation
-------------------
``SysCounters`` holds plain integer counters that the connections bump on their paths
(packets and bytes in and out, PUBLISHes in and out, sockets, CONNECTs, expired sessions).
Every ``sys_interval`` seconds the gateway measures its gauges (clients, subscriptions,
retained messages) and asks ``SysTree.update`` what to publish: like mosquitto, only the
topics whose value changed since the last update (the uptime always), plus the load
averages — exponentially weighted per-minute rates over 1, 5 and 15 minutes of the main
counters, published when they move by 0.01 or more.  The static ``$SYS/broker/version`` is
published once, at start.  Payloads are mosquitto's: decimal integers, ``"N seconds"`` for
the uptime, two decimals for loads.

The tree is pure bookkeeping with the time passed in; the gateway publishes what it returns
as retained messages (see docs/design/mqtt.md, "$SYS").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from importlib import metadata

PREFIX = "$SYS/broker/"

# counter → its topic (mosquitto's names)
COUNTER_TOPICS = {
    "messages_received": "messages/received",
    "messages_sent": "messages/sent",
    "bytes_received": "bytes/received",
    "bytes_sent": "bytes/sent",
    "publish_received": "publish/messages/received",
    "publish_sent": "publish/messages/sent",
    "publish_dropped": "publish/messages/dropped",
    "publish_bytes_received": "publish/bytes/received",
    "publish_bytes_sent": "publish/bytes/sent",
    "sockets": "connections/socket/count",
    "clients_expired": "clients/expired",
}
# gauge → its topics (the second one an older alias mosquitto still publishes)
GAUGE_TOPICS = {
    "clients_connected": ("clients/connected", "clients/active"),
    "clients_disconnected": ("clients/disconnected", "clients/inactive"),
    "clients_total": ("clients/total",),
    "clients_maximum": ("clients/maximum",),
    "subscriptions": ("subscriptions/count",),
    "shared_subscriptions": ("shared_subscriptions/count",),
    "retained": ("retained messages/count",),
}
# load topic → the counter it follows
LOAD_TOPICS = {
    "load/messages/received": "messages_received",
    "load/messages/sent": "messages_sent",
    "load/publish/received": "publish_received",
    "load/publish/sent": "publish_sent",
    "load/publish/dropped": "publish_dropped",
    "load/bytes/received": "bytes_received",
    "load/bytes/sent": "bytes_sent",
    "load/sockets": "sockets",
    "load/connections": "connects",
}
LOAD_PERIODS = (("1min", 60.0), ("5min", 300.0), ("15min", 900.0))


def broker_version() -> str:
    try:
        return f"bayou version {metadata.version('bayou')}"
    except metadata.PackageNotFoundError:
        return "bayou version unknown"


@dataclass
class SysCounters:
    """Counters since the broker started, bumped where the events happen."""

    messages_received: int = 0  # MQTT packets of any kind
    messages_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    publish_received: int = 0
    publish_sent: int = 0
    publish_dropped: int = 0
    publish_bytes_received: int = 0  # payload bytes
    publish_bytes_sent: int = 0
    sockets: int = 0  # connections accepted
    connects: int = 0  # CONNECT packets accepted
    clients_expired: int = 0

    def snapshot(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SysTree:
    """What to publish under ``$SYS/broker/`` at each update."""

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s
        self._published: dict[str, bytes] = {}  # topic → last payload sent
        self._last_s = start_s
        self._last_counts: dict[str, int] = {}
        self._loads: dict[str, float] = {}
        self._clients_maximum = 0

    def static(self) -> list[tuple[str, bytes]]:
        return [(PREFIX + "version", broker_version().encode())]

    def update(
        self, now_s: float, counters: SysCounters, gauges: dict[str, int]
    ) -> list[tuple[str, bytes]]:
        """(topic, payload) for every value that changed since the previous update."""
        out: list[tuple[str, bytes]] = []

        def put(topic: str, payload: bytes) -> None:
            if self._published.get(topic) != payload:
                self._published[topic] = payload
                out.append((PREFIX + topic, payload))

        put("uptime", b"%d seconds" % int(now_s - self.start_s))
        counts = counters.snapshot()
        self._clients_maximum = max(self._clients_maximum, gauges.get("clients_total", 0))
        values = dict(gauges, clients_maximum=self._clients_maximum)
        for name, topics in GAUGE_TOPICS.items():
            for topic in topics:
                put(topic, b"%d" % values.get(name, 0))
        for name, topic in COUNTER_TOPICS.items():
            put(topic, b"%d" % counts[name])
        elapsed = now_s - self._last_s
        if elapsed > 0 or not self._loads:
            for topic, name in LOAD_TOPICS.items():
                per_minute = 0.0
                if elapsed > 0:
                    per_minute = (counts[name] - self._last_counts.get(name, 0)) * 60 / elapsed
                for suffix, period in LOAD_PERIODS:
                    key = f"{topic}/{suffix}"
                    old = self._loads.get(key)
                    if old is None:
                        new = 0.0
                    else:
                        new = per_minute + math.exp(-elapsed / period) * (old - per_minute)
                    self._loads[key] = new
                    if old is None or abs(new - old) >= 0.01:
                        put(key, b"%.2f" % new)
            self._last_counts = counts
            self._last_s = now_s
        return out
