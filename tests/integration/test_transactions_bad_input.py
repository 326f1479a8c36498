"""Transactions misused over the wire: each misuse gets Kafka's error, the partition is never
left stuck (its last stable offset keeps up with the log end), and the connection stays usable.
Requests are built with Bayou's own codec (``RawKafka``), since well-behaved clients never send
them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bayou.errors import ErrorCode as E
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import Record, build_batch, build_control_batch
from tests.integration.test_transactions import create_topic
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.raw_kafka import RawKafka

INIT, ADD_PARTITIONS, ADD_OFFSETS, END_TXN, MARKERS, TXN_COMMIT, PRODUCE = (
    22,
    24,
    25,
    26,
    27,
    28,
    0,
)


@pytest.fixture(scope="module")
def raw_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("txn-bad") / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


def init(raw: RawKafka, tid: str, timeout_ms: int = 60_000) -> m.InitProducerIdResponse:
    answer: m.InitProducerIdResponse = raw.call(
        INIT, 4, m.InitProducerIdRequest(transactional_id=tid, transaction_timeout_ms=timeout_ms)
    )
    return answer


def add(raw: RawKafka, tid: str, pid: int, epoch: int, topic: str, *parts: int) -> dict[int, int]:
    answer = raw.call(
        ADD_PARTITIONS,
        3,
        m.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=tid,
            v3_and_below_producer_id=pid,
            v3_and_below_producer_epoch=epoch,
            v3_and_below_topics=[
                m.AddPartitionsToTxnRequestAddPartitionsToTxnTopic(
                    name=topic, partitions=list(parts)
                )
            ],
        ),
    )
    return {
        p.partition_index: p.partition_error_code
        for t in answer.results_by_topic_v3_and_below
        for p in t.results_by_partition
    }


def produce(
    raw: RawKafka, topic: str, batch: bytes, tid: str | None, version: int = 9
) -> m.ProduceResponsePartitionProduceResponse:
    answer = raw.call(
        PRODUCE,
        version,
        m.ProduceRequest(
            transactional_id=tid,
            acks=-1,
            timeout_ms=5000,
            topic_data=[
                m.ProduceRequestTopicProduceData(
                    name=topic,
                    partition_data=[m.ProduceRequestPartitionProduceData(index=0, records=batch)],
                )
            ],
        ),
    )
    result: m.ProduceResponsePartitionProduceResponse = answer.responses[0].partition_responses[0]
    return result


def txn_batch(pid: int, epoch: int, seq: int = 0) -> bytes:
    return build_batch(
        [Record(0, b"k", b"v")],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        is_transactional=True,
    )


def end_offsets(bootstrap: str, topic: str) -> tuple[int, int]:
    """(read_committed end, read_uncommitted end) of partition 0."""
    ends = []
    for isolation in ("read_committed", "read_uncommitted"):
        c = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "probe", "isolation.level": isolation}
        )
        try:
            ends.append(c.get_watermark_offsets(TopicPartition(topic, 0), 10, cached=False)[1])
        finally:
            c.close()
    # the high watermark is the same; the LSO shows in what read_committed may list
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "probe", "isolation.level": "read_committed"}
    )
    try:
        [lso] = c.offsets_for_times([TopicPartition(topic, 0, -1)], 10)  # -1: LATEST
    finally:
        c.close()
    return lso.offset, ends[1]


def test_transactional_batches_outside_a_transaction_are_refused(
    raw_broker: BrokerProcess,
) -> None:
    topic, tid = unique_topic("bad"), unique_topic("tid")
    create_topic(raw_broker.bootstrap, topic)
    with RawKafka(raw_broker.bootstrap) as raw:
        answer = init(raw, tid)
        pid, epoch = answer.producer_id, answer.producer_epoch
        assert answer.error_code == E.NONE
        # KIP-890: the partition was never added to a transaction
        refused = produce(raw, topic, txn_batch(pid, epoch), tid)
        assert (refused.error_code, refused.error_message) == (
            E.INVALID_TXN_STATE,
            "Partition was not added to the transaction",
        )
        assert produce(raw, topic, txn_batch(pid, epoch), tid, version=11).error_code == (
            E.TRANSACTION_ABORTABLE
        )
        # no transactional id on the request
        assert produce(raw, topic, txn_batch(pid, epoch), None).error_code == (
            E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        )
        # an id the coordinator does not know, and a producer id that is not the id's
        assert produce(raw, topic, txn_batch(pid, epoch), "nobody").error_code == (
            E.INVALID_PRODUCER_ID_MAPPING
        )
        # markers are the coordinator's: a client's control batch is refused
        marker = build_control_batch(True, producer_id=pid, producer_epoch=epoch, timestamp=0)
        assert produce(raw, topic, marker, tid).error_code == E.INVALID_RECORD
        # nothing was written, nothing is left open
        assert end_offsets(raw_broker.bootstrap, topic) == (0, 0)

        # once added, the same batch goes in; a fenced epoch is refused
        assert add(raw, tid, pid, epoch, topic, 0) == {0: E.NONE}
        assert produce(raw, topic, txn_batch(pid, epoch), tid).error_code == E.NONE
        successor = init(raw, tid)  # fences and aborts
        assert successor.producer_epoch == epoch + 2
        assert produce(raw, topic, txn_batch(pid, epoch, seq=1), tid).error_code == (
            E.INVALID_PRODUCER_EPOCH
        )
        assert end_offsets(raw_broker.bootstrap, topic) == (2, 2)  # the record + its abort


def test_coordinator_calls_out_of_order_get_kafkas_errors(raw_broker: BrokerProcess) -> None:
    topic, tid = unique_topic("order"), unique_topic("tid")
    create_topic(raw_broker.bootstrap, topic)
    with RawKafka(raw_broker.bootstrap) as raw:
        assert init(raw, tid, timeout_ms=900_001).error_code == E.INVALID_TRANSACTION_TIMEOUT
        assert init(raw, "").error_code == E.INVALID_REQUEST
        answer = init(raw, tid)
        pid, epoch = answer.producer_id, answer.producer_epoch

        def end(commit: bool, p: int = pid, e: int = epoch, version: int = 3) -> int:
            got: int = raw.call(
                END_TXN,
                version,
                m.EndTxnRequest(
                    transactional_id=tid, producer_id=p, producer_epoch=e, committed=commit
                ),
            ).error_code
            return got

        # a commit (or abort) of a transaction never begun
        assert end(True) == E.INVALID_TXN_STATE
        assert end(False) == E.INVALID_TXN_STATE
        assert end(True, p=pid + 1) == E.INVALID_PRODUCER_ID_MAPPING
        assert end(True, e=epoch + 5) == E.PRODUCER_FENCED
        assert end(True, e=epoch + 5, version=1) == E.INVALID_PRODUCER_EPOCH  # older clients
        # unknown topics fail the whole AddPartitions; internal ones are not the client's
        assert add(raw, tid, pid, epoch, "no-such-topic", 0) == {0: E.UNKNOWN_TOPIC_OR_PARTITION}
        mixed = raw.call(
            ADD_PARTITIONS,
            3,
            m.AddPartitionsToTxnRequest(
                v3_and_below_transactional_id=tid,
                v3_and_below_producer_id=pid,
                v3_and_below_producer_epoch=epoch,
                v3_and_below_topics=[
                    m.AddPartitionsToTxnRequestAddPartitionsToTxnTopic(name=topic, partitions=[0]),
                    m.AddPartitionsToTxnRequestAddPartitionsToTxnTopic(
                        name="__consumer_offsets", partitions=[0]
                    ),
                ],
            ),
        )
        assert {
            t.name: t.results_by_partition[0].partition_error_code
            for t in mixed.results_by_topic_v3_and_below
        } == {topic: E.OPERATION_NOT_ATTEMPTED, "__consumer_offsets": E.TOPIC_AUTHORIZATION_FAILED}
        # offsets of a group without AddOffsetsToTxn first
        committed = raw.call(
            TXN_COMMIT,
            3,
            m.TxnOffsetCommitRequest(
                transactional_id=tid,
                group_id="g",
                producer_id=pid,
                producer_epoch=epoch,
                topics=[
                    m.TxnOffsetCommitRequestTopic(
                        name=topic,
                        partitions=[
                            m.TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=1)
                        ],
                    )
                ],
            ),
        )
        assert committed.topics[0].partitions[0].error_code == E.INVALID_TXN_STATE
        assert (
            raw.call(
                ADD_OFFSETS,
                3,
                m.AddOffsetsToTxnRequest(
                    transactional_id=tid, producer_id=pid, producer_epoch=epoch, group_id="g"
                ),
            ).error_code
            == E.NONE
        )
        # verify-only (v4+) answers without adding
        verify = raw.call(
            ADD_PARTITIONS,
            4,
            m.AddPartitionsToTxnRequest(
                transactions=[
                    m.AddPartitionsToTxnRequestAddPartitionsToTxnTransaction(
                        transactional_id=tid,
                        producer_id=pid,
                        producer_epoch=epoch,
                        verify_only=True,
                        topics=[
                            m.AddPartitionsToTxnRequestAddPartitionsToTxnTopic(
                                name=topic, partitions=[0]
                            )
                        ],
                    )
                ]
            ),
        )
        [result] = verify.results_by_transaction
        assert result.topic_results[0].results_by_partition[0].partition_error_code == (
            E.TRANSACTION_ABORTABLE
        )
        assert end(False) == E.NONE  # the transaction (offsets only) aborts cleanly


def test_markers_sent_by_a_client_are_refused(raw_broker: BrokerProcess) -> None:
    topic = unique_topic("markers")
    bootstrap = raw_broker.bootstrap
    create_topic(bootstrap, topic)
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique_topic("tid")})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce(topic, value=b"open")
    p.flush(20)
    with RawKafka(bootstrap) as raw:
        answer = raw.call(
            MARKERS,
            1,
            m.WriteTxnMarkersRequest(
                markers=[
                    m.WriteTxnMarkersRequestWritableTxnMarker(
                        producer_id=0,
                        producer_epoch=0,
                        transaction_result=True,
                        coordinator_epoch=0,
                        topics=[
                            m.WriteTxnMarkersRequestWritableTxnMarkerTopic(
                                name=topic, partition_indexes=[0]
                            )
                        ],
                    )
                ]
            ),
        )
        [marker] = answer.markers
        assert marker.topics[0].partitions[0].error_code == E.CLUSTER_AUTHORIZATION_FAILED
    assert end_offsets(bootstrap, topic) == (0, 1)  # still open: nothing was written
    p.commit_transaction(20)
    assert end_offsets(bootstrap, topic) == (2, 2)
