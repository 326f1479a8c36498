"""A connection's PUBLISHes on their way to the log (``publishing.Inbound``), without sockets:
the order records land in while a topic is being created, and the connection stopping
reading while too much is being stored.  The host is a stand-in for the door whose appends
and topic creations wait for the test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from bayou.errors import KafkaError
from bayou.gateways.mqtt.messages import TP
from bayou.gateways.mqtt.publishing import MAX_STORING, Inbound
from bayou.gateways.mqtt.systree import SysCounters
from bayou.protocol.kafka.records import iter_batches, iter_records
from bayou.protocol.mqtt import ServerConnection, encode
from bayou.protocol.mqtt.packets import MQTT_311, Connect, Publish
from bayou.storage.engine import AppendResult, Buffer


class Door:
    """Topics exist once ``created`` is set; appends wait for ``stored``."""

    def __init__(self, known: set[str]) -> None:
        self.stats = SysCounters()
        self.known = known
        self.created = asyncio.Event()
        self.stored = asyncio.Event()
        self.stored.set()
        self.appended: list[bytes] = []  # payloads, in the order they were appended
        self.tasks: list[asyncio.Future[Any]] = []

    def clock_ms(self) -> int:
        return 0

    def kafka_target(self, mqtt_topic: str) -> TP | None:
        topic = mqtt_topic.split("/")[0]
        return (topic, 0) if topic in self.known else None

    async def resolve_target(self, mqtt_topic: str) -> TP:
        await self.created.wait()
        self.known.add(mqtt_topic.split("/")[0])
        target = self.kafka_target(mqtt_topic)
        assert target is not None
        return target

    def forget_targets(self) -> None:
        pass

    async def append(
        self, writes: Sequence[tuple[str, int, Buffer]]
    ) -> list[AppendResult | KafkaError]:
        for _topic, _p, batch in writes:  # applied now, as the engine does
            view = memoryview(batch)
            for pos, header in iter_batches(view):
                self.appended += [
                    bytes(r.value or b"") for r in iter_records(view[pos : pos + header.size])
                ]
        await self.stored.wait()
        return [AppendResult(0, 0, -1, 0, 1) for _ in writes]

    def set_retained(self, publish: Publish, client_id: str) -> asyncio.Task[None]:
        raise AssertionError("no retained messages here")

    def background(self, awaitable: Awaitable[Any]) -> None:
        self.tasks.append(asyncio.ensure_future(awaitable))


class Session:
    client_id = "c"
    dirty = False

    def __init__(self) -> None:
        self.pubrel_wait: set[int] = set()


def connected() -> ServerConnection:
    proto = ServerConnection()
    proto.receive_data(encode(Connect("c", MQTT_311)))
    return proto


def publish(inbound: Inbound, topic: str, payload: bytes, qos: int = 0, pid: int = 0) -> None:
    inbound.add(Publish(topic, payload, qos, packet_id=pid or None), Session())


def test_publishes_waiting_for_their_topic_land_in_order_then_flow_freely() -> None:
    async def test() -> None:
        door = Door(set())
        inbound = Inbound(door, connected())
        drained: list[bool] = []
        inbound.on_drained = lambda: drained.append(inbound.busy)
        publish(inbound, "new/a", b"1", qos=1, pid=1)
        first = inbound.flush(Session())  # must create "new" first
        assert inbound.busy  # stop reading while the topic is created
        publish(inbound, "new/a", b"2")
        assert inbound.flush(Session()) is None  # QoS 0 only: stored in the background
        await asyncio.sleep(0.01)
        assert door.appended == []
        door.created.set()
        assert first is not None and not isinstance(first, list)
        acks = await first
        assert len(acks) == 1  # the PUBACK
        await asyncio.gather(*door.tasks)
        assert door.appended == [b"1", b"2"]
        assert not inbound.busy and drained and not drained[-1]
        publish(inbound, "new/b", b"3")  # the topic exists: no waiting any more
        assert inbound.flush(Session()) is None
        await asyncio.gather(*door.tasks)
        assert door.appended == [b"1", b"2", b"3"]

    asyncio.run(test())


def test_a_connection_stops_reading_while_too_much_is_being_stored() -> None:
    async def test() -> None:
        door = Door({"t"})
        door.stored.clear()  # the engine is slow
        inbound = Inbound(door, connected())
        drained: list[int] = []
        inbound.on_drained = lambda: drained.append(inbound.storing)
        payload = b"x" * 10_000
        for _ in range(MAX_STORING // len(payload) // 2):
            publish(inbound, "t/a", payload)
        inbound.flush(Session())
        assert not inbound.busy  # half the limit: keep reading
        for _ in range(MAX_STORING // len(payload)):
            publish(inbound, "t/a", payload)
        inbound.flush(Session())
        assert inbound.busy  # over the limit: the connection stops reading
        door.stored.set()
        await asyncio.gather(*door.tasks)
        assert not inbound.busy and inbound.storing == 0 and drained[-1] == 0

    asyncio.run(test())
