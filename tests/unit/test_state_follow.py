"""``FollowedLog``: two brokers' views of one state log (two wrappers over one memory
engine's log, as two brokers over one database): each applies what the other writes, once,
in log order, and never its own writes; a failing ``apply`` does not stop the follower."""

from __future__ import annotations

import asyncio

import pytest

from bayou.core.state_follow import FollowedLog
from bayou.storage.engine import StateEntry
from bayou.storage.memory import MemoryEngine


def pairs(entries: list[StateEntry]) -> list[tuple[bytes, bytes | None]]:
    return [(e.key, e.value) for e in entries]


def test_each_broker_applies_the_others_writes_once_and_never_its_own() -> None:
    async def main() -> None:
        engine = MemoryEngine({})
        await engine.open()
        inner = await engine.state.open_log("__follow_test")
        await inner.put([StateEntry(b"before", b"0")])  # there before both loaded
        mine, theirs = FollowedLog(engine, inner), FollowedLog(engine, inner)
        assert pairs(await mine.read_all()) == [(b"before", b"0")]
        assert pairs(await theirs.read_all()) == [(b"before", b"0")]
        seen_mine: list[StateEntry] = []
        seen_theirs: list[StateEntry] = []
        mine.follow(seen_mine.extend)
        theirs.follow(seen_theirs.extend)
        assert await mine.put([StateEntry(b"k", b"1"), StateEntry(b"k", None)]) == 2
        assert await theirs.put([StateEntry(b"j", b"2")]) == 3
        assert await mine.put([StateEntry(b"k", b"3")]) == 4
        assert await mine.caught_up() and await theirs.caught_up()
        assert pairs(seen_theirs) == [(b"k", b"1"), (b"k", None), (b"k", b"3")]
        assert pairs(seen_mine) == [(b"j", b"2")]
        mine.stop()
        theirs.stop()
        await engine.close()

    asyncio.run(main())


def test_an_apply_that_fails_is_logged_and_the_follower_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        engine = MemoryEngine({})
        await engine.open()
        inner = await engine.state.open_log("__follow_test")
        writer, follower = FollowedLog(engine, inner), FollowedLog(engine, inner)
        await writer.read_all()
        await follower.read_all()
        writer.follow(lambda _entries: None)
        seen: list[StateEntry] = []

        def apply(entries: list[StateEntry]) -> None:
            if any(e.key == b"bad" for e in entries):
                raise ValueError("cannot apply")
            seen.extend(entries)

        follower.follow(apply)
        await writer.put([StateEntry(b"bad", b"x")])
        assert await follower.caught_up()
        await writer.put([StateEntry(b"good", b"y")])
        assert await follower.caught_up()
        assert pairs(seen) == [(b"good", b"y")]
        writer.stop()
        follower.stop()
        await engine.close()

    asyncio.run(main())
    assert "applying 1 entries of __follow_test failed" in caplog.text
