"""The produce path of the ``s3://`` engine: one object per flush, offsets in PostgreSQL.

Theory of operation
-------------------
Produce payloads (checked on the event loop by the engine-neutral rules, as on every
engine) do not go to PostgreSQL one by one: they join the broker's *open object*, a buffer
shared by every partition.  The object is *sealed* when it holds ``flush_bytes`` or has been
open ``flush_ms`` (a timer started by its first write), whichever comes first; then, in a
task of its own:

1. **build**: the writes' bytes are laid end to end, each write's batches contiguous, in
   call order.  The batches keep the base offsets their producers gave them (offsets do not
   exist yet): a reader patches each batch's base offset from the index (8 bytes outside
   the CRC).  Whatever else the stored form needs is written now — the LogAppendTime of
   ``message.timestamp.type=LogAppendTime`` topics (the seal's time, CRC recomputed), a
   missing max timestamp — so the object holds the batches exactly as they will be read.
2. **PUT** the object (``objects/<created ms>-<id>``: obstore retries 5xx answers, dropped
   connections and timeouts).
3. **commit**: the writes join the PostgreSQL engine's commit queue as *one job*, in seal
   order (a seal waits for the previous one to be queued, so per partition, writes commit
   in call order even when a later object's PUT finished first).  Its transaction does what
   it does for ``postgres://`` — rows locked, leader epochs checked, idempotence, offsets
   assigned, segments rolled, producer state — but each batch row refers to the object and
   the batch's position in it instead of holding the bytes, and the object's row is
   inserted in the same transaction.  So offsets are assigned in the transaction that
   records the object, and a batch is readable and acknowledged only once both the object
   and its index rows are durable.

Failures: a PUT that fails after its retries fails its writes with KAFKA_STORAGE_ERROR
(retriable; nothing was indexed, the object if any is an orphan).  A transaction that fails
does the same (the commit queue's rules: retried while nothing was sent; afterwards an
unknown outcome, settled by the producer's retry — an idempotent producer's duplicate is
recognised).  Objects no committed transaction recorded are deleted later by the collector
(``gc.py``).  A duplicate or refused batch leaves unreferenced bytes in its object; they go
with the object.

At most ``flush_concurrency`` PUTs run at once.  An object due while every slot is busy
stays open and keeps growing until a PUT finishes (then it is sealed at once): a slow store
makes objects larger instead of making a queue of them, so a produce waits about one PUT
beyond its window, not a queue of PUTs.  Memory is bounded: once the open object holds
``flush_bytes`` with every slot busy, new writes wait before joining it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bayou.errors import KafkaError, KafkaStorageError
from bayou.storage.append import assign_offsets
from bayou.storage.postgres.writer import Write

if TYPE_CHECKING:
    from bayou.storage.s3.engine import ObjectEngine

log = logging.getLogger(__name__)

OBJECTS = "objects/"


def object_key(created_ms: int, object_id: int) -> str:
    return f"{OBJECTS}{created_ms:013d}-{object_id:016x}"


def key_time(key: str) -> int | None:
    """The creation time a key of ``object_key``'s shape carries (None: not one)."""
    name = key.rsplit("/", 1)[-1]
    stamp, _, ident = name.partition("-")
    if len(stamp) != 13 or not stamp.isdigit() or len(ident) != 16:
        return None
    return int(stamp)


@dataclass(eq=False)
class StagedObject:
    """An object being filled, written or committed."""

    id: int
    created_ms: int
    writes: list[Write] = field(default_factory=list)
    size: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    queued: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> str:
        return object_key(self.created_ms, self.id)


class Flusher:
    """The open object and the flushes of one engine (see the module docstring)."""

    def __init__(self, engine: ObjectEngine) -> None:
        self._engine = engine
        settings = engine.settings
        self.flush_s = settings.flush_ms / 1000
        self.flush_bytes = settings.flush_bytes
        self.concurrency = settings.flush_concurrency
        self._open: StagedObject | None = None
        self._due = False  # the open object's time or size is up
        self._timer: asyncio.TimerHandle | None = None
        self._last_queued = asyncio.Event()
        self._last_queued.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing = 0  # sealed objects whose PUT has not finished
        self._room = asyncio.Event()
        self._closed = False
        self.objects_written = 0
        self.bytes_written = 0

    async def submit(self, writes: list[Write]) -> None:
        """Store ``writes`` in the next object; each gets its ``result``."""
        while self._full() and not self._closed:
            self._room.clear()
            await self._room.wait()
        if self._closed:
            for w in writes:
                w.result = KafkaStorageError("the broker is shutting down")
            return
        obj = self._open
        if obj is None:
            obj = self._open = StagedObject(secrets.randbits(63), self._engine.clock_ms())
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self._time_up)
        obj.writes.extend(writes)
        obj.size += sum(len(w.buf) for w in writes)
        if obj.size >= self.flush_bytes:
            self._due = True
            self._seal()
        await obj.done.wait()

    def _full(self) -> bool:
        """Every PUT slot busy and the open object full: new writes wait."""
        return (
            self._open is not None
            and self._open.size >= self.flush_bytes
            and self._writing >= self.concurrency
        )

    def _time_up(self) -> None:
        self._timer = None
        self._due = True
        self._seal()

    def _seal(self) -> None:
        """Seal the open object if it is due and a PUT slot is free (else the next PUT to
        finish seals it: under a slow store objects grow instead of queueing)."""
        if (
            not self._due
            or self._open is None
            or (self._writing >= self.concurrency and not self._closed)
        ):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        obj, self._open = self._open, None
        self._due = False
        self._writing += 1
        previous, self._last_queued = self._last_queued, obj.queued
        task = asyncio.create_task(self._flush(obj, previous))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, obj: StagedObject, previous: asyncio.Event) -> None:
        engine = self._engine
        failure: KafkaError | None = None
        data = bytearray()
        try:
            try:
                data = self._build(obj)
                await engine.objects.put(obj.key, data)
                self.objects_written += 1
                self.bytes_written += len(data)
            except KafkaError as exc:
                failure = exc
                log.warning("writing object %s failed: %s", obj.key, exc)
            except Exception as exc:  # never leave a producer waiting
                log.exception("building object %s failed", obj.key)
                failure = KafkaStorageError(f"writing an object failed: {exc}")
            finally:
                self._writing -= 1
                self._room.set()
                self._seal()
            await previous.wait()
            if failure is not None:
                for w in obj.writes:
                    w.result = failure
                obj.queued.set()
                return
            committed = engine.writer.enqueue(obj.writes)
            obj.queued.set()
            engine.remember(obj.id, data)
            await committed
        finally:
            obj.queued.set()
            obj.done.set()

    def _build(self, obj: StagedObject) -> bytearray:
        """The object's bytes; each write learns where its batches are (``stored_at``)."""
        out = bytearray()
        now = self._engine.clock_ms()
        for w in obj.writes:
            append_time = now if w.partition.config.log_append_time else -1
            assign_offsets(w.buf, w.headers, 0, append_time)
            w.append_time = append_time
            w.stored_at = (obj, len(out))
            out += w.buf
        return out

    async def close(self) -> None:
        """Write what is buffered, wait for every flush; refuse new writes."""
        self._closed = True
        self._due = True
        self._seal()
        self._room.set()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
