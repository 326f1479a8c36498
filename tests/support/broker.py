"""Start and stop a real ``bayou serve`` process for tests and benchmarks, by PID, on free
loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.ports import free_port

READY_TIMEOUT_S = 30.0
ALL_DOORS = ("http", "mqtt", "amqp")


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes] | None, timeout: float
) -> None:
    """Wait until ``host:port`` accepts connections (bounded), failing fast if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class BrokerProcess:
    """One ``bayou serve`` child process with its own data directory and ports."""

    def __init__(
        self,
        data_dir: Path,
        *,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        doors: tuple[str, ...] = ALL_DOORS,
    ) -> None:
        """``doors``: which of HTTP, MQTT and AMQP to open beside Kafka (the rest get port 0,
        which turns them off — benchmarks measure one door at a time)."""
        self.data_dir = data_dir
        self.host = "127.0.0.1"
        self.kafka_port = free_port()
        self.http_port = free_port() if "http" in doors else 0
        self.mqtt_port = free_port() if "mqtt" in doors else 0
        self.amqp_port = free_port() if "amqp" in doors else 0
        self.extra_args = list(extra_args or [])
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-broker.log"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bayou",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--host",
            self.host,
            "--kafka-port",
            str(self.kafka_port),
            "--http-port",
            str(self.http_port),
            "--mqtt-port",
            str(self.mqtt_port),
            "--amqp-port",
            str(self.amqp_port),
            *self.extra_args,
        ]

    def start(self) -> BrokerProcess:
        assert self.proc is None or self.proc.poll() is not None
        env = {**os.environ, **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        try:
            for port in (self.kafka_port, self.http_port, self.mqtt_port, self.amqp_port):
                if port:
                    wait_for_port(self.host, port, self.proc, READY_TIMEOUT_S)
        except RuntimeError as exc:  # exited: say why, from the end of its log
            tail = "\n".join(self.log_text().splitlines()[-15:])
            raise RuntimeError(f"{exc}; the end of {self.log_path.name}:\n{tail}") from None
        return self

    def stop(self, timeout: float = 20.0) -> int:
        """Graceful stop (SIGTERM), waiting for exit; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_all(brokers: Iterable[BrokerProcess]) -> None:
    """Start brokers side by side (a cluster starts in the time of its slowest broker);
    a broker that does not come up fails the caller, as ``start`` would."""
    listed = list(brokers)
    with ThreadPoolExecutor(max_workers=max(1, len(listed))) as pool:
        for _ in pool.map(BrokerProcess.start, listed):
            pass
