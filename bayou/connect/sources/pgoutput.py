"""A decoder for PostgreSQL's ``pgoutput`` logical replication messages (protocol version 1).

Bytes in, messages out: no connection, no clock.  The format is PostgreSQL's "Logical
Replication Message Formats" chapter: one message per decoded WAL change, each starting
with a one-byte tag.  What the CDC source needs is decoded — Begin, Commit, Relation,
Insert, Update, Delete, Truncate; Origin, Type and logical-decoding Message are recognised
and returned as ``Skipped``.  A column value arrives as text (the type's output function),
``None`` for SQL NULL, or ``UNCHANGED_TOAST`` for a TOASTed value an update did not touch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

UNCHANGED_TOAST = object()
"""A value the change did not carry: an unchanged TOASTed column of an update or delete."""

ColumnValue = bytes | None | object
"""A column's text-format bytes, ``None`` (NULL) or ``UNCHANGED_TOAST``."""


class DecodeError(ValueError):
    """Bytes that are not a pgoutput message of the version decoded here."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    """The LSN of the transaction's commit record."""
    commit_ts_us: int
    """Microseconds since 2000-01-01 UTC (PostgreSQL's epoch)."""
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    """The LSN just after the commit record: a slot confirmed up to it skips this transaction."""
    commit_ts_us: int


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str
    """``d`` default (primary key), ``n`` nothing, ``f`` full, ``i`` an index."""
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: tuple[ColumnValue, ...]


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    old: tuple[ColumnValue, ...] | None
    """The old row (``REPLICA IDENTITY FULL``) or its key (when the key changed); else None."""
    old_is_key_only: bool
    new: tuple[ColumnValue, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: tuple[ColumnValue, ...]
    old_is_key_only: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    tag: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Skipped

_INT8 = struct.Struct(">b")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT64 = struct.Struct(">q")
_UINT64 = struct.Struct(">Q")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise DecodeError("pgoutput message ends early")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, shape: struct.Struct) -> int:
        try:
            value: int = shape.unpack_from(self.data, self.pos)[0]
        except struct.error:
            raise DecodeError("pgoutput message ends early") from None
        self.pos += shape.size
        return value

    def byte(self) -> str:
        if self.pos >= len(self.data):
            raise DecodeError("pgoutput message ends early")
        self.pos += 1
        return chr(self.data[self.pos - 1])

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DecodeError("pgoutput string without its terminator")
        text = self.data[self.pos : end].decode()
        self.pos = end + 1
        return text

    def tuple_data(self) -> tuple[ColumnValue, ...]:
        data = self.data
        size = len(data)
        count = self.unpack(_INT16)
        pos = self.pos
        values: list[ColumnValue] = []
        append = values.append
        for _ in range(count):
            if pos >= size:
                raise DecodeError("pgoutput message ends early")
            kind = data[pos]
            pos += 1
            if kind == 0x74 or kind == 0x62:  # "t" text, "b" binary
                if pos + 4 > size:
                    raise DecodeError("pgoutput message ends early")
                (length,) = _INT32.unpack_from(data, pos)
                pos += 4
                if length < 0 or pos + length > size:
                    raise DecodeError("pgoutput message ends early")
                append(data[pos : pos + length])
                pos += length
            elif kind == 0x6E:  # "n" null
                append(None)
            elif kind == 0x75:  # "u" unchanged TOAST
                append(UNCHANGED_TOAST)
            else:
                raise DecodeError(f"unknown pgoutput column kind {chr(kind)!r}")
        self.pos = pos
        return tuple(values)


def decode(data: bytes) -> Message:
    """One pgoutput message (a row of ``pg_logical_slot_*_binary_changes``)."""
    reader = _Reader(data if isinstance(data, bytes) else bytes(data))
    tag = reader.byte()
    if tag == "B":
        lsn = reader.unpack(_UINT64)
        ts = reader.unpack(_INT64)
        return Begin(lsn, ts, reader.unpack(_UINT32))
    if tag == "C":
        reader.unpack(_INT8)  # flags, unused
        commit_lsn = reader.unpack(_UINT64)
        end_lsn = reader.unpack(_UINT64)
        return Commit(commit_lsn, end_lsn, reader.unpack(_INT64))
    if tag == "R":
        oid = reader.unpack(_UINT32)
        namespace = reader.string()
        name = reader.string()
        identity = reader.byte()
        columns = []
        for _ in range(reader.unpack(_INT16)):
            flags = reader.unpack(_INT8)
            column_name = reader.string()
            type_oid = reader.unpack(_UINT32)
            columns.append(Column(column_name, type_oid, reader.unpack(_INT32), bool(flags & 1)))
        return Relation(oid, namespace or "pg_catalog", name, identity, tuple(columns))
    if tag == "I":
        oid = reader.unpack(_UINT32)
        if reader.byte() != "N":
            raise DecodeError("pgoutput Insert without its new tuple")
        return Insert(oid, reader.tuple_data())
    if tag == "U":
        oid = reader.unpack(_UINT32)
        kind = reader.byte()
        old: tuple[ColumnValue, ...] | None = None
        key_only = False
        if kind in ("K", "O"):
            old = reader.tuple_data()
            key_only = kind == "K"
            kind = reader.byte()
        if kind != "N":
            raise DecodeError("pgoutput Update without its new tuple")
        return Update(oid, old, key_only, reader.tuple_data())
    if tag == "D":
        oid = reader.unpack(_UINT32)
        kind = reader.byte()
        if kind not in ("K", "O"):
            raise DecodeError("pgoutput Delete without its old tuple")
        return Delete(oid, reader.tuple_data(), kind == "K")
    if tag == "T":
        count = reader.unpack(_INT32)
        reader.unpack(_INT8)  # options: CASCADE / RESTART IDENTITY
        return Truncate(tuple(reader.unpack(_UINT32) for _ in range(count)))
    if tag in ("O", "Y", "M"):
        return Skipped(tag)
    raise DecodeError(f"unknown pgoutput message {tag!r}")


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it: ``16/B374D848``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
