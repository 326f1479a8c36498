"""Log what a client can trigger at most once per key and interval.

A misbehaving or misdirected client (an old Kafka client reconnecting in a loop, an HTTP probe
on the MQTT port, a fuzzer) must not be able to fill the disk through the broker's log. Every
door logs such events through a ``RateLimitedLog``: the first event of a key (usually the peer's
host and the kind of event) is logged, repeats within ``interval_s`` are counted, and the next
line logged for that key says how many were suppressed.

Memory is bounded: at most ``max_keys`` keys are remembered (the oldest is forgotten first), so
a flood from many sources costs a fixed amount however long it lasts.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

DEFAULT_INTERVAL_S = 60.0
DEFAULT_MAX_KEYS = 4096


class RateLimitedLog:
    """``log(key, level, msg, *args)`` logs once per ``key`` per ``interval_s``."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def allow(self, key: Hashable) -> int | None:
        """None when ``key`` was logged within the interval (the event is counted); else the
        number of events suppressed since the last line logged for it (0 the first time)."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None:
            last, suppressed = seen
            if now - last < self.interval_s:
                self._seen[key] = (last, suppressed + 1)
                return None
            self._seen.move_to_end(key)
        self._seen[key] = (now, 0)
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return 0 if seen is None else seen[1]

    def log(self, key: Hashable, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` was logged within the interval;
        True when a line was written."""
        suppressed = self.allow(key)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d more like this suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args)

    def info(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(key, logging.INFO, msg, *args)
