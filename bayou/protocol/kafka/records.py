"""Kafka record batches (magic v2): parse, validate, patch, build and decode.

Theory of operation
-------------------
A produce request carries one or more record batches back to back.  A batch is a 61-byte
header followed by records (compressed as a whole when the codec bits are set)::

    offset  size  field
         0     8  base_offset              (not covered by the CRC)
         8     4  batch_length             (bytes after this field: size = batch_length + 12)
        12     4  partition_leader_epoch   (not covered by the CRC)
        16     1  magic                    (2)
        17     4  crc                      (CRC-32C of bytes 21 .. end)
        21     2  attributes               (codec bits 0-2, timestamp type bit 3,
                                            transactional bit 4, control bit 5)
        23     4  last_offset_delta
        27     8  base_timestamp
        35     8  max_timestamp
        43     8  producer_id
        51     2  producer_epoch
        53     4  base_sequence
        57     4  records_count
        61     .  records

The hot path (produce, fetch, recovery) only touches headers: ``BatchHeader`` comes from a
single precompiled ``struct.Struct``; ``validate_batches`` checks framing, magic and CRC over
the whole payload; ``patch_base_offset`` assigns offsets in place without touching the CRC
(the base offset is outside it); ``patch_log_append_time`` stamps LogAppendTime topics and
recomputes the CRC.  Batches are stored and served exactly as received, except that a header
whose max timestamp is missing or below its first timestamp (older Sarama releases send -1)
gets the max computed from its records (``records_max_timestamp``, the one place the append
path decodes records, and only for such batches) patched in (``patch_max_timestamp``).

Off the hot path (gateways, CLI, tests, exact timestamp lookups) ``build_batch`` builds a
batch from ``Record`` values and ``iter_records`` decodes one back into ``DecodedRecord``
values, compressing and decompressing with cramjam.  Snappy is written in the xerial
framing Kafka's Java client uses and read in both xerial and raw form.

This module is sans-I/O: no os, socket, asyncio or time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import cramjam
from crc32c import crc32c

from bayou.errors import CorruptMessage, InvalidRecord, UnsupportedCompressionType

HEADER_SIZE = 61
LOG_OVERHEAD = 12  # base_offset + batch_length: bytes not counted in batch_length
MAGIC = 2

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4
COMPRESSION_NAMES = {"none": 0, "uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

TIMESTAMP_CREATE_TIME = 0
TIMESTAMP_LOG_APPEND_TIME = 1

ATTR_CODEC_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

CONTROL_ABORT = 0
CONTROL_COMMIT = 1

_HEADER = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == HEADER_SIZE
_BASE_OFFSET = struct.Struct(">q")
_LENGTH_AND_MAGIC = struct.Struct(">q i i b")  # base_offset, batch_length, epoch, magic
_LENGTH_AND_ATTRIBUTES = struct.Struct(">8x i 9x h")  # batch_length, attributes
_CRC = struct.Struct(">I")
_ATTRIBUTES = struct.Struct(">h")
_TIMESTAMP = struct.Struct(">q")
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")

_OFF_CRC = 17
_OFF_ATTRIBUTES = 21
_OFF_MAX_TIMESTAMP = 35
_MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD  # 49: a batch with no records

_SEQUENCE_MAX = 2**31 - 1

Buffer = bytes | bytearray | memoryview


class BatchHeader(NamedTuple):
    """The 61-byte header of a v2 record batch."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def compression(self) -> int:
        return self.attributes & ATTR_CODEC_MASK

    @property
    def timestamp_type(self) -> int:
        return TIMESTAMP_LOG_APPEND_TIME if self.attributes & ATTR_TIMESTAMP_TYPE else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def size(self) -> int:
        """Bytes the whole batch takes on the wire and on disk."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def has_producer(self) -> bool:
        return self.producer_id >= 0

    @property
    def last_sequence(self) -> int:
        """Sequence of the batch's last record (wrapping at 2**31-1), or -1 without one."""
        if self.base_sequence < 0:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % (_SEQUENCE_MAX + 1)


class Record(NamedTuple):
    """A record to build a batch from (its offset delta is its position in the batch)."""

    timestamp: int = 0
    key: bytes | None = None
    value: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()


class DecodedRecord(NamedTuple):
    """A record decoded from a batch, with its absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


# --------------------------------------------------------------------------- headers


def parse_header(buf: Buffer, pos: int = 0) -> BatchHeader:
    """Unpack the batch header at ``pos`` (the caller guarantees 61 bytes are there)."""
    return BatchHeader._make(_HEADER.unpack_from(buf, pos))


def length_and_attributes(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    """(batch length, attributes) of the batch header at ``pos`` (the caller guarantees 61
    bytes are there): the cheap look of a caller that needs no more of the header."""
    length, attributes = _LENGTH_AND_ATTRIBUTES.unpack_from(buf, pos)
    return length, attributes


def crc_ok(buf: Buffer, pos: int, header: BatchHeader) -> bool:
    """Whether the CRC-32C of the batch at ``pos`` matches its header."""
    mv = memoryview(buf)
    return crc32c(mv[pos + _OFF_ATTRIBUTES : pos + header.size]) == header.crc


def check_batch(buf: Buffer, pos: int, end: int) -> BatchHeader:
    """Check the framing, magic and CRC of the batch at ``pos`` within ``buf[:end]``.

    Raises CorruptMessage for framing or CRC errors and InvalidRecord for an old
    (pre-v2) message format.
    """
    if end - pos < LOG_OVERHEAD + 5:
        raise CorruptMessage(f"truncated record batch at byte {pos}")
    _, batch_length, _, magic = _LENGTH_AND_MAGIC.unpack_from(buf, pos)
    if magic != MAGIC:
        if magic in (0, 1):
            raise InvalidRecord(f"message format v{magic} is not supported; use v2 batches")
        raise CorruptMessage(f"unknown record batch magic {magic} at byte {pos}")
    if batch_length < _MIN_BATCH_LENGTH or pos + LOG_OVERHEAD + batch_length > end:
        raise CorruptMessage(f"record batch at byte {pos} has a bad length {batch_length}")
    header = parse_header(buf, pos)
    if not crc_ok(buf, pos, header):
        raise CorruptMessage(f"record batch at byte {pos} fails its CRC check")
    return header


def validate_batches(buf: Buffer) -> list[BatchHeader]:
    """Validate a produce payload of one or more batches back to back; return their headers.

    Checks framing (every length inside the buffer, no trailing partial batch), magic 2,
    CRC-32C, and that producer batches are non-empty with ``last_offset_delta ==
    records_count - 1``.  Raises CorruptMessage (framing, CRC) or InvalidRecord (old
    format, inconsistent counts, empty payload).
    """
    end = len(buf)
    if end == 0:
        raise InvalidRecord("no record batches")
    headers: list[BatchHeader] = []
    pos = 0
    while pos < end:
        header = check_batch(buf, pos, end)
        if header.records_count < 1 or header.last_offset_delta != header.records_count - 1:
            raise InvalidRecord(
                f"record batch at byte {pos} has {header.records_count} records but "
                f"last offset delta {header.last_offset_delta}"
            )
        headers.append(header)
        pos += header.size
    return headers


# --------------------------------------------------------------------------- patching


def patch_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Set the base offset of the batch at ``pos`` (outside the CRC: no recompute)."""
    _BASE_OFFSET.pack_into(buf, pos, base_offset)


def patch_log_append_time(buf: bytearray | memoryview, pos: int, timestamp_ms: int) -> None:
    """Mark the batch at ``pos`` as LogAppendTime with ``max_timestamp = timestamp_ms``.

    Consumers read every record's timestamp as the batch's max timestamp when the timestamp
    type bit is set, so the records themselves are untouched.  The CRC is recomputed.
    """
    (attributes,) = _ATTRIBUTES.unpack_from(buf, pos + _OFF_ATTRIBUTES)
    _ATTRIBUTES.pack_into(buf, pos + _OFF_ATTRIBUTES, attributes | ATTR_TIMESTAMP_TYPE)
    patch_max_timestamp(buf, pos, timestamp_ms)


def patch_max_timestamp(buf: bytearray | memoryview, pos: int, timestamp_ms: int) -> None:
    """Set the max timestamp of the batch at ``pos`` and recompute its CRC (which covers
    everything from the attributes on)."""
    _TIMESTAMP.pack_into(buf, pos + _OFF_MAX_TIMESTAMP, timestamp_ms)
    (batch_length,) = struct.unpack_from(">i", buf, pos + 8)
    end = pos + LOG_OVERHEAD + batch_length
    _CRC.pack_into(buf, pos + _OFF_CRC, crc32c(memoryview(buf)[pos + _OFF_ATTRIBUTES : end]))


def max_timestamp_is_missing(header: BatchHeader) -> bool:
    """Whether a CreateTime batch's header max timestamp cannot be right: missing (-1, as
    older Sarama releases send) or below the batch's first timestamp."""
    return header.max_timestamp < header.base_timestamp or header.max_timestamp == NO_TIMESTAMP


def records_max_timestamp(buf: Buffer, pos: int, header: BatchHeader) -> int:
    """The largest record timestamp of the batch at ``pos``, from the records' timestamp
    deltas (decompressing when needed): what the header's max timestamp should say.
    Raises CorruptMessage when the records do not decode."""
    if header.records_count == 0:
        return header.max_timestamp
    batch = memoryview(buf)[pos : pos + header.size]
    return max(rec.timestamp for rec in iter_records(batch))


# --------------------------------------------------------------------------- varints


def _write_varint(out: bytearray, value: int) -> None:
    """Append a zigzag-encoded signed varint (protobuf style, up to 64 bits)."""
    if -64 <= value < 64:  # one byte: most deltas, lengths and header counts
        out.append(value << 1 if value >= 0 else (-value << 1) - 1)
        return
    v = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _read_varint(buf: Buffer, pos: int) -> tuple[int, int]:
    """Decode a zigzag varint at ``pos``; return (value, next position)."""
    try:
        b = buf[pos]
    except IndexError:
        raise CorruptMessage("truncated varint in record") from None
    if b < 0x80:  # one byte: most deltas, lengths and header counts
        return (b >> 1) ^ -(b & 1), pos + 1
    try:
        b2 = buf[pos + 1]
    except IndexError:
        raise CorruptMessage("truncated varint in record") from None
    if b2 < 0x80:  # two bytes: record lengths and deltas up to 8191
        v = (b & 0x7F) | (b2 << 7)
        return (v >> 1) ^ -(v & 1), pos + 2
    result = 0
    shift = 0
    while True:
        try:
            b = buf[pos]
        except IndexError:
            raise CorruptMessage("truncated varint in record") from None
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise CorruptMessage("varint too long in record")
    return (result >> 1) ^ -(result & 1), pos


def _read_bytes(buf: Buffer, pos: int) -> tuple[bytes | None, int]:
    length, pos = _read_varint(buf, pos)
    if length < 0:
        return None, pos
    if pos + length > len(buf):
        raise CorruptMessage("record field runs past the end of the batch")
    return bytes(buf[pos : pos + length]), pos + length


def _write_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        _write_varint(out, -1)
    else:
        _write_varint(out, len(data))
        out += data


# --------------------------------------------------------------------------- compression

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024
_INT32 = struct.Struct(">i")


def compress(codec: int, data: bytes) -> bytes:
    """Compress a batch's record bytes with a Kafka codec (snappy in xerial framing)."""
    if codec == COMPRESSION_NONE:
        return data
    if codec == COMPRESSION_GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == COMPRESSION_SNAPPY:
        out = bytearray(_XERIAL_HEADER)
        for i in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[i : i + _XERIAL_BLOCK]))
            out += _INT32.pack(len(block))
            out += block
        return bytes(out)
    if codec == COMPRESSION_LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise UnsupportedCompressionType(f"unknown compression codec {codec}")


def decompress(codec: int, data: Buffer) -> bytes:
    """Decompress a batch's record bytes; raise CorruptMessage when they do not decode."""
    raw = bytes(data)
    try:
        if codec == COMPRESSION_NONE:
            return raw
        if codec == COMPRESSION_GZIP:
            return bytes(cramjam.gzip.decompress(raw))
        if codec == COMPRESSION_SNAPPY:
            if raw.startswith(_XERIAL_MAGIC):
                return _xerial_decompress(raw)
            return bytes(cramjam.snappy.decompress_raw(raw))
        if codec == COMPRESSION_LZ4:
            return bytes(cramjam.lz4.decompress(raw))
        if codec == COMPRESSION_ZSTD:
            return bytes(cramjam.zstd.decompress(raw))
    except (cramjam.DecompressionError, ValueError, OSError) as exc:
        raise CorruptMessage(f"cannot decompress records: {exc}") from None
    raise UnsupportedCompressionType(f"unknown compression codec {codec}")


def _xerial_decompress(raw: bytes) -> bytes:
    out = bytearray()
    pos = len(_XERIAL_HEADER)
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise CorruptMessage("truncated xerial snappy block length")
        (length,) = _INT32.unpack_from(raw, pos)
        pos += 4
        if length < 0 or pos + length > len(raw):
            raise CorruptMessage("truncated xerial snappy block")
        out += bytes(cramjam.snappy.decompress_raw(raw[pos : pos + length]))
        pos += length
    return bytes(out)


# --------------------------------------------------------------------------- build / decode


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    _write_varint(out, value)
    return bytes(out)


_SMALL_VARINTS = 16384
# the encoding of 0 .. _SMALL_VARINTS - 1 (record lengths, offset deltas, key/value sizes)
_VARINTS = [_varint_bytes(v) for v in range(_SMALL_VARINTS)]


def build_uniform_batch(timestamp: int, entries: Sequence[tuple[bytes, bytes, bytes]]) -> bytes:
    """One uncompressed v2 batch (base offset 0, no producer) of ``entries`` — (key, value,
    headers encoded by ``encode_headers``) — all stamped ``timestamp``: what ``build_batch``
    builds from the same records, with less Python per record (a gateway's hot path)."""
    if not entries:
        raise ValueError("a record batch needs at least one record")
    small, varints = _SMALL_VARINTS, _VARINTS
    parts: list[bytes] = [bytes(HEADER_SIZE)]
    extend = parts.extend
    for delta, (key, value, headers) in enumerate(entries):
        k, v = len(key), len(value)
        if delta < small and k < small and v < small:
            d_b, k_b, v_b = varints[delta], varints[k], varints[v]
        else:
            d_b, k_b, v_b = _varint_bytes(delta), _varint_bytes(k), _varint_bytes(v)
        # attributes and timestamp delta (both 0), offset delta, key, value, headers
        size = 2 + len(d_b) + len(k_b) + k + len(v_b) + v + len(headers)
        extend((varints[size] if size < small else _varint_bytes(size), b"\x00\x00", d_b))
        extend((k_b, key, v_b, value, headers))
    return _sealed(
        bytearray().join(parts),
        0,
        -1,
        COMPRESSION_NONE,
        len(entries) - 1,
        timestamp,
        timestamp,
        NO_PRODUCER_ID,
        NO_PRODUCER_EPOCH,
        NO_SEQUENCE,
        len(entries),
    )


def _sealed(batch: bytearray, *fields: int) -> bytes:
    """``batch`` (a zeroed header, then its records) with the header filled in — ``fields``
    are base offset, partition leader epoch, attributes, last offset delta, base and max
    timestamp, producer id, epoch, base sequence and record count — and its CRC-32C."""
    base_offset, epoch, attributes, *rest = fields
    _HEADER.pack_into(
        batch, 0, base_offset, len(batch) - LOG_OVERHEAD, epoch, MAGIC, 0, attributes, *rest
    )
    _CRC.pack_into(batch, _OFF_CRC, crc32c(memoryview(batch)[_OFF_ATTRIBUTES:]))
    return bytes(batch)


def encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    """A record's headers as they sit in a batch (count first; ``build_uniform_batch``
    takes them so)."""
    out = bytearray()
    _write_varint(out, len(headers))
    for name, value in headers:
        _write_bytes(out, name.encode())
        _write_bytes(out, value)
    return bytes(out)


def _encode_record(
    out: bytearray, rec: Record, delta: int, base_timestamp: int, headers: bytes
) -> None:
    """Append ``rec`` (its headers already encoded: ``headers``) to ``out``."""
    body = bytearray(b"\x00")  # record attributes: unused
    _write_varint(body, rec.timestamp - base_timestamp)
    _write_varint(body, delta)
    _write_bytes(body, rec.key)
    _write_bytes(body, rec.value)
    body += headers
    _write_varint(out, len(body))
    out += body


def build_batch(
    records: Sequence[Record],
    *,
    base_offset: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    compression: int = COMPRESSION_NONE,
    timestamp_type: int = TIMESTAMP_CREATE_TIME,
    is_transactional: bool = False,
    is_control: bool = False,
    partition_leader_epoch: int = -1,
    max_timestamp: int | None = None,
    offset_deltas: Sequence[int] | None = None,
    last_offset_delta: int | None = None,
    base_timestamp: int | None = None,
) -> bytes:
    """Build one v2 batch of ``records`` (at least one), compressing with ``compression``.

    Rewriting a batch (log compaction) keeps the surviving records' ``offset_deltas`` and
    the original ``last_offset_delta``, so offsets and producer sequences keep their
    meaning; such a batch may hold no record at all when ``last_offset_delta`` and
    ``max_timestamp`` are given.
    """
    if not records and (last_offset_delta is None or max_timestamp is None):
        raise ValueError("a record batch needs at least one record")
    deltas = range(len(records)) if offset_deltas is None else offset_deltas
    if len(deltas) != len(records):
        raise ValueError("one offset delta per record")
    if base_timestamp is None:
        base_timestamp = records[0].timestamp if records else max_timestamp or 0
    body = bytearray()
    # records often share one headers list (a client's MQTT PUBLISHes): encoded once
    last_headers: object = None
    headers = b""
    for delta, rec in zip(deltas, records, strict=True):
        if rec.headers is not last_headers:
            last_headers = rec.headers
            headers = encode_headers(rec.headers)
        _encode_record(body, rec, delta, base_timestamp, headers)
    payload = compress(compression, bytes(body)) if records else b""
    if max_timestamp is None:
        max_timestamp = max(r.timestamp for r in records)
    if last_offset_delta is None:
        last_offset_delta = len(records) - 1
    attributes = (compression if records else COMPRESSION_NONE) & ATTR_CODEC_MASK
    if timestamp_type == TIMESTAMP_LOG_APPEND_TIME:
        attributes |= ATTR_TIMESTAMP_TYPE
    if is_transactional:
        attributes |= ATTR_TRANSACTIONAL
    if is_control:
        attributes |= ATTR_CONTROL
    batch = bytearray(HEADER_SIZE)
    batch += payload
    return _sealed(
        batch,
        base_offset,
        partition_leader_epoch,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    )


def build_control_batch(
    commit: bool,
    *,
    producer_id: int,
    producer_epoch: int,
    timestamp: int,
    coordinator_epoch: int = 0,
    base_offset: int = 0,
) -> bytes:
    """Build a transaction marker: a control batch holding one COMMIT or ABORT record."""
    key = _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    return build_batch(
        [Record(timestamp, key, value)],
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        is_transactional=True,
        is_control=True,
    )


def control_type(record: DecodedRecord) -> int:
    """CONTROL_COMMIT or CONTROL_ABORT for the record of a control batch."""
    if record.key is None or len(record.key) < _CONTROL_KEY.size:
        raise CorruptMessage("control record without a valid key")
    _version, kind = _CONTROL_KEY.unpack_from(record.key)
    return int(kind)


def iter_batches(buf: Buffer) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) of each whole batch in ``buf``; a trailing partial is skipped."""
    pos = 0
    end = len(buf)
    while end - pos >= HEADER_SIZE:
        header = parse_header(buf, pos)
        if header.batch_length < _MIN_BATCH_LENGTH or pos + header.size > end:
            return
        yield pos, header
        pos += header.size


def iter_records(batch: Buffer) -> Iterator[DecodedRecord]:
    """Decode the records of the single batch at the start of ``batch``.

    Offsets are absolute (base offset + delta).  For LogAppendTime batches every record's
    timestamp is the batch's max timestamp, as consumers see it.
    """
    mv = memoryview(batch)
    if len(mv) < HEADER_SIZE:
        raise CorruptMessage("truncated record batch")
    header = parse_header(mv)
    if header.magic != MAGIC:
        raise CorruptMessage(f"unsupported record batch magic {header.magic}")
    if header.size > len(mv):
        raise CorruptMessage("truncated record batch")
    if header.records_count == 0:
        return  # a batch emptied by compaction, kept for its offsets and producer state
    data = decompress(header.compression, mv[HEADER_SIZE : header.size])
    append_time = header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    max_timestamp = header.max_timestamp
    n = len(data)
    read_varint = _read_varint
    new_record = tuple.__new__  # DecodedRecord(...) without the keyword-handling __new__
    pos = 0
    last_raw: bytes | None = None  # the header bytes of the last record decoded, and headers
    last: list[tuple[str, bytes | None]] = []
    # The hot loop of every reader: one-byte varints (almost all of them) are decoded inline
    # and fields are sliced from ``data`` directly; ``_read_varint`` takes the longer ones.
    try:
        for _ in range(header.records_count):
            b = data[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                length, pos = read_varint(data, pos)
            end = pos + length
            if length < 0 or end > n:
                raise CorruptMessage("record runs past the end of its batch")
            pos += 1  # attributes
            b = data[pos]
            if b < 0x80:
                ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                ts_delta, pos = read_varint(data, pos)
            b = data[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                offset_delta, pos = read_varint(data, pos)
            fields: list[bytes | None] = []
            for _f in range(2):  # key, value
                b = data[pos]
                if b < 0x80:
                    size, pos = (b >> 1) ^ -(b & 1), pos + 1
                else:
                    size, pos = read_varint(data, pos)
                if size < 0:
                    fields.append(None)
                    continue
                if pos + size > n:
                    raise CorruptMessage("record field runs past the end of the batch")
                fields.append(data[pos : pos + size])
                pos += size
            # Records in a row tend to carry the same headers (one producer's): the previous
            # record's are reused when the bytes are the same.
            raw_headers = data[pos:end]
            if raw_headers == last_raw:
                timestamp = max_timestamp if append_time else base_timestamp + ts_delta
                yield new_record(
                    DecodedRecord,
                    (base_offset + offset_delta, timestamp, fields[0], fields[1], last[:]),
                )
                pos = end
                continue
            b = data[pos]
            if b < 0x80:
                count, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                count, pos = read_varint(data, pos)
            headers: list[tuple[str, bytes | None]] = []
            for _h in range(count):
                for _f in range(2):  # name, value
                    b = data[pos]
                    if b < 0x80:
                        size, pos = (b >> 1) ^ -(b & 1), pos + 1
                    else:
                        size, pos = read_varint(data, pos)
                    if size < 0:
                        fields.append(None)
                        continue
                    if pos + size > n:
                        raise CorruptMessage("record field runs past the end of the batch")
                    fields.append(data[pos : pos + size])
                    pos += size
                hval = fields.pop()
                name = fields.pop()
                headers.append(((name or b"").decode("utf-8", "replace"), hval))
            if pos != end:
                raise CorruptMessage("record length does not match its fields")
            last_raw, last = raw_headers, headers
            timestamp = max_timestamp if append_time else base_timestamp + ts_delta
            yield new_record(
                DecodedRecord,
                (base_offset + offset_delta, timestamp, fields[0], fields[1], headers),
            )
    except IndexError:
        raise CorruptMessage("truncated varint in record") from None


_LENGTH = struct.Struct(">i")


def whole_batches_prefix(buf: Buffer) -> int:
    """Length of the longest prefix of ``buf`` made of whole batches (framing only)."""
    pos = 0
    end = len(buf)
    while end - pos >= LOG_OVERHEAD:
        (batch_length,) = _LENGTH.unpack_from(buf, pos + 8)
        if batch_length < _MIN_BATCH_LENGTH or pos + LOG_OVERHEAD + batch_length > end:
            break
        pos += LOG_OVERHEAD + batch_length
    return pos
