"""Record batch v2: build, parse, validate, patch, decode (incl. every codec)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayou.errors import CorruptMessage, InvalidRecord
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record

CODECS = [
    R.COMPRESSION_NONE,
    R.COMPRESSION_GZIP,
    R.COMPRESSION_SNAPPY,
    R.COMPRESSION_LZ4,
    R.COMPRESSION_ZSTD,
]


def sample(n: int = 5, ts: int = 1_700_000_000_000) -> list[Record]:
    return [
        Record(
            ts + i,
            f"k{i}".encode() if i % 2 else None,
            b"v" * (i * 50),
            [("h", b"x"), ("null", None)] if i % 3 == 0 else [],
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_codec(codec: int) -> None:
    recs = sample(20)
    batch = R.build_batch(recs, base_offset=100, compression=codec)
    (h,) = R.validate_batches(batch)
    assert h.compression == codec
    assert h.base_offset == 100 and h.last_offset == 119 and h.records_count == 20
    assert h.size == len(batch)
    assert h.max_timestamp == recs[-1].timestamp and h.base_timestamp == recs[0].timestamp
    out = list(R.iter_records(batch))
    assert [r.offset for r in out] == list(range(100, 120))
    assert [(r.timestamp, r.key, r.value, list(r.headers)) for r in out] == [
        (r.timestamp, r.key, r.value, list(r.headers)) for r in recs
    ]


KAFKA_PY = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@KAFKA_PY
@pytest.mark.parametrize("codec", CODECS[:2])  # kafka-python lacks the other codec libraries
def test_kafka_python_reads_our_batches(codec: int) -> None:
    from kafka.record.default_records import DefaultRecordBatch

    recs = sample(7)
    batch = DefaultRecordBatch(R.build_batch(recs, base_offset=5, compression=codec))
    assert batch.validate_crc()
    got = [(r.offset, r.timestamp, r.key, r.value) for r in batch]
    assert got == [(5 + i, r.timestamp, r.key, r.value) for i, r in enumerate(recs)]


@KAFKA_PY
@pytest.mark.parametrize("codec", ["gzip"])
def test_we_read_kafka_python_batches(codec: str) -> None:
    from kafka.record.default_records import DefaultRecordBatchBuilder

    ids = {"gzip": 1}
    b = DefaultRecordBatchBuilder(2, ids[codec], False, 7, 1, 0, 1 << 20)
    for i in range(10):
        b.append(i, 1000 + i, b"k", b"value-%d" % i, [("a", b"b")])
    data = bytes(b.build())
    (h,) = R.validate_batches(data)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence) == (7, 1, 0, 9)
    out = list(R.iter_records(data))
    assert [r.value for r in out] == [b"value-%d" % i for i in range(10)]
    assert out[3].headers == [("a", b"b")]


def test_snappy_uses_xerial_framing() -> None:
    body = bytes(range(256)) * 300  # > one 32 KiB xerial block
    framed = R.compress(R.COMPRESSION_SNAPPY, body)
    assert framed.startswith(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01")
    assert R.decompress(R.COMPRESSION_SNAPPY, framed) == body


def test_raw_snappy_is_accepted() -> None:
    import cramjam

    body = R.build_batch(sample(3))[R.HEADER_SIZE :]
    raw = bytes(cramjam.snappy.compress_raw(body))
    assert R.decompress(R.COMPRESSION_SNAPPY, raw) == body


def test_records_in_a_row_with_the_same_headers_each_get_their_own_list() -> None:
    """The decoder reuses the previous record's decoded headers when the bytes are the same:
    each record still gets its own list, and a change of headers is seen."""
    same = [("mqtt.qos", b"1"), ("mqtt.client-id", b"pub")]
    other = [("mqtt.qos", b"0"), ("n", None)]
    layout = [same, same, same, other, other, [], same]
    records = [Record(i, b"k", b"v%d" % i, list(h)) for i, h in enumerate(layout)]
    decoded = list(R.iter_records(R.build_batch(records)))
    assert [r.headers for r in decoded] == layout
    assert [r.value for r in decoded] == [b"v%d" % i for i in range(len(layout))]
    decoded[0].headers.append(("x", b"y"))
    assert decoded[1].headers == same  # not the same list


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(1, [0]), (3, [0, 1, 63, 64]), (40, [100, 16383, 16384, 70_000]), (20_000, [1, 100])],
)
def test_a_uniform_batch_is_byte_for_byte_the_batch_of_the_same_records(
    count: int, sizes: list[int]
) -> None:
    """``build_uniform_batch`` (one timestamp, headers encoded once) builds exactly what
    ``build_batch`` builds, past the one- and two-byte varints and the table of small ones."""
    headers = [[("mqtt.qos", b"1"), ("mqtt.client-id", b"c")], [], [("n", None), ("h", b"x" * 300)]]
    records = [
        Record(
            1_700_000_000_000, b"t/%d" % i * (i % 3), b"v" * sizes[i % len(sizes)], headers[i % 3]
        )
        for i in range(count)
    ]
    entries = [(r.key or b"", r.value or b"", R.encode_headers(r.headers)) for r in records]
    batch = R.build_uniform_batch(1_700_000_000_000, entries)
    assert batch == R.build_batch(records)
    assert [(r.key, r.value, r.headers) for r in R.iter_records(batch)] == [
        (r.key, r.value, r.headers) for r in records
    ]


def test_several_batches_back_to_back() -> None:
    a = R.build_batch(sample(2))
    b = R.build_batch(sample(3), compression=R.COMPRESSION_LZ4)
    hs = R.validate_batches(a + b)
    assert [h.records_count for h in hs] == [2, 3]
    assert [p for p, _ in R.iter_batches(a + b)] == [0, len(a)]


def test_crc_corruption_detected() -> None:
    batch = bytearray(R.build_batch(sample(3)))
    for pos in (21, 30, 61, len(batch) - 1):
        bad = bytearray(batch)
        bad[pos] ^= 0x01
        with pytest.raises(CorruptMessage):
            R.validate_batches(bad)


def test_framing_errors() -> None:
    batch = R.build_batch(sample(3))
    with pytest.raises(CorruptMessage):
        R.validate_batches(batch[:-1])
    with pytest.raises(CorruptMessage):
        R.validate_batches(batch + batch[:10])
    with pytest.raises(InvalidRecord):
        R.validate_batches(b"")
    bad = bytearray(batch)
    bad[8:12] = (10).to_bytes(4, "big")
    with pytest.raises(CorruptMessage):
        R.validate_batches(bad)


def test_old_magic_rejected() -> None:
    bad = bytearray(R.build_batch(sample(1)))
    bad[16] = 1
    with pytest.raises(InvalidRecord):
        R.validate_batches(bad)
    bad[16] = 7
    with pytest.raises(CorruptMessage):
        R.validate_batches(bad)


def test_inconsistent_count_rejected() -> None:
    bad = bytearray(R.build_batch(sample(3)))
    bad[57:61] = (5).to_bytes(4, "big")  # records_count (not CRC-valid either)
    from crc32c import crc32c

    bad[17:21] = crc32c(bytes(bad[21:])).to_bytes(4, "big")
    with pytest.raises(InvalidRecord):
        R.validate_batches(bad)


def test_patch_base_offset_keeps_crc() -> None:
    buf = bytearray(R.build_batch(sample(3)))
    R.patch_base_offset(buf, 0, 12345)
    (h,) = R.validate_batches(buf)
    assert h.base_offset == 12345
    assert [r.offset for r in R.iter_records(buf)] == [12345, 12346, 12347]


def test_patch_log_append_time() -> None:
    a = R.build_batch(sample(2))
    buf = bytearray(a + R.build_batch(sample(3), compression=R.COMPRESSION_GZIP))
    R.patch_log_append_time(buf, len(a), 42)
    hs = R.validate_batches(buf)
    assert hs[0].timestamp_type == R.TIMESTAMP_CREATE_TIME
    assert hs[1].timestamp_type == R.TIMESTAMP_LOG_APPEND_TIME and hs[1].max_timestamp == 42
    assert [r.timestamp for r in R.iter_records(memoryview(buf)[len(a) :])] == [42, 42, 42]


def test_control_batch() -> None:
    batch = R.build_control_batch(True, producer_id=3, producer_epoch=0, timestamp=9)
    (h,) = R.validate_batches(batch)
    assert h.is_control and h.is_transactional
    (rec,) = R.iter_records(batch)
    assert R.control_type(rec) == R.CONTROL_COMMIT


def test_sequence_wraps() -> None:
    batch = R.build_batch(sample(3), producer_id=1, producer_epoch=0, base_sequence=2**31 - 2)
    (h,) = R.validate_batches(batch)
    assert h.last_sequence == 0


records_st = st.lists(
    st.builds(
        Record,
        st.integers(-(2**40), 2**40),
        st.one_of(st.none(), st.binary(max_size=20)),
        st.one_of(st.none(), st.binary(max_size=200)),
        st.lists(
            st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=5))), max_size=3
        ),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(records_st, st.sampled_from(CODECS), st.integers(0, 2**40))
def test_round_trip_property(recs: list[Record], codec: int, base: int) -> None:
    batch = R.build_batch(recs, base_offset=base, compression=codec)
    (h,) = R.validate_batches(batch)
    assert h.max_timestamp == max(r.timestamp for r in recs)
    out = list(R.iter_records(batch))
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in out] == [
        (base + i, r.timestamp, r.key, r.value, list(r.headers)) for i, r in enumerate(recs)
    ]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_crashes(data: bytes) -> None:
    with contextlib.suppress(CorruptMessage, InvalidRecord):
        R.validate_batches(data)
