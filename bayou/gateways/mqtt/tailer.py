"""Tailers: one per Kafka partition some subscription may read, offering each new record.

Theory of operation
-------------------
A ``Tailer`` follows its partition with a core ``Cursor``: it waits for the engine's "data
landed" notification (``Cursor.wait``), reads whole new batches (``read_batches``: the page
cache on the loop, cold data in a worker thread), decodes each record once, maps its key to
an MQTT topic (cached per key), and offers one shared ``Message`` to every session and share
group whose filters match (``owners_of``: one trie walk per MQTT topic, cached).  The
``Message`` is made only when a session takes it: sessions behind on the partition read it
back through catch-up, so a burst that pushed every subscriber there costs the tailer no
message objects.

Records in a row that match the same sessions with the same options and do not expire
are collected into a ``Run`` (at most a slice, at most ``RUN_BYTES`` of payload) and offered
together: a plain QoS 0 subscription queues the whole run as one delivery whose PUBLISHes
are encoded and joined once for every such subscriber (``Outbox.offer_run``); the others
take its messages one by one, in the same order as before.  A session's messages stay in
offset order: a run is offered before any record after it.  A position
outside the log (retention, a recreated topic) is reset by the cursor to the log start.

It offers at most ``TAIL_SLICE`` records per turn of the event loop, its position up to
date, so the sessions' pumps drain their queues between slices: a session that keeps up is
never pushed into catch-up by the size of one read (a single PUBLISH batch can hold a few
thousand records, more than a queue takes).  A session's catch-up ends at the tailer's
position (``position``), where the tailer takes over.

While every session the partition's records could go to (``watchers``: the sessions with a
subscription of their own that may reach its Kafka topic) is behind on it, the tailer
passes over what it reads without decoding a record: those sessions read it back through
catch-up anyway (a fan-out whose subscribers are slower than its publishers spends most of
its time so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from bayou.core import NO_ABORTS, Cursor
from bayou.errors import KafkaError
from bayou.gateways.mqtt.messages import TP, Message, Run
from bayou.gateways.mqtt.subscriptions import Owners, ShareGroup
from bayou.protocol.kafka.records import DecodedRecord, iter_batches, iter_records

log = logging.getLogger("bayou.mqtt")

TAIL_READ = 1024 * 1024
TAIL_SLICE = 256  # records offered between two turns of the event loop
RUN_BYTES = 64 * 1024  # payload bytes of a run (see the module docstring) at most
KEY_CACHE = 100_000
IDLE_WAIT_S = 1.0  # longest sleep between two looks at ``stopping``
EMPTY_READ_PAUSE_S = 0.05


class Watcher(Protocol):
    """A session's outbox (``delivery.py``), as a tailer sees it."""

    behind: dict[TP, int]  # partition → where its catch-up reads from the log

    def schedule_pump(self) -> None: ...


class TailerHost(Protocol):
    """The door, as a tailer sees it."""

    def watchers(self, kafka_topic: str) -> Sequence[Watcher]:
        """Every session a record of ``kafka_topic`` could be offered to."""
        ...

    @property
    def stopping(self) -> bool: ...

    def mqtt_topic(self, kafka_topic: str, key: bytes | None) -> str: ...

    def owners_of(self, mqtt_topic: str) -> Owners: ...

    def message_from_record(self, mqtt_topic: str, rec: DecodedRecord) -> Message: ...


class Tailer:
    """Follows one partition and offers each new record to its matches."""

    def __init__(self, host: TailerHost, cursor: Cursor) -> None:
        self.host = host
        self.cursor = cursor
        self.tp: TP = cursor.key
        self.task: asyncio.Task[None] | None = None
        self._topics: dict[bytes | None, str] = {}  # record key → MQTT topic

    @property
    def position(self) -> int:
        """The first offset not offered yet."""
        return self.cursor.position

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        host = self.host
        cursor = self.cursor
        while not host.stopping:
            try:
                if not cursor.ready():
                    await cursor.wait(IDLE_WAIT_S)
                    continue
                data = await cursor.read_batches(TAIL_READ)
            except KafkaError:  # the topic is gone: the next refresh forgets this tailer
                return
            if not data:
                await asyncio.sleep(EMPTY_READ_PAUSE_S)
                continue
            try:
                await self.process(data)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "MQTT delivery from %s-%d failed at offset %d", *self.tp, cursor.position
                )
                try:
                    cursor.position = cursor.handle().log_end_offset
                except KafkaError:
                    return
            await asyncio.sleep(0)

    async def process(self, data: memoryview) -> None:
        """Offer the records in ``data`` (whole batches) from the position on, letting the
        loop run every ``TAIL_SLICE`` records (see the module docstring)."""
        host = self.host
        cursor = self.cursor
        kafka_topic = self.tp[0]
        tp = self.tp
        topics = self._topics
        budget = TAIL_SLICE
        run = Run(tp)  # records in a row for the same sessions, offered together
        skipping = self._all_behind()
        aborted = NO_ABORTS if skipping else await cursor.aborted(data)
        for pos, header in iter_batches(data):
            if (
                skipping
                or header.last_offset < cursor.position
                or header.is_control
                or aborted.covers(header)
            ):
                cursor.position = max(cursor.position, header.last_offset + 1)
                continue
            for rec in iter_records(data[pos : pos + header.size]):
                offset = rec.offset
                if offset < cursor.position:
                    continue
                key = rec.key
                mqtt_topic = topics.get(key)
                if mqtt_topic is None:
                    mqtt_topic = host.mqtt_topic(kafka_topic, key)
                    if len(topics) >= KEY_CACHE:
                        topics.clear()
                    topics[key] = mqtt_topic
                owners = host.owners_of(mqtt_topic)
                if owners:
                    if owners is not run.owners and run.offsets and owners != run.owners:
                        self._offer_run(run)  # other sessions, or other options
                    msg = None  # made when a session takes it, once for all of them
                    for owner, _options in owners:
                        # shared subscriptions read through their share groups (shared.py)
                        if isinstance(owner, ShareGroup):
                            continue
                        if tp in owner.outbox.behind:  # a session's outbox (delivery.py)
                            owner.outbox.schedule_pump()  # it catches up from the log
                            continue
                        msg = host.message_from_record(mqtt_topic, rec)
                        break
                    if msg is not None:
                        if msg.expiry_at is None:
                            if not run.offsets:
                                run.owners = owners
                            run.add(msg, offset)
                        else:
                            if run.offsets:
                                self._offer_run(run)
                            self._offer(owners, msg, offset)
                cursor.position = offset + 1
                budget -= 1
                if budget <= 0 or run.nbytes >= RUN_BYTES:
                    if run.offsets:
                        self._offer_run(run)
                    if budget <= 0:
                        budget = TAIL_SLICE
                        await asyncio.sleep(0)
                        if self._all_behind():
                            skipping = True  # the rest of the read: see _all_behind
                            break
            cursor.position = max(cursor.position, header.last_offset + 1)
        if run.offsets:
            self._offer_run(run)

    def _all_behind(self) -> bool:
        """Whether every session a record could go to is behind on the partition — reads
        it back from the log (catch-up) — so that records can be passed over undecoded.
        Those sessions are woken to catch up, as an offer would."""
        tp = self.tp
        watchers = self.host.watchers(tp[0])
        for watcher in watchers:
            if tp not in watcher.behind:
                return False
        for watcher in watchers:
            watcher.schedule_pump()
        return True

    def _offer_run(self, run: Run) -> None:
        """Offer the records collected in ``run`` to the sessions they match; empty it."""
        owners: Owners = run.owners  # type: ignore[assignment]
        if len(run.offsets) == 1:  # nothing to share
            self._offer(owners, run.messages[0], run.offsets[0])
        else:
            for owner, options in owners:
                if not isinstance(owner, ShareGroup):
                    owner.outbox.offer_run(run, options)
        run.clear()

    def _offer(self, owners: Owners, msg: Message, offset: int) -> None:
        """Offer one message to each session (not shared: it expires, or it is alone)."""
        for owner, options in owners:
            if not isinstance(owner, ShareGroup):
                owner.outbox.offer(msg, options, self.tp, offset)
