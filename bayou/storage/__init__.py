"""Storage engines: the interface the core uses (``engine.py``), the local engine (the
segment log in a data directory: ``local_engine.py`` over ``manager.py``, ``log.py``,
``segment.py`` …) and the memory engine (``memory.py``).  See ``docs/design/core.md`` and
``docs/design/storage.md``.  Import an engine's classes from their modules; this package
exports only the interface."""

from bayou.storage.engine import (
    AbortedTxn,
    AppendResult,
    LogEngine,
    PageCacheMiss,
    Partition,
    RecordSet,
    StateEntry,
    StateLog,
    StateStore,
)
from bayou.storage.metadata import TopicMeta

__all__ = [
    "AbortedTxn",
    "AppendResult",
    "LogEngine",
    "PageCacheMiss",
    "Partition",
    "RecordSet",
    "StateEntry",
    "StateLog",
    "StateStore",
    "TopicMeta",
]
