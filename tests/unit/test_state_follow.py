"""``FollowedLog``: two brokers' views of one state log (two wrappers over one memory
engine's log, as two brokers over one database): each applies what the other writes, once,
in log order, and never its own writes — nor another's older write that its own already
replaced, even while its own is still returning; a failing ``apply`` does not stop the
follower."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bayou.core.state_follow import FollowedLog
from bayou.storage.engine import Partition, StateEntry, StateLog
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


def test_another_brokers_older_write_never_replaces_ours() -> None:
    """Theirs lands first, ours after, before our follower looked: our memory keeps ours
    (applying theirs would leave it on a value the log no longer ends on)."""

    async def main() -> None:
        engine = MemoryEngine({})
        await engine.open()
        inner = await engine.state.open_log("__follow_test")
        mine, theirs = FollowedLog(engine, inner), FollowedLog(engine, inner)
        await mine.read_all()
        await theirs.read_all()
        seen_mine: list[StateEntry] = []
        seen_theirs: list[StateEntry] = []
        mine.follow(seen_mine.extend)
        theirs.follow(seen_theirs.extend)
        await theirs.put([StateEntry(b"k", b"theirs")])
        await mine.put([StateEntry(b"k", b"mine")])
        assert await mine.caught_up() and await theirs.caught_up()
        assert pairs(seen_mine) == []
        assert pairs(seen_theirs) == [(b"k", b"mine")]
        mine.stop()
        theirs.stop()
        await engine.close()

    asyncio.run(main())


class ReturnsLate:
    """A state log whose puts land at once but return only when released (an answer still
    on its way from the database)."""

    def __init__(self, inner: StateLog) -> None:
        self.inner = inner
        self.release = asyncio.Event()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def partition(self) -> Partition:
        return self.inner.partition

    async def read_all(self) -> list[StateEntry]:
        return await self.inner.read_all()

    async def sync(self) -> None:
        await self.inner.sync()

    async def put(self, entries: Sequence[StateEntry], *, durable: bool = False) -> int:
        last = await self.inner.put(entries, durable=durable)
        await self.release.wait()
        return last

    async def close(self) -> None:
        await self.inner.close()


def test_a_write_of_ours_still_returning_is_waited_for_before_deciding() -> None:
    async def main() -> None:
        engine = MemoryEngine({})
        await engine.open()
        inner = await engine.state.open_log("__follow_test")
        late = ReturnsLate(inner)
        mine, theirs = FollowedLog(engine, late), FollowedLog(engine, inner)
        await mine.read_all()
        await theirs.read_all()
        seen_mine: list[StateEntry] = []
        mine.follow(seen_mine.extend)
        theirs.follow(lambda _entries: None)
        await theirs.put([StateEntry(b"k", b"theirs")])
        returning = asyncio.ensure_future(mine.put([StateEntry(b"k", b"mine")]))
        await asyncio.sleep(0.1)  # the follower reads both records meanwhile, and waits
        assert pairs(seen_mine) == []
        late.release.set()
        await returning
        assert await mine.caught_up()
        assert pairs(seen_mine) == []  # theirs is older than ours; ours is ours
        mine.stop()
        theirs.stop()
        await engine.close()

    asyncio.run(main())
