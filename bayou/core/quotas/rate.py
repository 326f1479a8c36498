"""A rate measured over sampled windows, and the throttle time that brings it under a bound.

Theory of operation
-------------------
This is Kafka's ``Rate`` over a ``SampledStat`` (``quota.window.num`` samples of
``quota.window.size.seconds``), which every Kafka quota is measured with:

- ``record(value, now)`` adds to the current sample; a sample is current for one window from
  the time of its first record, then the next one (the oldest, reset) takes over.
- The rate is the sum of the samples not older than ``num * size`` divided by the time they
  cover — from the oldest sample's start to now, but at least ``(num - 1)`` whole windows, so
  a fresh client is not judged on its first milliseconds (it may burst about ``num - 1``
  windows' worth of its quota before it is throttled: 10 s with Kafka's defaults).
- Over the bound, the throttle time is what brings the rate back to it if nothing more is
  recorded: observed rate O, bound T, window W: ``X = (O - T) / T * W`` (a client quiet for X
  lowers O * W / (W + X) to T).

A ``SampledRate`` is a few floats; the caller injects the time (milliseconds), so this is
deterministic.  Values may be negative: Kafka "unrecords" a throttled fetch that is answered
empty.
"""

from __future__ import annotations

import math

MAX_THROTTLE_MS = 2**31 - 1  # throttle_time_ms is an int32 on the wire


class SampledRate:
    """See the module docstring."""

    __slots__ = ("_current", "_num", "_starts", "_values", "_window_ms", "last_ms")

    def __init__(self, samples: int, window_ms: float, now_ms: float) -> None:
        self._num = max(1, samples)
        self._window_ms = float(window_ms)
        self._starts = [now_ms] * self._num
        self._values = [0.0] * self._num
        self._current = 0
        self.last_ms = now_ms  # when something was last recorded: idle rates can be dropped

    def record(self, value: float, now_ms: float) -> None:
        i = self._current
        if now_ms - self._starts[i] >= self._window_ms:  # the current sample is complete
            i = self._current = (i + 1) % self._num
            self._starts[i] = now_ms
            self._values[i] = 0.0
        self._values[i] += value
        self.last_ms = now_ms

    def _purge(self, now_ms: float) -> None:
        expire = self._num * self._window_ms
        starts = self._starts
        for i in range(self._num):
            if now_ms - starts[i] >= expire:
                starts[i] = now_ms
                self._values[i] = 0.0

    def window_ms(self, now_ms: float) -> float:
        """The time the samples cover (at least ``num - 1`` whole windows)."""
        self._purge(now_ms)
        elapsed = now_ms - min(self._starts)
        full = int(elapsed // self._window_ms)
        if full < self._num - 1:
            elapsed += (self._num - 1 - full) * self._window_ms
        return max(elapsed, 1.0)

    def measure(self, now_ms: float) -> float:
        """The rate per second."""
        window = self.window_ms(now_ms)
        return sum(self._values) * 1000.0 / window

    def throttle_ms(self, bound: float, now_ms: float, cap_ms: float = MAX_THROTTLE_MS) -> int:
        """How long the client must stay quiet for the rate to come back to ``bound`` (0
        when it is within it)."""
        window = self.window_ms(now_ms)
        rate = sum(self._values) * 1000.0 / window
        if rate <= bound:
            return 0
        if bound <= 0:
            return int(min(cap_ms, self._window_ms))
        delay = (rate - bound) / bound * window
        return int(min(cap_ms, MAX_THROTTLE_MS, math.floor(delay + 0.5)))
