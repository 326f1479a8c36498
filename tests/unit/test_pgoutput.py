"""The pgoutput decoder on messages PostgreSQL 15 produced (captured from
``pg_logical_slot_peek_binary_changes``), and on broken ones."""

from __future__ import annotations

import pytest

from bayou.connect.sources import pgoutput

RELATION = (
    b"R\x00\x00@\x01public\x00t\x00d\x00\x02\x01id\x00\x00\x00\x00\x17\xff\xff\xff\xff"
    b"\x00v\x00\x00\x00\x00\x19\xff\xff\xff\xff"
)
INSERT = b"I\x00\x00@\x01N\x00\x02t\x00\x00\x00\x013t\x00\x00\x00\x01c"
BEGIN = b"B\x00\x00\x00\x00\x01\x92M\xe0\x00\x03\x04\xe5< \x14\x80\x00\x00\x02\xd8"
COMMIT = (
    b"C\x00\x00\x00\x00\x00\x01\x92M\xe0\x00\x00\x00\x00\x01\x92N\x10\x00\x03\x04\xe5< \x14\x80"
)


def test_decodes_a_transaction() -> None:
    begin = pgoutput.decode(BEGIN)
    assert begin == pgoutput.Begin(0x1924DE0, begin.commit_ts_us, 728)  # type: ignore[union-attr]
    relation = pgoutput.decode(RELATION)
    assert relation == pgoutput.Relation(
        16385,
        "public",
        "t",
        "d",
        (pgoutput.Column("id", 23, -1, True), pgoutput.Column("v", 25, -1, False)),
    )
    assert pgoutput.decode(INSERT) == pgoutput.Insert(16385, (b"3", b"c"))
    commit = pgoutput.decode(COMMIT)
    assert isinstance(commit, pgoutput.Commit)
    assert (commit.commit_lsn, commit.end_lsn) == (0x1924DE0, 0x1924E10)
    assert commit.commit_ts_us == begin.commit_ts_us  # type: ignore[union-attr]


def test_update_and_delete_tuples() -> None:
    update = b"U\x00\x00@\x01O\x00\x02t\x00\x00\x00\x012nN\x00\x02t\x00\x00\x00\x012u"
    assert pgoutput.decode(update) == pgoutput.Update(
        16385, (b"2", None), False, (b"2", pgoutput.UNCHANGED_TOAST)
    )
    delete = b"D\x00\x00@\x01K\x00\x02t\x00\x00\x00\x012n"
    assert pgoutput.decode(delete) == pgoutput.Delete(16385, (b"2", None), True)


@pytest.mark.parametrize(
    "data",
    [INSERT[:-1], RELATION[:9], b"Z", b"I\x00\x00@\x01X", b"I\x00\x00@\x01N\x00\x01q"],
)
def test_broken_messages_raise_decode_error(data: bytes) -> None:
    with pytest.raises(pgoutput.DecodeError):
        pgoutput.decode(data)


def test_lsn_text_round_trip() -> None:
    assert pgoutput.lsn_text(0x16B374D848) == "16/B374D848"
    assert pgoutput.parse_lsn("16/B374D848") == 0x16B374D848
    assert pgoutput.lsn_text(pgoutput.parse_lsn("0/0")) == "0/0"
