"""Brokers on one PostgreSQL database follow the shared state logs live: a change made
through one broker takes effect on the other with no restart — SCRAM users
(AlterUserScramCredentials), ACLs (CreateAcls/DeleteAcls) and quotas (AlterClientQuotas)
with real Kafka clients logging in with SCRAM-SHA-512; MQTT retained messages and
persistent sessions with paho-mqtt; the AMQP topology with pika.

Each wait is bounded (``tests/support/wait.py``) and how long the change took to show on
the other broker is printed (``-s``); the cluster documents at most 2 s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from bayou.storage.cluster import coordinator_key, rendezvous
from tests.integration.test_cluster import committed
from tests.support.amqp import Collector, connect
from tests.support.broker import BrokerProcess, start_all
from tests.support.kafka import unique_topic
from tests.support.kafka_raw import RawKafka
from tests.support.mqtt import MqttTestClient
from tests.support.postgres import PostgresServer
from tests.support.quota_admin import QuotaAdmin
from tests.support.seaweedfs import SeaweedFS
from tests.support.security import bayou_cli, sasl
from tests.support.wait import wait_until

TIMEOUT_S = 30.0
FOLLOW_S = 15.0  # bound on a change showing on the other broker (documented: 2 s)
NODES = (1, 2)


def start_cluster(
    root: Path,
    url: str,
    doors: tuple[str, ...],
    *extra: str,
    env: dict[str, str] | None = None,
) -> dict[int, BrokerProcess]:
    brokers = {
        n: BrokerProcess(
            root / f"node{n}",
            extra_args=["--storage", url, "--node-id", str(n), *extra],
            doors=doors,
            env=env,
        )
        for n in NODES
    }
    try:
        start_all(brokers.values())
    except BaseException:
        for b in brokers.values():
            b.kill()
        raise
    return brokers


def followed(what: str, check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check`` holds on the other broker; print how long it took."""
    started = time.monotonic()
    wait_until(what, check, FOLLOW_S)
    print(f"{what}: {time.monotonic() - started:.3f} s")


# -- users, ACLs, quotas ------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[dict[int, BrokerProcess]]:
    url = postgres_server.create_database()
    for user in ("admin", "alice"):  # in the engine before the brokers start: known to both
        done = bayou_cli(
            "user", "add", user, "--password-stdin", "--storage", url, stdin=f"{user}-pw\n"
        )
        assert done.returncode == 0, done.stderr
    brokers = start_cluster(
        tmp_path_factory.mktemp("secured"),
        url,
        (),
        "--authorizer",
        "acl",
        "--super-user",
        "admin",
        "--quota-window-num",
        "2",
        "--quota-window-size-seconds",
        "1",
    )
    try:
        yield brokers
    finally:
        for b in brokers.values():
            b.kill()


def admin_of(broker: BrokerProcess) -> AdminClient:
    return AdminClient(sasl(broker.bootstrap, "admin", "admin-pw"))


def logs_in(broker: BrokerProcess, user: str, password: str) -> bool:
    """Whether a new connection to ``broker`` (and only it) logs in as ``user``."""
    admin = AdminClient(sasl(broker.bootstrap, user, password))
    try:
        admin.list_topics(timeout=3)
    except KafkaException:
        return False
    return True


def set_password(admin: AdminClient, user: str, password: str) -> None:
    change = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
    )
    for future in admin.alter_user_scram_credentials([change]).values():
        future.result(TIMEOUT_S)


def delete_user(admin: AdminClient, user: str) -> None:
    deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        future.result(TIMEOUT_S)


def topic_led_by(admin: AdminClient, node: int) -> tuple[str, int]:
    """A new topic and one of its partitions that ``node`` leads (Kafka's Produce goes to
    the leader: the check must happen on that broker)."""
    topic = unique_topic()
    admin.create_topics([NewTopic(topic, 8)])[topic].result(TIMEOUT_S)
    found: list[int] = []
    leaders: list[int] = []

    def led() -> bool:
        meta = admin.list_topics(topic, timeout=5).topics[topic]
        found[:] = [p.id for p in meta.partitions.values() if p.leader == node]
        leaders[:] = [p.leader for p in meta.partitions.values()]
        return bool(found)

    try:
        wait_until(f"a partition of {topic} led by node {node}", led, TIMEOUT_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; leaders {leaders}") from None
    return topic, found[0]


def produce_error(producer: Producer, topic: str, partition: int) -> KafkaError | None:
    """One record through ``producer``: None, or the error it was answered (or that the
    client remembers from the topic's metadata and raises at once)."""
    errors: list[KafkaError | None] = []
    try:
        producer.produce(
            topic, b"v", partition=partition, on_delivery=lambda err, _m: errors.append(err)
        )
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        return error
    producer.flush(TIMEOUT_S)
    assert len(errors) == 1
    return errors[0]


def acl(topic: str, user: str, operation: AclOperation) -> AclBinding:
    return AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{user}",
        "*",
        operation,
        AclPermissionType.ALLOW,
    )


def test_a_user_created_changed_and_deleted_through_one_broker_is_so_on_the_other(
    secured: dict[int, BrokerProcess],
) -> None:
    a, b = secured[1], secured[2]
    admin = admin_of(a)
    user = unique_topic("u")
    set_password(admin, user, "first-pw")
    followed("a user created at A logs in at B", lambda: logs_in(b, user, "first-pw"))
    set_password(admin, user, "second-pw")
    followed("a changed password holds at B", lambda: logs_in(b, user, "second-pw"))
    assert not logs_in(b, user, "first-pw")
    # a connection logged in at B before the user goes keeps its session (as on Kafka:
    # the credential is checked at login, and again only at a KIP-368 re-authentication)
    topic, partition = topic_led_by(admin, 2)
    for future in admin.create_acls(
        [acl(topic, user, AclOperation.WRITE), acl(topic, user, AclOperation.DESCRIBE)]
    ).values():
        future.result(TIMEOUT_S)
    producer = Producer(sasl(b.bootstrap, user, "second-pw", **{"message.timeout.ms": 10_000}))
    wait_until(
        "the ACLs to hold at B", lambda: produce_error(producer, topic, partition) is None, FOLLOW_S
    )
    delete_user(admin, user)
    followed("a deleted user is refused at B", lambda: not logs_in(b, user, "second-pw"))
    assert produce_error(producer, topic, partition) is None  # its open connection stays
    producer.flush(TIMEOUT_S)


def test_an_acl_created_and_deleted_through_one_broker_decides_on_the_other(
    secured: dict[int, BrokerProcess],
) -> None:
    a, b = secured[1], secured[2]
    admin = admin_of(a)
    user = "alice"  # known to both brokers since their start
    topic, partition = topic_led_by(admin, 2)

    def new_producer() -> Producer:
        return Producer(sasl(b.bootstrap, user, "alice-pw", **{"message.timeout.ms": 10_000}))

    refused = produce_error(new_producer(), topic, partition)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    write = acl(topic, user, AclOperation.WRITE)
    for future in admin.create_acls([write, acl(topic, user, AclOperation.DESCRIBE)]).values():
        future.result(TIMEOUT_S)
    producers: list[Producer] = []

    def granted() -> bool:  # a new client each time: librdkafka remembers a refusal
        producers.append(new_producer())
        return produce_error(producers[-1], topic, partition) is None

    followed("an ACL created at A grants at B", granted)
    producer = producers[-1]
    deleted = AclBindingFilter(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{user}",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    for future in admin.delete_acls([deleted]).values():
        assert len(future.result(TIMEOUT_S)) == 1

    def refused_now() -> bool:
        error = produce_error(producer, topic, partition)  # the same open connection
        return error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    followed("an ACL deleted at A no longer grants at B", refused_now)


def test_a_quota_set_through_one_broker_throttles_on_the_other(
    secured: dict[int, BrokerProcess],
) -> None:
    """A client-id quota, so that only the quota is new to B (the super user ``admin``,
    known to both brokers since their start, produces)."""
    a, b = secured[1], secured[2]
    admin = admin_of(a)
    client_id = unique_topic("slow")
    topic, partition = topic_led_by(admin, 2)
    quotas = QuotaAdmin(
        a.bootstrap,
        node_id=1,  # through A (kafka-python would pick any broker)
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="admin",
        sasl_plain_password="admin-pw",
    )
    try:
        assert quotas.alter({"client-id": client_id}, {"producer_byte_rate": 10_000.0}) == (
            0,
            None,
        )
    finally:
        quotas.close()
    throttles: list[tuple[str, int, float]] = []
    producer = Producer(
        sasl(
            b.bootstrap,
            "admin",
            "admin-pw",
            **{
                "client.id": client_id,
                "linger.ms": 1,
                "batch.size": 16384,
                "throttle_cb": lambda event: throttles.append(
                    (event.broker_name, event.broker_id, event.throttle_time)
                ),
            },
        )
    )
    value = b"q" * 1000

    def throttled() -> bool:
        if len(producer) == 0:  # the last round delivered: 50 kB more against 10 kB/s
            for _ in range(50):
                producer.produce(topic, value, partition=partition)
        producer.poll(0.2)  # delivery reports and throttle callbacks
        return any(t > 0 and broker_id == 2 for _name, broker_id, t in throttles)

    followed("a quota set at A throttles at B", throttled)


# -- MQTT and AMQP ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doors(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[dict[int, BrokerProcess]]:
    brokers = start_cluster(
        tmp_path_factory.mktemp("doors"),
        postgres_server.create_database(),
        ("mqtt", "amqp"),
        "--group-initial-rebalance-delay-ms",
        "0",
    )
    for n in NODES:  # each broker serves the groups it coordinates (the cluster settled)
        group = next(
            g
            for g in (unique_topic("settle") for _ in range(1000))
            if rendezvous(coordinator_key(0, g), NODES) == n
        )
        wait_until(
            f"node {n} to serve its groups", lambda n=n, g=group: serves(brokers[n], g), TIMEOUT_S
        )
    try:
        yield brokers
    finally:
        for b in brokers.values():
            b.kill()


def serves(broker: BrokerProcess, group: str) -> bool:
    with RawKafka(broker.bootstrap) as raw:
        answer = raw.call(m.OffsetFetchRequest(group_id=group, topics=None), 7)
    return bool(answer.error_code == ErrorCode.NONE)


def retained_at(broker: BrokerProcess, topic_filter: str, n: int) -> list[tuple[str, bytes]]:
    """What a new subscriber at ``broker`` is sent as retained (the first ``n``, then
    nothing more: retained messages follow the SUBACK at once)."""
    sub = MqttTestClient(broker.mqtt_port, unique_topic("r"))
    try:
        sub.subscribe(topic_filter, 1)
        got = sub.receive(n, timeout=1.0) if n else []
        got += sub.receive(1, timeout=0.3)
        return [(r.topic, r.payload) for r in got if r.retain]
    finally:
        sub.close()


def test_a_retained_message_set_and_cleared_through_one_broker_is_so_on_the_other(
    doors: dict[int, BrokerProcess],
) -> None:
    a, b = doors[1], doors[2]
    base = unique_topic("ret")
    pub = MqttTestClient(a.mqtt_port, unique_topic("p"))
    try:
        pub.publish(f"{base}/x", b"kept", qos=1, retain=True)
        followed(
            "a retained message set at A reaches a new subscriber at B",
            lambda: retained_at(b, f"{base}/x", 1) == [(f"{base}/x", b"kept")],
        )
        pub.publish(f"{base}/x", b"", qos=1, retain=True)  # clears it
        pub.publish(f"{base}/y", b"marker", qos=1, retain=True)  # written after the clear
        followed(
            "a retained message cleared at A is gone at B",
            lambda: retained_at(b, f"{base}/#", 1) == [(f"{base}/y", b"marker")],
        )
    finally:
        pub.close()


def test_a_persistent_session_moves_between_brokers_with_its_subscriptions_and_queue(
    doors: dict[int, BrokerProcess],
) -> None:
    """clean_session=0 on A, subscribe at QoS 1, receive, disconnect; what is published
    meanwhile is delivered when the client connects to B without subscribing again — and
    back on A after that, A's old copy having been let go."""
    a, b = doors[1], doors[2]
    top = unique_topic("mq")
    client_id = unique_topic("c")
    bootstrap = ",".join(d.bootstrap for d in doors.values())
    pub = MqttTestClient(a.mqtt_port, unique_topic("p"))
    sub = MqttTestClient(a.mqtt_port, client_id, clean=False)
    try:
        sub.subscribe(f"{top}/#", 1)
        for i in range(3):
            pub.publish(f"{top}/dev", b"m%d" % i, qos=1)
        assert [r.payload for r in sub.receive(3)] == [b"m0", b"m1", b"m2"]
        sub.close()
        for i in range(3, 6):
            pub.publish(f"{top}/dev", b"m%d" % i, qos=1)
        wait_until(
            "A to commit the session's positions",
            lambda: committed(bootstrap, f"mqtt:{client_id}", top, 1) == {0: 3},
            TIMEOUT_S,
        )
        sub = MqttTestClient(b.mqtt_port, client_id, clean=False)
        assert sub.session_present
        assert [r.payload for r in sub.receive(3)] == [b"m3", b"m4", b"m5"]
        pub.publish(f"{top}/dev", b"m6", qos=1)  # live on B: its subscription moved
        assert [r.payload for r in sub.receive(1)] == [b"m6"]
        sub.close()
        pub.publish(f"{top}/dev", b"m7", qos=1)
        wait_until(
            "B to commit the session's positions",
            lambda: committed(bootstrap, f"mqtt:{client_id}", top, 1) == {0: 7},
            TIMEOUT_S,
        )
        sub = MqttTestClient(a.mqtt_port, client_id, clean=False)
        assert sub.session_present
        assert [r.payload for r in sub.receive(1)] == [b"m7"]
        assert sub.receive(1, timeout=0.5) == []  # nothing delivered twice
    finally:
        pub.close()
        sub.close()


def test_a_client_connecting_to_another_broker_takes_its_session_over(
    doors: dict[int, BrokerProcess],
) -> None:
    """The same client id connected to B while connected to A: A's connection is ended as
    a session taken over (MQTT 5 reason 0x8E), as on one broker."""
    a, b = doors[1], doors[2]
    client_id = unique_topic("c")
    first = MqttTestClient(a.mqtt_port, client_id, version=5, clean=False, session_expiry=300)
    try:
        first.subscribe(f"{client_id}/#", 1)
        second = MqttTestClient(b.mqtt_port, client_id, version=5, clean=False, session_expiry=300)
        try:
            assert second.session_present
            wait_until("A to end the first connection", first.disconnected.is_set, FOLLOW_S)
            assert first.disconnect_reason == 0x8E
        finally:
            second.close()
    finally:
        first.close()


def exchange_exists(broker: BrokerProcess, exchange: str) -> bool:
    conn = connect(broker)
    try:
        conn.channel().exchange_declare(exchange, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    finally:
        if conn.is_open:
            conn.close()


def test_amqp_topology_declared_and_deleted_through_one_broker_routes_on_the_other(
    doors: dict[int, BrokerProcess],
) -> None:
    a, b = doors[1], doors[2]
    exchange = unique_topic("ex")
    # a classic queue is consumed through its share group, served by the broker that
    # coordinates it (cluster.md, not built): one coordinated by B, where it is consumed
    queue = next(
        q
        for q in (unique_topic("q") for _ in range(1000))
        if rendezvous(coordinator_key(0, f"amqp:{q}"), NODES) == 2
    )
    conn_a = connect(a)
    try:
        ch = conn_a.channel()
        ch.exchange_declare(exchange, "direct", durable=True)
        ch.queue_declare(queue, durable=True)
        ch.queue_bind(queue, exchange, routing_key="rk")
    finally:
        conn_a.close()
    followed("an exchange declared at A exists at B", lambda: exchange_exists(b, exchange))
    conn_b = connect(b)
    try:
        ch = conn_b.channel()
        ch.confirm_delivery()

        def routed() -> bool:  # the binding may land at B a moment after the exchange
            try:
                ch.basic_publish(exchange, "rk", b"via B 0", mandatory=True)
            except pika.exceptions.UnroutableError:
                return False
            return True

        followed("a binding declared at A routes at B", routed)
        for i in range(1, 3):
            ch.basic_publish(exchange, "rk", b"via B %d" % i, mandatory=True)
        consumer = Collector(conn_b, ch, queue)
        got = consumer.wait_for(3)
        assert [d.body for d in got] == [b"via B %d" % i for i in range(3)]
    finally:
        conn_b.close()
    conn_a = connect(a)
    try:
        conn_a.channel().queue_unbind(queue, exchange, routing_key="rk")
    finally:
        conn_a.close()
    conn_b = connect(b)
    try:
        ch = conn_b.channel()
        ch.confirm_delivery()

        def unroutable() -> bool:
            try:
                ch.basic_publish(exchange, "rk", b"after unbind", mandatory=True)
            except pika.exceptions.UnroutableError:
                return True
            return False

        followed("a binding deleted at A no longer routes at B", unroutable)
    finally:
        conn_b.close()
    conn_a = connect(a)
    try:
        conn_a.channel().exchange_delete(exchange)
    finally:
        conn_a.close()
    followed("an exchange deleted at A is gone at B", lambda: not exchange_exists(b, exchange))


def test_the_object_storage_engine_follows_too(
    tmp_path: Path, postgres_server: PostgresServer, seaweedfs: SeaweedFS
) -> None:
    """``s3://`` keeps its state logs in its PostgreSQL: followed the same way."""
    database = postgres_server.create_database()
    url = f"s3://{seaweedfs.bucket}/{unique_topic('follow')}?endpoint={seaweedfs.endpoint}"
    brokers = start_cluster(tmp_path, f"{url}&metadata={database}", ("mqtt",), env=seaweedfs.env)
    try:
        topic = unique_topic("ret") + "/x"
        pub = MqttTestClient(brokers[1].mqtt_port, unique_topic("p"))
        try:
            pub.publish(topic, b"kept", qos=1, retain=True)
        finally:
            pub.close()
        followed(
            "a retained message set at A reaches a new subscriber at B (s3://)",
            lambda: retained_at(brokers[2], topic, 1) == [(topic, b"kept")],
        )
    finally:
        for b in brokers.values():
            b.kill()
