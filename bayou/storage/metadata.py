"""Persistent metadata: the cluster (id, producer-id block) and each topic.

``DATA/meta.json`` holds the cluster id (generated once) and the end of the last
producer-id block handed out; ``DATA/topics/<topic>/topic.json`` holds a topic's id, name,
partition count and config overrides.  Both are replaced atomically (``files.write_json``).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayou.config import parse_topic_configs
from bayou.errors import InvalidPartitions, InvalidTopic, TopicAlreadyExists
from bayou.storage.files import read_json, write_json

TOPIC_FILE = "topic.json"
CLUSTER_FILE = "meta.json"
MAX_TOPIC_NAME = 249
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")

# Topic names that hold Bayou's (or Kafka's) own state: never created as user topics, by any
# door.  ``__consumer_offsets`` exists (the group coordinator's log, DATA/internal/…) and is
# shown as an internal topic; the others are reserved for what they are named after.
INTERNAL_TOPICS: dict[str, str] = {
    "__consumer_offsets": "the group coordinator's offsets and groups",
    "__transaction_state": "the transaction coordinator",
    "__share_group_state": "the share coordinator (share groups' records and delivery counts)",
    "__cluster_metadata": "Kafka's metadata log",
    "__mqtt_retained": "the MQTT gateway's retained messages",
    "__mqtt_sessions": "the MQTT gateway's persistent sessions",
    "__amqp_topology": "the AMQP gateway's exchanges, queues and bindings",
    "__bayou_users": "the user store (SCRAM credentials)",
    "__bayou_acls": "the ACLs",
    "__bayou_quotas": "the client quotas",
}


@dataclass(frozen=True)
class TopicMeta:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: dict[str, Any] = field(default_factory=dict)  # parsed overrides


def validate_topic_name(name: str) -> None:
    """Kafka's topic name rules; raise InvalidTopic."""
    if not name or len(name) > MAX_TOPIC_NAME:
        raise InvalidTopic(f"topic name must have 1 to {MAX_TOPIC_NAME} characters: {name!r}")
    if name in (".", ".."):
        raise InvalidTopic(f"topic name cannot be {name!r}")
    if not _TOPIC_NAME.fullmatch(name):
        raise InvalidTopic(
            f"topic name {name!r} is illegal: only ASCII letters, digits, '.', '_' and '-'"
        )


def collision_key(name: str) -> str:
    """Topics whose names differ only by '.' versus '_' collide in metric names."""
    return name.replace(".", "_")


def check_new_topic(
    name: str, partitions: int, existing: Iterable[str], internal: Iterable[str]
) -> None:
    """Whether a topic ``name`` with ``partitions`` may be created next to the ``existing``
    user topics and the ``internal`` (public state) ones; raises the error Kafka answers."""
    validate_topic_name(name)
    existing = set(existing)
    if name in existing:
        raise TopicAlreadyExists(f"topic {name!r} already exists")
    if name in set(internal):
        raise TopicAlreadyExists(f"topic {name!r} already exists: it is internal")
    reserved = INTERNAL_TOPICS.get(name)
    if reserved is not None:
        raise InvalidTopic(f"topic name {name!r} is reserved for {reserved}")
    key = collision_key(name)
    for other in existing:
        if collision_key(other) == key:
            raise InvalidTopic(f"topic {name!r} collides with existing topic {other!r}")
    for other in INTERNAL_TOPICS:
        if collision_key(other) == key:
            raise InvalidTopic(f"topic {name!r} collides with internal topic {other!r}")
    if partitions < 1:
        raise InvalidPartitions(f"number of partitions must be at least 1: {partitions}")


def new_cluster_id() -> str:
    """22 characters: base64url of a random UUID without padding (Kafka's format)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def save_topic(directory: Path, meta: TopicMeta) -> None:
    write_json(
        directory / TOPIC_FILE,
        {
            "name": meta.name,
            "topic_id": str(meta.topic_id),
            "partitions": meta.partitions,
            "configs": meta.configs,
        },
    )


def load_topic(directory: Path) -> TopicMeta:
    """Read ``topic.json``; raises OSError/ValueError/KeyError when it is unusable."""
    doc = read_json(directory / TOPIC_FILE)
    return TopicMeta(
        name=str(doc["name"]),
        topic_id=uuid.UUID(doc["topic_id"]),
        partitions=int(doc["partitions"]),
        configs=parse_topic_configs(doc.get("configs", {})),
    )


@dataclass
class ClusterMeta:
    cluster_id: str
    producer_id_block_end: int = 0

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ClusterMeta:
        path = data_dir / CLUSTER_FILE
        if path.exists():
            doc = read_json(path)
            return cls(str(doc["cluster_id"]), int(doc["producer_id_block_end"]))
        meta = cls(new_cluster_id())
        meta.save(data_dir)
        return meta

    def save(self, data_dir: Path) -> None:
        write_json(
            data_dir / CLUSTER_FILE,
            {
                "cluster_id": self.cluster_id,
                "producer_id_block_end": self.producer_id_block_end,
            },
        )
