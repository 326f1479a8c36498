"""FrameReader: size-prefixed frames cut from reads of every shape, the bytes intact."""

from __future__ import annotations

import os
import random

from bayou.buffer_pool import BufferPool
from bayou.gateways.kafka.frames import DIRECT_MIN, FrameReader


def framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def feed(reader: FrameReader, stream: bytes, max_read: int, rng: random.Random) -> list[bytes]:
    """Push ``stream`` through the reader as a transport would (reads of at most
    ``max_read`` bytes into whatever ``buffer()`` offers); the frames taken, in order."""
    frames: list[bytes] = []
    pos = 0
    for _ in range(len(stream) + 10):
        while (frame := reader.take()) is not None:
            frames.append(bytes(frame))
        if pos == len(stream):
            break
        target = reader.buffer()
        assert len(target) > 0
        n = min(len(target), max_read, len(stream) - pos, rng.randint(1, max_read))
        target[:n] = stream[pos : pos + n]
        target.release()
        reader.received(n)
        pos += n
    return frames


def test_frames_of_every_size_come_back_whole_and_in_order() -> None:
    rng = random.Random(7)
    sizes = [0, 1, 3, 4, 100, DIRECT_MIN - 5, DIRECT_MIN, 300_000, 17, 2 * 1024 * 1024, 5]
    bodies = [os.urandom(size) for size in sizes]
    for max_read in (1, 3, 4096, 65536, 256 * 1024, 10 * 1024 * 1024):
        some = bodies[:6] if max_read < 10 else bodies  # byte by byte: the smaller ones
        stream = b"".join(framed(body) for body in some)
        reader = FrameReader()
        assert feed(reader, stream, max_read, rng) == some, max_read
        assert reader.held == 0 and reader.expected == 0


def test_a_large_frame_is_received_into_itself() -> None:
    body = os.urandom(DIRECT_MIN * 3)
    stream = framed(body)
    reader = FrameReader(chunk=1024)
    first = reader.buffer()
    first[:1000] = stream[:1000]
    first.release()
    reader.received(1000)
    assert reader.next_size() == len(body) and reader.take() is None
    assert reader.held == 1000 and reader.expected == len(stream)
    rest = reader.buffer()  # the frame's own buffer: everything still missing fits
    assert len(rest) == len(stream) - 1000
    rest[:] = stream[1000:]
    rest.release()
    reader.received(len(stream) - 1000)
    frame = reader.take()
    assert frame is not None and frame == body and not frame.readonly


def test_frames_are_private_copies_the_reader_does_not_touch_again() -> None:
    reader = FrameReader(chunk=64)
    first = feed(reader, framed(b"a" * 20) + framed(b"b" * 20), 64, random.Random(1))
    kept = reader.take()
    assert kept is None and first == [b"a" * 20, b"b" * 20]
    reader2 = FrameReader(chunk=64)
    target = reader2.buffer()
    target[:24] = framed(b"c" * 20)
    target.release()
    reader2.received(24)
    frame = reader2.take()
    assert frame is not None
    again = reader2.buffer()
    again[:24] = framed(b"d" * 20)
    again.release()
    reader2.received(24)
    assert frame == b"c" * 20  # the staging buffer's reuse left it alone
    assert reader2.take() == b"d" * 20


def test_clear_drops_a_half_received_frame() -> None:
    reader = FrameReader(chunk=1024)
    target = reader.buffer()
    target[:10] = framed(os.urandom(DIRECT_MIN))[:10]
    target.release()
    reader.received(10)
    reader.buffer().release()  # now receiving into the frame's own buffer
    reader.clear()
    assert reader.held == 0 and reader.next_size() is None and reader.take() is None
    assert feed(reader, framed(b"next"), 1024, random.Random(2)) == [b"next"]


def test_pooled_buffers_are_reused_only_once_nothing_refers_to_them() -> None:
    pool = BufferPool(8 * DIRECT_MIN)
    first = pool.lend(DIRECT_MIN + 1)
    first[:5] = b"first"
    records = first[:5]  # a request still holding a view of its frame
    del first
    second = pool.lend(DIRECT_MIN + 1)
    second[:6] = b"second"
    assert bytes(records) == b"first"  # not handed out again while a view of it lives
    del records, second
    third = pool.lend(DIRECT_MIN + 1)
    assert pool.pooled_bytes == 4 * DIRECT_MIN  # two buffers of 2 x 64 KiB: the first reused
    del third


def test_the_pool_keeps_at_most_its_limit_and_frees_idle_buffers_for_new_sizes() -> None:
    pool = BufferPool(4 * DIRECT_MIN)
    held = [pool.lend(DIRECT_MIN) for _ in range(5)]  # the fifth is over the limit: unpooled
    assert pool.pooled_bytes == 4 * DIRECT_MIN and all(len(f) == DIRECT_MIN for f in held)
    del held
    bigger = pool.lend(3 * DIRECT_MIN)  # idle small buffers make way for a new size
    assert len(bigger) == 3 * DIRECT_MIN and pool.pooled_bytes <= 4 * DIRECT_MIN


def test_frames_from_a_pool_come_back_whole_through_the_reader() -> None:
    pool = BufferPool(64 * 1024 * 1024)
    rng = random.Random(3)
    bodies = [os.urandom(rng.randint(DIRECT_MIN, 3 * DIRECT_MIN)) for _ in range(20)]
    reader = FrameReader(pool, chunk=4096)
    stream = b"".join(framed(body) for body in bodies)
    assert feed(reader, stream, 65536, rng) == bodies
    assert 0 < pool.pooled_bytes <= 2 * 4 * DIRECT_MIN  # frames taken and dropped: reused
