"""Wire primitives and the message base class used by the generated ``messages.py``.

Theory of operation
-------------------
Generated decoders are straight-line code: fixed-width runs of fields are read with one
precompiled ``struct.Struct`` each; everything variable-length (strings, bytes, records, array
and tagged-field counts, unsigned varints) goes through the small readers here. A reader takes
``(buf, pos)`` and returns ``(value, new_pos)``; it raises ``ProtocolViolation`` for negative or
out-of-range lengths, nulls where the field is not nullable and over-long varints. What it does
not check (reading past the end with ``struct``/indexing, bad UTF-8) surfaces as
``struct.error``/``IndexError``/``ValueError``, which the public entry points in ``api.py``
translate to ``ProtocolViolation`` once, outside the hot loop.

Writers append to a ``bytearray`` (``w_*(out, value)``). Naming: ``str``/``bytes``/``rec`` are
the classic int16/int32-length forms, a ``c`` prefix is the compact (flexible) form with an
unsigned-varint length + 1, an ``n`` prefix is the nullable variant.

Value conventions: strings are ``str``; ``bytes`` fields decode to ``bytes`` (a copy: they are
small and outlive the frame); ``records`` fields decode to a zero-copy ``memoryview`` slice of the
frame (or ``None``) and encode from ``bytes``/``bytearray``/``memoryview``/``None`` — or, in a
response encoded as parts, from any ``DeferredRecords`` (a sized object the transport writes);
``uuid`` fields are ``uuid.UUID`` (zero UUID by default).
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Protocol, cast
from uuid import UUID

from bayou.errors import ProtocolViolation


class DeferredRecords(Protocol):
    """Records a response carries without holding them (e.g. slices of a log file): the
    encoder needs only their length and leaves them as a piece of their own, which the
    transport side writes (``ScatterBuffer``, ``encode_response_parts``)."""

    def __len__(self) -> int: ...


ZERO_UUID = UUID(int=0)
Records = bytes | bytearray | memoryview | None
_BUFFERS = (bytes, bytearray, memoryview)
Piece = bytes | bytearray | memoryview | DeferredRecords


def deferred(records: DeferredRecords) -> Records:
    """``records`` as a response's ``records`` value.  Decoded messages only ever hold
    buffers there, so the field is typed so; a response encoded with
    ``encode_response_parts`` may carry a ``DeferredRecords`` instead, which comes out as a
    piece of its own for the transport side to write."""
    return cast(Records, records)


I8 = struct.Struct(">b")
I16 = struct.Struct(">h")
I32 = struct.Struct(">i")
I64 = struct.Struct(">q")
unpack_from = struct.unpack_from
pack = struct.pack

_UV1 = [bytes((i,)) for i in range(128)]
NULL16 = b"\xff\xff"
NULL32 = b"\xff\xff\xff\xff"


class _Default:
    """Sentinel for "use this field's default" in generated constructors (mutable defaults)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def violation(what: str) -> ProtocolViolation:
    return ProtocolViolation(what)


# ---------------------------------------------------------------- varints


def r_uv(buf: memoryview, pos: int) -> tuple[int, int]:
    """Unsigned varint (at most 5 bytes, 32 bits)."""
    b = buf[pos]
    pos += 1
    if b < 0x80:
        return b, pos
    result = b & 0x7F
    shift = 7
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result > 0xFFFFFFFF:
                raise violation("unsigned varint out of range")
            return result, pos
        shift += 7
        if shift > 28:
            raise violation("unsigned varint longer than 5 bytes")


def uv(n: int) -> bytes:
    """Encode an unsigned varint."""
    if n < 0x80:
        return _UV1[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def r_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Signed zig-zag varint (32 bits)."""
    n, pos = r_uv(buf, pos)
    return (n >> 1) ^ -(n & 1), pos


def varint(n: int) -> bytes:
    return uv(((n << 1) ^ (n >> 31)) & 0xFFFFFFFF)


# ---------------------------------------------------------------- lengths


def _span(buf: memoryview, pos: int, n: int) -> int:
    end = pos + n
    if end > len(buf):
        raise violation(f"length {n} runs past the end of the frame")
    return end


def r_len(buf: memoryview, pos: int) -> tuple[int, int]:
    """Non-nullable int32 array count."""
    n = I32.unpack_from(buf, pos)[0]
    pos += 4
    if n < 0 or n > len(buf) - pos:
        raise violation(f"bad array length {n}")
    return n, pos


def r_nlen(buf: memoryview, pos: int) -> tuple[int, int]:
    """Nullable int32 array count; -1 is null."""
    n = I32.unpack_from(buf, pos)[0]
    pos += 4
    if n < -1 or n > len(buf) - pos:
        raise violation(f"bad array length {n}")
    return n, pos


def r_clen(buf: memoryview, pos: int) -> tuple[int, int]:
    """Non-nullable compact array count."""
    n = buf[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = r_uv(buf, pos)
    n -= 1
    if n < 0 or n > len(buf) - pos:
        raise violation(f"bad compact array length {n}")
    return n, pos


def r_nclen(buf: memoryview, pos: int) -> tuple[int, int]:
    """Nullable compact array count; -1 is null."""
    n = buf[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = r_uv(buf, pos)
    n -= 1
    if n > len(buf) - pos:
        raise violation(f"bad compact array length {n}")
    return n, pos


def w_nlen(out: bytearray, items: list[Any] | None) -> None:
    out += NULL32 if items is None else I32.pack(len(items))


def w_nclen(out: bytearray, items: list[Any] | None) -> None:
    out += b"\x00" if items is None else uv(len(items) + 1)


# ---------------------------------------------------------------- strings


def r_str(buf: memoryview, pos: int) -> tuple[str, int]:
    n = I16.unpack_from(buf, pos)[0]
    pos += 2
    if n < 0:
        raise violation("null or negative length in a non-nullable string")
    end = _span(buf, pos, n)
    return str(buf[pos:end], "utf-8"), end


def r_nstr(buf: memoryview, pos: int) -> tuple[str | None, int]:
    n = I16.unpack_from(buf, pos)[0]
    pos += 2
    if n < 0:
        if n == -1:
            return None, pos
        raise violation("negative string length")
    end = _span(buf, pos, n)
    return str(buf[pos:end], "utf-8"), end


def r_cstr(buf: memoryview, pos: int) -> tuple[str, int]:
    n = buf[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = r_uv(buf, pos)
    if n == 0:
        raise violation("null in a non-nullable compact string")
    end = _span(buf, pos, n - 1)
    return str(buf[pos:end], "utf-8"), end


def r_ncstr(buf: memoryview, pos: int) -> tuple[str | None, int]:
    n = buf[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = r_uv(buf, pos)
    if n == 0:
        return None, pos
    end = _span(buf, pos, n - 1)
    return str(buf[pos:end], "utf-8"), end


def _not_null(value: object, kind: str) -> None:
    if value is None:
        raise ValueError(f"None given for a non-nullable {kind} field")


def w_str(out: bytearray, s: str | None) -> None:
    if s is None:
        raise ValueError("None given for a non-nullable string field")
    b = s.encode()
    out += I16.pack(len(b))
    out += b


def w_nstr(out: bytearray, s: str | None) -> None:
    if s is None:
        out += NULL16
    else:
        b = s.encode()
        out += I16.pack(len(b))
        out += b


def w_cstr(out: bytearray, s: str | None) -> None:
    if s is None:
        raise ValueError("None given for a non-nullable string field")
    b = s.encode()
    out += uv(len(b) + 1)
    out += b


def w_ncstr(out: bytearray, s: str | None) -> None:
    if s is None:
        out.append(0)
    else:
        b = s.encode()
        out += uv(len(b) + 1)
        out += b


# ---------------------------------------------------------------- bytes and records


def r_nrec(buf: memoryview, pos: int) -> tuple[memoryview | None, int]:
    n = I32.unpack_from(buf, pos)[0]
    pos += 4
    if n < 0:
        if n == -1:
            return None, pos
        raise violation("negative bytes length")
    end = _span(buf, pos, n)
    return buf[pos:end], end


def r_ncrec(buf: memoryview, pos: int) -> tuple[memoryview | None, int]:
    n = buf[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = r_uv(buf, pos)
    if n == 0:
        return None, pos
    end = _span(buf, pos, n - 1)
    return buf[pos:end], end


def r_rec(buf: memoryview, pos: int) -> tuple[memoryview, int]:
    value, pos = r_nrec(buf, pos)
    if value is None:
        raise violation("null in a non-nullable bytes field")
    return value, pos


def r_crec(buf: memoryview, pos: int) -> tuple[memoryview, int]:
    value, pos = r_ncrec(buf, pos)
    if value is None:
        raise violation("null in a non-nullable bytes field")
    return value, pos


def r_bytes(buf: memoryview, pos: int) -> tuple[bytes, int]:
    value, pos = r_rec(buf, pos)
    return bytes(value), pos


def r_nbytes(buf: memoryview, pos: int) -> tuple[bytes | None, int]:
    value, pos = r_nrec(buf, pos)
    return None if value is None else bytes(value), pos


def r_cbytes(buf: memoryview, pos: int) -> tuple[bytes, int]:
    value, pos = r_crec(buf, pos)
    return bytes(value), pos


def r_ncbytes(buf: memoryview, pos: int) -> tuple[bytes | None, int]:
    value, pos = r_ncrec(buf, pos)
    return None if value is None else bytes(value), pos


def nbytes(b: Piece) -> int:
    """Length of a records value or piece."""
    return b.nbytes if isinstance(b, memoryview) else len(b)


class ScatterBuffer(bytearray):
    """An output buffer that leaves large ``records`` values out and notes where they go.

    Encoding a fetch response into a plain ``bytearray`` copies every batch read from the log
    once more.  With a ``ScatterBuffer`` the record writers append only the length prefix and
    remember ``(position, value)``; ``encode_response_parts`` then hands the transport the
    buffer's pieces with the values between them, so the batches go out as read.
    """

    __slots__ = ("deferred",)

    def __init__(self, size: int = 0) -> None:
        super().__init__(size)
        self.deferred: list[tuple[int, Piece]] = []


SCATTER_MIN = 16 * 1024  # smaller values are cheaper to copy than to send as their own piece


def _put_records(out: bytearray, b: Piece, size: int) -> None:
    if type(out) is ScatterBuffer and (size >= SCATTER_MIN or not isinstance(b, _BUFFERS)):
        out.deferred.append((len(out), b))
    elif isinstance(b, _BUFFERS):
        out += b
    else:
        raise TypeError(f"{type(b).__name__} records need encode_response_parts")


def w_nrec(out: bytearray, b: Records) -> None:
    if b is None:
        out += NULL32
    else:
        size = nbytes(b)
        out += I32.pack(size)
        _put_records(out, b, size)


def w_ncrec(out: bytearray, b: Records) -> None:
    if b is None:
        out.append(0)
    else:
        size = nbytes(b)
        out += uv(size + 1)
        _put_records(out, b, size)


def w_rec(out: bytearray, b: Records) -> None:
    _not_null(b, "bytes")
    w_nrec(out, b)


def w_crec(out: bytearray, b: Records) -> None:
    _not_null(b, "bytes")
    w_ncrec(out, b)


w_bytes, w_nbytes, w_cbytes, w_ncbytes = w_rec, w_nrec, w_crec, w_ncrec


# ---------------------------------------------------------------- tagged fields


def skip_tags(buf: memoryview, pos: int) -> int:
    """Skip a tagged-field section none of whose tags we know."""
    n = buf[pos]
    if n == 0:
        return pos + 1
    n, pos = r_uv(buf, pos)
    for _ in range(n):
        _tag, pos = r_uv(buf, pos)
        size, pos = r_uv(buf, pos)
        pos = _span(buf, pos, size)
    return pos


def tag_end(buf: memoryview, pos: int, size: int) -> int:
    return _span(buf, pos, size)


def w_tag(out: bytearray, tag: int, body: bytearray) -> None:
    out += uv(tag)
    out += uv(len(body))
    out += body


def uuid_of(b: bytes) -> UUID:
    return UUID(bytes=b)


# ---------------------------------------------------------------- message base classes


def _plain(value: object) -> object:
    if isinstance(value, Message):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


class Message:
    """Base of every generated message and struct: equality, repr and ``to_dict`` by slots."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        slots: tuple[str, ...] = self.__slots__
        return all(getattr(self, s) == getattr(other, s) for s in slots)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        slots: tuple[str, ...] = self.__slots__
        args = ", ".join(f"{s}={getattr(self, s)!r}" for s in slots)
        return f"{type(self).__name__}({args})"

    def to_dict(self) -> dict[str, Any]:
        slots: tuple[str, ...] = self.__slots__
        return {s: _plain(getattr(self, s)) for s in slots}


class ApiMessage(Message):
    """A top-level message: a request, a response or a versioned data struct."""

    __slots__ = ()
    NAME: ClassVar[str]
    API_KEY: ClassVar[int | None]
    MIN_VERSION: ClassVar[int]
    MAX_VERSION: ClassVar[int]
    FLEXIBLE_FROM: ClassVar[int | None]
    # indexed by version; None below MIN_VERSION
    DECODERS: ClassVar[tuple[Any, ...]]
    ENCODERS: ClassVar[tuple[Any, ...]]

    @classmethod
    def is_flexible(cls, version: int) -> bool:
        return cls.FLEXIBLE_FROM is not None and version >= cls.FLEXIBLE_FROM

    def encode_body(self, version: int) -> bytearray:
        """The message body at ``version`` (no header, no size prefix)."""
        if not self.MIN_VERSION <= version <= self.MAX_VERSION:
            raise ValueError(f"{self.NAME} has no version {version}")
        out = bytearray()
        self.ENCODERS[version](self, out)
        return out
