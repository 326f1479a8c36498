"""Shared fixtures: a real broker process per test (or per module), started on free ports."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess
from tests.support.postgres import PostgresServer, started
from tests.support.seaweedfs import SeaweedFS


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
