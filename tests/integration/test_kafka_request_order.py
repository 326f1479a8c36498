"""One connection's pipelined requests: answered in request order, appended in request order,
whether a Produce is served at once inside the read (no fsync due) or has to wait (an
fsync per append) and goes on in a task, with other requests among them."""

from __future__ import annotations

import time

from bayou.protocol.kafka import decode_response
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import Record, build_batch, iter_batches, iter_records
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.kafka_raw import fetch_request, produce_request
from tests.support.raw_kafka import RawKafka

PRODUCE, FETCH, METADATA = 0, 1, 3


def produce(topic: str, value: bytes) -> m.ProduceRequest:
    return produce_request(topic, build_batch([Record(int(time.time() * 1000), None, value)]))


def values(raw: RawKafka, topic: str) -> list[bytes]:
    answer = raw.call(FETCH, 12, fetch_request(topic))
    data = memoryview(answer.responses[0].partitions[0].records)
    return [
        bytes(record.value or b"")
        for pos, header in iter_batches(data)
        for record in iter_records(data[pos : pos + header.size])
    ]


def test_pipelined_requests_are_answered_and_appended_in_request_order(
    shared_broker: BrokerProcess,
) -> None:
    """Rounds of eight requests, each round written at once: its first Produces are served
    inside the read, the one to the fsynced topic waits, and what follows it waits its turn
    (a Metadata among them)."""
    synced, plain = unique_topic("synced"), unique_topic("plain")
    create_topic(shared_broker.bootstrap, synced, 1, **{"flush.messages": "1"})
    create_topic(shared_broker.bootstrap, plain, 1)
    expected: dict[str, list[bytes]] = {synced: [], plain: []}
    correlations: list[int] = []
    with RawKafka(shared_broker.bootstrap) as raw:
        for round_ in range(20):
            # (api, version, request, the topic and value a Produce writes)
            requests: list[tuple[int, int, m.ApiMessage, str, bytes]] = []
            for i, topic in enumerate((plain, plain, plain, synced, plain, "", plain, plain)):
                value = b"%d-%d" % (round_, i)
                if topic:
                    requests.append((PRODUCE, 9, produce(topic, value), topic, value))
                else:
                    requests.append((METADATA, 12, m.MetadataRequest(topics=None), "", b""))
            raw.send_at_once([(api, version, request) for api, version, request, _, _ in requests])
            for api, version, _request, topic, value in requests:
                correlation, answer = decode_response(api, version, raw.receive_frame())
                correlations.append(correlation)
                if api == METADATA:
                    assert {t.name for t in answer.topics} >= {synced, plain}
                    continue
                [partition] = answer.responses[0].partition_responses
                assert (partition.error_code, partition.base_offset) == (0, len(expected[topic]))
                expected[topic].append(value)
        assert correlations == list(range(1, 161))
        assert len(expected[synced]) == 20 and len(expected[plain]) == 120
        assert values(raw, synced) == expected[synced]
        assert values(raw, plain) == expected[plain]
