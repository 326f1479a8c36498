"""The connection the doors' members reach another broker by (``bayou/core/forwarding.py``),
against a real ``bayou serve``: a call whose caller gave up while the broker held its request
(a member leaving cancels its heartbeat) leaves the next call its own answer, and every call
ends within ``CALL_TIMEOUT_S`` (NOT_COORDINATOR), however many wait behind one on a broker
that does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from bayou.core.forwarding import BrokerConnection
from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from bayou.storage.cluster import BrokerAddress
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.ports import free_port

FETCH, METADATA, API_VERSIONS = 1, 3, 18


def long_fetch(topic: str, wait_ms: int) -> m.FetchRequest:
    """A Fetch the broker holds for ``wait_ms``: nothing to read at the log end."""
    return m.FetchRequest(
        max_wait_ms=wait_ms,
        min_bytes=1,
        topics=[
            m.FetchRequest.FetchTopic(
                topic=topic,
                partitions=[m.FetchRequest.FetchPartition(partition=0, partition_max_bytes=1024)],
            )
        ],
    )


def test_a_call_given_up_mid_request_leaves_the_next_call_its_own_answer(
    shared_broker: BrokerProcess,
) -> None:
    topic = unique_topic()
    create_topic(shared_broker.bootstrap, topic, 1)
    address = BrokerAddress(0, shared_broker.host, shared_broker.kafka_port)

    async def scenario() -> None:
        connection = BrokerConnection(address)
        try:
            held = asyncio.create_task(connection.call(FETCH, 4, long_fetch(topic, 2000), "t"))
            deadline = time.monotonic() + 10
            while connection._streams is None:  # connected: the request is written at once
                assert time.monotonic() < deadline and not held.done()
                await asyncio.sleep(0.01)
            held.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held
            answer = await connection.call(METADATA, 9, m.MetadataRequest(topics=[]), "t")
            assert isinstance(answer, m.MetadataResponse)
            assert [b.port for b in answer.brokers] == [shared_broker.kafka_port]
        finally:
            connection.close()

    asyncio.run(scenario())


def test_every_call_ends_within_its_timeout_on_a_broker_that_does_not_answer() -> None:
    timeout_s = 1.0
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", free_port()))
        silent.listen(8)
        address = BrokerAddress(0, "127.0.0.1", silent.getsockname()[1])

        async def one(connection: BrokerConnection) -> tuple[float, ErrorCode]:
            started = time.monotonic()
            try:
                await connection.call(API_VERSIONS, 3, m.ApiVersionsRequest(), "t", timeout_s)
            except GroupCoordinatorError as exc:
                return time.monotonic() - started, exc.code
            raise AssertionError("a broker that does not answer answered")

        async def scenario() -> list[tuple[float, ErrorCode]]:
            connection = BrokerConnection(address)
            try:
                return await asyncio.gather(*(one(connection) for _ in range(4)))
            finally:
                connection.close()

        ended = asyncio.run(scenario())
    assert [code for _, code in ended] == [ErrorCode.NOT_COORDINATOR] * 4
    # one after another, the last would end after 4 timeouts
    assert max(took for took, _ in ended) < 2 * timeout_s, ended
