"""AMQP 0-9-1 wire codec: frames, methods, field tables, content-header properties.

Theory of operation
-------------------
Table-driven: ``spec.METHODS`` gives every method's fields and wire types, and two loops
(``encode_method`` / ``decode_method``) serve all of them.  Consecutive ``bit`` fields share
one octet, least significant bit first.  A decoded method is a ``Method``: its spec plus an
argument dict, read as attributes (``method.routing_key``).

Field-table values (RabbitMQ's dialect of the type letters) decode to Python values that
remember their letter, so that ``encode(decode(table))`` gives back the same bytes — a
broker passes tables through unchanged.  ``t`` bool; ``I`` int; ``d`` float; ``D``
``Decimal``; ``S`` str (``LongStrBytes``, a bytes subclass, when it is not UTF-8); ``x``
bytes; ``T`` ``Timestamp`` (an int of seconds); ``F`` dict; ``A`` list; ``V`` None; and the
other sizes of numbers as int/float subclasses named after them: ``b`` ``Int8``, ``B``
``UInt8``, ``s`` ``Int16``, ``u`` ``UInt16``, ``i`` ``UInt32``, ``l`` ``Int64``, ``f``
``Float32``.  Encoding picks the letter from the Python type: those classes their own,
bool ``t``, int ``I`` (``l`` beyond 32 bits), float ``d``, Decimal ``D``, str ``S``, bytes
``x``, dict ``F``, list/tuple ``A``, None ``V`` (``field_type`` names it; ``typed`` builds
the value of a letter).  So ``decode(encode(v)) == v`` for every value, type included.

Everything malformed raises ``AmqpError`` with the reply code the specification assigns
(``FRAME_ERROR`` for framing, ``SYNTAX_ERROR`` for a field that does not parse,
``NOT_IMPLEMENTED`` for an unknown class or method).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bayou.errors import ProtocolViolation
from bayou.protocol.amqp import spec
from bayou.protocol.amqp.spec import METHODS, PROPERTY_FIELDS, MethodSpec

Buffer = bytes | bytearray | memoryview

_B = struct.Struct(">B")
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_FRAME_HEADER = struct.Struct(">BHI")
_METHOD_ID = struct.Struct(">HH")
_CONTENT_HEADER = struct.Struct(">HHQ")
MAX_TABLE_DEPTH = 32


class AmqpError(ProtocolViolation):
    """A protocol error with its AMQP reply code (and the offending method's ids)."""

    def __init__(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        """``CODE_NAME - text``, as RabbitMQ words it (a shortstr: at most 255 bytes)."""
        text = f"{spec.REPLY_NAMES.get(self.code, str(self.code))} - {self.text}"
        return text.encode()[:255].decode(errors="ignore")


class Timestamp(int):
    """A field-table timestamp (seconds since the epoch), distinct from a plain int."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Timestamp({int(self)})"


class _SizedInt(int):
    """An integer field value that keeps its wire size (the class's ``letter``)."""

    __slots__ = ()
    letter = "I"
    fmt = ">i"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"


class Int8(_SizedInt):
    __slots__ = ()
    letter, fmt = "b", ">b"


class UInt8(_SizedInt):
    __slots__ = ()
    letter, fmt = "B", ">B"


class Int16(_SizedInt):
    __slots__ = ()
    letter, fmt = "s", ">h"


class UInt16(_SizedInt):
    __slots__ = ()
    letter, fmt = "u", ">H"


class UInt32(_SizedInt):
    __slots__ = ()
    letter, fmt = "i", ">I"


class Int64(_SizedInt):
    __slots__ = ()
    letter, fmt = "l", ">q"


class Float32(float):
    """A single-precision (``f``) field value; plain floats are ``d``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Float32({float(self)!r})"


class LongStrBytes(bytes):
    """An ``S`` (long string) field value that is not UTF-8; plain bytes are ``x``."""

    __slots__ = ()


_SIZED: dict[str, type[_SizedInt]] = {
    cls.letter: cls for cls in (Int8, UInt8, Int16, UInt16, UInt32, Int64)
}
_SIZED_STRUCTS = {ord(letter): struct.Struct(cls.fmt) for letter, cls in _SIZED.items()}


class Method:
    """One method: its spec and argument values, read as attributes."""

    __slots__ = ("args", "spec")

    def __init__(self, method_spec: MethodSpec, args: dict[str, Any]) -> None:
        self.spec = method_spec
        self.args = args

    def __getattr__(self, name: str) -> Any:
        try:
            return self.args[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def name(self) -> str:
        return self.spec.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Method) and (self.spec, self.args) == (other.spec, other.args)

    def __hash__(self) -> int:
        return hash(self.spec.name)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"Method({self.spec.name}, {args})"


_ZERO: dict[str, Any] = {
    "bit": False,
    "octet": 0,
    "short": 0,
    "long": 0,
    "longlong": 0,
    "shortstr": "",
    "longstr": b"",
    "table": {},
    "timestamp": 0,
}


def method(name: str, **args: Any) -> Method:
    """Build a method by name; fields not given take their zero value."""
    method_spec = METHODS[name]
    values: dict[str, Any] = {}
    for field, wire in method_spec.fields:
        if field in args:
            values[field] = args.pop(field)
        else:
            zero = _ZERO[wire]
            values[field] = {} if wire == "table" else zero
    if args:
        raise TypeError(f"{name} has no field(s) {sorted(args)}")
    return Method(method_spec, values)


# --------------------------------------------------------------------------- primitives


def _shortstr(out: bytearray, value: str | bytes) -> None:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) > 255:
        raise ValueError("shortstr longer than 255 bytes")
    out.append(len(raw))
    out += raw


def _longstr(out: bytearray, value: str | bytes | bytearray | memoryview) -> None:
    raw = value.encode() if isinstance(value, str) else value
    out += _I.pack(len(raw))
    out += raw


class Reader:
    """A cursor over a buffer; every read checks bounds and raises SYNTAX_ERROR past the end."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: Buffer, pos: int = 0, end: int | None = None) -> None:
        self.buf = memoryview(buf)
        self.pos = pos
        self.end = len(self.buf) if end is None else end

    def need(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise AmqpError(spec.SYNTAX_ERROR, "truncated field")
        self.pos = pos + n
        return pos

    def unpack(self, st: struct.Struct) -> Any:
        return st.unpack_from(self.buf, self.need(st.size))[0]

    def raw(self, n: int) -> bytes:
        pos = self.need(n)
        return bytes(self.buf[pos : pos + n])

    def shortstr(self) -> str:
        n = self.buf[self.need(1)]
        data = self.raw(n)
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise AmqpError(spec.SYNTAX_ERROR, "shortstr is not UTF-8") from None

    def longstr(self) -> bytes:
        return self.raw(self.unpack(_I))


# --------------------------------------------------------------------------- field tables

_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_FLOAT = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")


def field_type(value: Any) -> str:
    """The type letter ``value`` is encoded with in a field table."""
    if isinstance(value, bool):
        return "t"
    if isinstance(value, Timestamp):
        return "T"
    if isinstance(value, _SizedInt):
        return value.letter
    if isinstance(value, int):
        return "I" if -(2**31) <= value < 2**31 else "l"
    if isinstance(value, Float32):
        return "f"
    if isinstance(value, float):
        return "d"
    if isinstance(value, Decimal):
        return "D"
    if isinstance(value, LongStrBytes | str):
        return "S"
    if isinstance(value, bytes | bytearray | memoryview):
        return "x"
    if isinstance(value, Mapping):
        return "F"
    if isinstance(value, list | tuple):
        return "A"
    if value is None:
        return "V"
    raise TypeError(f"cannot put a {type(value).__name__} in a field table")


def typed(letter: str, value: Any) -> Any:
    """The field value of type ``letter`` holding ``value`` (a plain Python value: int for
    the integer letters and ``T``, float for ``f``/``d``, bytes or str for ``S``...);
    ValueError when it does not fit that type."""
    sized = _SIZED.get(letter)
    if sized is not None or letter in "IT":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{letter} needs an integer, not {value!r}")
        if sized is None:
            return Timestamp(value) if letter == "T" else _checked(">i", int(value))
        return sized(_checked(sized.fmt, int(value)))
    if letter in "fd":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{letter} needs a number, not {value!r}")
        return Float32(value) if letter == "f" else float(value)
    if letter == "t":
        if not isinstance(value, bool):
            raise ValueError(f"t needs a boolean, not {value!r}")
        return value
    if letter == "D":
        number = Decimal(value)
        _sign, digits, exponent = number.as_tuple()
        if not isinstance(exponent, int) or not -255 <= exponent <= 0:
            raise ValueError(f"decimal {value!r} has no AMQP form")
        _checked(">i", int("".join(map(str, digits)) or "0"))
        return number
    if letter == "S":
        if isinstance(value, bytes | bytearray):
            try:
                return bytes(value).decode()
            except UnicodeDecodeError:
                return LongStrBytes(value)
        return str(value)
    if letter == "x":
        if not isinstance(value, bytes | bytearray):
            raise ValueError(f"x needs bytes, not {value!r}")
        return bytes(value)
    if letter == "V":
        return None
    raise ValueError(f"unknown field type {letter!r}")


def _checked(fmt: str, value: int) -> int:
    try:
        struct.pack(fmt, value)
    except struct.error:
        raise ValueError(f"{value} does not fit {fmt}") from None
    return value


def encode_table(out: bytearray, table: Mapping[str, Any]) -> None:
    body = bytearray()
    for key, value in table.items():
        _shortstr(body, key)
        _encode_value(body, value, 0)
    out += _I.pack(len(body))
    out += body


def _encode_value(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_TABLE_DEPTH:
        raise ValueError("field table nested too deeply")
    if isinstance(value, bool):
        out += b"t\x01" if value else b"t\x00"
    elif isinstance(value, Timestamp):
        out += b"T"
        out += _Q.pack(value)
    elif isinstance(value, _SizedInt):
        out += value.letter.encode()
        out += _SIZED_STRUCTS[ord(value.letter)].pack(value)
    elif isinstance(value, Float32):
        out += b"f"
        out += _FLOAT.pack(value)
    elif isinstance(value, LongStrBytes):
        out += b"S"
        _longstr(out, value)
    elif isinstance(value, int):
        if -(2**31) <= value < 2**31:
            out += b"I"
            out += _INT32.pack(value)
        else:
            out += b"l"
            out += _INT64.pack(value)
    elif isinstance(value, float):
        out += b"d"
        out += _DOUBLE.pack(value)
    elif isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int) or not -255 <= exponent <= 0:
            raise ValueError(f"decimal {value} has no AMQP form")
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        out += b"D"
        out.append(-exponent)
        out += _INT32.pack(unscaled)
    elif isinstance(value, str):
        out += b"S"
        _longstr(out, value)
    elif isinstance(value, bytes | bytearray | memoryview):
        out += b"x"
        _longstr(out, value)
    elif isinstance(value, Mapping):
        out += b"F"
        body = bytearray()
        for k, v in value.items():
            _shortstr(body, k)
            _encode_value(body, v, depth + 1)
        out += _I.pack(len(body))
        out += body
    elif isinstance(value, list | tuple):
        out += b"A"
        body = bytearray()
        for item in value:
            _encode_value(body, item, depth + 1)
        out += _I.pack(len(body))
        out += body
    elif value is None:
        out += b"V"
    else:
        raise TypeError(f"cannot put a {type(value).__name__} in a field table")


def decode_table(r: Reader, depth: int = 0) -> dict[str, Any]:
    size = r.unpack(_I)
    start = r.need(size)
    sub = Reader(r.buf, start, start + size)
    table: dict[str, Any] = {}
    while sub.pos < sub.end:
        key = sub.shortstr()
        table[key] = _decode_value(sub, depth)
    return table


def _decode_value(r: Reader, depth: int) -> Any:
    if depth > MAX_TABLE_DEPTH:
        raise AmqpError(spec.SYNTAX_ERROR, "field table nested too deeply")
    kind = r.buf[r.need(1)]
    if kind == 0x49:  # I
        return r.unpack(_INT32)
    if kind == 0x64:  # d
        return r.unpack(_DOUBLE)
    st = _SIZED_STRUCTS.get(kind)
    if st is not None:
        return _SIZED[chr(kind)](r.unpack(st))
    if kind == 0x66:  # f
        return Float32(r.unpack(_FLOAT))
    if kind == 0x74:  # t
        return r.buf[r.need(1)] != 0
    if kind == 0x53:  # S
        data = r.longstr()
        try:
            return data.decode()
        except UnicodeDecodeError:
            return LongStrBytes(data)
    if kind == 0x78:  # x
        return r.longstr()
    if kind == 0x54:  # T
        return Timestamp(r.unpack(_Q))
    if kind == 0x44:  # D
        scale = r.buf[r.need(1)]
        unscaled = r.unpack(_INT32)
        return Decimal(unscaled).scaleb(-scale)
    if kind == 0x46:  # F
        return decode_table(r, depth + 1)
    if kind == 0x41:  # A
        size = r.unpack(_I)
        start = r.need(size)
        sub = Reader(r.buf, start, start + size)
        items = []
        while sub.pos < sub.end:
            items.append(_decode_value(sub, depth + 1))
        return items
    if kind == 0x56:  # V
        return None
    raise AmqpError(spec.SYNTAX_ERROR, f"unknown field-table type {chr(kind)!r}")


# --------------------------------------------------------------------------- methods


def _encode_fields(
    out: bytearray, fields: tuple[tuple[str, str], ...], values: Mapping[str, Any]
) -> None:
    bits = 0
    nbits = 0
    for name, wire in fields:
        if wire == "bit":
            if nbits == 8:
                out.append(bits)
                bits = nbits = 0
            if values[name]:
                bits |= 1 << nbits
            nbits += 1
            continue
        if nbits:
            out.append(bits)
            bits = nbits = 0
        value = values[name]
        if wire == "shortstr":
            _shortstr(out, value)
        elif wire == "longstr":
            _longstr(out, value)
        elif wire == "octet":
            out.append(value)
        elif wire == "short":
            out += _H.pack(value)
        elif wire == "long":
            out += _I.pack(value)
        elif wire in ("longlong", "timestamp"):
            out += _Q.pack(value)
        else:  # table
            encode_table(out, value)
    if nbits:
        out.append(bits)


def _decode_fields(r: Reader, fields: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    bits = 0
    nbits = 8
    for name, wire in fields:
        if wire == "bit":
            if nbits == 8:
                bits = r.buf[r.need(1)]
                nbits = 0
            values[name] = bool(bits & (1 << nbits))
            nbits += 1
            continue
        nbits = 8
        if wire == "shortstr":
            values[name] = r.shortstr()
        elif wire == "longstr":
            values[name] = r.longstr()
        elif wire == "octet":
            values[name] = r.buf[r.need(1)]
        elif wire == "short":
            values[name] = r.unpack(_H)
        elif wire == "long":
            values[name] = r.unpack(_I)
        elif wire in ("longlong", "timestamp"):
            values[name] = r.unpack(_Q)
        else:
            values[name] = decode_table(r)
    return values


def encode_method_payload(m: Method) -> bytearray:
    out = bytearray(_METHOD_ID.pack(m.spec.class_id, m.spec.method_id))
    _encode_fields(out, m.spec.fields, m.args)
    return out


def decode_method(payload: Buffer) -> Method:
    """A method frame's payload → Method (NOT_IMPLEMENTED for unknown ids)."""
    if len(payload) < 4:
        raise AmqpError(spec.SYNTAX_ERROR, "method frame shorter than its ids")
    class_id, method_id = _METHOD_ID.unpack_from(payload, 0)
    method_spec = spec.BY_ID.get((class_id, method_id))
    if method_spec is None:
        raise AmqpError(
            spec.NOT_IMPLEMENTED, f"unknown method {class_id}.{method_id}", class_id, method_id
        )
    try:
        values = _decode_fields(Reader(payload, 4), method_spec.fields)
    except AmqpError as exc:
        exc.class_id, exc.method_id = class_id, method_id
        exc.text = f"{exc.text} in {method_spec.name}"
        raise
    return Method(method_spec, values)


# --------------------------------------------------------------------------- content header


def encode_properties(out: bytearray, props: Mapping[str, Any]) -> None:
    flags = 0
    body = bytearray()
    bit = 15
    for name, wire in PROPERTY_FIELDS:
        value = props.get(name)
        if value is not None:
            flags |= 1 << bit
            _encode_fields(body, ((name, wire),), props)
        bit -= 1
    out += _H.pack(flags)
    out += body


def encode_content_header(body_size: int, props: Mapping[str, Any]) -> bytearray:
    out = bytearray(_CONTENT_HEADER.pack(spec.BASIC_CLASS, 0, body_size))
    encode_properties(out, props)
    return out


def decode_content_header(payload: Buffer) -> tuple[int, int, dict[str, Any]]:
    """(class id, body size, properties) of a content header frame's payload."""
    r = Reader(payload)
    class_id = r.unpack(_H)
    r.unpack(_H)  # weight, unused
    body_size = r.unpack(_Q)
    flag_words = [r.unpack(_H)]
    while flag_words[-1] & 1:
        flag_words.append(r.unpack(_H))
    flags = flag_words[0]
    if len(flag_words) > 1 or flags & 0b11:
        raise AmqpError(spec.SYNTAX_ERROR, "unknown content property flags")
    props: dict[str, Any] = {}
    bit = 15
    for name, wire in PROPERTY_FIELDS:
        if flags & (1 << bit):
            props.update(_decode_fields(r, ((name, wire),)))
        bit -= 1
    return class_id, body_size, props


# --------------------------------------------------------------------------- frames


def frame(frame_type: int, channel: int, payload: Buffer) -> bytearray:
    out = bytearray(_FRAME_HEADER.pack(frame_type, channel, len(payload)))
    out += payload
    out.append(spec.FRAME_END)
    return out


def write_frame(out: bytearray, frame_type: int, channel: int, payload: Buffer) -> None:
    out += _FRAME_HEADER.pack(frame_type, channel, len(payload))
    out += payload
    out.append(spec.FRAME_END)


def encode_method(channel: int, m: Method) -> bytearray:
    return frame(spec.FRAME_METHOD, channel, encode_method_payload(m))


HEARTBEAT_FRAME = bytes(frame(spec.FRAME_HEARTBEAT, 0, b""))


def write_content(
    out: bytearray, channel: int, m: Method, props: Mapping[str, Any], body: Buffer, frame_max: int
) -> None:
    """A content-carrying method, its header and body frames (split to fit ``frame_max``)."""
    write_frame(out, spec.FRAME_METHOD, channel, encode_method_payload(m))
    write_frame(out, spec.FRAME_HEADER, channel, encode_content_header(len(body), props))
    chunk = frame_max - spec.FRAME_OVERHEAD
    view = memoryview(body)
    for start in range(0, len(body), chunk):
        write_frame(out, spec.FRAME_BODY, channel, view[start : start + chunk])


def peek_frame(buf: Buffer, pos: int, frame_max: int) -> tuple[int, int, int, int] | None:
    """(type, channel, payload start, payload end) of the frame at ``pos``, None if incomplete.

    Raises FRAME_ERROR as soon as the 7-byte header announces a frame over ``frame_max``,
    so an oversized frame is refused before it is buffered; and when the end octet is wrong.
    """
    if len(buf) - pos < 7:
        return None
    frame_type, channel, size = _FRAME_HEADER.unpack_from(buf, pos)
    if size + spec.FRAME_OVERHEAD > frame_max:
        raise AmqpError(
            spec.FRAME_ERROR, f"frame of {size + 8} bytes exceeds frame_max {frame_max}"
        )
    end = pos + 7 + size
    if len(buf) <= end:
        return None
    if buf[end] != spec.FRAME_END:
        raise AmqpError(spec.FRAME_ERROR, "frame does not end with 0xCE")
    return frame_type, channel, pos + 7, end
