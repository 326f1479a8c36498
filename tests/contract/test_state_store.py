"""The StateStore contract: named compacted key-value logs of the broker's own state."""

from __future__ import annotations

from bayou.storage.engine import StateEntry, latest
from tests.contract.conftest import EngineFactory, Opened, run


def test_entries_replay_in_append_order_and_tombstones_delete(
    engine_factory: EngineFactory,
) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            groups = await engine.state.open_log("__consumer_offsets")
            other = await engine.state.open_log("__mqtt_sessions")
            assert await groups.read_all() == []
            await groups.put([StateEntry(b"a", b"1"), StateEntry(b"b", b"2", (("h", b"x"),))])
            await groups.put([StateEntry(b"a", b"3")], durable=True)
            await groups.put([StateEntry(b"b", None)])
            await other.put([StateEntry(b"c", b"9")])
            assert [(e.key, e.value) for e in await groups.read_all()] == [
                (b"a", b"1"),
                (b"b", b"2"),
                (b"a", b"3"),
                (b"b", None),
            ]
            assert (await groups.read_all())[1].headers == (("h", b"x"),)
            assert {k: e.value for k, e in (await latest(groups)).items()} == {b"a": b"3"}
            assert [(e.key, e.value) for e in await other.read_all()] == [(b"c", b"9")]
            assert "__consumer_offsets" not in engine.topics()  # internal: not a topic

    run(body())


def test_state_survives_a_restart_of_a_durable_engine(engine_factory: EngineFactory) -> None:
    if engine_factory.kind == "memory":  # type: ignore[attr-defined]
        return  # nothing outlives the process: that is the memory engine's contract

    async def body() -> None:
        async with Opened(engine_factory) as engine:
            log_ = await engine.state.open_log("s")
            await log_.put([StateEntry(b"k", b"v1")])
            await log_.put([StateEntry(b"k", b"v2"), StateEntry(b"j", b"w")])
        async with Opened(engine_factory) as engine:
            log_ = await engine.state.open_log("s")
            assert {k: e.value for k, e in (await latest(log_)).items()} == {
                b"k": b"v2",
                b"j": b"w",
            }

    run(body())
