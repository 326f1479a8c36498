"""The pieces of share groups across brokers that need no broker: a door member decoding a
relayed ShareFetch answer (``bayou/core/shares/remote.py``), and share sessions kept apart
by the connection that relays them (``bayou/gateways/kafka/share_sessions.py``)."""

from __future__ import annotations

from collections.abc import Callable

from bayou.core.shares.remote import acquired_records
from bayou.gateways.kafka.share_sessions import ShareSession, ShareSessions
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import Record, build_batch


def test_a_relayed_answer_yields_every_acquired_offset_and_the_gaps_last() -> None:
    # offsets 10, 11, 13, 14 stored (12 compacted away); 11..13 acquired, a second time
    batch = build_batch(
        [Record(1000 + i, b"k%d" % i, b"v%d" % i) for i in range(4)],
        base_offset=10,
        offset_deltas=[0, 1, 3, 4],
    )
    part = m.ShareFetchResponsePartitionData(
        partition_index=3,
        records=batch,
        acquired_records=[
            m.ShareFetchResponseAcquiredRecords(first_offset=11, last_offset=13, delivery_count=2)
        ],
    )
    got = list(acquired_records("t", part))
    assert [(t, p, o, c) for t, p, o, c, _r in got] == [
        ("t", 3, 11, 2),
        ("t", 3, 13, 2),
        ("t", 3, 12, 2),
    ]
    records = [r for *_rest, r in got]
    assert records[0] is not None and records[0].value == b"v1" and records[0].key == b"k1"
    assert records[1] is not None and records[1].value == b"v2"
    assert records[2] is None  # acknowledged GAP by the member


def test_nothing_acquired_yields_nothing() -> None:
    part = m.ShareFetchResponsePartitionData(partition_index=0, records=b"")
    assert list(acquired_records("t", part)) == []


class Conn:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def close(self) -> None:
        for cb in self.callbacks:
            cb()


def test_relayed_sessions_of_one_member_are_kept_apart_by_their_connection() -> None:
    released: list[tuple[str, object]] = []
    left: list[tuple[str, str]] = []

    def release(s: ShareSession) -> None:
        released.append((s.member_id, s.via))

    sessions = ShareSessions(release, lambda g, mem: left.append((g, mem)))
    direct, relay_b, relay_c = Conn(), Conn(), Conn()
    mine = sessions.open("g", "m", direct)
    via_b = sessions.open("g", "m", relay_b, relay_b)
    via_c = sessions.open("g", "m", relay_c, relay_c)
    assert released == []  # three sessions, none replaced another
    assert sessions.get("g", "m") is mine
    assert sessions.get("g", "m", relay_b) is via_b
    assert sessions.get("g", "m", relay_c) is via_c
    again = sessions.open("g", "m", relay_b, relay_b)  # epoch 0 again over B: replaces B's
    assert released == [("m", relay_b)] and sessions.get("g", "m", relay_b) is again
    relay_c.close()  # the leader C closed its relaying connection
    assert released[-1] == ("m", relay_c) and sessions.get("g", "m", relay_c) is None
    assert sessions.get("g", "m") is mine and len(sessions) == 2


def test_a_member_tied_to_its_connection_leaves_when_it_closes() -> None:
    left: list[tuple[str, str]] = []
    sessions = ShareSessions(lambda _s: None, lambda g, mem: left.append((g, mem)))
    link = Conn()
    sessions.tie(link, "amqp:q", "a")
    sessions.tie(link, "amqp:q", "b")
    assert left == []
    link.close()
    assert left == [("amqp:q", "a"), ("amqp:q", "b")]
