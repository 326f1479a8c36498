"""RequestBudget: small requests always read, large ones wait for their share, stalls found."""

from __future__ import annotations

from bayou.core.request_budget import Account, RequestBudget

MB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Door:
    """What a connection does with its account: counts resumes and stalls."""

    def __init__(self, budget: RequestBudget) -> None:
        self.resumed = 0
        self.stalled = 0
        self.account: Account = budget.account(self.resume, self.stall)

    def resume(self) -> None:
        self.resumed += 1

    def stall(self) -> None:
        self.stalled += 1


def test_large_requests_wait_in_order_while_small_ones_are_always_read() -> None:
    budget = RequestBudget(10 * MB, 30.0, clock=Clock())
    a, b, c, small = (Door(budget) for _ in range(4))
    assert a.account.update(64 * 1024, 6 * MB)  # reserves its 6 MB
    assert budget.used == 6 * MB
    assert not b.account.update(64 * 1024, 6 * MB)  # 12 MB > 10 MB: wait
    assert not c.account.update(64 * 1024, 3 * MB)  # fits, but b is first in line
    for _ in range(50):  # small requests from other connections go on
        assert small.account.update(512 * 1024, 900 * 1024)
        assert small.account.update(0)
    assert a.account.update(5 * MB, 6 * MB)  # its reservation covers the rest
    assert b.resumed == c.resumed == 0
    assert a.account.update(0)  # a's frame is complete: b, then c fit
    assert (b.resumed, c.resumed) == (1, 1)
    assert budget.used == 9 * MB
    assert b.account.update(6 * MB - 1, 6 * MB)
    b.account.close()
    c.account.close()
    assert budget.used == budget.large_used == 0 and not budget.waiters


def test_a_request_larger_than_the_budget_goes_alone() -> None:
    budget = RequestBudget(4 * MB, 30.0, clock=Clock())
    huge, other, small = Door(budget), Door(budget), Door(budget)
    assert small.account.update(100, 500 * 1024)
    assert huge.account.update(100, 50 * MB)  # no other large request under way
    assert not other.account.update(100, 2 * MB)
    huge.account.close()
    assert other.resumed == 1


def test_stalls_are_found_but_waiting_is_not_stalling() -> None:
    clock = Clock()
    budget = RequestBudget(4 * MB, 30.0, clock=clock)
    stuck, slow, waiting, granted = (Door(budget) for _ in range(4))
    assert stuck.account.update(10)
    assert slow.account.update(10)
    assert granted.account.update(10, 3 * MB)
    assert not waiting.account.update(10, 3 * MB)
    clock.now = 20.0
    assert slow.account.update(20)  # progress restarts its clock
    clock.now = 31.0
    assert set(budget.stalled(clock.now)) == {stuck.account, granted.account}
    granted.account.close()  # waiting is granted now: its clock starts at the grant
    assert waiting.resumed == 1
    clock.now = 55.0
    assert set(budget.stalled(clock.now)) == {stuck.account, slow.account}
