"""The broker core every door and layer uses: ``Core``, ``Cursor``, ``GroupMember``.

See ``docs/design/architecture.md``.  Doors see the broker only through ``Core``; the core
sees storage only through the engine interface (``bayou.storage.engine``), whose data
types a door handles are named in ``bayou.core.types``: a door imports nothing below the core.
"""

from bayou.core.core import Core, CoreSettings, now_ms
from bayou.core.cursor import (
    NO_ABORTS,
    Aborted,
    Cursor,
    Isolation,
    Reset,
    StartSpec,
    resolve_start,
    wait_any,
)
from bayou.core.group_member import Committed, GroupMember, Offsets, TopicPartition

__all__ = [
    "NO_ABORTS",
    "Aborted",
    "Committed",
    "Core",
    "CoreSettings",
    "Cursor",
    "GroupMember",
    "Isolation",
    "Offsets",
    "Reset",
    "StartSpec",
    "TopicPartition",
    "now_ms",
    "resolve_start",
    "wait_any",
]
