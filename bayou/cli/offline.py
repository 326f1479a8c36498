"""Change users, ACLs and quotas in a broker's storage directly (``--data-dir``,
``--storage``), without a broker to ask.

The first administrator has to exist before the first secured start, when no broker is
there to ask: ``bayou user add admin --password-stdin --data-dir DIR`` opens the data
directory's engine (taking its lock — a running broker holds it, and the command then says
to use ``-b``), writes the user, ACL or quota store's state log exactly as the broker does,
and closes it.

A cluster's brokers keep nothing of their own: ``--storage postgres://…`` (or ``s3://…``)
opens the shared engine the same way and writes the same state log.  Nothing locks a shared
engine — its appends are safe beside running brokers (PostgreSQL's row lock orders them) —
but brokers read the users, ACLs and quotas when they start: a broker already running sees
the change at its next start, so change a running cluster through a broker with ``-b``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from bayou.broker_config import BrokerConfig
from bayou.cli._common import CliError, UsageProblem
from bayou.core.quotas import QuotaStore
from bayou.core.security import Security
from bayou.storage.dir_lock import DataDirectoryInUse
from bayou.storage.engine import StateStore

T = TypeVar("T")


@dataclass(frozen=True)
class Offline:
    """Where an offline change goes: a stopped broker's data directory, or a shared
    engine's URL (with an optional cache directory)."""

    data_dir: Path | None
    storage: str | None

    @classmethod
    def of(cls, data_dir: Path | None, storage: str | None) -> Offline | None:
        """The target the options name; None: ask a running broker (``-b``)."""
        if storage is not None and storage.strip() in ("", "local"):
            if data_dir is None:
                raise UsageProblem("--storage local needs --data-dir.")
            storage = None
        if data_dir is None and storage is None:
            return None
        return cls(data_dir, storage)


def offline_options(f: Any) -> Any:
    """``--data-dir`` and ``--storage``: change the storage directly instead of asking."""
    f = click.option(
        "--storage",
        metavar="URL",
        help="Change a cluster's shared engine (postgres://…, s3://…) instead of asking a "
        "running broker; brokers already running see the change at their next start.",
    )(f)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        metavar="DIR",
        help="Change a stopped broker's data directory instead of asking a running broker.",
    )(f)


def run_offline(target: Offline, job: Callable[[Security], Awaitable[T]]) -> T:
    """``job`` on the users and ACLs of ``target``."""

    async def open_security(state: StateStore) -> T:
        security = Security()
        await security.open(state)
        return await job(security)

    return _with_state(target, open_security)


def run_offline_quotas(target: Offline, job: Callable[[QuotaStore], Awaitable[T]]) -> T:
    """``job`` on the client quotas of ``target``."""

    async def open_quotas(state: StateStore) -> T:
        store = QuotaStore()
        await store.open(state)
        return await job(store)

    return _with_state(target, open_quotas)


def _with_state(target: Offline, job: Callable[[StateStore], Awaitable[T]]) -> T:
    if target.storage is None:
        assert target.data_dir is not None
        if not target.data_dir.is_dir():
            raise CliError(f"{target.data_dir} is not a directory")
        return _run(BrokerConfig(data_dir=target.data_dir), job, target.data_dir)
    if target.data_dir is not None:
        return _run(BrokerConfig(data_dir=target.data_dir, storage=target.storage), job, None)
    with tempfile.TemporaryDirectory(prefix="bayou-cli-") as cache:  # the engine's cache only
        return _run(BrokerConfig(data_dir=Path(cache), storage=target.storage), job, None)


def _run(config: BrokerConfig, job: Callable[[StateStore], Awaitable[T]], locked: Path | None) -> T:
    from bayou.app import make_engine
    from bayou.errors import InvalidConfig

    async def main() -> T:
        engine = make_engine(config)
        await engine.open()
        try:
            return await job(engine.state)
        finally:
            await engine.close()

    try:
        return asyncio.run(main())
    except InvalidConfig as exc:
        raise CliError(str(exc)) from None
    except DataDirectoryInUse:
        raise CliError(
            f"A broker is running on {locked}: change it through the broker with -b "
            "(and credentials) instead of --data-dir"
        ) from None
