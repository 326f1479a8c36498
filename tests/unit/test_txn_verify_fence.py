"""A leader's verification with another broker's transaction coordinator and the marker
fence (``txn_check.verify``, ``MarkerFence``): a marker of the producer queued on the leader
while the question is on the wire makes it ask again, so a batch verified before its
transaction ended is never appended after that transaction's marker; and a producer's
verifications return in the order they began, so its pipelined batches keep their order.

The coordinator's side is a stand-in that answers as a real one would and, on the first
question, lets the transaction end (the leader queues its marker) before answering; the
function under test and the fence are the real ones."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from bayou.core.transactions import MarkerFence
from bayou.errors import ErrorCode
from bayou.gateways.kafka.txn_check import verify
from bayou.storage.cluster import BrokerAddress

E = ErrorCode
PID, EPOCH, TID = 4000, 0, "tid"
TP = ("t", 0)


class Coordinator:
    """The other broker: Ongoing (TP added) until ``end`` runs, then not in a transaction."""

    def __init__(self, fence: MarkerFence) -> None:
        self.fence = fence
        self.ongoing = True
        self.asked = 0
        self.end_during_first = True

    async def verify(
        self, _address: BrokerAddress, _tid: str, _pid: int, _epoch: int, tps: list[Any]
    ) -> dict[Any, ErrorCode]:
        self.asked += 1
        answer = dict.fromkeys(tps, E.NONE if self.ongoing else E.TRANSACTION_ABORTABLE)
        await asyncio.sleep(0)
        if self.end_during_first and self.asked == 1:
            # the answer is on its way back while the transaction ends and the coordinator's
            # marker reaches this leader, which queues it
            self.ongoing = False
            self.fence.marked(PID)
        return answer


class Cluster:
    shared = True
    node_id = 1

    def coordinator(self, _key_type: int, _key: str) -> int:
        return 2

    def broker(self, node_id: int) -> BrokerAddress:
        return BrokerAddress(node_id, "127.0.0.1", 1)


def context(coordinator: Any, fence: MarkerFence) -> Any:
    core = SimpleNamespace(cluster=Cluster(), marker_fence=fence, txn_link=coordinator)
    return SimpleNamespace(core=core)


def test_a_marker_during_the_round_trip_makes_the_leader_ask_again() -> None:
    fence = MarkerFence()
    coordinator = Coordinator(fence)
    codes = asyncio.run(verify(context(coordinator, fence), TID, {(PID, EPOCH): [TP]}))
    assert coordinator.asked == 2
    assert codes == {TP: E.TRANSACTION_ABORTABLE}  # the stale NONE was not used
    assert fence._watching == {}  # nothing kept once no verification is in flight


def test_without_a_marker_the_first_answer_stands() -> None:
    fence = MarkerFence()
    coordinator = Coordinator(fence)
    coordinator.end_during_first = False
    codes = asyncio.run(verify(context(coordinator, fence), TID, {(PID, EPOCH): [TP]}))
    assert coordinator.asked == 1 and codes == {TP: E.NONE}


def test_markers_of_other_producers_do_not_count() -> None:
    fence = MarkerFence()
    with fence.watch(PID) as seen:
        fence.marked(PID + 1)
        assert not fence.moved(PID, seen)
        fence.marked(PID)
        assert fence.moved(PID, seen)
    fence.marked(PID)  # nobody watching: nothing recorded
    assert fence._watching == {}


class SlowFirst:
    """The other broker answering a producer's first question last (its connection was
    slower), as pooled connections may."""

    def __init__(self) -> None:
        self.asked = 0

    async def verify(
        self, _address: BrokerAddress, _tid: str, _pid: int, _epoch: int, tps: list[Any]
    ) -> dict[Any, ErrorCode]:
        self.asked += 1
        await asyncio.sleep(0.2 if self.asked == 1 else 0)
        return dict.fromkeys(tps, E.NONE)


def test_a_producers_verifications_return_in_the_order_they_began() -> None:
    """Two pipelined Produce requests of one producer (sequences 0-4, then 5-9): the second
    may not be appended first however the answers come back, or the engine refuses it as
    out of sequence and the producer stalls the partition."""
    fence = MarkerFence()
    coordinator = SlowFirst()
    ctx = context(coordinator, fence)
    returned: list[str] = []

    async def produce(name: str) -> None:
        codes = await verify(ctx, TID, {(PID, EPOCH): [TP]})
        assert codes == {TP: E.NONE}
        returned.append(name)  # where the request's append would be queued

    async def main() -> None:
        await asyncio.wait_for(
            asyncio.gather(produce("first"), produce("second"), produce("third")), 5
        )

    asyncio.run(main())
    assert returned == ["first", "second", "third"]
    assert fence._turns == {} and fence._watching == {}


def test_other_producers_do_not_wait_for_a_producers_turn() -> None:
    fence = MarkerFence()
    coordinator = SlowFirst()
    ctx = context(coordinator, fence)
    returned: list[int] = []

    async def produce(pid: int) -> None:
        await verify(ctx, TID, {(pid, EPOCH): [TP]})
        returned.append(pid)

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(produce(PID), produce(PID + 1)), 5)

    asyncio.run(main())
    assert returned == [PID + 1, PID]  # the second producer did not queue behind the first
