"""The engine-neutral part of every append: check a produce payload, assign its offsets.

Every engine stores Kafka v2 record batches exactly as produced, apart from the base offset
(patched in place, outside the CRC) and, on LogAppendTime topics, the timestamps.  What an
engine must do before it stores a payload is the same everywhere and lives here:

1. ``check_payload`` (no lock needed): one copy into a ``bytearray`` (none when the caller
   hands a writable payload over — the Kafka door's request frames are its own), framing, magic and
   CRC-32C of every batch (``validate_batches``), ``max.message.bytes`` per batch and
   ``segment.bytes`` for the whole payload, no control batch (clients may not write
   transaction markers: the broker's ``write_marker`` path), and — on compacted topics only,
   the one check that decodes records — no record without a key
   (``record_checks.reject_keyless``);
2. the engine then checks the idempotent-producer state under its partition lock (a retry
   is answered with the offsets it got the first time), and
3. ``assign_offsets`` patches base offsets from the partition's next offset (and
   LogAppendTime), returning per batch (base offset, last offset, max timestamp, size) — what
   the engine indexes.  A CreateTime batch whose header max timestamp is missing (-1, as
   older Sarama sends) or below its first timestamp gets the real one, computed from its
   records and patched in with a fresh CRC: no batch is stored whose max timestamp would
   let retention delete it early or hide it from lookups by time.

Only batch headers are read on the common path: no per-record work.
"""

from __future__ import annotations

from typing import Literal, overload

from bayou.config import TopicConfig
from bayou.errors import InvalidRecord, MessageTooLarge, RecordListTooLarge
from bayou.protocol.kafka.records import (
    TIMESTAMP_CREATE_TIME,
    BatchHeader,
    max_timestamp_is_missing,
    patch_base_offset,
    patch_log_append_time,
    patch_max_timestamp,
    records_max_timestamp,
    validate_batches,
)
from bayou.storage.engine import Buffer
from bayou.storage.record_checks import reject_keyless

BatchSpan = tuple[int, int, int, int]  # base offset, last offset, max timestamp, size


@overload
def check_payload(
    records: Buffer,
    config: TopicConfig,
    topic: str,
    partition: int,
    *,
    owned: Literal[False] = False,
) -> tuple[bytearray, list[BatchHeader]]: ...


@overload
def check_payload(
    records: Buffer, config: TopicConfig, topic: str, partition: int, *, owned: bool
) -> tuple[bytearray | memoryview, list[BatchHeader]]: ...


def check_payload(
    records: Buffer, config: TopicConfig, topic: str, partition: int, *, owned: bool = False
) -> tuple[bytearray | memoryview, list[BatchHeader]]:
    """The payload to patch — a private copy, or the payload itself when the caller hands a
    writable one over (``owned``) — and its validated batch headers; raises KafkaError."""
    buf: bytearray | memoryview
    if owned and isinstance(records, (bytearray, memoryview)) and not memoryview(records).readonly:
        buf = records  # handed over: patched in place
    else:
        buf = bytearray(records)
    headers = validate_batches(buf)
    limit = config.max_message_bytes
    for h in headers:
        if h.is_control:  # Kafka: "clients are not allowed to write control records"
            raise InvalidRecord(
                f"control batches (transaction markers) cannot be produced to {topic}-"
                f"{partition}: only the transaction coordinator writes them"
            )
        if h.size > limit:
            raise MessageTooLarge(
                f"record batch of {h.size} bytes exceeds max.message.bytes {limit}"
            )
    if len(buf) > config.segment_bytes:
        raise RecordListTooLarge(
            f"{len(buf)} bytes of batches exceed segment.bytes {config.segment_bytes}"
        )
    if config.compact:
        reject_keyless(topic, partition, buf, headers)
    return buf, headers


def assign_offsets(
    buf: bytearray | memoryview, headers: list[BatchHeader], next_offset: int, append_time: int
) -> list[BatchSpan]:
    """Patch base offsets from ``next_offset`` (and the LogAppendTime when ``append_time``
    ≥ 0); the spans of the batches as stored."""
    spans: list[BatchSpan] = []
    pos = 0
    for h in headers:
        patch_base_offset(buf, pos, next_offset)
        max_ts = h.max_timestamp
        if append_time >= 0:
            patch_log_append_time(buf, pos, append_time)
            max_ts = append_time
        elif max_timestamp_is_missing(h) and h.timestamp_type == TIMESTAMP_CREATE_TIME:
            max_ts = records_max_timestamp(buf, pos, h)  # rare: decodes the records
            patch_max_timestamp(buf, pos, max_ts)
        last = next_offset + h.last_offset_delta
        spans.append((next_offset, last, max_ts, h.size))
        next_offset = last + 1
        pos += h.size
    return spans
