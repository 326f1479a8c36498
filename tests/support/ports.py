"""Free loopback ports below the ephemeral range (which starts at 32768 on Linux)."""

from __future__ import annotations

import random
import socket

_used: set[int] = set()


def free_port(host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """A port in 20000-32000 that nothing listens on now and this process has not handed out
    (nor is in ``taken``).  Tests and benchmarks both take their ports here."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 32000)
        if port in _used or (taken is not None and port in taken):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _used.add(port)
        if taken is not None:
            taken.add(port)
        return port
    raise RuntimeError("no free loopback port found in 20000-32000")


def free_port_run(count: int, host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """The first of ``count`` consecutive free ports (``bayou serve --workers N`` gives worker
    ``i`` the Kafka port + i)."""
    for _ in range(200):
        base = free_port(host, taken)
        rest = range(base + 1, base + count)
        if (
            base + count <= 32000
            and all(_bindable(host, p) for p in rest)
            and not (taken is not None and any(p in taken for p in rest))
        ):
            _used.update(rest)
            if taken is not None:
                taken.update(rest)
            return base
    raise RuntimeError(f"no {count} consecutive free loopback ports found in 20000-32000")


def _bindable(host: str, port: int) -> bool:
    if port in _used:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
