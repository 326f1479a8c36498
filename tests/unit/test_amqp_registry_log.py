"""The AMQP topology in the engine's state store: entries and tombstones replayed after a
restart, what stays in memory only, the previous release's registry.json imported once, and
a failed write written again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bayou.config import internal_log_config
from bayou.core import Core, CoreSettings
from bayou.gateways.amqp.registry import Exchange, QueueInfo, Registry
from bayou.gateways.amqp.registry_log import LOG_NAME, RegistryLog
from bayou.storage.engine import LogEngine, StateEntry, StateLog
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.metadata import INTERNAL_TOPICS


def test_no_user_topic_takes_the_name_of_the_topology_log() -> None:
    assert LOG_NAME in INTERNAL_TOPICS  # refused by every door's topic creation


def local_engine(data_dir: Path) -> LocalEngine:
    return LocalEngine(
        data_dir, {}, internal_config=internal_log_config(), maintenance=MaintenanceSettings()
    )


async def loaded(engine: LogEngine) -> Registry:
    registry = Registry()
    await RegistryLog(registry, Core(engine, CoreSettings())).load()
    return registry


def summary(registry: Registry) -> tuple[set[str], set[str], set[tuple[str, str, str]]]:
    return (
        {n for n in registry.exchanges if not n.startswith("amq.")},
        set(registry.queues),
        {(b.exchange, b.queue, b.routing_key) for b in registry.bindings},
    )


def test_the_topology_is_replayed_after_a_restart(tmp_path: Path) -> None:
    async def body() -> None:
        engine = local_engine(tmp_path / "data")
        await engine.open()
        registry = Registry()
        store = RegistryLog(registry, Core(engine, CoreSettings()))
        await store.load()
        registry.put_exchange(Exchange("orders", "topic", durable=True, arguments={"a": 1}))
        registry.put_exchange(Exchange("scratch", "fanout", durable=False))
        registry.put_queue(QueueInfo("q1", durable=True, created_topic=True))
        registry.put_queue(QueueInfo("q2", durable=False))
        registry.put_queue(QueueInfo("mine", exclusive=True))  # goes with its connection
        registry.bind("orders", "q1", "eu.#", {"x-match": "all", "n": [1, b"b"]})
        registry.bind("orders", "q2", "us.*", {})
        registry.bind("scratch", "q1", "", {})  # from a non-durable exchange: memory only
        await store.persist()
        await engine.close()

        engine = local_engine(tmp_path / "data")
        await engine.open()
        again = await loaded(engine)
        assert summary(again) == (
            {"orders"},
            {"q1", "q2"},
            {("orders", "q1", "eu.#"), ("orders", "q2", "us.*")},
        )
        assert again.exchanges["orders"].type == "topic"
        assert again.exchanges["orders"].arguments == {"a": 1}
        assert again.queues["q1"].durable and again.queues["q1"].created_topic
        assert again.route("orders", "eu.de.berlin", None, "topic") == {"q1"}

        store = RegistryLog(again, Core(engine, CoreSettings()))
        await store.load()
        again.drop_queue("q1")  # its bindings go with it: tombstones
        again.unbind("orders", "q2", "us.*", {})
        await store.persist()
        await engine.close()

        engine = local_engine(tmp_path / "data")
        await engine.open()
        assert summary(await loaded(engine)) == ({"orders"}, {"q2"}, set())
        await engine.close()

    asyncio.run(body())


# The document a data directory of the previous release holds (its ``Registry.snapshot``).
PREVIOUS_RELEASE = {
    "exchanges": [
        {
            "name": "events",
            "type": "direct",
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }
    ],
    "queues": [
        {
            "name": "billing",
            "topic": "billing",
            "durable": True,
            "auto_delete": False,
            "arguments": {"x-partitions": 2},
            "created_topic": True,
        },
        {
            "name": "reply:1",
            "topic": "amqp--reply-3a1",
            "durable": False,
            "auto_delete": True,
            "arguments": {},
            "created_topic": True,
        },
    ],
    "bindings": [
        {"exchange": "events", "queue": "billing", "routing_key": "invoice", "arguments": {}}
    ],
}


def test_the_previous_release_registry_json_is_imported_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    legacy = data / "amqp" / "registry.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps(PREVIOUS_RELEASE))
    (legacy.parent / "registry.abc123.tmp").write_text("{")  # a save a crash interrupted

    async def body() -> None:
        expected = ({"events"}, {"billing", "reply:1"}, {("events", "billing", "invoice")})
        engine = local_engine(data)
        await engine.open()
        registry = await loaded(engine)
        assert summary(registry) == expected
        assert registry.queues["billing"].arguments == {"x-partitions": 2}
        assert registry.queues["reply:1"].auto_delete
        await engine.close()
        assert not legacy.parent.exists()  # the document and its stray temp file are gone
        assert (data / "internal" / LOG_NAME / "0").is_dir()

        engine = local_engine(data)
        await engine.open()
        assert summary(await loaded(engine)) == expected  # now from the state log
        await engine.close()

    asyncio.run(body())


class FailingOnce:
    """A state log whose first ``put`` fails (a full disk, say)."""

    def __init__(self, log: StateLog) -> None:
        self.inner = log
        self.failures = 1

    @property
    def name(self) -> str:
        return self.inner.name

    async def read_all(self) -> list[StateEntry]:
        return await self.inner.read_all()

    async def put(self, entries: Sequence[StateEntry], *, durable: bool = False) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        await self.inner.put(entries, durable=durable)

    async def close(self) -> None:
        await self.inner.close()


class Store:
    def __init__(self, engine: LogEngine) -> None:
        self.engine = engine

    async def open_log(self, name: str, *, public: bool = False) -> StateLog:
        return FailingOnce(await self.engine.state.open_log(name, public=public))


class FlakyEngine:
    """The local engine, except that its state logs fail their first write."""

    def __init__(self, engine: LocalEngine) -> None:
        self.inner = engine
        self.kind = engine.kind
        self.location = engine.location
        self.state = Store(engine)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failed_write_is_written_again(tmp_path: Path) -> None:
    async def body() -> None:
        engine = local_engine(tmp_path / "data")
        await engine.open()
        registry = Registry()
        store = RegistryLog(registry, Core(FlakyEngine(engine), CoreSettings()))  # type: ignore[arg-type]
        await store.load()
        registry.put_queue(QueueInfo("q", durable=True))
        with pytest.raises(OSError):
            await store.persist()
        registry.bind("amq.direct", "q", "k", {})
        await store.persist()  # the queue too, not only the binding
        await engine.close()

        engine = local_engine(tmp_path / "data")
        await engine.open()
        assert summary(await loaded(engine)) == (set(), {"q"}, {("amq.direct", "q", "k")})
        await engine.close()

    asyncio.run(body())
