"""Real ``celery worker`` processes for the Celery acceptance tests: started on the test
application (``tests.support.celery_app``), waited for, stopped or killed by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
APP = "tests.support.celery_app"
READY_S = 60.0


def amqp_url(broker: BrokerProcess) -> str:
    return f"amqp://guest:guest@{broker.host}:{broker.amqp_port}//"


def celery_env(broker: BrokerProcess) -> dict[str, str]:
    return {**os.environ, "BAYOU_AMQP_URL": amqp_url(broker), "PYTHONPATH": str(REPO)}


def celery_command(
    broker: BrokerProcess, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``celery -A <app> ARGS`` (inspect, purge...) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, *args],
        cwd=REPO,
        env=celery_env(broker),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CeleryWorker:
    """``celery worker --pool=solo`` named ``name@%h`` (one process: its PID runs tasks)."""

    def __init__(
        self, broker: BrokerProcess, name: str, log_dir: Path, queues: str | None = None
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"celery-{name}.log"
        args = [
            "worker",
            "--pool=solo",
            "-n",
            f"{name}@%h",
            "--loglevel=INFO",
            f"--logfile={self.log_path}",
        ]
        if queues:
            args += ["-Q", queues]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, *args],
            cwd=REPO,
            env=celery_env(broker),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self) -> None:
        """Until the worker logs ``<name>@host ready.`` (it consumes from then on)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited: {self.log_text()[-2000:]}")
            return " ready." in self.log_text()

        wait_until(f"celery worker {self.name} ready", ready, READY_S)

    def kill(self) -> None:
        """SIGKILL, as a crash would; reaped."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not end in time."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
