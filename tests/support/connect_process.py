"""``bayou connect run FILE.toml -b BOOTSTRAP`` in a process of its own, stopped or killed by
its PID (the connect tests' standalone runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.broker import BrokerProcess


class ConnectProcess:
    def __init__(self, broker: BrokerProcess, config: Path, log: Path) -> None:
        self.args = [sys.executable, "-m", "bayou", "connect", "run", str(config)]
        self.args += ["-b", broker.bootstrap]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConnectProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 60 s; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode
