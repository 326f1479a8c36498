"""Kafka request frames received without copies: the socket writes into the frame itself.

Theory of operation
-------------------
A Kafka request is a 4-byte big-endian size and that many bytes.  ``FrameReader`` is the
receiving half of a ``BufferedProtocol``: ``buffer()`` says where the socket's next bytes go
(``get_buffer``), ``received(n)`` says how many landed (``buffer_updated``), and the
connection then asks ``next_size()`` and ``take()`` for each complete frame.

Small frames arrive many at a time: they land in a fixed staging buffer (``chunk`` bytes,
never resized, so the view the transport holds is always valid) and each is copied out once
into a ``bytearray`` of its own.  A frame of ``DIRECT_MIN`` bytes or more that is not yet
complete gets its own ``bytearray`` as soon as its size is known: the bytes already staged are
copied into it and everything after is received straight into it by the kernel.  A produce
request of a megabyte is thus copied once in user space (at most one staging chunk of it),
where reading into ``bytes`` objects and joining them copied it three times and made the
allocator map and unmap a fresh megabyte for every read.

Large frames' buffers come from a broker-wide ``BufferPool`` (``bayou/buffer_pool.py``) and
are reused once nothing refers to them any more.  Every frame is a writable ``memoryview`` of
memory no one else uses: the connection may decode views into it and hand them on.  The
reader never checks sizes: the connection validates ``next_size()`` (limits, negative
lengths) before it calls ``take()``, and only a validated size is ever allocated.
"""

from __future__ import annotations

from bayou.buffer_pool import BufferPool

RECV_CHUNK = 256 * 1024  # the staging buffer: small frames, and the start of large ones
DIRECT_MIN = 64 * 1024  # a frame this large is received into its own buffer
FRAME_POOL_BYTES = 64 * 1024 * 1024  # what a broker keeps of large frame buffers for reuse


class FrameReader:
    """Size-prefixed frames from a stream of reads (see the module docstring)."""

    __slots__ = ("_end", "_filled", "_frame", "_pool", "_pos", "_stage", "_view")

    def __init__(self, pool: BufferPool | None = None, chunk: int = RECV_CHUNK) -> None:
        self._pool = pool if pool is not None else BufferPool(0)
        self._stage = bytearray(chunk)
        self._view = memoryview(self._stage)
        self._pos = 0  # first staged byte not yet taken
        self._end = 0  # end of the staged bytes
        self._frame: memoryview | None = None  # a large frame being received into itself
        self._filled = 0  # bytes of ``_frame`` received

    # -- the transport's side ----------------------------------------------------------------

    def buffer(self) -> memoryview:
        """Where the next bytes read go; never empty."""
        frame = self._frame
        if frame is not None:
            return frame[self._filled :]
        pending = self._end - self._pos
        if pending >= 4:
            size = int.from_bytes(self._view[self._pos : self._pos + 4], "big", signed=True)
            if size >= DIRECT_MIN or 4 + size > len(self._stage):
                return self._receive_directly(size, pending)
        if self._pos:  # move the unfinished frame to the front (same length: no resize;
            # through a copy: a slice assignment from a view of itself may overlap)
            self._stage[:pending] = bytes(self._view[self._pos : self._end])
            self._pos, self._end = 0, pending
        return self._view[self._end :]

    def _receive_directly(self, size: int, pending: int) -> memoryview:
        frame = self._frame = self._pool.lend(size)
        have = pending - 4
        frame[:have] = self._view[self._pos + 4 : self._end]
        self._filled = have
        self._pos = self._end = 0
        return frame[have:]

    def received(self, n: int) -> None:
        """``n`` bytes landed in the last ``buffer()``."""
        if self._frame is not None:
            self._filled += n
        else:
            self._end += n

    # -- the connection's side ---------------------------------------------------------------

    def next_size(self) -> int | None:
        """The size of the next frame, once its 4-byte prefix is in (to validate first)."""
        frame = self._frame
        if frame is not None:
            return len(frame)
        if self._end - self._pos < 4:
            return None
        return int.from_bytes(self._view[self._pos : self._pos + 4], "big", signed=True)

    def take(self) -> memoryview | None:
        """The next frame when it is complete (its size validated by ``next_size()``)."""
        frame = self._frame
        if frame is not None:
            if self._filled < len(frame):
                return None
            self._frame = None
            self._filled = 0
            return frame
        pos = self._pos
        if self._end - pos < 4:
            return None
        size = int.from_bytes(self._view[pos : pos + 4], "big", signed=True)
        if self._end - pos - 4 < size:
            return None
        self._pos = pos + 4 + size
        if self._pos == self._end:
            self._pos = self._end = 0
        return memoryview(bytearray(self._view[pos + 4 : pos + 4 + size]))

    @property
    def held(self) -> int:
        """Bytes of the unfinished frame (its prefix included) received so far."""
        if self._frame is not None:
            return 4 + self._filled
        return self._end - self._pos

    @property
    def expected(self) -> int:
        """The unfinished frame's whole length with its prefix, once known; else 0."""
        size = self.next_size()
        return 0 if size is None else 4 + size

    def clear(self) -> None:
        """Drop what is buffered (bad input: the connection drains and closes)."""
        self._frame = None
        self._filled = 0
        self._pos = self._end = 0

    def discard(self) -> memoryview:
        """A buffer for bytes that are read only to be dropped (a polite close drains)."""
        self.clear()
        return self._view
