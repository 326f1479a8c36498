"""An exclusive lock on the data directory, as Kafka's ``.lock`` file.

Two brokers on one data directory would both append at the same offsets and each overwrite
what the other acknowledged.  ``LogManager.open`` therefore takes ``DATA/.lock`` first, with
``flock(LOCK_EX | LOCK_NB)``: the kernel drops the lock when its holder exits, however it
exits (kill -9 included), so a stale file never blocks a restart.  The holder writes its pid
into the file, and a refused broker names it in its one-line error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from bayou.errors import BayouError

LOCK_FILE = ".lock"


class DataDirectoryInUse(BayouError):
    """Another process holds the data directory's lock."""


class DataDirLock:
    """Holds ``<data_dir>/.lock`` from construction until ``release`` (or collection)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DataDirectoryInUse(
                f"data directory {data_dir} is in use by another Bayou broker (pid {holder})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the only descriptor releases the flock

    def __del__(self) -> None:  # a manager dropped without close (a simulated crash)
        with contextlib.suppress(Exception):
            self.release()


def _holder(fd: int) -> str:
    """The pid the holder wrote, or "unknown" while it has not written it yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
