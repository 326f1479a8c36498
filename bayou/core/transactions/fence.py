"""The guard between a transaction's verification and its append, on a partition's leader.

Theory of operation
-------------------
Before a transactional batch is appended (Produce) or a transactional offset stored
(TxnOffsetCommit), the transaction coordinator is asked whether the partition is in the
producer's ongoing transaction (KIP-890).  When the coordinator is this broker the question
is a function call and nothing runs between the answer and the append.  When it is another
broker the question is a round trip, and the transaction may end meanwhile: its marker
would then reach this partition *before* the batch, and the batch would open a transaction
no coordinator will ever close — the hanging transaction the check exists to prevent.
Kafka's leaders hold a ``VerificationGuard`` per producer for that window; this is the same
thing.

Every marker this broker writes (``Core.write_marker``, and the group coordinator's
completion of a producer's offsets) calls ``marked(producer_id)`` first, synchronously, just
before it queues the marker.  A verification brackets its round trip with ``watch`` and
``moved``: if a marker of that producer was queued here meanwhile, the answer may be stale
and the caller asks again.  Once ``moved`` says no, the caller queues its append with no
suspension in between, so any later marker is queued — and, the engine writing each
partition in call order, stored — after it.  Markers for a partition are only written by its
leader (the coordinator sends them there), so the markers that matter are always seen here.

Verifications of one producer also end in the order they began (``in_order``).  A client
pipelines its Produce requests and the Kafka door serves them concurrently; without a
verification each reaches the engine's queue in arrival order with no suspension, which
keeps an idempotent producer's sequence numbers in order.  Verifications with another
broker run on several connections at once (``TxnLink``), so the second request's answer may
come back first: its batch would then be appended before the first one's, the engine would
refuse it as out of sequence — an error the producer did not cause.  Kafka never
sees this, as its brokers serve one request of a connection at a time.  So a verification
takes its producer's turn first (FIFO; no suspension when nobody is ahead) and hands it on
as it returns, before its caller appends: the next one resumes only after that append is
queued.

Only producers with a verification in flight are tracked (a count per producer id), so the
tables are bounded by the requests in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager


class MarkerFence:
    """Per-producer counters of markers queued while a verification is in flight, and
    per-producer turns that keep verifications in the order they began."""

    def __init__(self) -> None:
        self._watching: dict[int, list[int]] = {}  # producer id -> [watchers, markers]
        self._turns: dict[int, tuple[asyncio.Lock, list[int]]] = {}  # id -> (turn, [users])

    @asynccontextmanager
    async def in_order(self, producer_ids: Iterable[int]) -> AsyncIterator[None]:
        """Wait for the turn of every producer in ``producer_ids`` (verifications of one
        producer run one at a time, in the order they asked); no suspension when free."""
        queued: list[int] = []
        held: list[asyncio.Lock] = []
        try:
            for pid in sorted(set(producer_ids)):  # one order for all: no deadlock
                turn = self._turns.setdefault(pid, (asyncio.Lock(), [0]))
                turn[1][0] += 1
                queued.append(pid)
                await turn[0].acquire()
                held.append(turn[0])
            yield
        finally:
            for lock in held:
                lock.release()
            for pid in queued:
                users = self._turns[pid][1]
                users[0] -= 1
                if users[0] == 0:
                    del self._turns[pid]

    @contextmanager
    def watch(self, producer_id: int) -> Iterator[int]:
        """Watch ``producer_id`` for the duration; yields the marker count to compare."""
        entry = self._watching.setdefault(producer_id, [0, 0])
        entry[0] += 1
        try:
            yield entry[1]
        finally:
            entry[0] -= 1
            if entry[0] == 0:
                del self._watching[producer_id]

    def moved(self, producer_id: int, seen: int) -> bool:
        """Whether a marker of ``producer_id`` was queued since ``watch`` yielded ``seen``."""
        entry = self._watching.get(producer_id)
        return entry is not None and entry[1] != seen

    def marked(self, producer_id: int) -> None:
        """A marker of ``producer_id`` is about to be queued on this broker."""
        entry = self._watching.get(producer_id)
        if entry is not None:
            entry[1] += 1
