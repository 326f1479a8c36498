"""Publishing: one connection's PUBLISHes on their way to the log, and their acknowledgements.

Theory of operation
-------------------
The connection hands every PUBLISH of a read to ``Inbound.add``, which turns it into a
``Record`` (key = the MQTT topic, headers = its properties; the headers of a PUBLISH without
properties are built once per client, QoS and retain flag) and files it under its (Kafka
topic, partition) — cached by the gateway (``kafka_target``).  Before any other packet, and
at the end of the read, the connection calls ``flush``: the records go to the core as one
batch per partition in one ``append_many``, run as a task; the engine makes them as durable
as each topic asks before it returns.  The acknowledgements (PUBACK, PUBREC, in the
PUBLISHes' order; a 5.0 error reason for a failed one) are the task's result, which the
connection sends through its ordered output queue.  A read of QoS 0 PUBLISHes only is
stored in the background.

Order: tasks start in the order they are made, and the engine applies an append before it
first waits, so the records of successive flushes land in publish order.  A PUBLISH whose
Kafka topic does not exist yet must first have it created (``resolve_target``, through
``Core.topic``: off the event loop, refused when auto-creation is off); its flush is a
*resolving* one, and the flushes after it wait for its ``gate``, opened just before it
appends (the append runs before they resume).  A retained PUBLISH updates the retained tree
at once and its retained-log write starts at once (so those land in order too); a QoS 1/2
acknowledgement waits for that write as well.  The retained message of a PUBLISH to a topic
that must be created is set once the topic exists.

QoS 2 is "store on PUBLISH": the record is appended when the PUBLISH arrives and its packet
id stays in the session (``pubrel_wait``) until PUBREL, so a resent PUBLISH (DUP) is
acknowledged without a second append.  A PUBLISH to ``$SYS``, the broker's own tree, is not
stored: 5.0 gets reason 0x87, 3.1.1 (no negative acknowledgement) a normal one.  Any other
failure ends a 3.1.1 connection (``MqttError`` from the task).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from bayou.errors import KafkaError
from bayou.gateways.mqtt.mapping import headers_for, plain_properties
from bayou.gateways.mqtt.messages import TP
from bayou.gateways.mqtt.systree import SysCounters
from bayou.protocol.kafka.records import Record, build_batch
from bayou.protocol.mqtt import MQTT_5, MqttError, ServerConnection
from bayou.protocol.mqtt.packets import Properties, PubAck, Publish, PubRec, Reason
from bayou.protocol.mqtt.topics import is_sys
from bayou.storage.engine import AppendResult, Buffer

log = logging.getLogger("bayou.mqtt")

# a PUBLISH to acknowledge: its target (partition, or MQTT topic while its Kafka topic is
# being created; None: not stored) and an error known before storing
Ack = tuple[Publish, TP | str | None, BaseException | None]


class SysTopicRefused(Exception):
    """A client PUBLISH on ``$SYS``, the broker's own tree: not published."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"{topic} is in the broker's $SYS tree")


class PublishHost(Protocol):
    """The door, as publishing sees it."""

    @property
    def stats(self) -> SysCounters: ...

    def clock_ms(self) -> int: ...

    def kafka_target(self, mqtt_topic: str) -> TP | None: ...

    async def resolve_target(self, mqtt_topic: str) -> TP: ...

    def forget_targets(self) -> None: ...

    async def append(
        self, writes: Sequence[tuple[str, int, Buffer]]
    ) -> list[AppendResult | KafkaError]: ...

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
        self._pending: dict[TP, list[Record]] = {}
        self._unresolved: list[tuple[str, Record]] = []  # (MQTT topic, record)
        self._acks: list[Ack] = []
        self._retained_waits: list[asyncio.Task[None]] = []
        self._resolving: asyncio.Future[None] | None = None  # the gate of the last one
        self._headers: dict[tuple[int, bool], list[tuple[str, bytes | None]]] = {}

    def add(self, packet: Publish, publisher: Publisher) -> None:
        host = self.host
        stats = host.stats
        stats.publish_received += 1
        stats.publish_bytes_received += len(packet.payload)
        if is_sys(packet.topic):
            self._acks.append((packet, None, SysTopicRefused(packet.topic)))
            return
        if packet.qos == 2 and packet.packet_id in publisher.pubrel_wait:
            self._acks.append((packet, None, None))  # already stored: just PUBREC again
            return
        props = packet.properties
        if plain_properties(props):
            # The same headers for every plain PUBLISH of this client at this QoS/retain:
            # built once (build_batch only reads them).
            key = (packet.qos, packet.retain)
            headers = self._headers.get(key)
            if headers is None:
                headers = self._headers[key] = headers_for(
                    props, packet.qos, packet.retain, publisher.client_id
                )
        else:
            headers = headers_for(props, packet.qos, packet.retain, publisher.client_id)
        record = Record(host.clock_ms(), packet.topic.encode(), packet.payload, headers)
        tp = host.kafka_target(packet.topic)
        if tp is None:  # its Kafka topic is created first (retained: once it exists)
            self._unresolved.append((packet.topic, record))
            self._acks.append((packet, packet.topic, None))
        else:
            self._pending.setdefault(tp, []).append(record)
            self._acks.append((packet, tp, None))
            if packet.retain:
                self._retain(packet, publisher.client_id, self._retained_waits)
        if packet.qos == 2:
            assert packet.packet_id is not None
            publisher.pubrel_wait.add(packet.packet_id)
            publisher.dirty = True

    def _retain(self, packet: Publish, client_id: str, waits: list[asyncio.Task[None]]) -> None:
        wait = self.host.set_retained(packet, client_id)
        if packet.qos:
            waits.append(wait)  # its acknowledgement waits for the retained log too
        else:
            self.host.background(wait)

    def flush(self, publisher: Publisher | None) -> list[bytes] | Awaitable[list[bytes]] | None:
        """Store what was added since the last flush.  The acknowledgements to send: now
        (a list), once stored (an awaitable), or none (None)."""
        if not self._acks:
            return None
        pending, self._pending = self._pending, {}
        unresolved, self._unresolved = self._unresolved, []
        acks, self._acks = self._acks, []
        waits, self._retained_waits = self._retained_waits, []
        if not pending and not unresolved:  # nothing to store: resends, $SYS refusals
            return self._ack_bytes(acks, {}, publisher)
        job: Awaitable[list[bytes]]
        if unresolved or self._resolving is not None:
            ahead = self._resolving
            gate = self._resolving = asyncio.get_running_loop().create_future()
            job = self._resolve_and_store(ahead, gate, publisher, pending, unresolved, acks, waits)
        else:
            job = self._store(pending, {}, acks, waits, publisher)
        if any(packet.qos for packet, _target, _error in acks):
            return job
        self.host.background(job)
        return None

    async def _resolve_and_store(
        self,
        ahead: asyncio.Future[None] | None,
        gate: asyncio.Future[None],
        publisher: Publisher | None,
        pending: dict[TP, list[Record]],
        unresolved: list[tuple[str, Record]],
        acks: list[Ack],
        waits: list[asyncio.Task[None]],
    ) -> list[bytes]:
        """Create the Kafka topics ``unresolved`` needs, then store (see the module
        docstring for ``gate``)."""
        targets: dict[str, TP | BaseException] = {}
        try:
            if ahead is not None:
                await ahead
            for mqtt_topic, record in unresolved:
                target = targets.get(mqtt_topic)
                if target is None:
                    try:
                        target = await self.host.resolve_target(mqtt_topic)
                    except KafkaError as exc:
                        target = exc
                    targets[mqtt_topic] = target
                if not isinstance(target, BaseException):
                    pending.setdefault(target, []).append(record)
            client_id = publisher.client_id if publisher is not None else ""
            for packet, target_of, _error in acks:
                if (
                    packet.retain
                    and isinstance(target_of, str)
                    and not isinstance(targets.get(target_of), BaseException)
                ):
                    self._retain(packet, client_id, waits)
        finally:
            gate.set_result(None)
            if self._resolving is gate:
                self._resolving = None
        return await self._store(pending, targets, acks, waits, publisher)

    async def _store(
        self,
        pending: dict[TP, list[Record]],
        targets: dict[str, TP | BaseException],
        acks: list[Ack],
        waits: list[asyncio.Task[None]],
        publisher: Publisher | None,
    ) -> list[bytes]:
        """Append one batch per partition; the acknowledgements once stored."""
        writes = [(tp[0], tp[1], build_batch(records)) for tp, records in pending.items()]
        results = await self.host.append(writes)
        failed: dict[TP | str, BaseException] = {}
        for (topic, p, _batch), result in zip(writes, results, strict=True):
            if isinstance(result, KafkaError):
                failed[(topic, p)] = result
        if failed:
            self.host.forget_targets()  # the topic may have changed under the cache
        for mqtt_topic, target in targets.items():
            error = target if isinstance(target, BaseException) else failed.get(target)
            if error is not None:
                failed[mqtt_topic] = error
        for wait in waits:
            await wait
        return self._ack_bytes(acks, failed, publisher)

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
        for packet, target, error in acks:
            if error is None and target is not None:
                error = failed.get(target)
            if packet.qos == 0:
                if error is not None:
                    log.debug("MQTT QoS 0 publish to %s dropped: %s", packet.topic, error)
                continue
            assert packet.packet_id is not None
            if isinstance(error, SysTopicRefused) and not v5:
                error = None  # 3.1.1 has no negative ack: acknowledged, not published
            if error is not None:
                if not v5:
                    raise MqttError(f"publish to {packet.topic} failed: {error}")
                props = Properties(reason_string=str(error)[:200])
                reason = (
                    Reason.NOT_AUTHORIZED
                    if isinstance(error, SysTopicRefused)
                    else Reason.IMPLEMENTATION_SPECIFIC_ERROR
                )
                if packet.qos == 2:
                    if publisher is not None:
                        publisher.pubrel_wait.discard(packet.packet_id)
                    out.append(proto.send(PubRec(packet.packet_id, reason, props)))
                else:
                    out.append(proto.send(PubAck(packet.packet_id, reason, props)))
                continue
            if packet.qos == 1:
                out.append(proto.send(PubAck(packet.packet_id)))
            else:
                out.append(proto.send(PubRec(packet.packet_id)))
        return out
