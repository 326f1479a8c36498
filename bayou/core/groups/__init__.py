"""Consumer groups: a deterministic coordinator core and its asyncio driver.

See ``docs/design/groups.md``.  ``coordinator.GroupCoordinator`` is sans-I/O (operations return
records and responses; state changes by replaying records; the clock is an argument);
``driver.GroupDriver`` persists records in the internal log and runs the timers.
"""

from bayou.core.groups.coordinator import (
    FetchedOffset,
    GroupCoordinator,
    GroupListing,
    OffsetCommit,
)
from bayou.core.groups.driver import GroupDriver
from bayou.core.groups.model import (
    ClassicGroup,
    ClassicState,
    ConsumerGroup,
    ConsumerHeartbeatResponse,
    ConsumerState,
    GroupCoordinatorError,
    GroupSettings,
    JoinResponse,
    Result,
    SyncResponse,
)

__all__ = [
    "ClassicGroup",
    "ClassicState",
    "ConsumerGroup",
    "ConsumerHeartbeatResponse",
    "ConsumerState",
    "FetchedOffset",
    "GroupCoordinator",
    "GroupCoordinatorError",
    "GroupDriver",
    "GroupListing",
    "GroupSettings",
    "JoinResponse",
    "OffsetCommit",
    "Result",
    "SyncResponse",
]
