"""Kafka transactions: a deterministic coordinator core and its asyncio driver.

See ``docs/design/transactions.md``.  ``coordinator.TransactionCoordinator`` is sans-I/O
(operations return records, marker jobs and answers; state changes by replaying records; the
clock is an argument); ``driver.TxnDriver`` persists records in ``__transaction_state``,
writes markers (``markers.EngineMarkers``) and runs the timers.
"""

from bayou.core.transactions.coordinator import TransactionCoordinator
from bayou.core.transactions.driver import TxnDriver
from bayou.core.transactions.markers import EngineMarkers, MarkerWriter
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
    "OFFSETS_PARTITION",
    "TRANSACTIONS_LOG",
    "EngineMarkers",
    "InitPidResult",
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
