"""Bounded polling, for conditions no client event signals (a file shrinking, a background
pass having run): at most ``timeout`` seconds and a bounded number of checks."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.05


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float = 30.0,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``check`` every 50 ms until it holds; fail naming ``what`` after ``timeout``
    (and with ``explain()``: what was seen, a broker's log)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL_S) + 1):
        if check():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    detail = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out waiting for {what}{detail}")
