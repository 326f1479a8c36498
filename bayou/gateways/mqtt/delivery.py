"""Delivery: a session's way out — its queue, the pump that sends, catch-up from the log.

Theory of operation
-------------------
Messages reach a session's ``Outbox`` in two ways.  *Live*: a partition's tailer decodes
each new record once, matches its MQTT topic in the subscription trie and ``offer``s it to
every matching session, which queues it.  *Catch-up*: when a session cannot take a message
— it is offline, or its queue is full because the client reads slowly — it records
``behind[partition] = offset`` and drops the message from memory (an offline session's QoS 0
messages are not kept; a connected slow reader gets them back through catch-up).  From then
on the tailer skips it for that partition, and a catch-up task re-reads the partition's log
from that offset (``ChunkCache``: reads shared with the other sessions behind there, never
blocking the event loop), filtering with the session's own filters, until it reaches the
tailer's position and goes live again.  The log is the queue: memory per session is bounded
by ``MAX_QUEUED`` plus the in-flight window, whatever the publishers do.

``pump`` (scheduled with ``call_soon``, so many offers make one pump) sends from the queue
while the in-flight window has room and the transport is not paused, pulls messages
waiting in the session's share groups, and starts the catch-up task when the queue runs dry
while the session is behind.  The catch-up task reads one chunk per partition it is behind
on, queues what matches (up to ``MAX_QUEUED``), and pumps; it goes on while it makes
progress and the queue stays empty, and ends when the session is live again, goes offline,
or is stuck (no tailer to catch up to).  A session restoring its in-flight window after a
restart is *held*: nothing is sent before the resends.

*Positions* (per partition, the first offset not yet handed to the client: the oldest queued
offset, the catch-up offset, or the tailer's position) are what a persistent session keeps
as its consumer group's committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from bayou.errors import KafkaError
from bayou.gateways.mqtt.catch_up import DecodedChunk
from bayou.gateways.mqtt.inflight import DEFAULT_INFLIGHT, InflightWindow
from bayou.gateways.mqtt.interfaces import Connection, SessionHost
from bayou.gateways.mqtt.messages import TP, Delivery, Message, Run
from bayou.gateways.mqtt.subscriptions import SubOptions, merge_options
from bayou.protocol.mqtt.codec import add_topic_alias, encode_publish
from bayou.protocol.mqtt.packets import MQTT_5, PubRel

log = logging.getLogger("bayou.mqtt")

MAX_QUEUED = 1000
WRITE_BATCH = 256  # PUBLISHes joined into one write


class Recipient(Protocol):
    """The session an outbox belongs to."""

    client_id: str
    dirty: bool  # its durable state changed

    @property
    def persistent(self) -> bool: ...

    def own_match(self, topic: str) -> list[SubOptions]:
        """The options of its own (not shared) subscriptions matching ``topic``."""
        ...

    def pull_shared(self) -> bool:
        """Take one ``$SYS`` message waiting in one of its share groups; False when none."""
        ...


class Outbox:
    """The outbound half of a session (see the module docstring)."""

    def __init__(self, recipient: Recipient, host: SessionHost) -> None:
        self.recipient = recipient
        self.host = host
        self.conn: Connection | None = None
        self.queue: deque[Delivery] = deque()
        # messages beyond one per queued delivery (the runs of ``offer_run``): the queue holds
        # ``len(queue) + _run_extra`` messages, at most MAX_QUEUED
        self._run_extra = 0
        self.behind: dict[TP, int] = {}
        self.window = InflightWindow()
        self.held = False  # restoring the in-flight window: send nothing yet
        self._pump_scheduled = False
        self._catch_up: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ taking messages

    def can_take(self) -> bool:
        c = self.conn
        return c is not None and not c.paused and len(self.queue) + self._run_extra < MAX_QUEUED

    def offer(self, msg: Message, options: list[SubOptions], tp: TP, offset: int) -> None:
        """From the tailer: a record of ``tp`` that matches the session's filters."""
        if tp in self.behind:
            self.schedule_pump()
            return
        recipient = self.recipient
        merged = merge_options(options, msg.origin, recipient.client_id, msg.qos)
        if merged is None:
            return
        qos, rap, ids = merged
        queue = self.queue
        if self.conn is None or len(queue) + self._run_extra >= MAX_QUEUED:
            # Connected but slow: the log keeps the rest.  Offline: only a persistent session
            # keeps its QoS 1/2 messages (QoS 0 to an offline client is dropped).
            if self.conn is not None or (recipient.persistent and qos > 0):
                self.behind[tp] = offset
                recipient.dirty = True
            return
        queue.append(Delivery(msg, qos, rap and msg.retain, ids, tp, offset, True))
        if not self._pump_scheduled:
            self.schedule_pump()

    def offer_run(self, run: Run, options: list[SubOptions]) -> None:
        """From the tailer: ``run``'s records all match the session's filters.  A plain QoS 0
        subscription (no No Local, Retain As Published, subscription id or topic aliases)
        takes them as one ``Delivery`` of the run's shared PUBLISH bytes; anything else takes
        them one by one (``offer``)."""
        tp = run.tp
        if tp in self.behind:
            self.schedule_pump()
            return
        c = self.conn
        queue = self.queue
        count = len(run.offsets)
        if (
            c is not None
            and len(options) == 1
            and len(queue) + self._run_extra + count <= MAX_QUEUED
        ):
            opts = options[0]
            proto = c.proto
            if (
                opts.qos == 0
                and not opts.no_local
                and not opts.retain_as_published  # a run's PUBLISHes have RETAIN clear
                and opts.sub_id is None
                and proto.outbound_aliases is None
            ):
                wire, largest = run.wire(proto.version == MQTT_5)
                if largest <= proto.client_max_packet_size:
                    offsets = run.offsets
                    self._run_extra += count - 1
                    queue.append(
                        Delivery(
                            run.messages[0],
                            0,
                            False,
                            (),
                            tp,
                            offsets[0],
                            True,
                            wire=wire,
                            count=count,
                            nbytes=run.nbytes,
                        )
                    )
                    if not self._pump_scheduled:
                        self.schedule_pump()
                    return
        for msg, offset in zip(run.messages, run.offsets, strict=True):
            self.offer(msg, options, tp, offset)

    def offer_unlogged(self, msg: Message, options: list[SubOptions]) -> None:
        """A message that is in no log (``$SYS``): queued if connected with room, else
        skipped — there is no log to catch up from."""
        if self.conn is None or len(self.queue) + self._run_extra >= MAX_QUEUED:
            return
        merged = merge_options(options, msg.origin, self.recipient.client_id, msg.qos)
        if merged is not None:
            qos, rap, ids = merged
            self.enqueue(Delivery(msg, qos, rap and msg.retain, ids, None, 0, False))

    def enqueue(self, delivery: Delivery, pump: bool = True) -> None:
        self.queue.append(delivery)
        if pump:
            self.schedule_pump()

    def schedule_pump(self) -> None:
        if not self._pump_scheduled and self.conn is not None:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self.pump)

    # ------------------------------------------------------------------ sending

    def inflight_limit(self) -> int:
        """The client's Receive Maximum (3.1.1: ``DEFAULT_INFLIGHT``); 0 when offline."""
        c = self.conn
        if c is None:
            return 0
        proto = c.proto
        return proto.client_receive_maximum if proto.version == MQTT_5 else DEFAULT_INFLIGHT

    def send_window(self) -> int:
        return self.inflight_limit() - len(self.window)

    def pump(self) -> None:
        self._pump_scheduled = False
        c = self.conn
        if c is None or c.paused or self.held:
            return
        out: list[bytes] = []
        now = self.host.clock_ms()
        window = self.send_window()
        inflight = self.window
        queue = self.queue
        proto = c.proto
        # the common delivery — no expiry, no subscription ids, no topic aliases, no DUP — takes
        # its message's shared PUBLISH bytes; any other is encoded for this session (``_encode``)
        plain = proto.outbound_aliases is None
        v5 = proto.version == MQTT_5
        max_size = proto.client_max_packet_size
        sent = payload_bytes = 0
        pending = 0  # messages in ``out``
        by_topic: dict[str, list[int]] = {}  # Kafka topic -> [messages, payload bytes]
        topic: str | None = None  # the Kafka topic of the run of deliveries counted below
        run = run_bytes = 0
        while True:
            if not queue:
                if self.recipient.pull_shared():
                    continue
                if self.behind:
                    self._start_catch_up()
                break
            d = queue[0]
            qos = d.qos
            if qos and window <= 0:
                break
            queue.popleft()
            wire = d.wire
            if wire is not None:  # a run of QoS 0 PUBLISHes (``offer_run``)
                out.append(wire)
                n, size = d.count, d.nbytes
                self._run_extra -= n - 1
            else:
                msg = d.msg
                share = d.share
                dup = qos > 0 and share is not None and share.redelivered
                pid = inflight.add(d) if qos else None
                data: bytes | None
                tail: bytes | None = None  # after the packet id, when ``data`` stops before it
                if plain and not dup and msg.expiry_at is None and not d.sub_ids:
                    # its shared bytes, around the packet id: no PUBLISH joined per session
                    data, tail = msg.publish_parts(v5, qos, d.retain)
                    if len(data) + len(tail) + (2 if qos else 0) > max_size:
                        self.host.stats.publish_dropped += 1
                        data = None  # the client could not take it: discarded, as the spec says
                else:
                    data = self._encode(d, pid, dup, now)
                if data is None:
                    if pid is not None:
                        del inflight.entries[pid]
                    if share is not None:
                        share.settle(False)
                    continue
                if qos:
                    window -= 1
                elif share is not None:
                    share.settle(True)
                out.append(data)
                if pid is not None and tail is not None:
                    out.append(pid.to_bytes(2, "big"))
                    out.append(tail)
                n, size = 1, len(msg.payload)
            pending += n
            payload_bytes += size
            tp = d.tp
            if tp is not None:
                if tp[0] != topic:
                    if run:
                        self._count(by_topic, topic, run, run_bytes)
                    topic, run, run_bytes = tp[0], 0, 0
                run += n
                run_bytes += size
            if pending >= WRITE_BATCH:
                sent += pending
                c.write_many(out, pending)
                pending = 0
                out = []
                if c.paused:
                    break
        if out:
            sent += pending
            c.write_many(out, pending)
        if run:
            self._count(by_topic, topic, run, run_bytes)
        if sent:
            self.recipient.dirty = True  # its positions moved
            stats = self.host.stats
            stats.publish_sent += sent
            stats.publish_bytes_sent += payload_bytes
            traffic = self.host.traffic
            for kafka_topic, (messages, nbytes) in by_topic.items():
                traffic.sent(kafka_topic, messages, nbytes)

    @staticmethod
    def _count(by_topic: dict[str, list[int]], topic: str | None, n: int, nbytes: int) -> None:
        assert topic is not None
        counts = by_topic.get(topic)
        if counts is None:
            by_topic[topic] = [n, nbytes]
        else:
            counts[0] += n
            counts[1] += nbytes

    def _encode(self, d: Delivery, pid: int | None, dup: bool, now: int) -> bytes | None:
        c = self.conn
        assert c is not None
        proto = c.proto
        msg = d.msg
        aliases = proto.outbound_aliases
        if proto.version == MQTT_5:
            props = msg.v5_properties(d.sub_ids, now)
            if props is None:
                return None  # expired
        else:
            if msg.expired(now):
                return None
            props = None
        topic = msg.topic_bytes
        plan = None
        if aliases is not None and props is not None:
            plan = aliases.plan(topic)
            if plan is not None:
                props = add_topic_alias(props, plan[0])
                if plan[1]:
                    topic = b""  # the client knows the alias
        data = encode_publish(topic, msg.payload, d.qos, d.retain, dup, pid, props)
        if len(data) > proto.client_max_packet_size:
            self.host.stats.publish_dropped += 1
            return None  # the client could not take it: discarded, as the spec says
        if aliases is not None:
            aliases.commit(msg.topic_bytes, plan)
        return data

    def resend_inflight(self) -> None:
        """After a reconnect: resend unacknowledged PUBLISHes (DUP) and PUBRELs, in order."""
        c = self.conn
        if c is None:
            return
        now = self.host.clock_ms()
        stats = self.host.stats
        entries = self.window.entries
        out: list[bytes] = []
        for pid, entry in list(entries.items()):
            if entry.released:
                out.append(c.proto.send(PubRel(pid)))
                continue
            data = self._encode(entry.delivery, pid, True, now)
            if data is None:
                del entries[pid]
                if entry.delivery.share is not None:
                    entry.delivery.share.settle(False)
                continue
            out.append(data)
            stats.publish_sent += 1
            stats.publish_bytes_sent += len(entry.delivery.msg.payload)
        if out:
            c.write_many(out)

    # ------------------------------------------------------------------ acknowledgements

    def on_puback(self, pid: int) -> bool:
        entry = self.window.entries.get(pid)
        if not self.window.on_puback(pid):
            return False
        if entry is not None and entry.delivery.share is not None:
            entry.delivery.share.settle(True)
        self.recipient.dirty = True
        self.schedule_pump()
        return True

    def on_pubacks(self, pids: list[int]) -> None:
        """PUBACKs read together: every slot they free is freed, then one pump refills the
        window (``on_puback`` for each, in fewer steps)."""
        entries = self.window.entries
        freed = False
        for pid in pids:
            entry = entries.get(pid)
            if entry is None or entry.delivery.qos != 1:
                continue  # not in flight, or QoS 2 (as ``InflightWindow.on_puback``)
            del entries[pid]
            freed = True
            share = entry.delivery.share
            if share is not None:
                share.settle(True)
        if freed:
            self.recipient.dirty = True
            self.schedule_pump()

    def on_pubrec(self, pid: int, failed: bool) -> bool:
        entry = self.window.entries.get(pid)
        if not self.window.on_pubrec(pid, failed):
            return False
        if failed and entry is not None and entry.delivery.share is not None:
            entry.delivery.share.settle(True)  # the client answered: the exchange is over
        self.recipient.dirty = True
        if failed:
            self.schedule_pump()
        return True

    def on_pubcomp(self, pid: int) -> bool:
        entry = self.window.entries.get(pid)
        if not self.window.on_pubcomp(pid):
            return False
        if entry is not None and entry.delivery.share is not None:
            entry.delivery.share.settle(True)
        self.recipient.dirty = True
        self.schedule_pump()
        return True

    # ------------------------------------------------------------------ catch-up

    def _start_catch_up(self) -> None:
        if self._catch_up is None:
            self._catch_up = asyncio.ensure_future(self._run_catch_up())

    async def _run_catch_up(self) -> None:
        try:
            while self.conn is not None and not self.queue and self.behind:
                if not await self.catch_up():
                    break
        except Exception:
            log.exception("MQTT catch-up of %s failed", self.recipient.client_id)
        finally:
            self._catch_up = None
        if self.queue:
            self.schedule_pump()

    async def catch_up(self) -> bool:
        """Read one chunk of each partition the session is behind on, until one queues
        something; True when it queued or moved on (False: nothing to do now)."""
        host = self.host
        progress = False
        for tp in list(self.behind):
            was = self.behind.get(tp)
            if was is None:
                continue
            bounds = host.log_bounds(tp)
            if bounds is None:  # the partition is gone
                del self.behind[tp]
                progress = True
                continue
            live = host.live_position(tp)
            live_at = bounds[1] if live is None else live
            offset = max(was, bounds[0])
            if offset >= live_at:
                if live is not None:
                    del self.behind[tp]
                    progress = True
                elif offset != was:
                    self.behind[tp] = offset
                    progress = True
                continue
            try:
                chunk = await host.catch_up_chunk(tp, offset)
            except KafkaError:  # deleted meanwhile
                self.behind.pop(tp, None)
                progress = True
                continue
            if self.conn is None:
                return False
            if self.behind.get(tp) != was:
                continue  # changed while reading: look again on the next pass
            live = host.live_position(tp)
            if live is not None:
                live_at = live
            queued = self._queue_from(chunk, tp, offset, live_at, live is not None)
            progress = progress or queued > 0 or self.behind.get(tp) != was
            if queued:
                return True
        return progress

    def _queue_from(
        self, chunk: DecodedChunk, tp: TP, offset: int, live_at: int, tailed: bool
    ) -> int:
        """Queue the records of ``chunk`` from ``offset`` up to ``live_at`` that match the
        session's own filters; move ``behind[tp]`` on (or drop it: live again)."""
        recipient = self.recipient
        client_id = recipient.client_id
        queue = self.queue
        append = queue.append
        room = MAX_QUEUED - len(queue) - self._run_extra
        queued = 0
        matched: dict[str, list[SubOptions]] = {}  # MQTT topic → own matches, this read
        offsets, topics, message = chunk.offsets, chunk.topics, chunk.message
        for i in range(bisect_left(offsets, offset), len(offsets)):
            rec_offset = offsets[i]
            if rec_offset >= live_at:
                break
            if queued >= room:
                self.behind[tp] = rec_offset
                recipient.dirty = True
                return queued
            msg_topic = topics[i]
            options = matched.get(msg_topic)
            if options is None:
                options = matched[msg_topic] = recipient.own_match(msg_topic)
            offset = rec_offset + 1
            if not options:
                continue
            msg = message(i)
            if len(options) == 1:  # ``merge_options`` of one subscription, inline
                opts = options[0]
                if opts.no_local and msg.origin == client_id:
                    continue
                qos, rap, ids = opts.single[msg.qos]
            else:
                merged = merge_options(options, msg.origin, client_id, msg.qos)
                if merged is None:
                    continue
                qos, rap, ids = merged
            append(Delivery(msg, qos, rap and msg.retain, ids, tp, rec_offset, True))
            queued += 1
        offset = max(offset, min(chunk.end, live_at))
        if offset >= live_at and tailed:
            del self.behind[tp]
        else:
            self.behind[tp] = offset
        recipient.dirty = True
        return queued

    # ------------------------------------------------------------------ positions

    def positions(self, interest: Iterable[TP]) -> dict[TP, int]:
        """Per partition, the first offset not yet handed to the client."""
        out: dict[TP, int] = {}
        for d in self.queue:
            if d.tracked and d.tp is not None and d.tp not in out:
                out[d.tp] = d.offset
        for tp, offset in self.behind.items():
            out[tp] = min(offset, out.get(tp, offset))
        host = self.host
        for tp in interest:
            if tp not in out:
                live = host.live_position(tp)
                if live is not None:
                    out[tp] = live
        return out

    def go_offline(self) -> None:
        """The connection ended: fall back to the log for everything still queued.  What
        shared subscriptions handed over, queued or in flight, is dropped: their share
        groups get it back (``SharedMember.disconnect``)."""
        entries = self.window.entries
        for pid in [pid for pid, e in entries.items() if e.delivery.share is not None]:
            del entries[pid]
        for d in self.queue:
            # a partition can be both queued and behind (the queue overflowed, or a catch-up
            # read queued a stretch): the earliest queued offset is where to resume —
            # ``behind`` alone would skip what the queue held
            if d.tracked and d.tp is not None and d.offset < self.behind.get(d.tp, d.offset + 1):
                self.behind[d.tp] = d.offset
        self.queue.clear()
        self._run_extra = 0
        self.conn = None
        self.recipient.dirty = True
