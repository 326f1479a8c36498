"""The client quota core without a broker: Kafka's sampled rate and throttle time, the
entity checks, which quota applies to whom (KIP-55's order), the store's log, and the
connection rate of an address."""

from __future__ import annotations

import asyncio

import pytest

from bayou.core.quotas import (
    CLIENT_ID,
    CONNECTION_CREATION_RATE,
    CONSUMER_BYTE_RATE,
    IP,
    PRODUCER_BYTE_RATE,
    USER,
    DescribeFilter,
    QuotaRequestError,
    Quotas,
    QuotaSettings,
    QuotaStore,
)
from bayou.core.quotas.entities import check_alteration
from bayou.core.quotas.rate import SampledRate
from bayou.storage.memory import MemoryEngine


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000.0

    def __call__(self) -> float:
        return self.ms


def test_sampled_rate_throttles_to_bring_the_rate_back_to_the_bound() -> None:
    rate = SampledRate(11, 1000.0, 0.0)
    rate.record(10_000, 0.0)  # 10 kB at once: measured over the 10 s minimum window
    assert rate.measure(0.0) == pytest.approx(1000.0)
    assert rate.throttle_ms(1000.0, 0.0) == 0
    rate.record(10_000, 1.0)  # 2000 B/s over 10 s against 1000 B/s: Kafka's X = (O - T) / T * W
    assert rate.throttle_ms(1000.0, 1.0) == pytest.approx(10_000, abs=2)
    assert rate.throttle_ms(4000.0, 1.0) == 0
    # samples older than the whole window (11 s) are forgotten
    assert rate.measure(12_000.0) == 0.0
    assert rate.throttle_ms(1000.0, 12_000.0) == 0


def test_alterations_are_checked_as_kafkas_controller_checks_them() -> None:
    entity, changes = check_alteration(
        [(CLIENT_ID, "c"), (USER, "u")], [(PRODUCER_BYTE_RATE, 1024.0)]
    )
    assert entity == ((USER, "u"), (CLIENT_ID, "c"))
    assert changes == {PRODUCER_BYTE_RATE: 1024.0}
    assert check_alteration([(IP, "::ffff:10.0.0.1")], [(CONNECTION_CREATION_RATE, 0.0)])[0] == (
        (IP, "10.0.0.1"),
    )
    bad = [
        ([], [(PRODUCER_BYTE_RATE, 1.0)]),
        ([(USER, "u"), (USER, "v")], [(PRODUCER_BYTE_RATE, 1.0)]),
        ([("group", "g")], [(PRODUCER_BYTE_RATE, 1.0)]),
        ([(USER, "")], [(PRODUCER_BYTE_RATE, 1.0)]),
        ([(IP, "10.0.0.1"), (USER, "u")], [(CONNECTION_CREATION_RATE, 1.0)]),
        ([(IP, "not-an-ip")], [(CONNECTION_CREATION_RATE, 1.0)]),
        ([(IP, "10.0.0.1")], [(PRODUCER_BYTE_RATE, 1.0)]),
        ([(USER, "u")], [(CONNECTION_CREATION_RATE, 1.0)]),
        ([(USER, "u")], [(PRODUCER_BYTE_RATE, 1.5)]),
        ([(USER, "u")], [(PRODUCER_BYTE_RATE, 0.0)]),
        ([(USER, "u")], [(PRODUCER_BYTE_RATE, float("nan"))]),
        ([(USER, "u")], [(PRODUCER_BYTE_RATE, 1.0), (PRODUCER_BYTE_RATE, 2.0)]),
    ]
    for pairs, ops in bad:
        with pytest.raises(QuotaRequestError) as caught:
            check_alteration(pairs, ops)
        assert caught.value.code == "INVALID_REQUEST", (pairs, ops)


def test_describe_filters_match_as_kafkas() -> None:
    u_c = ((USER, "u"), (CLIENT_ID, "c"))
    u = ((USER, "u"),)
    default_user = ((USER, None),)
    c = ((CLIENT_ID, "c"),)
    everything = [u_c, u, default_user, c]

    def matching(components: list[tuple[str, int, str | None]], strict: bool) -> list[object]:
        flt = DescribeFilter.parse(components, strict)
        return [e for e in everything if flt.matches(e)]

    assert matching([], False) == everything
    assert matching([(USER, 0, "u")], False) == [u_c, u]
    assert matching([(USER, 0, "u")], True) == [u]
    assert matching([(USER, 1, None)], True) == [default_user]
    assert matching([(USER, 2, None)], False) == [u_c, u, default_user]
    assert matching([(CLIENT_ID, 2, None)], True) == [c]
    with pytest.raises(QuotaRequestError) as caught:
        DescribeFilter.parse([("group", 0, "g")], False)
    assert caught.value.code == "UNSUPPORTED_VERSION"
    for components in (
        [(USER, 0, None)],
        [(USER, 1, "u")],
        [(USER, 0, "u"), (USER, 0, "v")],
        [(IP, 2, None), (USER, 2, None)],
        [(USER, 7, None)],
    ):
        with pytest.raises(QuotaRequestError):
            DescribeFilter.parse(components, False)


def quotas_with(entries: list[tuple[list[tuple[str, str | None]], str, float]]) -> Quotas:
    async def main() -> Quotas:
        engine = MemoryEngine({})
        await engine.open()
        quotas = Quotas(QuotaSettings(), Clock())
        await quotas.open(engine.state)
        for pairs, key, value in entries:
            assert await quotas.alter([(pairs, [(key, value)])]) == [None]
        return quotas

    return asyncio.run(main())


def test_the_most_specific_quota_applies_in_kafkas_order_and_decides_the_shared_rate() -> None:
    quotas = quotas_with(
        [
            ([(USER, "alice"), (CLIENT_ID, "app")], PRODUCER_BYTE_RATE, 100.0),
            ([(USER, "alice")], PRODUCER_BYTE_RATE, 200.0),
            ([(USER, None)], PRODUCER_BYTE_RATE, 300.0),
            ([(CLIENT_ID, "tool")], PRODUCER_BYTE_RATE, 400.0),
            ([(CLIENT_ID, "tool")], CONSUMER_BYTE_RATE, 500.0),
        ]
    )
    assert quotas.active

    def produce_bound(user: str, client_id: str) -> float | None:
        quota = quotas.client(user, client_id)
        return None if quota is None or quota.produce is None else quota.produce.bound

    assert produce_bound("alice", "app") == 100.0
    assert produce_bound("alice", "other") == 200.0
    assert produce_bound("bob", "tool") == 300.0  # <default> user comes before client-id
    a1, a2 = quotas.client("alice", "x1"), quotas.client("alice", "x2")
    assert a1 is not None and a2 is not None and a1.produce and a2.produce
    assert a1.produce.rate is a2.produce.rate  # "user alice": all her clients together
    b1, b2 = quotas.client("bob", "x1"), quotas.client("carol", "x1")
    assert b1 is not None and b2 is not None and b1.produce and b2.produce
    assert b1.produce.rate is not b2.produce.rate  # <default> user: each user its own
    tool = quotas.client("bob", "tool")
    assert tool is not None and tool.fetch is not None and tool.fetch.bound == 500.0
    assert tool.request is None


def test_no_quota_no_limits() -> None:
    quotas = quotas_with([([(IP, None)], CONNECTION_CREATION_RATE, 5.0)])
    assert not quotas.active
    assert quotas.client("alice", "app") is None


def test_the_store_writes_its_log_and_a_reopened_store_has_the_same_quotas() -> None:
    async def main() -> None:
        engine = MemoryEngine({})
        await engine.open()
        store = QuotaStore()
        await store.open(engine.state)
        results = await store.alter(
            [
                ([(USER, "alice")], [(PRODUCER_BYTE_RATE, 1024.0), (CONSUMER_BYTE_RATE, 2048.0)]),
                ([(USER, "")], [(PRODUCER_BYTE_RATE, 1.0)]),
                ([(IP, None)], [(CONNECTION_CREATION_RATE, 3.0)]),
            ]
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], QuotaRequestError)
        assert await store.alter([([(CLIENT_ID, "c")], [(PRODUCER_BYTE_RATE, 9.0)])], True) == [
            None
        ]
        await store.alter([([(USER, "alice")], [(CONSUMER_BYTE_RATE, None)])])
        reopened = QuotaStore()
        await reopened.open(engine.state)
        assert reopened.entities == {
            ((USER, "alice"),): {PRODUCER_BYTE_RATE: 1024.0},
            ((IP, None),): {CONNECTION_CREATION_RATE: 3.0},
        }
        await reopened.alter([([(USER, "alice")], [(PRODUCER_BYTE_RATE, None)])])
        again = QuotaStore()
        await again.open(engine.state)
        assert ((USER, "alice"),) not in again.entities
        await engine.close()

    asyncio.run(main())


def test_an_address_over_its_connection_rate_is_refused_and_others_are_not() -> None:
    clock = Clock()

    async def main() -> Quotas:
        engine = MemoryEngine({})
        await engine.open()
        quotas = Quotas(QuotaSettings(connection_creation_rate_per_ip=2), clock)
        await quotas.open(engine.state)
        await quotas.alter([([(IP, "10.0.0.9")], [(CONNECTION_CREATION_RATE, 0.0)])])
        return quotas

    quotas = asyncio.run(main())
    # 2/s measured over at least 10 s: a burst of 20 is taken, then each is refused
    admitted = [quotas.connection_throttle_ms("10.0.0.1") == 0 for _ in range(40)]
    assert admitted == [True] * 20 + [False] * 20
    assert quotas.connection_throttle_ms("10.0.0.2") == 0  # another address: its own rate
    assert quotas.connection_throttle_ms("10.0.0.9") > 0  # its own quota: none at all
    clock.ms += 5000.0  # refused ones were not counted: 5 s later 20 over 10 s leaves none
    assert quotas.connection_throttle_ms("10.0.0.1") > 0
    clock.ms += 6000.0  # the burst's sample is older than the whole window: room again
    assert quotas.connection_throttle_ms("10.0.0.1") == 0
