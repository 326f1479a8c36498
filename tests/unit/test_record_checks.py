"""A compacted partition refuses keyless records: nothing written, each one named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bayou.config import TopicConfig, parse_topic_configs
from bayou.errors import ErrorCode, RecordErrors
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.log import PartitionLog


def open_log(path: Path, policy: str) -> PartitionLog:
    config = TopicConfig.resolve({}, parse_topic_configs({"cleanup.policy": policy}))
    return PartitionLog("t", 3, path, config, lambda: 1_000_000)


def test_keyless_records_are_refused_on_compacted_partitions(tmp_path: Path) -> None:
    log = open_log(tmp_path, "compact,delete")
    keyed = R.build_batch([Record(1, b"a", b"1"), Record(2, b"b", b"2")])
    mixed = R.build_batch(
        [Record(3, b"c", b"3"), Record(4, None, b"4"), Record(5, None, None)],
        compression=R.COMPRESSION_ZSTD,
    )
    with pytest.raises(RecordErrors) as info:
        log.append(keyed + mixed)
    reason = "Compacted topic cannot accept message without key in topic partition t-3."
    assert info.value.code == ErrorCode.INVALID_RECORD
    assert info.value.record_errors == [(3, reason), (4, reason)]
    assert "2 record errors" in info.value.message
    assert log.log_end_offset == 0 and log.size_bytes == 0
    assert log.append(keyed).base_offset == 0  # a tombstone (key, no value) is fine too
    assert log.append(R.build_batch([Record(6, b"a", None)])).base_offset == 2
    log.close()


def test_other_partitions_do_not_look_at_keys(tmp_path: Path) -> None:
    log = open_log(tmp_path, "delete")
    assert log.append(R.build_batch([Record(1, None, b"1")])).last_offset == 0
    log.close()
