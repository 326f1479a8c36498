"""Serving a request at once, inside the read that brought it, until it first has to wait.

Theory of operation
-------------------
A handler coroutine run as a task costs the event loop a task, a scheduled first step and
a scheduled done callback: two more turns of the loop before the answer can leave.  Most
Produce requests never wait for anything (the local engine writes to the page cache and
answers; only an fsync the topic asks for, or a shared engine, waits), so
``start_eagerly`` steps the coroutine by hand, as Python 3.12's eager tasks do: when it
finishes without waiting, the answer is there before the read's callback returns; when it
waits, a task takes it over from the awaitable it stopped at (``_Continue`` hands that
awaitable to the task and every later step on to the coroutine), and it goes on exactly as
if it had been a task from the start.

What runs before the first wait runs outside any task: ``asyncio.current_task()`` is None
there, so ``asyncio.timeout`` (which needs a task) must not be reached before a first
wait — the caller starts eagerly only handlers whose path it knows (Produce, outside a
cluster; see ``connection.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start_eagerly(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop
) -> asyncio.Future[T]:
    """Run ``coro`` until it first waits: a done future when it finished (its result or
    its exception), else the task that goes on with it."""
    try:
        pending = coro.send(None)
    except StopIteration as finished:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(finished.value)
        return done
    except Exception as exc:  # a bug in the handler: the caller answers it as a task's
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return loop.create_task(_resume(coro, pending))


async def _resume(coro: Coroutine[Any, Any, T], pending: Any) -> T:
    result: T = await _Continue(coro, pending)
    return result


class _Continue:
    """Awaiting it goes on with ``coro``, started by hand and suspended at ``pending``
    (what its first step yielded): the awaiting task waits for ``pending`` and drives
    ``coro`` from there, passing results, exceptions and cancellation through."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro, self._pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        self._pending = None
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # the awaited future's error, or a cancel
                try:
                    pending = coro.throw(exc)
                except StopIteration as finished:
                    return finished.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as finished:
                    return finished.value
