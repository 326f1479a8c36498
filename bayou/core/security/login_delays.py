"""How long a failed login's answer waits: growing per client address.

Kafka delays the answer to a failed authentication (``connection.failed.authentication.
delay.ms``) so a client cannot try passwords as fast as it can connect.  Here the delay
doubles with each failure from the same address — base, twice that, four times … up to
``MAX_DELAY_S`` — and a success, or ``FORGET_S`` without failures, starts it over.  At most
``MAX_ADDRESSES`` addresses are remembered (the oldest forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict

MAX_DELAY_S = 5.0
FORGET_S = 300.0
MAX_ADDRESSES = 4096


class LoginDelays:
    def __init__(self, base_ms: int) -> None:
        self.base_s = base_ms / 1000
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def failed(self, host: str) -> float:
        """Count a failure from ``host``; the seconds its answer should wait."""
        now = time.monotonic()
        count, last = self._failures.pop(host, (0, now))
        if now - last > FORGET_S:
            count = 0
        count += 1
        self._failures[host] = (count, now)
        if len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
        if self.base_s <= 0:
            return 0.0
        return float(min(self.base_s * 2 ** min(count - 1, 16), MAX_DELAY_S))

    def succeeded(self, host: str) -> None:
        self._failures.pop(host, None)
