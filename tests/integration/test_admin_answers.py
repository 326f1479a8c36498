"""Admin APIs Bayou answers without serving the feature behind them (ACLs, SCRAM users,
quotas, leader election, the metadata quorum): the answer Kafka gives in the
same situation, and the connection stays usable afterwards."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (
    Consumer,
    ElectionType,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kafka import TopicPartition as KpTopicPartition
from kafka import errors as kp_errors
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePatternFilter,
)
from kafka.admin import ResourceType as KpResourceType

from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.kafka_raw import RawKafka

TIMEOUT_S = 15


@pytest.fixture(scope="module")
def admin(shared_broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": shared_broker.bootstrap})


@pytest.fixture(scope="module")
def kp_admin(shared_broker: BrokerProcess) -> KafkaAdminClient:
    client = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=10_000)
    yield client
    client.close()


def make_topic(admin: AdminClient, partitions: int = 2) -> str:
    name = unique_topic("adm")
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=TIMEOUT_S)
    return name


def still_serves(admin: AdminClient, topic: str) -> None:
    assert topic in admin.list_topics(timeout=TIMEOUT_S).topics


def error_of(future: object) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        future.result(timeout=TIMEOUT_S)  # type: ignore[attr-defined]
    err: KafkaError = info.value.args[0]
    return err


# -- ACLs: SECURITY_DISABLED, as Kafka without an authorizer -----------------------------------

ANY_ACL = AclBindingFilter(
    ResourceType.ANY,
    None,
    ResourcePatternType.ANY,
    None,
    None,
    AclOperation.ANY,
    AclPermissionType.ANY,
)


def test_acl_apis_answer_security_disabled_to_confluent_kafka(admin: AdminClient) -> None:
    topic = make_topic(admin)
    # librdkafka ignores DescribeAcls' top-level error (as against Kafka): no ACLs, no failure
    assert admin.describe_acls(ANY_ACL).result(timeout=TIMEOUT_S) == []
    still_serves(admin, topic)
    acl = AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        "User:bob",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )
    err = error_of(admin.create_acls([acl])[acl])
    assert (err.code(), err.str()) == (KafkaError.SECURITY_DISABLED, "No Authorizer is configured.")
    still_serves(admin, topic)
    err = error_of(admin.delete_acls([ANY_ACL])[ANY_ACL])
    assert (err.code(), err.str()) == (KafkaError.SECURITY_DISABLED, "No Authorizer is configured.")
    still_serves(admin, topic)


def test_describe_acls_reports_security_disabled_to_kafka_python(
    kp_admin: KafkaAdminClient,
) -> None:
    acl_filter = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(
            KpResourceType.ANY, None, ACLResourcePatternType.ANY
        ),
    )
    with pytest.raises(kp_errors.SecurityDisabledError, match="No Authorizer is configured"):
        kp_admin.describe_acls(acl_filter)
    assert "__consumer_offsets" in kp_admin.list_topics()  # the same client keeps working


def test_acl_apis_at_every_version_keep_the_connection(shared_broker: BrokerProcess) -> None:
    creation = m.CreateAclsRequest.AclCreation(
        resource_type=2,
        resource_name="t",
        resource_pattern_type=3,
        principal="User:bob",
        host="*",
        operation=3,
        permission_type=3,
    )
    deletion = m.DeleteAclsRequest.DeleteAclsFilter(
        resource_type_filter=1,
        resource_name_filter=None,
        pattern_type_filter=1,
        principal_filter=None,
        host_filter=None,
        operation=1,
        permission_type=1,
    )
    with RawKafka(shared_broker.bootstrap) as raw:
        for version in range(4):
            described = raw.call(
                m.DescribeAclsRequest(
                    resource_type_filter=1,
                    operation=1,
                    permission_type=1,
                    resource_name_filter=None,
                    principal_filter=None,
                    host_filter=None,
                ),
                version,
            )
            assert described.error_code == ErrorCode.SECURITY_DISABLED
            assert described.error_message == "No Authorizer is configured on the broker"
            assert described.resources == []
            created = raw.call(m.CreateAclsRequest(creations=[creation, creation]), version)
            assert [r.error_code for r in created.results] == [ErrorCode.SECURITY_DISABLED] * 2
            deleted = raw.call(m.DeleteAclsRequest(filters=[deletion]), version)
            assert [r.error_code for r in deleted.filter_results] == [ErrorCode.SECURITY_DISABLED]
            assert deleted.filter_results[0].matching_acls == []
            assert raw.metadata_ok()


# -- SCRAM credentials: none exist ------------------------------------------------------------


def test_scram_credentials_none_exist(admin: AdminClient, shared_broker: BrokerProcess) -> None:
    topic = make_topic(admin)
    assert admin.describe_user_scram_credentials().result(timeout=TIMEOUT_S) == {}
    futures = admin.describe_user_scram_credentials(["alice"])
    err = error_of(futures["alice"])
    assert err.code() == KafkaError.RESOURCE_NOT_FOUND
    # librdkafka reads this message without its end (it shows the next byte too, against
    # Kafka alike): compare the start
    assert err.str().startswith("Attempt to describe a user credential that does not exist: alice")
    still_serves(admin, topic)
    with RawKafka(shared_broker.bootstrap) as raw:
        name = m.DescribeUserScramCredentialsRequest.UserName
        answer = raw.call(
            m.DescribeUserScramCredentialsRequest(
                users=[name(name="bob"), name(name="bob"), name(name="carol")]
            ),
            0,
        )
        assert [(r.user, r.error_code) for r in answer.results] == [
            ("bob", ErrorCode.DUPLICATE_RESOURCE),
            ("carol", ErrorCode.RESOURCE_NOT_FOUND),
        ]
        assert raw.metadata_ok()


# -- ElectLeaders: one replica, nothing to elect ----------------------------------------------


def test_elect_leaders_is_never_needed(admin: AdminClient) -> None:
    topic = make_topic(admin)
    missing = unique_topic("missing")
    wanted = [TopicPartition(topic, 0), TopicPartition(topic, 1), TopicPartition(missing, 0)]
    for kind in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        result = admin.elect_leaders(kind, wanted).result(timeout=TIMEOUT_S)
        codes = {(tp.topic, tp.partition): err.code() for tp, err in result.items()}
        assert codes == {
            (topic, 0): KafkaError.ELECTION_NOT_NEEDED,
            (topic, 1): KafkaError.ELECTION_NOT_NEEDED,
            (missing, 0): KafkaError.UNKNOWN_TOPIC_OR_PART,
        }
    # every partition: those that need no election are left out, as Kafka does
    assert admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=TIMEOUT_S) == {}
    still_serves(admin, topic)


# -- DescribeProducers: the real idempotent producer state -------------------------------------


def test_describe_producers_shows_the_idempotent_producer(
    admin: AdminClient, kp_admin: KafkaAdminClient, shared_broker: BrokerProcess
) -> None:
    topic = make_topic(admin)
    producer = Producer(
        {"bootstrap.servers": shared_broker.bootstrap, "enable.idempotence": True, "linger.ms": 0}
    )
    base = int(time.time() * 1000) - 5000
    for i in range(3):
        producer.produce(topic, value=b"v%d" % i, key=b"k", partition=0, timestamp=base + i)
        assert producer.flush(TIMEOUT_S) == 0  # one batch each: sequences 0, 1, 2
    states = kp_admin.describe_producers([KpTopicPartition(topic, p) for p in (0, 1)])
    by_partition = {tp.partition: state for tp, state in states.items()}
    assert by_partition[1].active_producers == []
    [active] = by_partition[0].active_producers
    assert active.producer_epoch == 0 and active.producer_id >= 0
    assert (active.last_sequence, active.last_timestamp) == (2, base + 2)
    assert (active.coordinator_epoch, active.current_transaction_start_offset) == (-1, -1)
    with RawKafka(shared_broker.bootstrap) as raw:
        answer = raw.call(
            m.DescribeProducersRequest(
                topics=[
                    m.DescribeProducersRequest.TopicRequest(
                        name=unique_topic("no"), partition_indexes=[0]
                    )
                ]
            ),
            0,
        )
        assert answer.topics[0].partitions[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert raw.metadata_ok()


# -- Transactions: none in this broker ------------------------------------------------------


def test_transactions_list_empty_and_describe_not_found(
    kp_admin: KafkaAdminClient, shared_broker: BrokerProcess
) -> None:
    assert kp_admin.list_transactions() == {0: []}
    with pytest.raises(kp_errors.TransactionalIdNotFoundError):
        kp_admin.describe_transactions(["orders-tx"])
    with RawKafka(shared_broker.bootstrap) as raw:
        listed = raw.call(
            m.ListTransactionsRequest(
                state_filters=["Ongoing", "Sleeping", "Sleeping"], duration_filter=1000
            ),
            1,
        )
        assert (listed.error_code, listed.unknown_state_filters, listed.transaction_states) == (
            ErrorCode.NONE,
            ["Sleeping"],
            [],
        )
        described = raw.call(m.DescribeTransactionsRequest(transactional_ids=["a", ""]), 0)
        assert [s.error_code for s in described.transaction_states] == [
            ErrorCode.TRANSACTIONAL_ID_NOT_FOUND,
            ErrorCode.INVALID_REQUEST,
        ]
        assert raw.metadata_ok()


# -- DescribeQuorum: a quorum of one --------------------------------------------------------


def test_describe_quorum_is_this_node_alone(
    kp_admin: KafkaAdminClient, shared_broker: BrokerProcess
) -> None:
    quorum = kp_admin.describe_metadata_quorum()
    [partition] = quorum["topics"][0]["partitions"]
    assert quorum["topics"][0]["topic_name"] == "__cluster_metadata"
    assert (partition["error"], partition["leader_id"]) == (None, 0)
    assert [v["replica_id"] for v in partition["current_voters"]] == [0]
    assert partition["observers"] == []
    assert quorum["nodes"][0]["listeners"][0]["port"] == shared_broker.kafka_port
    with RawKafka(shared_broker.bootstrap) as raw:
        answer = raw.call(
            m.DescribeQuorumRequest(
                topics=[
                    m.DescribeQuorumRequest.TopicData(
                        topic_name="clicks",
                        partitions=[m.DescribeQuorumRequest.PartitionData(partition_index=0)],
                    )
                ]
            ),
            2,
        )
        assert answer.topics[0].partitions[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert raw.metadata_ok()


# -- DescribeClientQuotas: none are set ---------------------------------------------------------


def test_describe_client_quotas_is_empty_and_checks_its_filter(
    shared_broker: BrokerProcess,
) -> None:
    component = m.DescribeClientQuotasRequest.ComponentData
    with RawKafka(shared_broker.bootstrap) as raw:
        for version in (0, 1):
            answer = raw.call(
                m.DescribeClientQuotasRequest(
                    components=[component(entity_type="user", match_type=2, match=None)]
                ),
                version,
            )
            assert (answer.error_code, answer.entries) == (ErrorCode.NONE, [])
            bad = raw.call(
                m.DescribeClientQuotasRequest(
                    components=[
                        component(entity_type="user", match_type=0, match="bob"),
                        component(entity_type="ip", match_type=1, match=None),
                    ]
                ),
                version,
            )
            assert (bad.error_code, bad.entries) == (ErrorCode.INVALID_REQUEST, None)
            assert "IP filter component" in (bad.error_message or "")
            assert raw.metadata_ok()


# -- Authorized operations: every operation that applies, without an authorizer ----------------

TOPIC_OPS = {
    AclOperation.READ,
    AclOperation.WRITE,
    AclOperation.CREATE,
    AclOperation.DELETE,
    AclOperation.ALTER,
    AclOperation.DESCRIBE,
    AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
}
CLUSTER_OPS = {
    AclOperation.CREATE,
    AclOperation.ALTER,
    AclOperation.DESCRIBE,
    AclOperation.CLUSTER_ACTION,
    AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
    AclOperation.IDEMPOTENT_WRITE,
}
GROUP_OPS = {AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE}


def test_topic_and_cluster_authorized_operations(admin: AdminClient) -> None:
    topic = make_topic(admin)
    described = admin.describe_topics(TopicCollection([topic]), include_authorized_operations=True)
    assert set(described[topic].result(timeout=TIMEOUT_S).authorized_operations) == TOPIC_OPS
    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=TIMEOUT_S)
    assert set(cluster.authorized_operations) == CLUSTER_OPS
    # not asked: not provided
    plain = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=TIMEOUT_S)
    assert plain.authorized_operations is None


def test_group_authorized_operations_classic_and_consumer(
    admin: AdminClient, shared_broker: BrokerProcess
) -> None:
    topic = make_topic(admin)
    classic, modern = unique_topic("gc"), unique_topic("gk")
    committer = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": classic})
    committer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    committer.close()
    member = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": modern,
            "group.protocol": "consumer",
        }
    )
    member.subscribe([topic])
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        assert member.assignment()
        futures = admin.describe_consumer_groups(
            [classic, modern], include_authorized_operations=True
        )
        for group, kind in ((classic, "CLASSIC"), (modern, "CONSUMER")):
            found = futures[group].result(timeout=TIMEOUT_S)  # two different requests
            assert found.type.name == kind
            assert set(found.authorized_operations) == GROUP_OPS, group
    finally:
        member.close()
