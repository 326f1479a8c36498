"""The AMQP topology kept in the engine's state store (``__amqp_topology``).

Theory of operation
-------------------
The ``Registry`` (exchanges, queues, bindings) is a compacted key-value log in the engine's
``StateStore``: one entry per exchange, queue and binding (``registry.py`` names the keys
and encodes the values), a tombstone when one goes.  The local engine keeps it in
``DATA/internal/__amqp_topology/0/`` and its cleaner compacts it like any internal log; the
memory engine keeps it in memory.

**Start**: ``load`` replays the log (the last entry of every key) into the registry.  A data
directory from a release before this one holds the topology as one JSON document,
``DATA/amqp/registry.json``: when it is there, it is the topology (nothing else could have
changed it), so the registry is replaced by it, every entry that differs is written to the
log and fsynced, and only then is the file (with any temporary file a save left) removed.
A crash in between imports the same document again on the next start.

**Other brokers** of a shared engine write the same log: once loaded, the log is followed
(``Core.follow_state_log``) and what they write is loaded by ``apply`` — the replay's own
``Registry.apply``, a tombstone unloading its key — so an exchange, queue or binding
declared or deleted through one broker is routed by every broker within moments.

**Changes** are made to the registry in memory on the event loop; ``persist`` then writes
what changed: for every key the registry marked dirty, the value it holds now is compared
with what the log holds, and the differences (values and tombstones) go out as one batch,
fsynced before ``persist`` returns — an AMQP client is answered once its declaration is on
disk, as before.  No lock is needed: the batch is built and handed to the log without a
suspension point in between, and the log applies puts in call order, so the log's order is
the order of the changes in memory; concurrent declarations share the fsyncs (the engine
group-commits them).  A caller whose changes another caller's batch already carried waits
for that batch.  A failed write marks its keys for rewriting and raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from bayou.core import Core
from bayou.core.types import StateEntry, StateLog, latest
from bayou.gateways.amqp.registry import Registry

log = logging.getLogger(__name__)

LOG_NAME = "__amqp_topology"
LEGACY_DIR = "amqp"
LEGACY_FILE = "registry.json"
LEGACY_TEMP_PREFIX = "registry."
LEGACY_TEMP_SUFFIX = ".tmp"
_UNKNOWN = b"\x00unknown"  # "the log may hold anything here": always rewritten


def legacy_registry_path(core: Core) -> Path | None:
    """Where a previous release kept the registry: the local engine's data directory."""
    data_dir = core.data_dir
    return None if data_dir is None else data_dir / LEGACY_DIR / LEGACY_FILE


def read_legacy(path: Path) -> dict[str, Any] | None:
    """The previous release's document, or None (blocking: run it in a worker thread)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return doc


def remove_legacy(path: Path) -> None:
    """Remove the imported document, stray temporary files and the emptied directory
    (blocking)."""
    directory = path.parent
    path.unlink(missing_ok=True)
    if directory.is_dir():
        for stray in directory.glob(LEGACY_TEMP_PREFIX + "*" + LEGACY_TEMP_SUFFIX):
            stray.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty
    parent = os.open(directory.parent, os.O_RDONLY)
    try:
        os.fsync(parent)
    finally:
        os.close(parent)


class RegistryLog:
    """Writes a ``Registry`` to its state log (see the module docstring)."""

    def __init__(self, registry: Registry, core: Core) -> None:
        self.registry = registry
        self.core = core
        self.log: StateLog | None = None
        self.saved: dict[bytes, bytes] = {}  # what the log holds, key by key
        self._last_put: asyncio.Future[None] | None = None

    async def load(self) -> None:
        """Replay the log into the registry; import a previous release's JSON file."""
        self.log = state_log = await self.core.open_state_log(LOG_NAME)
        registry = self.registry
        rewrite: set[bytes] = set()
        for key, entry in (await latest(state_log)).items():
            assert entry.value is not None
            self.saved[key] = entry.value
            filed = registry.apply(key, entry.value)
            if filed != key:  # unreadable, or filed under another key: rewrite both
                rewrite.add(key)
                if filed is not None:
                    rewrite.add(filed)
        registry.dirty = rewrite
        path = legacy_registry_path(self.core)
        doc = None if path is None else await asyncio.to_thread(read_legacy, path)
        if doc is not None and path is not None:
            registry.load_document(doc)
            registry.dirty.update(self.saved)
            registry.dirty.update(registry.keys())
            await self.persist()
            await asyncio.to_thread(remove_legacy, path)
            log.info("AMQP topology imported from %s into the state log %s", path, LOG_NAME)
        elif registry.dirty:
            await self.persist()
        self.core.follow_state_log(state_log, self.apply)

    def apply(self, entries: list[StateEntry]) -> None:
        """What another broker of a shared engine wrote to the log: load it as the replay
        does (``Registry.apply``; a tombstone ``Registry.forget``), note it as what the log
        holds, and mark nothing to write — it is in the log already."""
        registry = self.registry
        pending, registry.dirty = registry.dirty, set()
        for entry in entries:
            if entry.value is None:
                self.saved.pop(entry.key, None)
                registry.forget(entry.key)
            else:
                self.saved[entry.key] = entry.value
                registry.apply(entry.key, entry.value)
        registry.dirty = pending

    async def persist(self) -> None:
        """Write every change made so far (fsynced); returns once it is on disk."""
        state_log = self.log
        if state_log is None:
            raise RuntimeError("the AMQP topology log is not open")
        registry = self.registry
        dirty, registry.dirty = registry.dirty, set()
        entries: list[StateEntry] = []
        for key in sorted(dirty):
            value = registry.entry(key)
            if value != self.saved.get(key):
                entries.append(StateEntry(key, value))
                if value is None:
                    self.saved.pop(key, None)
                else:
                    self.saved[key] = value
        if not entries:
            last = self._last_put
            if last is not None and not last.done():
                await asyncio.shield(last)  # our changes ride on a batch still being written
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last_put = done
        try:
            await state_log.put(entries, durable=True)  # appended before it first suspends
        except BaseException as exc:
            for entry in entries:
                self.saved[entry.key] = _UNKNOWN
                registry.dirty.add(entry.key)
            done.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            done.exception()  # retrieved, whether or not another caller waits for it
            raise
        done.set_result(None)
