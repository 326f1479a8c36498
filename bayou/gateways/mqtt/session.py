"""MQTT sessions: subscriptions, the outbound queue and in-flight window, catch-up from the log.

Theory of operation
-------------------
Messages reach a session in two ways.  *Live*: a partition's tailer decodes each new record
once, matches its MQTT topic in the subscription trie and ``offer``s it to every matching
session, which queues it.  *Catch-up*: when a session cannot take a message — it is offline,
or its queue is full because the client reads slowly — it records ``behind[partition] =
offset`` and drops the message from memory (an offline session's QoS 0 messages are not
kept; a connected slow reader gets them back through catch-up).  From then on the
tailer skips it for that partition, and ``pump`` later re-reads the partition's log from that
offset, filtering with the session's own filters, until it reaches the tailer's position and
goes live again.  The log is the queue: memory per session is bounded by ``MAX_QUEUED``
plus the in-flight window, whatever the publishers do.

A session's durable state is its subscriptions, its *positions* (per partition, the first
offset not yet handed to the client: the oldest queued offset, the catch-up offset, or the
tailer's position) and its in-flight packets (partition, offset, packet id, state) — like a
consumer's committed offsets.  After a restart every partition starts behind at its position,
and in-flight messages are read back from the log and resent with DUP set.

Shared subscriptions (``$share/group/filter``) are owned by a ``ShareGroup``: the tailer
offers to the group, which hands each message to one connected member with room (round
robin), or keeps QoS 1/2 messages in a bounded pending queue until a member has room.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bayou.protocol.kafka.records import DecodedRecord, iter_batches, iter_records
from bayou.protocol.mqtt.codec import add_topic_alias, encode_properties, encode_publish
from bayou.protocol.mqtt.packets import MQTT_5, Properties, PubRel
from bayou.protocol.mqtt.topics import matches

if TYPE_CHECKING:
    from bayou.gateways.mqtt.client import MqttClient
    from bayou.gateways.mqtt.server import MqttGateway
    from bayou.gateways.mqtt.systree import SysCounters

log = logging.getLogger(__name__)

TP = tuple[str, int]
_U16 = struct.Struct(">H")
MAX_QUEUED = 1000
MAX_GROUP_PENDING = 10_000
DEFAULT_INFLIGHT = 20  # 3.1.1 clients announce no Receive Maximum
CATCH_UP_READ = 256 * 1024
NEVER_EXPIRES = 0xFFFFFFFF


@dataclass
class SubOptions:
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    sub_id: int | None = None

    def dump(self) -> list[Any]:
        return [self.qos, self.no_local, self.retain_as_published, self.retain_handling,
                self.sub_id]

    @classmethod
    def load(cls, raw: list[Any]) -> SubOptions:
        return cls(int(raw[0]), bool(raw[1]), bool(raw[2]), int(raw[3]),
                   None if raw[4] is None else int(raw[4]))


class Message:
    """One message to deliver, shared by every session it goes to."""

    __slots__ = ("_v5", "_wire", "expiry_at", "origin", "payload", "props", "qos", "retain",
                 "topic", "topic_bytes")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, origin: str | None,
                 expiry_at: int | None, props: Properties) -> None:
        self.topic = topic
        self.topic_bytes = topic.encode()
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.origin = origin
        self.expiry_at = expiry_at
        self.props = props
        self._v5: bytes | None = None
        # (5.0?, qos, retain) → the PUBLISH without packet id, encoded once for every session
        # it goes to: QoS 0 the whole packet, QoS 1/2 the bytes before and after the id
        self._wire: dict[tuple[bool, int, bool], tuple[bytes, bytes]] | None = None

    def publish_bytes(self, v5: bool, qos: int, retain: bool, pid: int | None) -> bytes:
        """The PUBLISH for a message without expiry sent without subscription ids or DUP."""
        key = (v5, qos, retain)
        wire = self._wire
        if wire is None:
            wire = self._wire = {}
        parts = wire.get(key)
        if parts is None:
            props = self.v5_properties((), 0) if v5 else None
            full = encode_publish(self.topic_bytes, self.payload, qos, retain, False,
                                  1 if qos else None, props)
            if qos:
                cut = 1
                while full[cut] & 0x80:  # the remaining length's continuation bytes
                    cut += 1
                cut += 3 + len(self.topic_bytes)  # its last byte, topic length, topic
                parts = (full[:cut], full[cut + 2 :])
            else:
                parts = (full, b"")
            wire[key] = parts
        if pid is None:
            return parts[0]
        return parts[0] + _U16.pack(pid) + parts[1]

    def v5_properties(self, sub_ids: tuple[int, ...], now: int) -> bytes | None:
        """Encoded 5.0 properties, or None when the message has expired."""
        if self.expiry_at is None and not sub_ids:
            if self._v5 is None:
                self._v5 = encode_properties(self.props)
            return self._v5
        props = Properties(**{k: getattr(self.props, k) for k in (
            "payload_format_indicator", "content_type", "response_topic", "correlation_data",
            "user_properties")})
        if self.expiry_at is not None:
            remaining = (self.expiry_at - now + 999) // 1000
            if remaining <= 0:
                return None
            props.message_expiry_interval = remaining
        props.subscription_identifiers = list(sub_ids)
        return encode_properties(props)

    def expired(self, now: int) -> bool:
        return self.expiry_at is not None and now >= self.expiry_at


class DecodedChunk:
    """One catch-up read of a partition, decoded once and shared by the sessions that catch
    up through it (their ``Message`` objects too, so a PUBLISH is encoded once for all).

    ``offsets``/``topics``/``records`` are the records of the whole data batches read from
    ``start`` (control batches left out); ``end`` is the offset after the last batch read.
    """

    __slots__ = ("_messages", "end", "gateway", "offsets", "plog", "records", "start",
                 "topics")

    def __init__(self, gateway: MqttGateway, tp: TP, plog: Any, start: int) -> None:
        self.gateway = gateway
        self.plog = plog
        self.start = start
        self.end = start
        self.offsets: list[int] = []
        self.topics: list[str] = []
        self.records: list[DecodedRecord] = []
        self._messages: dict[int, Message] = {}
        mapper = gateway.mapper
        topic_of: dict[bytes | None, str] = {}
        data = plog.read(start, CATCH_UP_READ)
        view = memoryview(data)
        for pos, header in iter_batches(data):
            self.end = max(self.end, header.last_offset + 1)
            if header.last_offset < start or header.is_control:
                continue
            for rec in iter_records(view[pos : pos + header.size]):
                if rec.offset < start:
                    continue
                key = rec.key
                mqtt_topic = topic_of.get(key)
                if mqtt_topic is None:
                    mqtt_topic = topic_of[key] = mapper.mqtt_topic(tp[0], key)
                self.offsets.append(rec.offset)
                self.topics.append(mqtt_topic)
                self.records.append(rec)

    def covers(self, plog: Any, offset: int) -> bool:
        return plog is self.plog and self.start <= offset < self.end

    def message(self, i: int) -> Message:
        msg = self._messages.get(i)
        if msg is None:
            msg = self._messages[i] = self.gateway.message_from_record(self.topics[i],
                                                                       self.records[i])
        return msg


class Delivery:
    __slots__ = ("msg", "offset", "qos", "retain", "sub_ids", "tp", "tracked")

    def __init__(self, msg: Message, qos: int, retain: bool, sub_ids: tuple[int, ...],
                 tp: TP | None, offset: int, tracked: bool) -> None:
        self.msg = msg
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.tp = tp
        self.offset = offset
        self.tracked = tracked  # counts for the session's positions (own subscriptions)


class Inflight:
    __slots__ = ("delivery", "released")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.released = False  # QoS 2: PUBREC received, PUBREL sent


def merge_options(options: list[SubOptions], origin: str | None, client_id: str,
                  msg_qos: int) -> tuple[int, bool, tuple[int, ...]] | None:
    """(qos, retain-as-published, subscription ids) for overlapping subscriptions, or None."""
    if len(options) == 1:
        opts = options[0]
        if opts.no_local and origin == client_id:
            return None
        return (min(opts.qos, msg_qos), opts.retain_as_published,
                () if opts.sub_id is None else (opts.sub_id,))
    qos = -1
    rap = False
    ids: list[int] = []
    for opts in options:
        if opts.no_local and origin == client_id:
            continue
        qos = max(qos, min(opts.qos, msg_qos))
        rap = rap or opts.retain_as_published
        if opts.sub_id is not None:
            ids.append(opts.sub_id)
    if qos < 0:
        return None
    return qos, rap, tuple(ids)


class ShareGroup:
    def __init__(self, name: str, topic_filter: str, stats: SysCounters) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.stats = stats
        self.members: dict[str, tuple[Session, SubOptions]] = {}
        self.pending: deque[tuple[Message, int, TP | None, int]] = deque()
        self._turn = 0
        self._warned = False

    def offer(self, msg: Message, opts: SubOptions, tp: TP | None, offset: int) -> None:
        qos = min(msg.qos, opts.qos)
        if self._hand_out(msg, tp, offset):
            return
        if qos == 0:
            return
        if len(self.pending) >= MAX_GROUP_PENDING:
            self.stats.publish_dropped += 1
            if not self._warned:
                log.warning("shared subscription $share/%s/%s: no member keeps up, dropping "
                            "messages", self.name, self.topic_filter)
                self._warned = True
            return
        self.pending.append((msg, qos, tp, offset))

    def _hand_out(self, msg: Message, tp: TP | None, offset: int) -> bool:
        members = list(self.members.values())
        n = len(members)
        for i in range(n):
            session, opts = members[(self._turn + i) % n]
            if session.can_take():
                self._turn = (self._turn + i + 1) % n
                qos = min(msg.qos, opts.qos)
                ids = (opts.sub_id,) if opts.sub_id is not None else ()
                session.enqueue(Delivery(msg, qos, False, ids, tp, offset, False))
                return True
        return False

    def pull(self, session: Session) -> bool:
        """Give ``session`` one pending message; False when there is none."""
        if not self.pending:
            return False
        msg, _qos, tp, offset = self.pending.popleft()
        _sess, opts = self.members[session.client_id]
        ids = (opts.sub_id,) if opts.sub_id is not None else ()
        session.enqueue(Delivery(msg, min(msg.qos, opts.qos), False, ids, tp, offset, False),
                        pump=False)
        return True


@dataclass
class WillState:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: Properties
    delay_s: int = 0


@dataclass
class Session:
    gateway: MqttGateway
    client_id: str
    expiry_s: int = 0
    subs: dict[str, SubOptions] = field(default_factory=dict)
    conn: MqttClient | None = None
    queue: deque[Delivery] = field(default_factory=deque)
    inflight: dict[int, Inflight] = field(default_factory=dict)
    behind: dict[TP, int] = field(default_factory=dict)
    pubrel_wait: set[int] = field(default_factory=set)
    groups: dict[str, ShareGroup] = field(default_factory=dict)
    disconnected_at: int | None = None
    restored_inflight: list[list[Any]] = field(default_factory=list)
    dirty: bool = False
    stored: bool = False  # a record of it is in the sessions log
    _next_pid: int = 1
    _pump_scheduled: bool = False

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def persistent(self) -> bool:
        return self.expiry_s > 0

    # ------------------------------------------------------------------ taking messages

    def can_take(self) -> bool:
        c = self.conn
        return c is not None and not c.paused and len(self.queue) < MAX_QUEUED

    def offer(self, msg: Message, options: list[SubOptions], tp: TP, offset: int) -> None:
        """From the tailer: a record of ``tp`` that matches this session's filters."""
        if tp in self.behind:
            self.schedule_pump()
            return
        merged = merge_options(options, msg.origin, self.client_id, msg.qos)
        if merged is None:
            return
        qos, rap, ids = merged
        if self.conn is None or len(self.queue) >= MAX_QUEUED:
            # Connected but slow: the log keeps the rest.  Offline: only a persistent session
            # keeps its QoS 1/2 messages (QoS 0 to an offline client is dropped).
            if self.conn is not None or (self.persistent and qos > 0):
                self.behind[tp] = offset
                self.dirty = True
            return
        self.enqueue(Delivery(msg, qos, rap and msg.retain, ids, tp, offset, True))

    def offer_unlogged(self, msg: Message, options: list[SubOptions]) -> None:
        """A message that is in no log (``$SYS``): queued if connected with room, else
        skipped — there is no log to catch up from."""
        if self.conn is None or len(self.queue) >= MAX_QUEUED:
            return
        merged = merge_options(options, msg.origin, self.client_id, msg.qos)
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

    def send_window(self) -> int:
        c = self.conn
        if c is None:
            return 0
        limit = c.proto.client_receive_maximum if c.proto.version == MQTT_5 else DEFAULT_INFLIGHT
        return limit - len(self.inflight)

    def pump(self) -> None:
        self._pump_scheduled = False
        c = self.conn
        if c is None or c.paused:
            return
        out: list[bytes] = []
        now = self.gateway.clock_ms()
        window = self.send_window()
        sent = payload_bytes = 0
        while True:
            if not self.queue:
                if self._pull_shared() or (self.behind and self.catch_up()):
                    continue
                break
            d = self.queue[0]
            if d.qos and window <= 0:
                break
            self.queue.popleft()
            pid = self._allocate_pid() if d.qos else None
            data = self._encode(d, pid, False, now)
            if data is None:
                continue
            if pid is not None:
                self.inflight[pid] = Inflight(d)
                window -= 1
                self.dirty = True
            out.append(data)
            sent += 1
            payload_bytes += len(d.msg.payload)
            if len(out) >= 128:
                c.write_many(out)
                out = []
                if c.paused:
                    break
        if out:
            c.write_many(out)
        if sent:
            stats = self.gateway.stats
            stats.publish_sent += sent
            stats.publish_bytes_sent += payload_bytes

    def _encode(self, d: Delivery, pid: int | None, dup: bool, now: int) -> bytes | None:
        c = self.conn
        assert c is not None
        msg = d.msg
        aliases = c.proto.outbound_aliases
        if msg.expiry_at is None and not d.sub_ids and not dup and aliases is None:
            data = msg.publish_bytes(c.proto.version == MQTT_5, d.qos, d.retain, pid)
            if len(data) > c.proto.client_max_packet_size:
                self.gateway.stats.publish_dropped += 1
                return None  # the client could not take it: discarded, as the spec says
            return data
        if c.proto.version == MQTT_5:
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
        if len(data) > c.proto.client_max_packet_size:
            self.gateway.stats.publish_dropped += 1
            return None  # the client could not take it: discarded, as the spec says
        if aliases is not None:
            aliases.commit(msg.topic_bytes, plan)
        return data

    def _allocate_pid(self) -> int:
        for _ in range(65535):
            pid = self._next_pid
            self._next_pid = pid % 65535 + 1
            if pid not in self.inflight:
                return pid
        raise RuntimeError("no free packet identifier")

    def _pull_shared(self) -> bool:
        return any(group.pull(self) for group in self.groups.values())

    def resend_inflight(self) -> None:
        """After a reconnect: resend unacknowledged PUBLISHes (DUP) and PUBRELs, in order."""
        c = self.conn
        if c is None:
            return
        now = self.gateway.clock_ms()
        out: list[bytes] = []
        for pid, entry in list(self.inflight.items()):
            if entry.released:
                out.append(c.proto.send(PubRel(pid)))
                continue
            data = self._encode(entry.delivery, pid, True, now)
            if data is None:
                del self.inflight[pid]
                continue
            out.append(data)
            self.gateway.stats.publish_sent += 1
            self.gateway.stats.publish_bytes_sent += len(entry.delivery.msg.payload)
        if out:
            c.write_many(out)

    def on_puback(self, pid: int) -> bool:
        entry = self.inflight.get(pid)
        if entry is None or entry.delivery.qos != 1:
            return False
        del self.inflight[pid]
        self.dirty = True
        self.schedule_pump()
        return True

    def on_pubrec(self, pid: int, failed: bool) -> bool:
        entry = self.inflight.get(pid)
        if entry is None or entry.delivery.qos != 2:
            return False
        if failed:
            del self.inflight[pid]
            self.schedule_pump()
        else:
            entry.released = True
        self.dirty = True
        return True

    def on_pubcomp(self, pid: int) -> bool:
        entry = self.inflight.pop(pid, None)
        if entry is None:
            return False
        self.dirty = True
        self.schedule_pump()
        return True

    # ------------------------------------------------------------------ catch-up

    def own_match(self, topic: str) -> list[SubOptions]:
        return [opts for f, opts in self.subs.items()
                if not f.startswith("$share/") and matches(f, topic)]

    def catch_up(self) -> bool:
        """Read one chunk of a partition this session is behind on; True if it queued any."""
        gw = self.gateway
        for tp, offset in list(self.behind.items()):
            tailer = gw.tailers.get(tp)
            try:
                plog = gw.state.logs.partition(*tp)
            except Exception:
                del self.behind[tp]
                continue
            live_at = tailer.position if tailer is not None else plog.log_end_offset
            offset = max(offset, plog.log_start_offset)
            if offset >= live_at:
                if tailer is not None:
                    del self.behind[tp]
                else:
                    self.behind[tp] = offset
                continue
            queued = 0
            matched: dict[str, list[SubOptions]] = {}  # MQTT topic → own matches, this read
            chunk = gw.catch_up_chunk(tp, plog, offset)
            offsets = chunk.offsets
            for i in range(bisect_left(offsets, offset), len(offsets)):
                rec_offset = offsets[i]
                if rec_offset >= live_at:
                    break
                if len(self.queue) >= MAX_QUEUED:
                    self.behind[tp] = rec_offset
                    return queued > 0
                msg_topic = chunk.topics[i]
                options = matched.get(msg_topic)
                if options is None:
                    options = matched[msg_topic] = self.own_match(msg_topic)
                offset = rec_offset + 1
                if not options:
                    continue
                msg = chunk.message(i)
                merged = merge_options(options, msg.origin, self.client_id, msg.qos)
                if merged is None:
                    continue
                qos, rap, ids = merged
                self.queue.append(Delivery(msg, qos, rap and msg.retain, ids, tp, rec_offset,
                                           True))
                queued += 1
            offset = max(offset, min(chunk.end, live_at))
            if offset >= live_at and tailer is not None:
                del self.behind[tp]
            else:
                self.behind[tp] = offset
            self.dirty = True
            if queued:
                return True
        return False

    # ------------------------------------------------------------------ persistence

    def positions(self) -> dict[TP, int]:
        out: dict[TP, int] = {}
        for d in self.queue:
            if d.tracked and d.tp is not None and d.tp not in out:
                out[d.tp] = d.offset
        for tp, offset in self.behind.items():
            out[tp] = min(offset, out.get(tp, offset))
        for tp in self.gateway.interest_of(self):
            if tp not in out:
                tailer = self.gateway.tailers.get(tp)
                if tailer is not None:
                    out[tp] = tailer.position
        return out

    def go_offline(self) -> None:
        """The connection ended: fall back to the log for everything still queued."""
        for d in self.queue:
            if d.tracked and d.tp is not None:
                # a partition can be both queued and behind (the queue overflowed, or a
                # catch-up read queued a stretch): the earliest queued offset is where to
                # resume — ``behind`` alone would skip what the queue held
                if d.offset < self.behind.get(d.tp, d.offset + 1):
                    self.behind[d.tp] = d.offset
            elif not d.tracked and d.qos and d.tp is not None:
                for group in self.groups.values():
                    group.pending.appendleft((d.msg, d.qos, d.tp, d.offset))
                    break
        self.queue.clear()
        self.conn = None
        self.dirty = True

    def dump(self) -> dict[str, Any]:
        inflight = []
        for pid, entry in self.inflight.items():
            d = entry.delivery
            if d.tp is not None:
                inflight.append([d.tp[0], d.tp[1], d.offset, pid, d.qos, entry.released,
                                 list(d.sub_ids)])
        return {
            "v": 1,
            "expiry": self.expiry_s,
            "disconnected_at": self.disconnected_at,
            "subs": {f: o.dump() for f, o in self.subs.items()},
            "positions": [[t, p, o] for (t, p), o in self.positions().items()],
            "inflight": inflight + self.restored_inflight,
            "pubrel": sorted(self.pubrel_wait),
        }

