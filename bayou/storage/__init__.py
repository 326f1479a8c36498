"""Bayou's local segmented log storage (see ``docs/design/storage.md``)."""

from bayou.storage.engine import AppendResult, PageCacheMiss
from bayou.storage.log import PartitionLog
from bayou.storage.manager import LogManager
from bayou.storage.metadata import TopicMeta

__all__ = ["AppendResult", "LogManager", "PageCacheMiss", "PartitionLog", "TopicMeta"]
