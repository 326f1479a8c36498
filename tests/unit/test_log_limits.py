"""RateLimitedLog: once per key per interval, suppressed events counted, memory bounded."""

from __future__ import annotations

import logging

import pytest

from bayou.log_limits import RateLimitedLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_once_per_key_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("t.limits"), 60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.limits"):
        assert limited.warning("10.0.0.1", "bad client %s", "a")
        for _ in range(99):
            assert not limited.warning("10.0.0.1", "bad client %s", "a")
        assert limited.warning("10.0.0.2", "bad client %s", "b")  # another key: logged
        clock.now += 61
        assert limited.warning("10.0.0.1", "bad client %s", "a")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "bad client a",
        "bad client b",
        "bad client a (99 more like this suppressed)",
    ]


def test_memory_is_bounded() -> None:
    limited = RateLimitedLog(logging.getLogger("t.limits2"), 60.0, max_keys=10)
    for i in range(1000):
        limited.allow(("peer", i))
    assert len(limited._seen) == 10
    assert limited.allow(("peer", 0)) == 0  # forgotten: logged again
