"""What the machine itself allows, measured in the same run as the brokers, and CPU accounting.

Theory of operation
-------------------
A broker's MB/s means little without the ceiling it runs under, and on a shared machine that
ceiling moves from run to run.  So every benchmark run measures, right before the brokers:

- **loopback**: one TCP connection over 127.0.0.1, a child process sending 1 MiB buffers
  (``sendall``) and this process receiving them (``recv_into``): MB/s, and the CPU-seconds
  per GB both ends spent (the kernel's copy in and out — a floor for any broker, which
  receives every byte once and sends it once);
- **disk**: a sequential write of ``disk_mb`` in 1 MiB ``write`` calls followed by one
  ``fsync``, in the directory the brokers' data goes to: MB/s of the whole (the page cache
  absorbs the writes, the fsync pays for them), and the median of 4 KiB write + fsync.

CPU accounting reads ``/proc``: a process's user + system time (``proc_cpu_seconds``), the
time its threads spent runnable but waiting for a CPU (``proc_wait_seconds``, from
``schedstat``: the share of a latency tail the machine, not the process, caused) and the
machine's busy time over all CPUs (``machine_busy_seconds``), so that a phase can report how
many cores *other* work took while it ran.  ``pin`` puts a process on a set of CPUs
(``sched_setaffinity``), for the latency mode that keeps broker and load on separate cores.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MB = 1_000_000
_CHUNK = 1024 * 1024

_SENDER = """
import os, socket, sys
port, total = int(sys.argv[1]), int(sys.argv[2])
buf = os.urandom(1024 * 1024)
s = socket.create_connection(("127.0.0.1", port))
sent = 0
while sent < total:
    s.sendall(buf)
    sent += len(buf)
s.close()
t = os.times()
print(t.user + t.system, flush=True)
"""


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (and its threads) so far, or None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid``, of its children it has reaped (cutime, cstime) and of its live
    descendants (a supervisor and its workers; PostgreSQL's postmaster and its backends), or
    None if ``pid`` is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    total, seen, todo = 0, set(), [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            if current == pid:
                return None
            continue  # a descendant that just ended (its parent's cutime has it)
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        for tid in tasks:
            try:
                todo += [
                    int(c) for c in Path(f"/proc/{current}/task/{tid}/children").read_text().split()
                ]
            except OSError:
                continue
    return total / tick


def proc_wait_seconds(pid: int) -> float | None:
    """Seconds the threads of ``pid`` spent runnable but not running, summed, or None."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
    return total / 1e9


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs together spent not idle since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def pin(cpus: set[int] | None) -> None:
    """Restrict the calling process to ``cpus`` (no-op for None)."""
    if cpus:
        os.sched_setaffinity(0, cpus)


def loopback(total_bytes: int = 2_000_000_000) -> dict[str, Any]:
    """MB/s and CPU-s/GB (both ends) of one TCP connection over 127.0.0.1."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    cpu0 = os.times()
    sender = subprocess.Popen(
        [sys.executable, "-c", _SENDER, str(port), str(total_bytes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        server.settimeout(30)
        conn, _ = server.accept()
        buf = bytearray(_CHUNK)
        got = 0
        start = time.perf_counter()
        with conn:
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                got += n
        elapsed = time.perf_counter() - start
        out, _ = sender.communicate(timeout=30)
    finally:
        server.close()
        if sender.poll() is None:
            sender.kill()
            sender.wait(5)
    cpu1 = os.times()
    receiver_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    sender_cpu = float(out.strip() or "nan")
    gb = got / 1e9
    return {
        "bytes": got,
        "seconds": round(elapsed, 3),
        "mb_s": round(got / MB / elapsed, 1),
        "cpu_s_per_gb": round((receiver_cpu + sender_cpu) / gb, 3),
    }


def disk(directory: Path | None, total_mb: int = 256) -> dict[str, Any]:
    """Sequential write + fsync MB/s in ``directory``, and the median 4 KiB write + fsync."""
    buf = os.urandom(_CHUNK)
    with tempfile.TemporaryDirectory(prefix="bench-disk-", dir=directory) as tmp:
        path = Path(tmp) / "probe"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            start = time.perf_counter()
            for _ in range(total_mb):
                os.write(fd, buf)
            written_s = time.perf_counter() - start
            os.fsync(fd)
            elapsed = time.perf_counter() - start
            small = b"x" * 4096
            syncs = []
            for _ in range(50):
                t = time.perf_counter()
                os.write(fd, small)
                os.fsync(fd)
                syncs.append(time.perf_counter() - t)
        finally:
            os.close(fd)
    return {
        "bytes": total_mb * _CHUNK,
        "write_mb_s": round(total_mb * _CHUNK / MB / written_s, 1),
        "mb_s": round(total_mb * _CHUNK / MB / elapsed, 1),
        "fsync_4k_ms": round(statistics.median(syncs) * 1000, 3),
    }


def limits(directory: Path | None) -> dict[str, Any]:
    """Both measurements; a failure is reported, never fatal."""
    out: dict[str, Any] = {}
    for name, probe in (("loopback", lambda: loopback()), ("disk", lambda: disk(directory))):
        try:
            out[name] = probe()
        except Exception as exc:  # a probe must not stop the benchmark
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out
