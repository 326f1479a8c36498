"""Shared fixtures: a real broker process per test (or per module), started on free ports."""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess
from tests.support.postgres import PostgresServer, started
from tests.support.seaweedfs import SeaweedFS

# The files that take longest (a minute or more on a loaded 2-core machine), longest first.
# ``make test`` runs the suite on pytest-xdist workers, a file at a time per worker
# (``--dist loadfile --no-loadscope-reorder``), handing out files in collection order: these
# go first so that no worker is still busy with a long file at the end while the others idle.
LONGEST_FILES = (
    "integration/test_transactions.py",
    "integration/test_streams_views.py",
    "integration/test_connect_sinks_e2e.py",
    "integration/test_cluster_security.py",
    "integration/test_cli.py",
    "integration/test_cluster_kill_loop.py",
    "integration/test_mirror.py",
    "integration/test_postgres_broker.py",
    "unit/test_internal_compaction.py",
    "integration/test_workers.py",
    "integration/test_connect_runtime.py",
    "integration/test_cluster.py",
    "integration/test_cluster_doors.py",
    "integration/test_streams_rebalance.py",
    "unit/test_storage_compaction.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (``LONGEST_FILES``); the rest keep their order (a stable sort)."""
    tests_dir = Path(__file__).parent
    rank = {tests_dir / name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path, len(rank)))


# A worker process runs hundreds of test files one after another: descriptors a test leaves
# open add up, and past 1024 clients that use select() (paho-mqtt's network loop) fail to
# connect in a later, unrelated test.  A file that leaves the process over this many open
# fails here instead, naming what is held.
DESCRIPTOR_LIMIT = 512
PROC_FDS = Path("/proc/self/fd")


@pytest.fixture(scope="module", autouse=True)
def descriptors_left_open() -> Iterator[None]:
    yield
    if not PROC_FDS.is_dir():
        return
    held = []
    for fd in PROC_FDS.iterdir():
        try:
            held.append(os.readlink(fd))
        except OSError:
            continue
    if len(held) > DESCRIPTOR_LIMIT:
        common = collections.Counter(str(Path(t).parent) for t in held).most_common(3)
        pytest.fail(f"{len(held)} descriptors open after this file (most under: {common})")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh ``bayou serve`` for one test; stopped by PID afterwards."""
    proc = BrokerProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker shared by the tests of a module (each test uses its own topics)."""
    proc = BrokerProcess(tmp_path_factory.mktemp("shared") / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole run, started on first use (each test takes a database of
    its own: ``create_database``); stopped by ``pg_ctl`` at the end."""
    server = started()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_logical_server() -> Iterator[PostgresServer]:
    """A second PostgreSQL, with ``wal_level=logical``, for change data capture tests (only
    started when one runs, so the others keep the plain server)."""
    server = started(logical=True)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3 (SeaweedFS ``weed mini``) for the whole run; stopped by PID at the end.
    Tests keep to their own key prefixes."""
    s3 = SeaweedFS(tmp_path_factory.mktemp("seaweedfs") / "s3").start()
    try:
        yield s3
    finally:
        s3.stop()
