"""Writing one connection's responses in order, streaming fetched records from the log files.

Theory of operation
-------------------
A response is a list of pieces (``encode_response_parts``): buffers, and ``RecordSet``s —
fetched batches still where the engine stores them (the local engine's ``FileRecords``:
slices of segment files).
``write`` sends a response's pieces in order; buffers go to the transport as they are, file
records are read in chunks of ``CHUNK`` bytes and handed to the transport one chunk at a
time, only while it is not over its high-water mark.  So however large a Fetch response is
(up to ``fetch.max.bytes``, pipelined or not), the broker holds about one chunk plus the
transport's buffer of it, not the response.

The common case stays synchronous: while the transport accepts data and the page cache
holds the records (``nowait`` reads), ``write`` sends everything before it returns.  When
the transport pauses (``pause_writing``) or a chunk is not cached, the rest of that response
and every later one queue, and one task finishes them: it waits for ``resume_writing`` and
reads cold chunks in a worker thread.  Responses leave in order either way.

A client that stops reading holds its queued responses, and through their ``RecordSet``s
the leases on segments that retention may have deleted.  After ``STALL_TIMEOUT_S`` without
the transport draining, the stream gives up and the connection closes (Kafka's
``connections.max.idle.ms`` default, 10 minutes).  Every ``RecordSet`` is closed when it
has been written or when the stream closes.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from bayou.core.types import PageCacheMiss, RecordSet
from bayou.protocol.kafka.primitives import Piece

CHUNK = 1 << 20
STALL_TIMEOUT_S = 600.0

_BUFFERS = (bytes, bytearray, memoryview)


def _close_after_read(parts: list[Piece], _read: asyncio.Future[Any]) -> None:
    close_records(parts)


def close_records(parts: list[Piece] | None) -> None:
    """Close the ``RecordSet``s among a response's pieces (a response not sent)."""
    for part in parts or ():
        if not isinstance(part, _BUFFERS):
            cast(RecordSet, part).close()


class ResponseStream:
    """The in-order writer of one connection's responses (see the module docstring)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        on_error: Callable[[BaseException], None],
        on_sent: Callable[[], None],
    ) -> None:
        """``on_error``: sending failed or stalled (close the connection); ``on_sent``: a
        queued response has been handed to the transport."""
        self._transport = transport
        self._on_error = on_error
        self._on_sent = on_sent
        self._queue: deque[tuple[list[Piece], int]] = deque()  # response, first unsent piece
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._thread_read: asyncio.Future[Any] | None = None  # a cold chunk being read
        self._closed = False

    @property
    def queued(self) -> int:
        """Responses not completely handed to the transport yet."""
        return len(self._queue)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def write(self, parts: list[Piece]) -> None:
        """Send a response after every earlier one."""
        if self._closed:
            close_records(parts)
            return
        if not self._queue:
            sent = self._send_now(parts, 0)
            if sent == len(parts):
                return
            self._queue.append((parts, sent))
        else:
            self._queue.append((parts, 0))
        if self._task is None:
            self._task = asyncio.ensure_future(self._drain())

    def close(self) -> None:
        """Drop what is not sent; return every lease (a response whose chunk is being read in
        a worker thread returns its leases when that read ends, not under its feet)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        reading = self._thread_read
        while self._queue:
            parts, _sent = self._queue.popleft()
            if reading is not None and not reading.done():
                reading.add_done_callback(functools.partial(_close_after_read, parts))
                reading = None
            else:
                close_records(parts)

    # ------------------------------------------------------------------ internals

    def _send_now(self, parts: list[Piece], start: int) -> int:
        """Hand pieces to the transport while that needs no waiting; return the index of
        the first piece not completely sent (``len(parts)`` when all were)."""
        out: list[Any] = []
        size = 0
        transport = self._transport
        writable = self._writable
        i = start
        try:
            while i < len(parts):
                part = parts[i]
                if isinstance(part, _BUFFERS):
                    out.append(part)
                    size += len(part)
                    i += 1
                    continue
                records = cast(RecordSet, part)
                while records.remaining:
                    if size >= CHUNK:
                        transport.writelines(out)  # may pause writing
                        out, size = [], 0
                    if not writable.is_set():
                        return i
                    try:
                        data = records.read(CHUNK, nowait=True)
                    except PageCacheMiss:
                        return i
                    out.append(data)
                    size += len(data)
                records.close()
                i += 1
            return i
        finally:
            if out:
                transport.writelines(out)

    async def _drain(self) -> None:
        try:
            while self._queue:
                parts, sent = self._queue[0]
                while sent < len(parts):
                    if not self._writable.is_set():
                        await asyncio.wait_for(self._writable.wait(), STALL_TIMEOUT_S)
                    sent = self._send_now(parts, sent)
                    if sent < len(parts) and self._writable.is_set():
                        # a chunk that is not cached: read it off the loop
                        cold = cast(RecordSet, parts[sent])
                        loop = asyncio.get_running_loop()
                        self._thread_read = loop.run_in_executor(None, cold.read, CHUNK)
                        try:
                            # shielded: a cancel (close) must not mark the read done while
                            # the thread still reads the segment's file
                            data = await asyncio.shield(self._thread_read)
                        finally:
                            self._thread_read = None
                        self._transport.write(data)
                self._queue.popleft()
                self._on_sent()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a stalled client, a storage error: close
            self._task = None
            self.close()
            self._on_error(exc)
            return
        self._task = None
