"""Publishing: one connection's PUBLISHes on their way to the log, and their acknowledgements.

Theory of operation
-------------------
The connection hands every PUBLISH of a read to ``Inbound.add``, which turns it into a
record — (key = the MQTT topic, value = the payload, its headers encoded: its properties;
the headers of a PUBLISH without properties are encoded once per client, QoS and retain
flag) — and files it under its (Kafka topic, partition), cached by the gateway
(``kafka_target``).  A run of PUBLISHes without properties or retain flag at QoS 0/1 (a
publisher's usual read) comes as one ``PublishRun`` of tuples (``add_run``): no packet
object per PUBLISH, each topic routed once per run of the same topic, and the records of a
read share one timestamp, so a batch is built by ``build_uniform_batch``.

Before any other packet, and at the end of the read, the connection calls ``flush``: the
records go to the core as one batch per partition in one ``append_many``, run as a task; the
engine makes them as durable as each topic asks before it returns. The acknowledgements
(PUBACK, PUBREC, in the PUBLISHes' order; a 5.0 error reason for a failed one) are the
task's result, which the connection sends through its ordered output queue. A read of QoS 0
PUBLISHes only is stored in the background.

Order: tasks start in the order they are made, and the engine applies an append before it
first waits, so the records of successive flushes land in publish order.  A PUBLISH whose
Kafka topic does not exist yet must first have it created (``resolve_target``, through
``Core.topic``: off the event loop, refused when auto-creation is off); its flush is a
*resolving* one, and the flushes after it wait for its ``gate``, opened just before it
appends (the append runs before they resume; they resume in the order they came, each
appending before the next runs).  Only a resolving flush installs a gate, so once it is
open every flush that waited for it appends in the same turn of the loop: a topic creation
delays a connection's publishes, it does not leave them queued behind one another.

A retained PUBLISH updates the retained tree at once and its retained-log write starts at
once (so those land in order too); a QoS 1/2 acknowledgement waits for that write as well.
The retained message of a PUBLISH to a topic that must be created is set once the topic
exists.

Memory: a connection stops reading while more than ``MAX_STORING`` bytes of its PUBLISHes
are being stored, or one of its topics is being created, until they are (``busy``,
``on_drained``): a QoS 0 publisher has no window of its own, and a topic creation or a slow
engine must not let one grow the broker's memory.  The batches are built at the flush, so
what waits for the engine is bytes, not PUBLISH objects (which, kept past a turn of the
loop, are old objects for the garbage collector to walk).

QoS 2 is "store on PUBLISH": the record is appended when the PUBLISH arrives and its packet
id stays in the session (``pubrel_wait``) until PUBREL, so a resent PUBLISH (DUP) is
acknowledged without a second append.  A PUBLISH to ``$SYS``, the broker's own tree, is not
stored: 5.0 gets reason 0x87, 3.1.1 (no negative acknowledgement) a normal one.  Any other
failure ends a 3.1.1 connection (``MqttError`` from the task).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from bayou.core.types import AppendResult, Buffer
from bayou.errors import KafkaError
from bayou.gateways.mqtt.mapping import headers_for, plain_properties
from bayou.gateways.mqtt.messages import TP
from bayou.gateways.mqtt.systree import SysCounters
from bayou.protocol.kafka.records import build_uniform_batch, encode_headers
from bayou.protocol.mqtt import MQTT_5, MqttError, PublishRun, ServerConnection
from bayou.protocol.mqtt.packets import (
    Properties,
    PubAck,
    Publish,
    PubRec,
    Reason,
    empty_properties,
)
from bayou.protocol.mqtt.topics import is_sys

log = logging.getLogger("bayou.mqtt")

MAX_STORING = 1024 * 1024  # bytes being stored, per connection, before its reads pause
RECORD_OVERHEAD = 64  # counted per PUBLISH on top of its topic and payload

# a QoS 1/2 PUBLISH to acknowledge: QoS, packet id, MQTT topic, its target (partition, or
# the MQTT topic while its Kafka topic is being created; None: not stored) and an error
# known before storing
Ack = tuple[int, int | None, str, TP | str | None, BaseException | None]

# a record to store: key (the MQTT topic), value (the payload), headers (encoded)
Entry = tuple[bytes, bytes, bytes]


class SysTopicRefused(Exception):
    """A client PUBLISH on ``$SYS``, the broker's own tree: not published."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"{topic} is in the broker's $SYS tree")


class PublishNotAuthorized(Exception):
    """The ACLs do not let this client write the PUBLISH's Kafka topic."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"not authorized to publish to {topic}")


class PublishHost(Protocol):
    """The door, as publishing sees it."""

    @property
    def stats(self) -> SysCounters: ...

    def clock_ms(self) -> int: ...

    def kafka_target(self, mqtt_topic: str) -> TP | None: ...

    async def resolve_target(self, mqtt_topic: str) -> TP: ...

    def forget_targets(self) -> None: ...

    def append(
        self, writes: Sequence[tuple[str, int, Buffer]]
    ) -> Awaitable[list[AppendResult | KafkaError]]:
        """``Core.append_many``: applied before its first wait, durable when it returns."""
        ...

    def set_retained(self, publish: Publish, client_id: str) -> asyncio.Task[None]: ...

    def background(self, awaitable: Awaitable[Any]) -> None: ...


class Publisher(Protocol):
    """The session of the connection, as publishing sees it."""

    client_id: str
    pubrel_wait: set[int]
    dirty: bool


class Inbound:
    """The PUBLISHes of one connection (see the module docstring)."""

    def __init__(self, host: PublishHost, proto: ServerConnection) -> None:
        self.host = host
        self.proto = proto
        self._pending: dict[TP, list[Entry]] = {}
        self._unresolved: list[tuple[str, Entry]] = []  # (MQTT topic, record)
        self._stamp = 0  # the timestamp of the records added since the last flush
        self._retain_later: list[Publish] = []  # retained PUBLISHes to topics being created
        self._acks: list[Ack] = []  # QoS 1/2 PUBLISHes since the last flush
        self._retained_waits: list[asyncio.Task[None]] = []
        # the gate of the last flush that had topics to create, until it appended
        self._resolving: asyncio.Future[None] | None = None
        self._headers: dict[tuple[int, bool], bytes] = {}  # a plain PUBLISH's, encoded
        self._adding = 0  # bytes added since the last flush (topics, payloads, overhead)
        self.storing = 0  # bytes of flushed PUBLISHes not stored yet
        self.on_drained: Callable[[], None] | None = None  # storing fell to the limit
        self.authorize: Callable[[str], bool] | None = None  # may this MQTT topic be written?

    @property
    def busy(self) -> bool:
        """The connection should stop reading until ``on_drained``: too much is being
        stored, or a topic is being created."""
        resolving = self._resolving
        return self.storing > MAX_STORING or (resolving is not None and not resolving.done())

    def add(self, packet: Publish, publisher: Publisher) -> None:
        host = self.host
        stats = host.stats
        stats.publish_received += 1
        stats.publish_bytes_received += len(packet.payload)
        topic, qos, pid = packet.topic, packet.qos, packet.packet_id
        if qos == 2 and pid in publisher.pubrel_wait:
            self._acks.append((qos, pid, topic, None, None))  # stored already: PUBREC again
            return
        dest, target, error = self._route(topic)
        if error is not None:
            # 5.0: the reason in the ack; 3.1.1: no negative ack, the connection closes
            self._refused(qos, pid, topic, error)
            return
        props = packet.properties
        if plain_properties(props):
            headers = self._plain_headers(qos, packet.retain, publisher)
        else:
            headers = encode_headers(headers_for(props, qos, packet.retain, publisher.client_id))
        if not self._adding:
            self._stamp = host.clock_ms()
        record = (topic.encode(), packet.payload, headers)
        self._adding += len(packet.payload) + len(topic) + RECORD_OVERHEAD
        if dest is None:  # its Kafka topic is created first (retained: once it exists)
            self._unresolved.append((topic, record))
            if packet.retain:
                self._retain_later.append(packet)
        else:
            dest.append(record)
            if packet.retain:
                self._retain(packet, publisher.client_id, self._retained_waits)
        if qos:
            self._acks.append((qos, pid, topic, target, None))
            if qos == 2:
                assert pid is not None
                publisher.pubrel_wait.add(pid)
                publisher.dirty = True

    def _plain_headers(self, qos: int, retain: bool, publisher: Publisher) -> bytes:
        """The headers of every PUBLISH of this client without properties at this QoS and
        retain flag: encoded once."""
        headers = self._headers.get((qos, retain))
        if headers is None:
            headers = self._headers[(qos, retain)] = encode_headers(
                headers_for(empty_properties(), qos, retain, publisher.client_id)
            )
        return headers

    def add_run(self, run: PublishRun, publisher: Publisher) -> int:
        """``add`` for each PUBLISH of ``run`` (QoS 0/1, no properties, not retained), routed
        once per stretch of one topic.  The bytes of their topics and payloads (quotas)."""
        host = self.host
        items, names = run.items, run.names
        headers0 = self._plain_headers(0, False, publisher)
        headers1 = self._plain_headers(1, False, publisher)
        acks = self._acks
        unresolved = self._unresolved
        if not self._adding:
            self._stamp = host.clock_ms()
        last = b""
        name = ""
        dest: list[Entry] | None = None  # where the records of this topic go (None: not stored)
        target: TP | str | None = None
        error: Exception | None = None
        received = topics = stored = 0
        for _first, topic, payload, pid in items:
            received += len(payload)
            topics += len(topic)
            if topic != last:
                last, name = topic, names[topic]
                dest, target, error = self._route(name)
            if error is not None:
                self._refused(1 if pid else 0, pid, name, error)
                continue
            stored += len(topic) + len(payload)
            if dest is not None:
                dest.append((topic, payload, headers1 if pid else headers0))
            else:  # its Kafka topic is created first
                unresolved.append((name, (topic, payload, headers1 if pid else headers0)))
            if pid:
                acks.append((1, pid, name, target, None))
        self._adding += stored + RECORD_OVERHEAD * len(items)
        stats = host.stats
        stats.publish_received += len(items)
        stats.publish_bytes_received += received
        return received + topics

    def _refused(self, qos: int, pid: int | None, topic: str, error: Exception) -> None:
        """A PUBLISH not stored: its acknowledgement carries ``error``; at QoS 0 (nothing to
        answer) a ``$SYS`` one is noted."""
        if qos:
            self._acks.append((qos, pid, topic, None, error))
        elif isinstance(error, SysTopicRefused):
            log.debug("MQTT QoS 0 publish to %s dropped: the $SYS tree is the broker's", topic)

    def _route(self, topic: str) -> tuple[list[Entry] | None, TP | str | None, Exception | None]:
        """Where a plain PUBLISH to ``topic`` goes: the pending records of its partition
        (None: its Kafka topic is to be created), its acknowledgement's target, or why it is
        refused."""
        if is_sys(topic):
            return None, None, SysTopicRefused(topic)
        if self.authorize is not None and not self.authorize(topic):
            return None, None, PublishNotAuthorized(topic)
        tp = self.host.kafka_target(topic)
        if tp is None:
            return None, topic, None
        return self._pending.setdefault(tp, []), tp, None

    def _retain(self, packet: Publish, client_id: str, waits: list[asyncio.Task[None]]) -> None:
        wait = self.host.set_retained(packet, client_id)
        if packet.qos:
            waits.append(wait)  # its acknowledgement waits for the retained log too
        else:
            self.host.background(wait)

    def flush(self, publisher: Publisher | None) -> list[bytes] | Awaitable[list[bytes]] | None:
        """Store what was added since the last flush.  The acknowledgements to send: now
        (a list), once stored (an awaitable), or none (None).

        The record batches are built now: what waits for the store is bytes, not the
        PUBLISHes (a PUBLISH kept past this turn of the loop would be old garbage for the
        collector to walk)."""
        acks, self._acks = self._acks, []
        if not self._pending and not self._unresolved:
            # nothing to store: QoS 2 resends, $SYS refusals
            return self._ack_bytes(acks, {}, publisher) if acks else None
        stamp = self._stamp
        writes: list[tuple[str, int, Buffer]] = [
            (t, p, build_uniform_batch(stamp, records))
            for (t, p), records in self._pending.items()
            if records
        ]
        self._pending = {}
        unresolved, self._unresolved = self._unresolved, []
        retain_later, self._retain_later = self._retain_later, []
        waits, self._retained_waits = self._retained_waits, []
        size, self._adding = self._adding, 0
        ahead = self._resolving
        if ahead is not None and ahead.done():
            ahead = self._resolving = None
        job: Awaitable[list[bytes]]
        if unresolved:
            gate = self._resolving = asyncio.get_running_loop().create_future()
            client_id = publisher.client_id if publisher is not None else ""
            job = self._resolve_and_store(
                ahead,
                gate,
                writes,
                stamp,
                unresolved,
                retain_later,
                client_id,
                acks,
                waits,
                publisher,
            )
        elif ahead is not None:
            job = self._store_after(ahead, writes, acks, waits, publisher)
        else:
            job = self._store(writes, {}, acks, waits, publisher)
        self.storing += size
        job = self._counted(job, size)
        if acks:
            return job
        self.host.background(job)
        return None

    async def _counted(self, job: Awaitable[list[bytes]], size: int) -> list[bytes]:
        try:
            return await job
        finally:
            self.storing -= size
            if self.on_drained is not None and not self.busy:
                self.on_drained()

    async def _resolve_and_store(
        self,
        ahead: asyncio.Future[None] | None,
        gate: asyncio.Future[None],
        writes: list[tuple[str, int, Buffer]],
        stamp: int,
        unresolved: list[tuple[str, Entry]],
        retain_later: list[Publish],
        client_id: str,
        acks: list[Ack],
        waits: list[asyncio.Task[None]],
        publisher: Publisher | None,
    ) -> list[bytes]:
        """Create the Kafka topics ``unresolved`` needs, then store (see the module
        docstring for ``gate``)."""
        targets: dict[str, TP | BaseException] = {}
        try:
            if ahead is not None:
                await asyncio.shield(ahead)
            records: dict[TP, list[Entry]] = {}
            for mqtt_topic, record in unresolved:
                target = targets.get(mqtt_topic)
                if target is None:
                    try:
                        target = await self.host.resolve_target(mqtt_topic)
                    except KafkaError as exc:
                        log.debug("MQTT publish to %s refused: %s", mqtt_topic, exc)
                        target = exc
                    targets[mqtt_topic] = target
                if not isinstance(target, BaseException):
                    records.setdefault(target, []).append(record)
            writes += [
                (t, p, build_uniform_batch(stamp, batch)) for (t, p), batch in records.items()
            ]
            for packet in retain_later:
                if not isinstance(targets.get(packet.topic), BaseException):
                    self._retain(packet, client_id, waits)
        finally:
            gate.set_result(None)
            if self._resolving is gate:
                self._resolving = None
        return await self._store(writes, targets, acks, waits, publisher)

    async def _store_after(
        self,
        ahead: asyncio.Future[None],
        writes: list[tuple[str, int, Buffer]],
        acks: list[Ack],
        waits: list[asyncio.Task[None]],
        publisher: Publisher | None,
    ) -> list[bytes]:
        """Store once the resolving flush before this one appended (waiters wake in the
        order they came, and each appends before the next one runs)."""
        await asyncio.shield(ahead)
        return await self._store(writes, {}, acks, waits, publisher)

    async def _store(
        self,
        writes: list[tuple[str, int, Buffer]],
        targets: dict[str, TP | BaseException],
        acks: list[Ack],
        waits: list[asyncio.Task[None]],
        publisher: Publisher | None,
    ) -> list[bytes]:
        """Append the batches; the acknowledgements once stored."""
        results = await self.host.append(writes)
        failed: dict[TP | str, BaseException] = {}
        for (topic, p, _batch), result in zip(writes, results, strict=True):
            if isinstance(result, KafkaError):
                log.debug("MQTT publishes to %s-%d not stored: %s", topic, p, result)
                failed[(topic, p)] = result
        if failed:
            self.host.forget_targets()  # the topic may have changed under the cache
        for mqtt_topic, target in targets.items():
            error = target if isinstance(target, BaseException) else failed.get(target)
            if error is not None:
                failed[mqtt_topic] = error
        for wait in waits:
            await wait
        return self._ack_bytes(acks, failed, publisher) if acks else []

    def _ack_bytes(
        self,
        acks: list[Ack],
        failed: dict[TP | str, BaseException],
        publisher: Publisher | None,
    ) -> list[bytes]:
        """PUBACK/PUBREC for each QoS 1/2 PUBLISH, in order: success, or its error (5.0);
        a failure ends a 3.1.1 connection (it has no negative acknowledgement)."""
        proto = self.proto
        v5 = proto.version == MQTT_5
        out: list[bytes] = []
        run: list[int] = []  # packet ids of successful QoS 1 PUBLISHes in a row
        for qos, pid, topic, target, error in acks:
            assert pid is not None
            if error is None and target is not None and failed:
                error = failed.get(target)
            if error is None and qos == 1:
                run.append(pid)
                continue
            if run:
                out += proto.pubacks(run)
                run = []
            if isinstance(error, SysTopicRefused) and not v5:
                error = None  # 3.1.1 has no negative ack: acknowledged, not published
            if error is not None:
                if not v5:
                    raise MqttError(f"publish to {topic} failed: {error}")
                props = Properties(reason_string=str(error)[:200])
                reason = (
                    Reason.NOT_AUTHORIZED
                    if isinstance(error, SysTopicRefused | PublishNotAuthorized)
                    else Reason.IMPLEMENTATION_SPECIFIC_ERROR
                )
                if qos == 2:
                    if publisher is not None:
                        publisher.pubrel_wait.discard(pid)
                    out.append(proto.send(PubRec(pid, reason, props)))
                else:
                    out.append(proto.send(PubAck(pid, reason, props)))
                continue
            if qos == 1:
                out.append(proto.send(PubAck(pid)))
            else:
                out.append(proto.send(PubRec(pid)))
        if run:
            out += proto.pubacks(run)
        return out
