"""MQTT sessions without sockets: a ``Session`` driven through its two small interfaces.

The connection is a stand-in that keeps what the session writes (decoded by the real MQTT
codec) around a real sans-I/O ``ServerConnection``; the host serves reads from a real core
over the in-memory engine (the real shared ``ChunkCache``, ``Cursor.record_at``), with the
tailers' positions set by the test.  What a subscriber would check: every message, in
order, once; the in-flight window; resends after a restart first.
"""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

from bayou.core import Core, CoreSettings
from bayou.gateways.mqtt.catch_up import ChunkCache, DecodedChunk
from bayou.gateways.mqtt.delivery import MAX_QUEUED, Outbox
from bayou.gateways.mqtt.inflight import DEFAULT_INFLIGHT
from bayou.gateways.mqtt.mapping import TopicMapper
from bayou.gateways.mqtt.messages import TP, Message, MessageFactory
from bayou.gateways.mqtt.session import NEVER_EXPIRES, Session
from bayou.gateways.mqtt.store import SessionStore
from bayou.gateways.mqtt.subscriptions import SubOptions, Subscriptions
from bayou.gateways.mqtt.systree import SysCounters
from bayou.gateways.mqtt.tailer import Tailer
from bayou.protocol.kafka.records import DecodedRecord, Record, build_batch
from bayou.protocol.mqtt import FrameReader, ServerConnection, decode, encode
from bayou.protocol.mqtt.packets import MQTT_311, Connect, Publish
from bayou.storage.engine import StateEntry
from bayou.storage.memory import MemoryEngine

T = TypeVar("T")
TOPIC = "t"
TP0: TP = (TOPIC, 0)


class Client:
    """A ``Connection`` that keeps the packets the session sends."""

    def __init__(self, client_id: str = "c") -> None:
        self.proto = ServerConnection()
        self.proto.receive_data(encode(Connect(client_id, MQTT_311, clean_start=False)))
        self.paused = False
        self.published: list[Publish] = []
        self._frames = FrameReader()

    def write_many(self, chunks: list[bytes], packets: int | None = None) -> None:
        for chunk in chunks:
            self._frames.feed(chunk)
        while (frame := self._frames.next_frame()) is not None:
            packet = decode(frame[0], frame[1], MQTT_311)
            assert isinstance(packet, Publish)
            self.published.append(packet)

    def taken_over(self) -> None:
        raise AssertionError("not in these tests")

    def seqs(self) -> list[int]:
        """The record numbers of what was published, in order."""
        return [int(p.payload.split(b":")[0]) for p in self.published]


class Host:
    """A ``SessionHost`` over a real core; ``live`` says where the tailers are."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.stats = SysCounters()
        self.traffic = core.metrics.door("mqtt")
        self.live: dict[TP, int] = {}
        self.mapper = TopicMapper()
        self.factory = MessageFactory()
        self.chunks = ChunkCache(core, self.mapper, self.factory)

    def clock_ms(self) -> int:
        return 1_000

    def live_position(self, tp: TP) -> int | None:
        return self.live.get(tp)

    def log_bounds(self, tp: TP) -> tuple[int, int] | None:
        p = self.core.partition(*tp)
        return p.log_start_offset, p.log_end_offset

    def interest_of(self, topic_filters: Iterable[str]) -> Iterable[TP]:
        return list(self.live)

    async def catch_up_chunk(self, tp: TP, offset: int) -> DecodedChunk:
        return await self.chunks.chunk(tp, offset)

    async def message_at(self, tp: TP, offset: int) -> Message | None:
        await asyncio.sleep(0.02)  # as a read of cold data in a worker thread takes a while
        rec = await self.core.cursor(*tp, offset).record_at(offset)
        if rec is None:
            return None
        return self.factory.from_record(self.mapper.mqtt_topic(tp[0], rec.key), rec)


def run_with_core(records: int, test: Callable[[Core], Awaitable[T]], size: int = 16) -> T:
    """``test(core)`` with topic ``t`` holding ``records`` records (values ``i:`` + padding
    to ``size`` bytes, keys ``t/dev``), on the memory engine."""

    async def main() -> T:
        engine = MemoryEngine({})
        await engine.open()
        core = Core(engine, CoreSettings())
        await core.start()
        try:
            await core.create_topic(TOPIC, 1, {})
            for start in range(0, records, 100):
                batch = [
                    Record(0, b"t/dev", b"%d:" % i + b"x" * (size - len(b"%d:" % i)), [])
                    for i in range(start, min(start + 100, records))
                ]
                await core.append(TOPIC, 0, build_batch(batch))
            return await test(core)
        finally:
            await core.close()
            await engine.close()

    return asyncio.run(main())


def subscribed(host: Host, client_id: str, qos: int) -> Session:
    session = Session(host, client_id, NEVER_EXPIRES)
    Subscriptions(host.stats).add(session, "t/#", SubOptions(qos))
    return session


async def until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def turns_until(what: str, check: Callable[[], bool], turns: int = 10_000) -> None:
    """Let the loop turn until ``check()`` (no timer: the tasks on it move a step a turn)."""
    for _ in range(turns):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} did not happen in {turns} turns")


def test_a_311_client_has_20_in_flight_and_each_ack_lets_one_more_go() -> None:
    async def test(core: Core) -> None:
        host = Host(core)
        host.live[TP0] = 0
        session = subscribed(host, "c", 1)
        client = Client()
        session.attach(client, present=False)
        for i in range(30):
            rec = (await core.cursor(TOPIC, 0, i).read(max_records=1))[0]
            msg = host.factory.from_record("t/dev", rec)
            session.offer(msg, [SubOptions(1)], TP0, i)
        await until("the window to fill", lambda: len(client.published) == DEFAULT_INFLIGHT)
        await asyncio.sleep(0.05)
        assert client.seqs() == list(range(20))
        assert session.positions() == {TP0: 20}  # the first offset not handed out
        for packet in client.published[:5]:
            assert packet.packet_id is not None and session.on_puback(packet.packet_id)
        await until("five more", lambda: len(client.published) == 25)
        assert client.seqs()[20:] == list(range(20, 25))
        session.go_offline(2_000)  # what was queued falls back to the log
        assert session.outbox.behind == {TP0: 25}
        assert len(session.outbox.window) == DEFAULT_INFLIGHT  # kept until acknowledged

    run_with_core(30, test)


def catching_up_alone(total: int, counter: str) -> Callable[[Core], Awaitable[int]]:
    """One QoS 0 session behind by ``total`` records catching up alone; what the chunk
    cache's ``counter`` (``reads`` or ``decoded``) says it cost."""

    async def alone(core: Core) -> int:
        host = Host(core)
        host.live[TP0] = total
        session = subscribed(host, "solo", 0)
        session.outbox.behind[TP0] = 0
        client = Client("solo")
        session.attach(client, present=True)
        await until("the solo catch-up", lambda: len(client.published) == total)
        return int(getattr(host.chunks, counter))

    return alone


def test_sessions_behind_at_the_same_place_share_the_reads_and_get_everything() -> None:
    """Two QoS 0 sessions far behind (more than a queue, several catch-up reads): each gets
    every record once, in order, and they read the log once between them."""
    total = 3 * MAX_QUEUED
    size = 256  # 3000 records of 256 bytes: several catch-up reads of 256 KiB

    async def together(core: Core) -> tuple[int, list[list[int]]]:
        host = Host(core)
        host.live[TP0] = total
        clients = []
        for name in ("a", "b"):
            session = subscribed(host, name, 0)
            session.outbox.behind[TP0] = 0
            client = Client(name)
            session.attach(client, present=True)
            clients.append((session, client))
        await until("both catch-ups", lambda: all(len(c.published) >= total for _s, c in clients))
        await asyncio.sleep(0.05)
        for session, _client in clients:
            assert session.outbox.behind == {}  # live again: the tailer has the rest
        return host.chunks.reads, [c.seqs() for _s, c in clients]

    solo_reads = run_with_core(total, catching_up_alone(total, "reads"), size)
    reads, received = run_with_core(total, together, size)
    assert solo_reads >= 3
    assert reads == solo_reads
    for seqs in received:
        assert seqs == list(range(total))


def test_sessions_behind_at_different_places_read_each_record_once_between_them() -> None:
    """Two QoS 0 sessions behind at different offsets: a read for the one further back
    stops where a kept read of the other starts, so between them they read about as often
    as one session alone would, and each gets every record from its offset, in order."""
    total = 3 * MAX_QUEUED
    size = 256
    lag = 150  # where the second session is behind, records after the first

    async def apart(core: Core) -> tuple[int, list[list[int]]]:
        host = Host(core)
        host.live[TP0] = total
        clients = []
        for name, at in (("ahead", lag), ("back", 0)):
            session = subscribed(host, name, 0)
            session.outbox.behind[TP0] = at
            client = Client(name)
            session.attach(client, present=True)
            clients.append(client)
            # the one ahead reads first; the other starts before it is a queue further on
            # (the reads of both, 4 + 1, fit in the cache only if neither is let go)
            await turns_until("a read", lambda: host.chunks.reads > 0)
        await until(
            "both catch-ups", lambda: sum(len(c.published) for c in clients) >= 2 * total - lag
        )
        return host.chunks.decoded, [c.seqs() for c in clients]

    solo = run_with_core(total, catching_up_alone(total, "decoded"), size)
    decoded, (ahead, back) = run_with_core(total, apart, size)
    assert ahead == list(range(lag, total))
    assert back == list(range(total))
    assert decoded == solo == total, (decoded, solo)


def test_sessions_waiting_on_a_read_that_falls_short_share_the_next_one() -> None:
    """Two sessions wait for a read that turns out to end before their offset: the first
    to wake starts the read that holds it, the second shares that one (it does not start
    a third)."""

    async def test(core: Core) -> tuple[int, bool, list[int]]:
        chunks = Host(core).chunks
        reading = asyncio.Event()  # the reads wait for it: the log is slow today
        load = chunks._load

        async def slow_load(chunk: DecodedChunk, tp: TP, stop: int | None) -> None:
            await reading.wait()
            await load(chunk, tp, stop)

        chunks._load = slow_load  # type: ignore[method-assign]
        first = asyncio.ensure_future(chunks.chunk(TP0, 0))
        await turns_until("the first read to start", lambda: bool(chunks._chunks))
        waiting = [asyncio.ensure_future(chunks.chunk(TP0, 2_000)) for _ in range(2)]
        await asyncio.sleep(0)  # one turn: each takes its first step, waiting on that read
        reading.set()
        a, b = await asyncio.gather(*waiting)
        assert (await first).end < 2_000  # both waited on it, and it fell short
        return chunks.reads, a is b, a.offsets[:2]

    reads, shared, offsets = run_with_core(3_000, test, 256)
    assert (reads, shared, offsets) == (2, True, [2_000, 2_001])


class TailerHost:
    """The door as a ``Tailer`` sees it: real subscriptions, the host's mapper and factory."""

    def __init__(self, host: Host, subs: Subscriptions) -> None:
        self.host = host
        self.subs = subs
        self.stopping = False

    def mqtt_topic(self, kafka_topic: str, key: bytes | None) -> str:
        return self.host.mapper.mqtt_topic(kafka_topic, key)

    def owners_of(self, mqtt_topic: str) -> list[tuple[object, list[SubOptions]]]:
        return self.subs.owners_of(mqtt_topic)

    def watchers(self, kafka_topic: str) -> list[Outbox]:
        return [session.outbox for session in self.subs.own]  # every filter is on TOPIC

    def message_from_record(self, mqtt_topic: str, rec: DecodedRecord) -> Message:
        return self.host.factory.from_record(mqtt_topic, rec)


def test_the_tailer_offers_runs_of_records_and_every_subscriber_gets_its_own_in_order() -> None:
    """Records in a row for the same sessions are offered together (a QoS 0 subscription
    takes them as one delivery of shared bytes); whatever the path, each subscriber gets
    exactly what its filters and options select, in log order, once: QoS 0 and QoS 1 on
    ``t/#``, QoS 0 on ``t/dev`` only, and a no-local subscriber that publishes some."""
    first = 150

    async def test(core: Core) -> None:
        seq = first
        layout = [(b"t/other", 100, "nolocal"), (b"t/dev", 1, "expiring"), (b"t/dev", 300, None)]
        kinds: dict[int, tuple[bytes, str | None]] = {i: (b"t/dev", None) for i in range(first)}
        for key, count, kind in layout:
            records = []
            for _ in range(count):
                headers: list[tuple[str, bytes | None]] = [("mqtt.qos", b"1")]
                if kind == "nolocal":
                    headers.append(("mqtt.client-id", b"nolocal"))
                if kind == "expiring":
                    headers.append(("mqtt.message-expiry", b"3600"))
                records.append(Record(0, key, b"%d:" % seq + b"x" * 12, headers))
                kinds[seq] = (key, kind)
                seq += 1
            await core.append(TOPIC, 0, build_batch(records))
        total = seq
        host = Host(core)
        subs = Subscriptions(host.stats)
        clients: dict[str, tuple[Session, Client]] = {}
        for name, topic_filter, opts in (
            ("all0", "t/#", SubOptions(0)),
            ("all1", "t/#", SubOptions(1)),
            ("dev", "t/dev", SubOptions(0)),
            ("nolocal", "t/#", SubOptions(0, no_local=True)),
        ):
            session = Session(host, name, NEVER_EXPIRES)
            subs.add(session, topic_filter, opts)
            client = Client(name)
            session.attach(client, present=False)
            clients[name] = (session, client)
        tailer = Tailer(TailerHost(host, subs), core.cursor(TOPIC, 0, 0))
        host.live_position = lambda tp: tailer.position  # type: ignore[method-assign]
        while tailer.position < total:
            await tailer.process(await tailer.cursor.read_batches(1024 * 1024))

        def delivered() -> bool:
            session, client = clients["all1"]
            for packet in client.published:  # the QoS 1 client acknowledges what it has
                if packet.packet_id is not None:
                    session.on_puback(packet.packet_id)
            return all(len(c.published) >= len(want(n)) for n, (_s, c) in clients.items())

        def want(name: str) -> list[int]:
            if name == "dev":
                return [i for i in range(total) if kinds[i][0] == b"t/dev"]
            if name == "nolocal":
                return [i for i in range(total) if kinds[i][1] != "nolocal"]
            return list(range(total))

        await until("every delivery", delivered)
        await asyncio.sleep(0.05)
        for name, (_session, client) in clients.items():
            assert client.seqs() == want(name), name
            for packet in client.published:
                assert packet.topic == kinds[int(packet.payload.split(b":")[0])][0].decode()
                assert packet.qos == (1 if name == "all1" else 0)
                assert not packet.retain and not packet.dup
        assert host.stats.publish_sent == sum(len(want(n)) for n in clients)

    run_with_core(first, test)


def test_the_tailer_passes_over_what_every_session_reads_back_from_the_log() -> None:
    """While every session a partition's records could go to is behind on it (it reads them
    back from the log), the tailer moves past its reads without looking at a record — no
    topic lookup, no offer — and the sessions still get every record, in order, once,
    through catch-up, up to the tailer's position."""
    total = 2 * MAX_QUEUED

    async def test(core: Core) -> None:
        host = Host(core)
        subs = Subscriptions(host.stats)
        sessions = []
        for name in ("a", "b"):
            session = Session(host, name, NEVER_EXPIRES)
            subs.add(session, "t/#", SubOptions(0))
            session.outbox.behind[TP0] = 0  # offline, and behind from the start
            sessions.append(session)
        tailer_host = TailerHost(host, subs)
        looked_up: list[str] = []
        tailer_host.owners_of = lambda topic: looked_up.append(topic) or subs.owners_of(topic)  # type: ignore[method-assign]
        tailer = Tailer(tailer_host, core.cursor(TOPIC, 0, 0))
        host.live_position = lambda tp: tailer.position  # type: ignore[method-assign]
        while tailer.position < total:
            await tailer.process(await tailer.cursor.read_batches(1024 * 1024))
        assert looked_up == []
        clients = []
        for session in sessions:
            client = Client(session.client_id)
            session.attach(client, present=True)
            clients.append(client)
        await until("both catch-ups", lambda: all(len(c.published) >= total for c in clients))
        await asyncio.sleep(0.05)
        for session, client in zip(sessions, clients, strict=True):
            assert client.seqs() == list(range(total))
            assert session.outbox.behind == {}  # live again: the tailer has the rest

    run_with_core(total, test)


def test_a_restarted_session_resends_its_in_flight_messages_before_the_rest() -> None:
    async def test(core: Core) -> None:
        host = Host(core)
        host.live[TP0] = 10
        session = subscribed(host, "r", 1)
        # as a document of a session that had offset 5 in flight as packet 7, and had
        # handed out everything before 6
        session.load(
            {"expiry": NEVER_EXPIRES, "inflight": [[TOPIC, 0, 5, 7, 1, False, []]], "pubrel": []},
            {TP0: 6},
            0,
        )
        client = Client("r")
        session.attach(client, present=True)
        await until("the resend and the rest", lambda: len(client.published) == 5)
        assert client.seqs() == [5, 6, 7, 8, 9]
        first, *rest = client.published
        assert (first.packet_id, first.dup) == (7, True)
        assert not any(p.dup for p in rest)
        assert 7 not in {p.packet_id for p in rest}
        assert session.outbox.window.restored == []

    run_with_core(10, test)


def test_the_door_modules_import_each_other_without_cycles() -> None:
    """Type-only imports included: sessions never import the connection or the gateway."""
    package = Path(__file__).resolve().parents[2] / "bayou" / "gateways" / "mqtt"
    prefix = "bayou.gateways.mqtt"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix):
                rest = (node.module or "")[len(prefix) :].lstrip(".")
                deps |= {rest.split(".")[0]} if rest else {a.name for a in node.names}
        graph[path.stem] = deps - {path.stem}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for dep in graph.get(start, ()):
            if dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})):
                return True
        return False

    assert [m for m in graph if reaches(m, m, set())] == []
    for module in ("session", "delivery", "inflight", "subscriptions", "catch_up", "shared"):
        assert not reaches(module, "client", set()) and not reaches(module, "server", set())


def test_a_takeover_is_told_from_a_previous_holders_late_write() -> None:
    """Which write of a session held here another broker made: its adoption (a higher
    handover generation, or the same one from a higher node id) or a late save or expiry of
    the broker that held it before (``SessionStore.newer``)."""

    async def check(core: Core) -> None:
        store = SessionStore(core)  # node 0
        store.gens["c"] = 2  # held here since the second handover

        def doc(gen: int, node: int) -> StateEntry:
            return StateEntry(b"c", json.dumps({"gen": gen, "node": node}).encode())

        def tombstone(gen: int, node: int) -> StateEntry:
            return StateEntry(b"c", None, (("gen", b"%d" % gen), ("node", b"%d" % node)))

        assert store.newer(doc(3, 1)) and store.newer(tombstone(3, 1))
        assert store.newer(doc(2, 1))  # adopted at the same time elsewhere: node ids decide
        assert not store.newer(doc(1, 1)) and not store.newer(tombstone(1, 1))
        assert not store.newer(StateEntry(b"c", b"{}"))  # a document from before generations

    run_with_core(0, check)
