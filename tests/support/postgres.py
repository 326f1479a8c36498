"""A real PostgreSQL for tests and benchmarks: Debian's server, ``initdb`` + ``pg_ctl`` on a
free loopback port, stopped by ``pg_ctl`` (its own pid file) at the end.

As root the server runs as the ``postgres`` user (``runuser``: PostgreSQL refuses to run as
root), so its directory is created world-traversable under the system temp dir; otherwise it
runs as the current user.  Authentication is ``trust`` on loopback only.  Each test gets a
database of its own (``create_database``).

``python -m tests.support.postgres start DIR`` starts one for a benchmark and prints its URL
(``start-logical DIR``: with ``wal_level=logical``); ``python -m tests.support.postgres stop
DIR`` stops it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tests.support.ports import free_port

SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    """The newest installed server's binaries (``/usr/lib/postgresql/<version>/bin``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not found:
        located = shutil.which("pg_ctl")
        if located is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found: run scripts/install-test-deps.sh"
            )
        return Path(located).resolve().parent
    return Path(found[-1]).parent


class PostgresServer:
    """One PostgreSQL cluster in ``directory`` on ``127.0.0.1:port``."""

    def __init__(self, directory: Path, port: int | None = None, logical: bool = False) -> None:
        self.directory = directory
        self.logical = logical
        self.data = directory / "pgdata"
        self.port = port or free_port()
        self.bin = postgres_bin_dir()
        self.as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        return subprocess.run(
            cmd, check=True, capture_output=True, text=True, timeout=timeout, cwd="/"
        )

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            os.chmod(self.directory, 0o755)
            shutil.chown(self.directory, SUPERUSER, SUPERUSER)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
        )

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), *args)

    def start(self) -> PostgresServer:
        options = (
            f"-k {self.directory} -p {self.port} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200"
        )
        if self.logical:  # logical decoding, for the CDC source's replication slots
            options += " -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20"
        self._pg_ctl("-o", options, "-l", str(self.directory / "server.log"), "-w", "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """``pg_ctl restart``: every connection is cut; the server comes back on its port."""
        self._pg_ctl("-m", "fast", "-l", str(self.directory / "server.log"), "-w", "restart")

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.database_url(database),
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()

    def create_database(self, prefix: str = "t") -> str:
        """A fresh empty database; its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.database_url(name)


def started(directory: Path | None = None, logical: bool = False) -> PostgresServer:
    """An initialised and started server in ``directory`` (a fresh temp dir by default);
    ``logical``: with ``wal_level=logical`` (replication slots for change data capture)."""
    base = directory or Path(tempfile.mkdtemp(prefix="bayou-pg-"))
    server = PostgresServer(base, logical=logical)
    server.init()
    return server.start()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "start-logical", "stop"):
        print(
            "usage: python -m tests.support.postgres start|start-logical|stop DIR",
            file=sys.stderr,
        )
        return 2
    directory = Path(argv[1]).resolve()
    if argv[0].startswith("start"):
        server = started(directory, logical=argv[0] == "start-logical")
        print(server.create_database("bench"))
        return 0
    server = PostgresServer(directory)
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
