"""One broker-wide budget for request bytes in flight, shared by every door.

Theory of operation
-------------------
Each door buffers a request until it is whole: a Kafka frame (up to
``socket.request.max.bytes``), an AMQP message assembled from its content frames, an MQTT
packet, an HTTP body.  Without an overall limit, a few clients sending huge requests slowly
(or never finishing them) make the broker hold hundreds of megabytes.  ``RequestBudget`` is
Kafka's ``queued.max.request.bytes`` (here 100 MB by default, where Kafka's is unbounded) for
all doors at once.

Every connection has an ``Account`` and, after each read, tells it how many bytes of an
unfinished request it holds and, when the protocol says so, how large that request will be
(``update(held, expected)``), and ``close`` when it ends:

* A *small* request (its expected size under ``small``, 1 MiB) is always read: its bytes
  are counted, never refused, so small requests from other connections keep being read and
  served however full the budget is.
* A *large* request must hold a reservation of its whole size before more of it is read
  (Kafka's memory pool allocates a request's size when its length is known, and mutes the
  channel when it cannot).  ``update`` returns False when the reservation cannot be granted
  now; the door then stops reading that connection, which holds only what it had already
  read.  Refused accounts wait in arrival order; when bytes are released (a request
  completes, a connection closes) the oldest waiter that fits is granted and its door's
  ``on_resume`` callback called.  So the connections wanting the most stop first, those whose
  large request is under way finish it, and the bytes held stay under the limit — plus the
  small requests in progress, and one request larger than the whole budget, which is granted
  only when no other large one is under way.
* A connection whose unfinished request makes no progress (``held`` unchanged) for
  ``stall_timeout_s`` (30 s) while it is being read is closed through its ``on_stall``
  callback: a half-sent request cannot hold its bytes, or a reservation, for ever.  Time
  spent waiting for a grant does not count.  ``run`` is the sweep that finds them.

Everything runs on the event loop thread; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from bayou.errors import BayouError

DEFAULT_LIMIT = 100 * 1024 * 1024  # queued.max.request.bytes
SMALL_REQUEST = 1024 * 1024
DEFAULT_STALL_TIMEOUT_S = 30.0


class Account:
    """One connection's share of the budget (see the module docstring)."""

    __slots__ = (
        "budget",
        "counted",
        "held",
        "large",
        "on_resume",
        "on_stall",
        "since",
        "waiting",
        "want",
    )

    def __init__(
        self, budget: RequestBudget, on_resume: Callable[[], None], on_stall: Callable[[], None]
    ) -> None:
        self.budget = budget
        self.on_resume = on_resume
        self.on_stall = on_stall
        self.counted = 0  # bytes this account adds to the budget's ``used``
        self.large = False  # ``counted`` is a large request's reservation
        self.held = 0  # bytes of the unfinished request, as last reported
        self.since = 0.0  # when ``held`` last changed
        self.waiting = False
        self.want = 0  # the reservation waited for

    def update(self, held: int, expected: int = 0) -> bool:
        """The connection holds ``held`` bytes of an unfinished request of ``expected``
        bytes (0: unknown; ``held`` 0 with ``expected`` > 0: about to read one).  False:
        stop reading until ``on_resume`` is called."""
        budget = self.budget
        if held == 0 and expected == 0:  # nothing unfinished
            self.close()
            return True
        if held != self.held or self not in budget.partial:
            self.held = held
            self.since = budget.clock()
            budget.partial.add(self)
        need = max(held, expected)
        if need < budget.small:
            self._set(held, large=False)
            return True
        if self.large and self.counted >= need:
            return True
        if not self.waiting and not budget.waiters and budget.can_grant(self, need):
            self._set(need, large=True)
            return True
        self._set(held, large=False)
        self.want = need
        if not self.waiting:
            self.waiting = True
            budget.waiters.append(self)
        return False

    def close(self) -> None:
        """Nothing unfinished any more (or the connection is gone): release it all."""
        budget = self.budget
        budget.partial.discard(self)
        if self.waiting:
            self.waiting = False
            budget.waiters.remove(self)
        self.held = 0
        if self.counted:
            self._set(0, large=False)

    def _set(self, count: int, *, large: bool) -> None:
        budget = self.budget
        released = count < self.counted
        budget.used += count - self.counted
        if self.large:
            budget.large_used -= self.counted
        if large:
            budget.large_used += count
        self.counted = count
        self.large = large
        if released and budget.waiters:
            budget.grant_waiters()

    def granted(self) -> None:
        self.waiting = False
        self._set(self.want, large=True)
        self.since = self.budget.clock()
        self.on_resume()


class RequestBudget:
    """The broker-wide budget (see the module docstring)."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        *,
        small: int = SMALL_REQUEST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.stall_timeout_s = stall_timeout_s
        self.small = small
        self.clock = clock
        self.used = 0
        self.large_used = 0
        self.waiters: deque[Account] = deque()
        self.partial: set[Account] = set()

    def account(self, on_resume: Callable[[], None], on_stall: Callable[[], None]) -> Account:
        """A new connection's account: ``on_resume`` restarts reading after a refusal,
        ``on_stall`` closes the connection."""
        return Account(self, on_resume, on_stall)

    def can_grant(self, account: Account, need: int) -> bool:
        others = self.used - account.counted
        if others + need <= self.limit:
            return True
        return self.large_used - (account.counted if account.large else 0) == 0

    def grant_waiters(self) -> None:
        """Grant the oldest waiters that fit, in order."""
        while self.waiters:
            head = self.waiters[0]
            if not self.can_grant(head, head.want):
                return
            self.waiters.popleft()
            head.granted()

    def stalled(self, now: float) -> list[Account]:
        """Accounts whose unfinished request has not grown for the stall timeout."""
        limit = self.stall_timeout_s
        return [a for a in self.partial if not a.waiting and now - a.since >= limit]

    async def run(self) -> None:
        """Close stalled connections, checking a few times per stall timeout."""
        interval = min(1.0, max(0.05, self.stall_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            for account in self.stalled(self.clock()):
                account.since = self.clock()  # once: the door closes it
                account.on_stall()


class RequestStalled(BayouError):
    """A request body made no progress for the stall timeout."""


class BodyReader:
    """The budget for one request body read by a coroutine (the HTTP door): ``chunks``
    passes the body's chunks through, ``update`` waits while the budget holds a large body
    back, and a stalled body ends ``chunks`` with ``RequestStalled``."""

    def __init__(self, budget: RequestBudget, expected: int) -> None:
        self._task = asyncio.current_task()
        self._granted = asyncio.Event()
        self._stalled = False
        self.expected = expected
        self.account = budget.account(self._granted.set, self._stall)

    def _stall(self) -> None:
        self._stalled = True
        if self._task is not None:
            self._task.cancel()

    async def update(self, held: int) -> None:
        """``held`` bytes of the body are read: wait if the budget says so."""
        if not self.account.update(held, self.expected):
            self._granted.clear()
            await self._granted.wait()

    async def chunks(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in stream:
                yield chunk
        except asyncio.CancelledError:
            if self._stalled and self._task is not None:
                self._task.uncancel()
                raise RequestStalled(
                    f"the request body made no progress for "
                    f"{self.account.budget.stall_timeout_s:g} s"
                ) from None
            raise

    def close(self) -> None:
        self.account.close()
