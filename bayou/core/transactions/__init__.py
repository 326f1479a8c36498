"""Kafka transactions: a deterministic coordinator core and its asyncio driver.

See ``docs/design/transactions.md``.  ``coordinator.TransactionCoordinator`` is sans-I/O
(operations return records, marker jobs and answers; state changes by replaying records; the
clock is an argument); ``driver.TxnDriver`` persists records in ``__transaction_state``,
writes markers (``markers.EngineMarkers``, on each partition's leader) and runs the timers;
``fence.MarkerFence`` guards a leader's verification with another broker's coordinator.
"""

from bayou.core.transactions.coordinator import TransactionCoordinator
from bayou.core.transactions.driver import TxnDriver
from bayou.core.transactions.fence import MarkerFence
from bayou.core.transactions.markers import COORDINATOR_EPOCH, EngineMarkers, MarkerWriter
from bayou.core.transactions.model import (
    OFFSETS_PARTITION,
    InitPidResult,
    MarkerJob,
    Result,
    TxnCoordinatorError,
    TxnListing,
    TxnMetadata,
    TxnRecord,
    TxnSettings,
    TxnState,
)
from bayou.core.transactions.store import TOPIC as TRANSACTIONS_LOG

__all__ = [
    "COORDINATOR_EPOCH",
    "OFFSETS_PARTITION",
    "TRANSACTIONS_LOG",
    "EngineMarkers",
    "InitPidResult",
    "MarkerFence",
    "MarkerJob",
    "MarkerWriter",
    "Result",
    "TransactionCoordinator",
    "TxnCoordinatorError",
    "TxnDriver",
    "TxnListing",
    "TxnMetadata",
    "TxnRecord",
    "TxnSettings",
    "TxnState",
]
