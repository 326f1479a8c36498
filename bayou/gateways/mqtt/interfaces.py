"""What a session needs from the rest of the door, as two small interfaces.

A session (``session.py``, ``delivery.py``) never imports the connection or the gateway: it
talks to its client through a ``Connection`` (the sans-I/O MQTT state of the socket, whether
the socket can take more, a way to write) and to the door through a ``SessionHost`` (the
clock, the statistics, where the tailers are, the shared catch-up reads, the log).
``MqttClient`` and ``MqttGateway`` are the real ones; unit tests give a session fakes and
drive it without sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from bayou.gateways.mqtt.catch_up import DecodedChunk
from bayou.gateways.mqtt.messages import TP, Message
from bayou.gateways.mqtt.systree import SysCounters
from bayou.observability import DoorTraffic
from bayou.protocol.mqtt import ServerConnection


class Connection(Protocol):
    """A session's client connection."""

    @property
    def proto(self) -> ServerConnection:
        """The MQTT state of the connection: version, the client's limits, its aliases."""
        ...

    @property
    def paused(self) -> bool:
        """The transport's buffer is full: send nothing until ``Session.schedule_pump``."""
        ...

    def write_many(self, chunks: list[bytes], packets: int | None = None) -> None:
        """Send encoded packets, joined (dropped once the connection is closing); ``packets``
        counts them when a chunk is not one packet."""
        ...

    def taken_over(self) -> None:
        """Another connection took the session: say goodbye and close."""
        ...


class SessionHost(Protocol):
    """The door, as a session sees it."""

    @property
    def stats(self) -> SysCounters: ...

    @property
    def traffic(self) -> DoorTraffic:
        """The door's counters of messages and bytes per topic (``/metrics``)."""
        ...

    def clock_ms(self) -> int: ...

    def live_position(self, tp: TP) -> int | None:
        """Where the tailer of ``tp`` is (the first offset it has not offered), or None
        when nothing tails it."""
        ...

    def log_bounds(self, tp: TP) -> tuple[int, int] | None:
        """(log start, log end) of ``tp``; None when the partition is gone."""
        ...

    def interest_of(self, topic_filters: Iterable[str]) -> Iterable[TP]:
        """The partitions whose records these filters may match."""
        ...

    async def catch_up_chunk(self, tp: TP, offset: int) -> DecodedChunk:
        """A shared decoded read of ``tp`` holding ``offset`` (raises ``KafkaError`` when
        the partition is gone)."""
        ...

    async def message_at(self, tp: TP, offset: int) -> Message | None:
        """The message stored at exactly ``offset`` (None: gone)."""
        ...
