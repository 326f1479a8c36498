"""Shared catch-up reads: the log read back for sessions that fell behind, decoded once.

Theory of operation
-------------------
A session that could not take a message (offline, or its queue full) later reads the
partition from where it stopped (``Outbox`` in ``delivery.py``).  Sessions tend to fall
behind together — every subscriber of a busy filter overflows on the same burst — so their
reads are shared: ``ChunkCache.chunk(tp, offset)`` answers with a ``DecodedChunk`` that holds
``offset`` when one of the last reads of that partition does (or is being read from at or
before it), and only otherwise reads a new one.  A chunk is one ``Cursor.read_batches`` of
``CATCH_UP_READ`` bytes (the engine reads the page cache on the event loop and cold data in
a worker thread: the loop never waits for a disk), decoded once — offsets, MQTT topics,
records — and its ``Message``s are made on first use and kept, so a PUBLISH is encoded once
for every session that catches up through it.  At most ``CHUNKS_PER_PARTITION`` chunks per
partition (the one furthest back is let go first) and ``CHUNKS_KEPT`` in all are kept.

A read never decodes what a kept read has: one for an offset before a kept read's start
stops there (a session behind another one reads the stretch between them, then shares the
other's reads), so sessions near each other decode each record about once between them.

Each read runs in its own task that every waiting session awaits through ``shield``: a
session that goes away while waiting does not cancel the read the others wait for.  A read
that fails (the topic was deleted) is dropped from the cache and raises in every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib

from bayou.core import NO_ABORTS, Aborted, Core
from bayou.core.types import Partition
from bayou.gateways.mqtt.mapping import TopicMapper
from bayou.gateways.mqtt.messages import TP, Message, MessageFactory
from bayou.protocol.kafka.records import DecodedRecord, iter_batches, iter_records

CATCH_UP_READ = 256 * 1024
CHUNKS_KEPT = 16  # decoded catch-up reads kept in all
CHUNKS_PER_PARTITION = 4


class DecodedChunk:
    """One catch-up read of a partition, decoded once and shared by the sessions that catch
    up through it (their ``Message`` objects too, so a PUBLISH is encoded once for all).

    ``offsets``/``topics``/``records`` are the records of the whole data batches read from
    ``start`` (control batches left out); ``end`` is the offset after the last batch read.
    """

    __slots__ = (
        "_factory",
        "_messages",
        "end",
        "loading",
        "offsets",
        "partition",
        "records",
        "start",
        "topics",
    )

    def __init__(self, partition: Partition, start: int, factory: MessageFactory) -> None:
        self.partition = partition
        self.start = start
        self.end = start
        self.offsets: list[int] = []
        self.topics: list[str] = []
        self.records: list[DecodedRecord] = []
        self.loading: asyncio.Task[None] | None = None
        self._factory = factory
        self._messages: dict[int, Message] = {}

    def decode(
        self,
        data: memoryview,
        start: int,
        kafka_topic: str,
        mapper: TopicMapper,
        aborted: Aborted = NO_ABORTS,
        stop: int | None = None,
    ) -> None:
        """Fill the chunk from ``data`` (whole batches read from ``start``), leaving out
        control batches and ``aborted`` transactions' batches; with ``stop`` (where a kept
        chunk starts) the records from there on are left to that chunk."""
        self.start = self.end = start
        topic_of: dict[bytes | None, str] = {}
        offsets, topics, records = self.offsets, self.topics, self.records
        for pos, header in iter_batches(data):
            if stop is not None and header.base_offset >= stop:
                self.end = stop
                return
            self.end = max(self.end, header.last_offset + 1)
            if header.last_offset < start or header.is_control or aborted.covers(header):
                continue
            for rec in iter_records(data[pos : pos + header.size]):
                if rec.offset < start:
                    continue
                if stop is not None and rec.offset >= stop:
                    self.end = stop
                    return
                key = rec.key
                mqtt_topic = topic_of.get(key)
                if mqtt_topic is None:
                    mqtt_topic = topic_of[key] = mapper.mqtt_topic(kafka_topic, key)
                offsets.append(rec.offset)
                topics.append(mqtt_topic)
                records.append(rec)

    def message(self, i: int) -> Message:
        msg = self._messages.get(i)
        if msg is None:
            msg = self._messages[i] = self._factory.from_record(self.topics[i], self.records[i])
        return msg


class ChunkCache:
    """The recent catch-up reads of every partition (see the module docstring)."""

    def __init__(self, core: Core, mapper: TopicMapper, factory: MessageFactory) -> None:
        self.core = core
        self.mapper = mapper
        self.factory = factory
        self._chunks: dict[TP, list[DecodedChunk]] = {}  # newest first
        self.reads = 0  # chunks read (for tests and statistics)
        self.decoded = 0  # records decoded by them

    async def chunk(self, tp: TP, offset: int) -> DecodedChunk:
        """A decoded read of ``tp`` holding ``offset`` — shared when one is kept or on its
        way — else a new read from ``offset``.  Raises ``KafkaError`` when the partition is
        gone."""
        partition = self.core.partition(*tp)
        while (kept := self._kept(tp, partition, offset)) is not None:
            if kept.loading is None:
                return kept
            # a read that may hold it is on its way; once it is in, look again: another
            # session may have started the read that does hold it meanwhile
            await asyncio.shield(kept.loading)  # raises if it failed
        # a kept read that starts further on has what follows it: this one stops there
        stop = min(
            (
                c.start
                for c in self._chunks.get(tp, ())
                if c.partition is partition and c.start > offset
            ),
            default=None,
        )
        chunk = DecodedChunk(partition, offset, self.factory)
        chunk.loading = asyncio.ensure_future(self._load(chunk, tp, stop))
        chunk.loading.add_done_callback(lambda task: self._forget_failed(tp, chunk, task))
        self._keep(tp, chunk)
        await asyncio.shield(chunk.loading)
        return chunk

    def _kept(self, tp: TP, partition: Partition, offset: int) -> DecodedChunk | None:
        """A kept read holding ``offset``, else one on its way from at or before it."""
        loading = None
        for chunk in self._chunks.get(tp, ()):
            if chunk.partition is not partition or chunk.start > offset:
                continue
            if chunk.loading is None:
                if offset < chunk.end:
                    return chunk
            elif loading is None:
                loading = chunk
        return loading

    async def _load(self, chunk: DecodedChunk, tp: TP, stop: int | None) -> None:
        cursor = self.core.cursor(tp[0], tp[1], chunk.start, reset="earliest")
        data = await cursor.read_batches(CATCH_UP_READ)
        self.reads += 1
        aborted = await cursor.aborted(data)
        if stop is not None and stop <= cursor.position:
            stop = None  # the log start moved past it
        chunk.decode(data, cursor.position, tp[0], self.mapper, aborted, stop)
        self.decoded += len(chunk.offsets)
        chunk.loading = None  # in: every waiter, once woken, finds it loaded

    def _forget_failed(self, tp: TP, chunk: DecodedChunk, task: asyncio.Task[None]) -> None:
        """A read that failed is no longer kept (it raised in its waiters)."""
        if task.cancelled() or task.exception() is not None:  # retrieved: raised in waiters
            chunks = self._chunks.get(tp)
            if chunks is not None:
                with contextlib.suppress(ValueError):
                    chunks.remove(chunk)

    def _keep(self, tp: TP, chunk: DecodedChunk) -> None:
        chunks = self._chunks.pop(tp, [])
        if len(chunks) >= CHUNKS_PER_PARTITION:
            # the read furthest back goes: sessions catching up only move on
            chunks.remove(min(chunks, key=lambda c: c.start))
        chunks.insert(0, chunk)
        while len(self._chunks) >= CHUNKS_KEPT // CHUNKS_PER_PARTITION:
            del self._chunks[next(iter(self._chunks))]
        self._chunks[tp] = chunks

    def keep_only(self, tps: set[TP]) -> None:
        """Forget the reads of partitions nobody tails any more."""
        for tp in list(self._chunks):
            if tp not in tps:
                del self._chunks[tp]
