"""Share groups (KIP-932): queue semantics on topics, a deterministic core and its driver.

See ``docs/design/shares.md``.  ``coordinator.ShareCoordinator`` is sans-I/O (operations
return records and answers; state changes by replaying records; the clock is an argument);
``driver.ShareDriver`` persists records in ``__share_group_state``, reads the log for
acquisitions and runs the timers; ``consumer.ShareConsumer`` is a member inside the broker
for doors other than Kafka.
"""

from bayou.core.shares.consumer import Delivery, Place, ShareConsumer
from bayou.core.shares.consumer import Remote as ShareRemote
from bayou.core.shares.coordinator import ShareCoordinator, ShareGroupListing
from bayou.core.shares.driver import Acquisition, ShareDriver
from bayou.core.shares.model import (
    Ack,
    AckType,
    AcquiredRange,
    Batch,
    GroupConfig,
    HeartbeatResponse,
    PartitionOffsets,
    RecordState,
    Result,
    ShareCoordinatorError,
    ShareGroup,
    ShareMember,
    ShareRecord,
    ShareSettings,
)
from bayou.core.shares.store import TOPIC as SHARES_LOG

__all__ = [
    "SHARES_LOG",
    "Ack",
    "AckType",
    "AcquiredRange",
    "Acquisition",
    "Batch",
    "Delivery",
    "GroupConfig",
    "HeartbeatResponse",
    "PartitionOffsets",
    "Place",
    "RecordState",
    "Result",
    "ShareConsumer",
    "ShareCoordinator",
    "ShareCoordinatorError",
    "ShareDriver",
    "ShareGroup",
    "ShareGroupListing",
    "ShareMember",
    "ShareRecord",
    "ShareRemote",
    "ShareSettings",
]
