"""Free loopback ports below the ephemeral range (which starts at 32768 on Linux).

Theory of operation: a port is "free" when a bind to it works now, but the broker (or
PostgreSQL, SeaweedFS, a web server) that is handed it binds it only later.  Within one process
a set of handed-out ports keeps two callers apart; across the worker processes of a parallel
run (pytest-xdist) a bind test is not enough, since two workers can both find a port free
before either binds it.  So each worker takes its ports from a slice of its own: the worker's
index (``PYTEST_XDIST_WORKER=gwN``) and the worker count (``PYTEST_XDIST_WORKER_COUNT``) cut the
range into disjoint slices, and within a slice the port is picked at random and bind-tested
(other programs on the machine — another checkout's run — may still hold one).

Ports come from two pools: ``GENERAL`` for single ports and runs of consecutive ports, and
``PAIR_LOW`` for ``free_port_pair`` (a port and port + 10000, which SeaweedFS's admin server
needs), whose high half lies in 30000-32000, outside ``GENERAL``.  A process that is not a
pytest-xdist worker (a sequential run, a benchmark) has every slice.
"""

from __future__ import annotations

import os
import random
import socket

GENERAL = range(22000, 30000)
PAIR_LOW = range(20000, 22000)
PAIR_OFFSET = 10000

_used: set[int] = set()


def _worker() -> tuple[int, int]:
    """(this worker's index, the number of workers); (0, 1) outside pytest-xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if name.startswith("gw") and name[2:].isdigit() and count.isdigit() and int(count) > 0:
        return int(name[2:]) % int(count), int(count)
    return 0, 1


def worker_slice(pool: range) -> range:
    """This process's share of ``pool`` (all of it outside pytest-xdist)."""
    index, count = _worker()
    size = len(pool) // count
    start = pool.start + index * size
    return range(start, start + size)


def _bindable(host: str, port: int) -> bool:
    if port in _used:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _take(ports: list[int], taken: set[int] | None) -> None:
    _used.update(ports)
    if taken is not None:
        taken.update(ports)


def free_port(host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """A port of this worker's slice that nothing listens on now and this process has not
    handed out (nor is in ``taken``).  Tests and benchmarks both take their ports here."""
    return free_port_run(1, host, taken)


def free_port_run(count: int, host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """The first of ``count`` consecutive free ports (``bayou serve --workers N`` gives worker
    ``i`` the Kafka port + i)."""
    pool = worker_slice(GENERAL)
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(pool.start, pool.stop - count + 1)
        run = list(range(base, base + count))
        if taken is not None and any(p in taken for p in run):
            continue
        if all(_bindable(host, p) for p in run):
            _take(run, taken)
            return base
    raise RuntimeError(f"no {count} consecutive free loopback ports found in {pool}")


def free_port_pair(host: str = "127.0.0.1") -> tuple[int, int]:
    """(port, port + 10000), both free."""
    pool = worker_slice(PAIR_LOW)
    rng = random.Random()
    for _ in range(500):
        low = rng.randrange(pool.start, pool.stop)
        pair = [low, low + PAIR_OFFSET]
        if all(_bindable(host, p) for p in pair):
            _take(pair, None)
            return low, low + PAIR_OFFSET
    raise RuntimeError(f"no free port pair found in {pool} (+{PAIR_OFFSET})")
