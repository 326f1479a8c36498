"""Change a stopped broker's users, ACLs and quotas in its data directory (``--data-dir``).

The first administrator has to exist before the first secured start, when no broker is
there to ask: ``bayou user add admin --password-stdin --data-dir DIR`` opens the data
directory's engine (taking its lock — a running broker holds it, and the command then says
to use ``-b``), writes the user, ACL or quota store's state log exactly as the broker does,
and closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from bayou.broker_config import BrokerConfig
from bayou.cli._common import CliError
from bayou.core.quotas import QuotaStore
from bayou.core.security import Security
from bayou.storage.dir_lock import DataDirectoryInUse
from bayou.storage.engine import StateStore

T = TypeVar("T")


def run_offline(data_dir: Path, job: Callable[[Security], Awaitable[T]]) -> T:
    """``job`` on the users and ACLs of the stopped broker at ``data_dir``."""

    async def open_security(state: StateStore) -> T:
        security = Security()
        await security.open(state)
        return await job(security)

    return _with_state(data_dir, open_security)


def run_offline_quotas(data_dir: Path, job: Callable[[QuotaStore], Awaitable[T]]) -> T:
    """``job`` on the client quotas of the stopped broker at ``data_dir``."""

    async def open_quotas(state: StateStore) -> T:
        store = QuotaStore()
        await store.open(state)
        return await job(store)

    return _with_state(data_dir, open_quotas)


def _with_state(data_dir: Path, job: Callable[[StateStore], Awaitable[T]]) -> T:
    from bayou.app import make_engine

    if not data_dir.is_dir():
        raise CliError(f"{data_dir} is not a directory")
    config = BrokerConfig(data_dir=data_dir)

    async def main() -> T:
        engine = make_engine(config)
        await engine.open()
        try:
            return await job(engine.state)
        finally:
            await engine.close()

    try:
        return asyncio.run(main())
    except DataDirectoryInUse:
        raise CliError(
            f"A broker is running on {data_dir}: change it through the broker with -b "
            "(and credentials) instead of --data-dir"
        ) from None
