"""Client quotas on the Kafka door: what is recorded, and the throttle a response carries.

Theory of operation
-------------------
While no user or client-id quota is set (``Quotas.active`` false) a request costs one
attribute check and nothing here runs.  Otherwise a connection asks ``ConnectionQuota.get``
(``gateways/pacing.py``) per request — a comparison with what it asked last (the principal,
the header's client id and the store's version) — and a request with a ``ClientQuota`` is
served by the connection's ``_serve_throttled``, as
Kafka's ``KafkaApis`` does:

- **produce** (``producer_byte_rate``): the request's size is recorded after it is handled;
- **fetch** (``consumer_byte_rate``): the handler caps the response at what one quota
  window allows and, when the records it read put the client over its rate, answers an
  empty response instead and unrecords them (``handlers/fetch.py``);
- **request time** (``request_percentage``): the time the request spent on the event loop —
  decoding, the handler's own steps (``TimedAwait``: each step of its coroutine is timed,
  never the waits between them) — as a percentage of one second; encoding the response is
  recorded without throttling, as Kafka records its network-thread time;
- the largest of those throttle times goes into the response's ``throttle_time_ms`` and the
  connection is *muted* for that long: no further request is read (KIP-219: the response
  goes out at once; well-behaved clients also hold back on their own).

SaslHandshake and SaslAuthenticate are never throttled.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Generator
from typing import Any

PRODUCE = 0
EXEMPT = frozenset({17, 36})  # SaslHandshake, SaslAuthenticate


class TimedAwait:
    """Await a coroutine, adding the time each of its steps runs to ``spent`` (seconds):
    the time the request held the event loop, not the time it waited for anything."""

    __slots__ = ("_coro", "spent")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self.spent = 0.0

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        clock = time.perf_counter
        value: Any = None
        error: BaseException | None = None
        while True:
            start = clock()
            try:
                step = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as done:
                self.spent += clock() - start
                return done.value
            except BaseException:
                self.spent += clock() - start
                raise
            self.spent += clock() - start
            try:
                value = yield step
                error = None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # e.g. a cancellation: into the coroutine
                value, error = None, exc


def set_throttle(response: Any, throttle_ms: int) -> None:
    """Put ``throttle_ms`` in the response (when its API has the field and it is larger)."""
    if response is not None and throttle_ms > getattr(response, "throttle_time_ms", throttle_ms):
        response.throttle_time_ms = throttle_ms
