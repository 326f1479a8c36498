"""The coordinator checks of the Kafka door (``placement.py``): every group and
transaction API answers NOT_COORDINATOR in its own response shape for keys another broker
serves, passes the rest to its handler, and splits requests naming several keys."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bayou.core.forwarding import FORWARDED_CLIENT_ID
from bayou.core.security import Security
from bayou.core.types import BrokerAddress
from bayou.errors import ErrorCode
from bayou.gateways.kafka.placement import CHECKS, placing
from bayou.gateways.kafka.session import ClientSession
from bayou.protocol.kafka import messages as m

NOT_COORDINATOR = ErrorCode.NOT_COORDINATOR
HERE, ELSEWHERE = "here", "elsewhere"


class Cluster:
    """Serves keys starting with ``here``; the rest are another broker's."""

    def coordinator_error(self, key_type: int, key: str) -> ErrorCode:
        return ErrorCode.NONE if key.startswith(HERE) else NOT_COORDINATOR


def call(
    api_key: int,
    version: int,
    request: Any,
    answer: Any,
    *,
    client_id: str | None = None,
    owner: BrokerAddress | None = None,
) -> tuple[Any, list[Any]]:
    """The checked handler's response, and the requests the handler saw; ``owner`` is the
    broker serving the keys this one does not (None: none can be asked)."""
    seen: list[Any] = []

    async def handler(_ctx: Any, req: Any) -> Any:
        seen.append(req)
        return answer(req)

    ctx = SimpleNamespace(
        header=SimpleNamespace(api_key=api_key, client_id=client_id),
        version=version,
        session=ClientSession(Security(), "127.0.0.1", tls=False, cert=None),
        core=SimpleNamespace(
            cluster=Cluster(), group_coordinator=lambda _g: (NOT_COORDINATOR, owner)
        ),
    )
    return asyncio.run(placing(handler)(ctx, request)), seen  # type: ignore[arg-type]


def test_every_group_and_transaction_api_is_checked() -> None:
    assert set(CHECKS) == {
        8,
        9,
        11,
        12,
        13,
        14,
        15,
        22,
        24,
        25,
        26,
        28,
        42,
        47,
        65,
        68,
        69,
        76,
        78,
        79,
    }


@pytest.mark.parametrize("api_key", [11, 12, 13, 14, 68, 76, 78, 79, 47])
def test_one_group_requests(api_key: int) -> None:
    from bayou.protocol.kafka import API_KEYS

    request = SimpleNamespace(group_id=f"{ELSEWHERE}-g")
    response, seen = call(api_key, 0, request, lambda _r: "handled")
    assert seen == [] and response.error_code == NOT_COORDINATOR
    assert isinstance(response, API_KEYS[api_key].response)
    request = SimpleNamespace(group_id=f"{HERE}-g")
    assert call(api_key, 0, request, lambda _r: "handled") == ("handled", [request])
    request = SimpleNamespace(group_id="")  # the handler answers an empty id
    assert call(api_key, 0, request, lambda _r: "handled")[0] == "handled"


@pytest.mark.parametrize("api_key", [78, 79])
def test_share_requests_relayed_here_are_never_relayed_again(api_key: int) -> None:
    """ShareFetch/ShareAcknowledge for a group another broker serves are relayed there
    (``share_relay.py``), but one that came relayed from a broker is refused."""
    request = SimpleNamespace(group_id=f"{ELSEWHERE}-g", share_session_epoch=1)
    owner = BrokerAddress(7, "127.0.0.1", 1)
    response, seen = call(
        api_key, 1, request, lambda _r: "handled", client_id=FORWARDED_CLIENT_ID, owner=owner
    )
    assert seen == [] and response.error_code == NOT_COORDINATOR


def test_offset_commit_is_refused_per_partition() -> None:
    request = m.OffsetCommitRequest(
        group_id=ELSEWHERE,
        topics=[
            m.OffsetCommitRequestTopic(
                name="t",
                partitions=[
                    m.OffsetCommitRequestPartition(partition_index=i, committed_offset=1)
                    for i in (0, 3)
                ],
            )
        ],
    )
    response, seen = call(8, 8, request, lambda _r: None)
    assert seen == []
    [topic] = response.topics
    assert topic.name == "t"
    assert [(p.partition_index, p.error_code) for p in topic.partitions] == [
        (0, NOT_COORDINATOR),
        (3, NOT_COORDINATOR),
    ]
    txn = m.TxnOffsetCommitRequest(
        transactional_id="x",
        group_id=ELSEWHERE,
        topics=[
            m.TxnOffsetCommitRequestTopic(
                name="t",
                partitions=[
                    m.TxnOffsetCommitRequestPartition(partition_index=2, committed_offset=1)
                ],
            )
        ],
    )
    response, seen = call(28, 3, txn, lambda _r: None)
    assert seen == [] and isinstance(response, m.TxnOffsetCommitResponse)
    assert response.topics[0].partitions[0].error_code == NOT_COORDINATOR


def test_offset_fetch_by_version() -> None:
    old = m.OffsetFetchRequest(
        group_id=ELSEWHERE, topics=[m.OffsetFetchRequestTopic(name="t", partition_indexes=[1])]
    )
    response, seen = call(9, 7, old, lambda _r: None)
    assert seen == [] and response.error_code == NOT_COORDINATOR
    assert response.topics[0].partitions[0].error_code == NOT_COORDINATOR
    groups = [m.OffsetFetchRequestGroup(group_id=g) for g in (HERE, ELSEWHERE, f"{HERE}2")]
    new = m.OffsetFetchRequest(groups=groups)
    response, seen = call(
        9,
        8,
        new,
        lambda r: m.OffsetFetchResponse(
            groups=[m.OffsetFetchResponseGroup(group_id=g.group_id) for g in r.groups]
        ),
    )
    assert [g.group_id for g in seen[0].groups] == [HERE, f"{HERE}2"]
    assert [(g.group_id, g.error_code) for g in response.groups] == [
        (HERE, 0),
        (f"{HERE}2", 0),
        (ELSEWHERE, NOT_COORDINATOR),
    ]
    only_elsewhere = m.OffsetFetchRequest(groups=[m.OffsetFetchRequestGroup(group_id=ELSEWHERE)])
    response, seen = call(9, 9, only_elsewhere, lambda _r: None)
    assert seen == [] and [g.error_code for g in response.groups] == [NOT_COORDINATOR]


@pytest.mark.parametrize(
    ("api_key", "field", "results", "result_key"),
    [
        (15, "groups", "groups", "group_id"),
        (69, "group_ids", "groups", "group_id"),
        (42, "groups_names", "results", "group_id"),
        (65, "transactional_ids", "transaction_states", "transactional_id"),
    ],
)
def test_requests_naming_several_keys_are_split(
    api_key: int, field: str, results: str, result_key: str
) -> None:
    from bayou.protocol.kafka import API_KEYS

    spec = API_KEYS[api_key]
    request = spec.request(**{field: [HERE, ELSEWHERE]})
    response, seen = call(api_key, 0, request, lambda _r: spec.response())
    assert getattr(seen[0], field) == [HERE]
    assert [(getattr(r, result_key), r.error_code) for r in getattr(response, results)] == [
        (ELSEWHERE, NOT_COORDINATOR)
    ]
    request = spec.request(**{field: [ELSEWHERE]})
    response, seen = call(api_key, 0, request, lambda _r: spec.response())
    assert seen == [] and isinstance(response, spec.response)
    assert [r.error_code for r in getattr(response, results)] == [NOT_COORDINATOR]


def test_transaction_requests() -> None:
    init = m.InitProducerIdRequest(transactional_id=ELSEWHERE, transaction_timeout_ms=1000)
    response, seen = call(22, 4, init, lambda _r: None)
    assert seen == [] and response.error_code == NOT_COORDINATOR
    assert (response.producer_id, response.producer_epoch) == (-1, -1)
    init = m.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=1000)
    assert call(22, 4, init, lambda _r: "handled")[0] == "handled"  # idempotent: no key
    end = m.EndTxnRequest(transactional_id=ELSEWHERE, producer_id=1, producer_epoch=0)
    response, _ = call(26, 3, end, lambda _r: None)
    assert isinstance(response, m.EndTxnResponse) and response.error_code == NOT_COORDINATOR
    add = m.AddOffsetsToTxnRequest(transactional_id=ELSEWHERE, producer_id=1, group_id=HERE)
    response, _ = call(25, 3, add, lambda _r: None)
    assert isinstance(response, m.AddOffsetsToTxnResponse)
    assert response.error_code == NOT_COORDINATOR
    v3 = m.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=ELSEWHERE,
        v3_and_below_topics=[
            m.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name="t", partitions=[0, 1])
        ],
    )
    response, seen = call(24, 3, v3, lambda _r: None)
    assert seen == []
    [topic] = response.results_by_topic_v3_and_below
    assert [r.partition_error_code for r in topic.results_by_partition] == [NOT_COORDINATOR] * 2
    v4 = m.AddPartitionsToTxnRequest(
        transactions=[
            m.AddPartitionsToTxnRequest.AddPartitionsToTxnTransaction(transactional_id=t)
            for t in (HERE, ELSEWHERE)
        ]
    )
    response, seen = call(24, 4, v4, lambda _r: None)
    assert seen == [] and response.error_code == NOT_COORDINATOR
