"""LogManager: topics, partitions, metadata persistence, producer ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from bayou.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidTopic,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)
from bayou.protocol.kafka import records as R
from bayou.storage.manager import LogManager


def manager(path: Path) -> LogManager:
    m = LogManager(path, {"segment.bytes": 4096})
    m.open()
    return m


def test_topics_persist(tmp_path: Path) -> None:
    m = manager(tmp_path)
    cid = m.cluster_id
    assert len(cid) == 22
    meta = m.create_topic("orders", 3, {"segment.bytes": "1024"})
    assert meta.partitions == 3 and meta.configs == {"segment.bytes": 1024}
    assert m.topic_config("orders").segment_bytes == 1024
    assert m.topic_config("orders")["retention.ms"] == 7 * 24 * 3600 * 1000
    m.partition("orders", 2).append(R.build_batch([R.Record(1, None, b"v")]))
    m.create_partitions("orders", 5)
    m.close()
    m = manager(tmp_path)
    assert m.opened_cleanly
    assert m.cluster_id == cid
    assert m.topics()["orders"].topic_id == meta.topic_id
    assert m.topic_by_id(meta.topic_id) is not None
    assert m.topics()["orders"].partitions == 5
    assert m.partition("orders", 2).log_end_offset == 1
    assert m.partition("orders", 4).log_end_offset == 0
    m.close()


def test_topic_errors(tmp_path: Path) -> None:
    m = manager(tmp_path)
    for bad in ("", ".", "..", "a b", "x" * 250, "é"):
        with pytest.raises(InvalidTopic):
            m.create_topic(bad, 1, {})
    m.create_topic("a.b", 1, {})
    with pytest.raises(TopicAlreadyExists):
        m.create_topic("a.b", 1, {})
    with pytest.raises(InvalidTopic):
        m.create_topic("a_b", 1, {})
    with pytest.raises(InvalidPartitions):
        m.create_topic("z", 0, {})
    with pytest.raises(InvalidConfig):
        m.create_topic("z", 1, {"segment.bytes": "tiny"})
    with pytest.raises(InvalidConfig):
        m.create_topic("z", 1, {"no.such.config": "1"})
    assert m.create_topic("z", 1, {}, validate_only=True).partitions == 1
    assert "z" not in m.topics()
    with pytest.raises(InvalidPartitions):
        m.create_partitions("a.b", 1)
    with pytest.raises(UnknownTopicOrPartition):
        m.create_partitions("nope", 3)
    with pytest.raises(UnknownTopicOrPartition):
        m.partition("a.b", 1)
    with pytest.raises(UnknownTopicOrPartition):
        m.delete_topic("nope")
    m.close()


def test_delete_topic(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.create_topic("t", 2, {})
    m.partition("t", 0).append(R.build_batch([R.Record(1, None, b"v")]))
    m.delete_topic("t")
    assert "t" not in m.topics()
    assert not (tmp_path / "topics" / "t").exists()
    with pytest.raises(UnknownTopicOrPartition):
        m.partition("t", 0)
    m.create_topic("t", 1, {})
    assert m.partition("t", 0).log_end_offset == 0
    m.close()


def test_crash_residue_removed(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.create_topic("t", 1, {})
    m.close()
    (tmp_path / "staging" / "half").mkdir()
    (tmp_path / "deleted" / "gone").mkdir()
    (tmp_path / "topics" / "t" / "7").mkdir()  # partition dir beyond the count
    m = manager(tmp_path)
    assert list((tmp_path / "staging").iterdir()) == []
    assert list((tmp_path / "deleted").iterdir()) == []
    assert not (tmp_path / "topics" / "t" / "7").exists()
    m.close()


def test_producer_ids_unique_across_restarts(tmp_path: Path) -> None:
    m = manager(tmp_path)
    first = [m.allocate_producer_id() for _ in range(5)]
    m.checkpoint()
    del m  # crash: no close
    m = manager(tmp_path)
    nxt = m.allocate_producer_id()
    assert nxt > max(first) and len(set(first)) == 5
    m.close()


def test_alter_topic_configs(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.create_topic("t", 1, {})
    m.alter_topic_configs("t", {"message.timestamp.type": "LogAppendTime"})
    assert m.partition("t", 0).config.log_append_time
    m.close()


def test_internal_topic_names_are_never_user_topics(tmp_path: Path) -> None:
    from bayou.config import internal_log_config
    from bayou.gateways.mqtt.store import RETAINED_LOG, SESSIONS_LOG
    from bayou.storage.log import PartitionLog
    from bayou.storage.metadata import INTERNAL_TOPICS

    assert {RETAINED_LOG, SESSIONS_LOG} <= set(INTERNAL_TOPICS)  # the MQTT state logs' names
    m = manager(tmp_path)
    for name in INTERNAL_TOPICS:
        with pytest.raises(InvalidTopic, match="reserved"):
            m.create_topic(name, 1, {})
    with pytest.raises(InvalidTopic, match="collides with internal topic '__mqtt_sessions'"):
        m.create_topic("__mqtt.sessions", 1, {})
    internal = PartitionLog(
        "__consumer_offsets", 0, tmp_path / "internal" / "0", internal_log_config(), lambda: 0
    )
    meta = m.register_internal(internal)
    with pytest.raises(TopicAlreadyExists):
        m.create_topic("__consumer_offsets", 1, {})
    assert "__consumer_offsets" not in m.topics()  # nothing that changes topics reaches it
    assert m.partition("__consumer_offsets", 0) is internal
    assert m.topic_by_id(meta.topic_id) == meta
    with pytest.raises(UnknownTopicOrPartition):
        m.alter_topic_configs("__consumer_offsets", {})
    m.unregister_internal("__consumer_offsets")
    with pytest.raises(UnknownTopicOrPartition):
        m.partition("__consumer_offsets", 0)
    internal.close()
    m.close()
    again = manager(tmp_path)  # the id is the same after a restart
    assert again.register_internal(internal).topic_id == meta.topic_id
    again.close()
