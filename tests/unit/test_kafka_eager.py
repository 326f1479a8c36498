"""start_eagerly: a coroutine run by hand until it first waits, then taken over by a task."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

import pytest

from bayou.gateways.kafka.eager import start_eagerly


def run(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """The test, on an event loop of its own."""

    @functools.wraps(test)
    def sync() -> None:
        asyncio.run(asyncio.wait_for(test(), 10))

    return sync


@run
async def test_a_coroutine_that_never_waits_is_done_before_start_eagerly_returns() -> None:
    ran: list[str] = []

    async def answer() -> int:
        ran.append("ran")
        return 42

    future = start_eagerly(answer(), asyncio.get_running_loop())
    assert ran == ["ran"] and future.done() and future.result() == 42
    assert not isinstance(future, asyncio.Task)


@run
async def test_an_error_before_any_wait_is_in_the_done_future() -> None:
    async def broken() -> int:
        raise ValueError("bad")

    future = start_eagerly(broken(), asyncio.get_running_loop())
    assert future.done()
    with pytest.raises(ValueError, match="bad"):
        future.result()


@run
async def test_a_coroutine_that_waits_goes_on_in_a_task_with_what_it_awaited() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[str] = loop.create_future()
    second: asyncio.Future[str] = loop.create_future()
    steps: list[object] = []

    async def work() -> str:
        steps.append(asyncio.current_task())  # the first step runs in the caller's
        a = await first
        steps.append(asyncio.current_task())
        await asyncio.sleep(0)  # a bare yield to the loop
        try:
            await second
        except KeyError as exc:  # the awaited future's error reaches the coroutine
            return f"{a} then {exc.args[0]}"
        return "no error"

    task = start_eagerly(work(), loop)
    assert isinstance(task, asyncio.Task) and not task.done()
    assert steps == [asyncio.current_task()]  # (the door's caller is no task: None)
    first.set_result("one")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert steps[1] is task  # from its second step on, the task is the current one
    second.set_exception(KeyError("two"))
    assert await asyncio.wait_for(task, 5) == "one then two"


@run
async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await never
        finally:
            cleaned.append("finally")

    task = start_eagerly(work(), loop)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"] and task.cancelled()
