"""The in-broker share consumer (``Core.share_consumer``), as a door other than Kafka uses it:
competing members, acquisition bounded by what a member may hold, release on close, a
waiting member woken by a release, delivery counts — on the memory engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bayou.core import Core, CoreSettings
from bayou.core.shares import AckType
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.memory import MemoryEngine

TOPIC = "jobs"
GROUP = "amqp:jobs"


def run(test: Callable[[Core], Awaitable[None]]) -> None:
    async def main() -> None:
        engine = MemoryEngine({})
        await engine.open()
        core = Core(engine, CoreSettings())
        await core.start()
        try:
            await core.create_topic(TOPIC, 1, {})
            await test(core)
        finally:
            await core.close()
            await engine.close()

    asyncio.run(main())


async def append(core: Core, values: list[bytes]) -> None:
    await core.append(TOPIC, 0, build_batch([Record(0, None, v, []) for v in values]))


def test_members_compete_and_a_closed_member_gives_everything_back() -> None:
    async def test(core: Core) -> None:
        a = core.share_consumer(GROUP, [TOPIC], client_id="a", client_host="/h")
        b = core.share_consumer(GROUP, [TOPIC], client_id="b", client_host="/h")
        await a.join()
        await b.join()  # the queue starts at the end when first declared: nothing old
        await append(core, [b"%d" % i for i in range(30)])
        got_a = await a.acquire(10)  # a's prefetch: at most 10 unacknowledged
        got_b = await b.acquire(10)
        assert [d.record.value for d in got_a] == [b"%d" % i for i in range(10)]
        assert [d.record.value for d in got_b] == [b"%d" % i for i in range(10, 20)]
        assert {d.delivery_count for d in got_a + got_b} == {1}
        assert (a.held, b.held) == (10, 10)
        await a.close()  # a channel closed: its ten go to the others at once
        again = await b.acquire(20)
        assert [(d.record.value, d.delivery_count) for d in again] == [
            (b"%d" % i, 2) for i in range(10)
        ] + [(b"%d" % i, 1) for i in range(20, 30)]
        assert await b.acknowledge((d, AckType.ACCEPT) for d in got_b + again) == 0
        sp = core.share_driver().coordinator.partitions[(GROUP, TOPIC, 0)]
        assert (sp.start, sp.in_flight()) == (30, 0)
        await b.close()

    run(test)


def test_a_waiting_member_is_woken_by_a_release() -> None:
    async def test(core: Core) -> None:
        a = core.share_consumer(GROUP, [TOPIC], client_id="a", client_host="/h")
        b = core.share_consumer(GROUP, [TOPIC], client_id="b", client_host="/h")
        await a.join()
        await b.join()
        await append(core, [b"only"])
        held = await a.acquire(1)
        assert [d.record.value for d in held] == [b"only"]
        waiting = asyncio.ensure_future(b.acquire(1, timeout_s=10))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await a.acknowledge([(held[0], AckType.RELEASE)]) == 0
        got = await waiting
        assert loop.time() - started < 2  # woken, not timed out
        assert [(d.record.value, d.delivery_count) for d in got] == [(b"only", 2)]
        await a.close()
        await b.close()

    run(test)


def test_read_committed_share_groups_never_deliver_aborted_records() -> None:
    def txn(pid: int, value: bytes) -> bytes:
        return build_batch(
            [Record(0, None, value, [])],
            producer_id=pid,
            producer_epoch=0,
            base_sequence=0,
            is_transactional=True,
        )

    async def test(core: Core) -> None:
        shares = core.share_driver()
        await shares.run(
            lambda now: shares.coordinator.alter_configs(
                now, GROUP, {"share.isolation.level": "read_committed"}
            )
        )
        c = core.share_consumer(GROUP, [TOPIC], client_id="c", client_host="/h")
        await c.join()
        p = core.partition(TOPIC, 0)
        await append(core, [b"plain"])  # 0
        await p.append(txn(1, b"aborted"))  # 1
        await p.append(txn(2, b"committed"))  # 2
        await p.write_marker(1, 0, False, 0)  # 3: abort producer 1
        await p.append(txn(3, b"open"))  # 4: not delivered while open
        got = await c.acquire(10)
        assert [d.record.value for d in got] == [b"plain"]  # stops at producer 2's open one
        await p.write_marker(2, 0, True, 0)  # 5
        got += await c.acquire(10)
        assert [d.record.value for d in got] == [b"plain", b"committed"]
        assert await c.acknowledge((d, AckType.ACCEPT) for d in got) == 0
        await p.write_marker(3, 0, False, 0)  # 6
        assert await c.acquire(10) == []
        sp = shares.coordinator.partitions[(GROUP, TOPIC, 0)]
        assert (sp.start, sp.in_flight()) == (7, 0)  # markers and aborted records: done
        await c.close()

    run(test)
