"""Security on every door, with real clients over TLS: one user store, one set of ACLs.

One broker for the module: TLS on every door (``--tls-cert/--tls-key/--tls-client-ca``),
``--authorizer acl``, ``admin`` a super user; ``alice`` may read and write ``sec-a`` (and use
group ``g-alice``) but nothing on ``sec-b``; ``carol`` logs in with a client certificate.
Users are created offline before the first start (``bayou user add --data-dir``), ACLs
through the running broker (``bayou acl add -b … --sasl-user admin``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pika
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from paho.mqtt.enums import CallbackAPIVersion

from bayou.protocol.kafka import RequestHeader, decode_response, encode_request
from bayou.protocol.kafka import messages as m
from tests.support.browser import chromium
from tests.support.kafka_java import classpath, why_not
from tests.support.security import SecureBroker, bayou_cli
from tests.support.wait import wait_until

USERS = {"admin": "admin-pw", "alice": "alice-pw", "dave": "dave-pw"}
A, B = "sec-a", "sec-b"
TIMEOUT = 20


def admin_env(broker: SecureBroker) -> dict[str, str]:
    return {**os.environ, "BAYOU_SASL_PASSWORD": USERS["admin"]}


def admin_cli(broker: SecureBroker, *args: str) -> subprocess.CompletedProcess[str]:
    return bayou_cli(
        *args,
        "-b", broker.tls_bootstrap, "--tls-ca", str(broker.pki.ca_path), "--sasl-user", "admin",
        env=admin_env(broker),
    )  # fmt: skip


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = SecureBroker(tmp_path_factory.mktemp("secure"), USERS).start()
    try:
        producer = Producer(broker.kafka_config("admin", USERS["admin"]))
        for topic in (A, B):
            for i in range(3):
                producer.produce(topic, key=f"k{i}".encode(), value=f"{topic} {i}".encode())
        assert producer.flush(TIMEOUT) == 0
        for args in (
            ["--allow", "alice", "--operation", "READ", "--operation", "WRITE", "--topic", A],
            ["--allow", "alice", "--operation", "READ", "--group", "g-alice"],
            ["--allow", "carol", "--operation", "DESCRIBE", "--topic", A],
            ["--allow", "dave", "--operation", "READ", "--topic", A, "--group", "g-dave"],
        ):
            done = admin_cli(broker, "acl", "add", *args)
            assert done.returncode == 0, done.stderr
        yield broker
    finally:
        broker.kill()


def topics_seen(config: dict[str, Any]) -> set[str]:
    metadata = AdminClient(config).list_topics(timeout=TIMEOUT)
    return {t for t in metadata.topics if not t.startswith("__")}


def consume_all(config: dict[str, Any], topic: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer({**config, "group.id": "g-alice", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value()))
    consumer.close()
    return got


# -- Kafka ------------------------------------------------------------------------------------


def test_kafka_scram_over_tls_sees_and_reads_only_what_acls_allow(secure: SecureBroker) -> None:
    alice = secure.kafka_config("alice", USERS["alice"])
    metadata = AdminClient(alice).list_topics(timeout=TIMEOUT)
    assert {t for t in metadata.topics if not t.startswith("__")} == {A}
    # the TLS listener tells its own address, so the client stays on TLS
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [
        ("127.0.0.1", secure.kafka_tls_port)
    ]
    assert consume_all(alice, A, 3) == [(f"k{i}".encode(), f"{A} {i}".encode()) for i in range(3)]
    producer = Producer({**alice, "message.timeout.ms": 5000})
    errors: list[KafkaError] = []
    producer.produce(B, b"nope", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(TIMEOUT)
    assert errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert topics_seen(secure.kafka_config("admin", USERS["admin"])) >= {A, B}


def test_kafka_oauthbearer_jwt(secure: SecureBroker) -> None:
    token = secure.tokens.token("alice")

    def oauth_cb(_config: str) -> tuple[str, float]:
        return token, time.time() + 3600

    config = {
        "bootstrap.servers": secure.tls_bootstrap,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(secure.pki.ca_path),
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": oauth_cb,
    }
    consumer = Consumer({**config, "group.id": "g-alice", "enable.auto.commit": False})
    consumer.assign([TopicPartition(A, 0, 0)])
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 3 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
    consumer.close()
    assert got == [f"{A} {i}".encode() for i in range(3)]


def _plain_sasl(host: str, port: int, user: str, password: str) -> tuple[Any, float, bytes]:
    """SaslHandshake + SaslAuthenticate (PLAIN) on a plain socket: (answer, seconds it took,
    what followed it before the connection closed)."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:

        def call(request: Any, version: int, cid: int) -> Any:
            header = RequestHeader(request.API_KEY, version, cid, "raw")
            sock.sendall(encode_request(header, request))
            size = int.from_bytes(_read(sock, 4), "big")
            return decode_response(request.API_KEY, version, _read(sock, size))[1]

        assert call(m.SaslHandshakeRequest(mechanism="PLAIN"), 1, 1).error_code == 0
        started = time.monotonic()
        answer = call(m.SaslAuthenticateRequest(auth_bytes=f"\0{user}\0{password}".encode()), 2, 2)
        took = time.monotonic() - started
        rest = sock.recv(100)  # the broker closes: end of stream
        return answer, took, rest


def _read(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def test_kafka_wrong_password_fails_closes_and_waits_longer_each_time(
    secure: SecureBroker,
) -> None:
    took = []
    for _ in range(3):
        answer, seconds, rest = _plain_sasl(secure.host, secure.kafka_port, "alice", "wrong")
        assert answer.error_code == 58  # SASL_AUTHENTICATION_FAILED
        assert "alice" not in (answer.error_message or "")  # nothing about the user
        assert rest == b""  # and the connection is closed
        took.append(seconds)
    assert took[0] >= 0.09 and took[2] > took[1] > took[0], took
    answer, _, _ = _plain_sasl(secure.host, secure.kafka_port, "nobody", "x")
    assert answer.error_message == (
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism PLAIN"
    )


class _LoggedIn:
    """A raw Kafka connection logged in with SASL PLAIN: requests one at a time."""

    def __init__(self, secure: SecureBroker, user: str) -> None:
        self.sock = socket.create_connection((secure.host, secure.kafka_port), timeout=TIMEOUT)
        self.cid = 0
        assert self.call(m.SaslHandshakeRequest(mechanism="PLAIN"), 1).error_code == 0
        login = m.SaslAuthenticateRequest(auth_bytes=f"\0{user}\0{USERS[user]}".encode())
        assert self.call(login, 2).error_code == 0

    def call(self, request: Any, version: int) -> Any:
        self.cid += 1
        self.sock.sendall(
            encode_request(RequestHeader(request.API_KEY, version, self.cid, "raw"), request)
        )
        size = int.from_bytes(_read(self.sock, 4), "big")
        return decode_response(request.API_KEY, version, _read(self.sock, size))[1]

    def close(self) -> None:
        self.sock.close()


def test_share_group_apis_are_authorized(secure: SecureBroker) -> None:
    admin, alice = _LoggedIn(secure, "admin"), _LoggedIn(secure, "alice")
    try:
        found = admin.call(m.MetadataRequest(topics=[m.MetadataRequest.Topic(name=B)]), 12)
        b_id = found.topics[0].topic_id

        def heartbeat(group: str, topic: str) -> Any:
            request = m.ShareGroupHeartbeatRequest(
                group_id=group, member_id=str(uuid.uuid4()), subscribed_topic_names=[topic]
            )
            return alice.call(request, 1)

        assert heartbeat("g-alice", A).error_code == 0  # READ on the group, DESCRIBE on A
        assert heartbeat("g-other", A).error_code == 30  # GROUP_AUTHORIZATION_FAILED
        assert heartbeat("g-alice", B).error_code == 29  # TOPIC_AUTHORIZATION_FAILED
        fetch = m.ShareFetchRequest(
            group_id="g-alice",
            member_id=str(uuid.uuid4()),
            share_session_epoch=0,
            topics=[
                m.ShareFetchRequest.FetchTopic(
                    topic_id=b_id,
                    partitions=[m.ShareFetchRequest.FetchPartition(partition_index=0)],
                )
            ],
        )
        answer = alice.call(fetch, 1)
        assert answer.error_code == 29 and answer.responses == []  # no record of B
        fetch.group_id = "g-other"
        assert alice.call(fetch, 1).error_code == 30
        described = alice.call(m.ShareGroupDescribeRequest(group_ids=["g-other"]), 1)
        assert [g.error_code for g in described.groups] == [30]
    finally:
        admin.close()
        alice.close()


def test_topic_requests_answer_each_refused_topic_beside_the_allowed_ones(
    secure: SecureBroker,
) -> None:
    """A request naming a topic alice may use (A) and one she may not (B): A is served, B's
    partitions are answered with TOPIC_AUTHORIZATION_FAILED (29) and Kafka's unknown values;
    a refused group (30) or transactional id (53) refuses every topic of the request."""
    alice = _LoggedIn(secure, "alice")

    def by_topic(topics: Any, name: str = "name", parts: str = "partitions") -> dict[str, Any]:
        return {getattr(t, name): getattr(t, parts) for t in topics}

    try:
        listed = alice.call(
            m.ListOffsetsRequest(
                replica_id=-1,
                topics=[
                    m.ListOffsetsRequest.ListOffsetsTopic(
                        name=t,
                        partitions=[m.ListOffsetsRequest.ListOffsetsPartition(0, timestamp=-1)],
                    )
                    for t in (A, B)
                ],
            ),
            4,
        )
        got = by_topic(listed.topics)
        assert [(p.partition_index, p.error_code, p.offset) for p in got[A]] == [(0, 0, 3)]
        assert [(p.partition_index, p.error_code, p.offset, p.timestamp) for p in got[B]] == [
            (0, 29, -1, -1)
        ]

        epochs = alice.call(
            m.OffsetForLeaderEpochRequest(
                replica_id=-1,
                topics=[
                    m.OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
                        topic=t,
                        partitions=[
                            m.OffsetForLeaderEpochRequest.OffsetForLeaderPartition(
                                partition=0, leader_epoch=0
                            )
                        ],
                    )
                    for t in (A, B)
                ],
            ),
            3,
        )
        got = by_topic(epochs.topics, name="topic")
        assert [(p.partition, p.error_code) for p in got[A]] == [(0, 0)]
        assert [(p.partition, p.error_code, p.end_offset) for p in got[B]] == [(0, 29, -1)]

        producers = alice.call(
            m.DescribeProducersRequest(
                topics=[
                    m.DescribeProducersRequest.TopicRequest(name=t, partition_indexes=[0])
                    for t in (A, B)
                ]
            ),
            0,
        )
        got = by_topic(producers.topics)
        assert [(p.partition_index, p.error_code) for p in got[A]] == [(0, 0)]
        assert [(p.partition_index, p.error_code) for p in got[B]] == [(0, 29)]

        deleted = alice.call(  # DELETE on neither topic
            m.DeleteRecordsRequest(
                topics=[
                    m.DeleteRecordsRequest.DeleteRecordsTopic(
                        name=t,
                        partitions=[m.DeleteRecordsRequest.DeleteRecordsPartition(0, offset=1)],
                    )
                    for t in (A, B)
                ],
                timeout_ms=5000,
            ),
            1,
        )
        got = by_topic(deleted.topics)
        for t in (A, B):
            assert [(p.partition_index, p.error_code, p.low_watermark) for p in got[t]] == [
                (0, 29, -1)
            ]

        def commit(group: str) -> dict[str, Any]:
            request = m.OffsetCommitRequest(
                group_id=group,
                generation_id_or_member_epoch=-1,
                member_id="",
                topics=[
                    m.OffsetCommitRequest.Topic(
                        name=t,
                        partitions=[
                            m.OffsetCommitRequest.Partition(partition_index=0, committed_offset=1)
                        ],
                    )
                    for t in (A, B)
                ],
            )
            return by_topic(alice.call(request, 2).topics)

        got = commit("g-alice")  # A goes to the coordinator (whatever the group's state says)
        assert [p.partition_index for p in got[A]] == [0]
        assert got[A][0].error_code not in (29, 30)
        assert [(p.partition_index, p.error_code) for p in got[B]] == [(0, 29)]
        got = commit("g-other")
        assert {t: [(p.partition_index, p.error_code) for p in got[t]] for t in got} == {
            A: [(0, 30)],
            B: [(0, 30)],
        }

        txn_commit = alice.call(
            m.TxnOffsetCommitRequest(
                transactional_id="t-alice",
                group_id="g-alice",
                producer_id=1,
                producer_epoch=0,
                topics=[
                    m.TxnOffsetCommitRequest.Topic(
                        name=t,
                        partitions=[
                            m.TxnOffsetCommitRequest.Partition(
                                partition_index=0, committed_offset=1
                            )
                        ],
                    )
                    for t in (A, B)
                ],
            ),
            2,
        )
        got = by_topic(txn_commit.topics)
        assert {t: [(p.partition_index, p.error_code) for p in got[t]] for t in got} == {
            A: [(0, 53)],
            B: [(0, 53)],
        }

        offset_delete = alice.call(  # DELETE on the group: not alice's
            m.OffsetDeleteRequest(
                group_id="g-alice",
                topics=[
                    m.OffsetDeleteRequest.Topic(
                        name=A, partitions=[m.OffsetDeleteRequest.Partition(partition_index=0)]
                    )
                ],
            ),
            0,
        )
        assert offset_delete.error_code == 30
    finally:
        alice.close()


def test_kafka_request_before_login_closes_the_connection(secure: SecureBroker) -> None:
    with socket.create_connection((secure.host, secure.kafka_port), timeout=TIMEOUT) as sock:
        sock.sendall(encode_request(RequestHeader(3, 9, 1, "raw"), m.MetadataRequest(topics=None)))
        assert sock.recv(100) == b""  # never an empty view: closed


def test_kafka_oversized_sasl_frame_refused(secure: SecureBroker) -> None:
    with socket.create_connection((secure.host, secure.kafka_port), timeout=TIMEOUT) as sock:
        sock.sendall((10 * 1024 * 1024).to_bytes(4, "big") + b"\0" * 1024)
        assert sock.recv(100) == b""
    # the broker serves on
    assert topics_seen(secure.kafka_config("alice", USERS["alice"])) == {A}


def test_internal_state_logs_are_not_writable(secure: SecureBroker) -> None:
    producer = Producer(
        {**secure.kafka_config("admin", USERS["admin"]), "message.timeout.ms": 5000}
    )
    errors: list[KafkaError] = []
    producer.produce("__bayou_users", b"x", on_delivery=lambda err, _m: errors.append(err))
    producer.flush(TIMEOUT)
    assert errors and errors[0] is not None


def test_kcat_scram_over_tls(secure: SecureBroker) -> None:
    common = [
        "kcat", "-b", secure.tls_bootstrap, "-X", "security.protocol=SASL_SSL",
        "-X", f"ssl.ca.location={secure.pki.ca_path}", "-X", "sasl.mechanism=SCRAM-SHA-512",
        "-X", "sasl.username=alice", "-X", f"sasl.password={USERS['alice']}",
    ]  # fmt: skip
    listing = subprocess.run([*common, "-L", "-J"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    names = {t["topic"] for t in json.loads(listing.stdout)["topics"]}
    assert A in names and B not in names
    read = subprocess.run(
        [*common, "-C", "-t", A, "-o", "beginning", "-c", "3", "-e", "-f", "%k=%s\n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert read.stdout.splitlines() == [f"k{i}={A} {i}" for i in range(3)], read.stderr


def trusting(secure: SecureBroker) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(secure.pki.ca_path))


# -- HTTP -------------------------------------------------------------------------------------


def test_http_basic_bearer_401_and_403(secure: SecureBroker) -> None:
    url = f"https://127.0.0.1:{secure.http_tls_port}"
    with httpx.Client(verify=trusting(secure), timeout=TIMEOUT) as http:
        alice = ("alice", USERS["alice"])
        assert http.get(f"{url}/topics", auth=alice).json() == [A]
        refused = http.get(f"{url}/topics/{B}", auth=alice)
        assert refused.status_code == 403
        assert refused.json()["error_code"] == 40301
        assert http.get(f"{url}/topics/{A}", auth=alice).json()["name"] == A
        assert http.get(f"{url}/topics").status_code == 401
        wrong = http.get(f"{url}/topics", auth=("alice", "nope"))
        assert wrong.status_code == 401 and wrong.json()["error_code"] == 40101
        assert "alice" not in wrong.text
        bearer = {"Authorization": f"Bearer {secure.tokens.token('alice')}"}
        assert http.get(f"{url}/topics", headers=bearer).json() == [A]
        expired = {"Authorization": f"Bearer {secure.tokens.token('alice', lifetime_s=-60)}"}
        assert http.get(f"{url}/topics", headers=expired).status_code == 401
        other_audience = secure.tokens.token("alice", audience="someone-else")
        bad = http.get(f"{url}/topics", headers={"Authorization": f"Bearer {other_audience}"})
        assert bad.status_code == 401
        posted = http.post(
            f"{url}/topics/{B}",
            auth=alice,
            json={"records": [{"value": "x"}]},
            headers={"Content-Type": "application/vnd.kafka.json.v2+json"},
        )
        assert posted.status_code == 403


def test_sql_views_run_on_a_broker_that_requires_logins(secure: SecureBroker) -> None:
    """The views' supervisor reaches the broker as its internal user; /sql asks ALTER on
    the cluster of the HTTP user."""
    topic, view = f"secv{uuid.uuid4().hex[:6]}", f"secn{uuid.uuid4().hex[:6]}"
    producer = Producer(secure.kafka_config("admin", USERS["admin"]))
    devices = ["d1", "d2", "d1", "d3", "d1", "d2"]
    for i, device in enumerate(devices):
        producer.produce(topic, key=device.encode(), value=json.dumps({"device": device, "i": i}))
    assert producer.flush(TIMEOUT) == 0
    statement = f"CREATE VIEW {view} AS SELECT device, COUNT(*) AS n FROM {topic} GROUP BY device"
    url = f"https://127.0.0.1:{secure.http_tls_port}/sql"
    with httpx.Client(verify=trusting(secure), timeout=60) as http:
        refused = http.post(url, content=statement, auth=("alice", USERS["alice"]))
        assert refused.status_code == 403, refused.text
        created = http.post(url, content=statement, auth=("admin", USERS["admin"]))
        assert created.status_code == 200, created.text
    consumer = Consumer(
        secure.kafka_config(
            "admin",
            USERS["admin"],
            **{"group.id": f"t-{view}", "auto.offset.reset": "earliest"},
        )
    )
    consumer.subscribe([view])
    counts: dict[str, int] = {}
    want = {d: devices.count(d) for d in set(devices)}
    deadline = time.monotonic() + 60
    try:
        while counts != want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                row = json.loads(msg.value())
                counts[row["device"]] = row["n"]
    finally:
        consumer.close()
    assert counts == want


def test_metrics_need_a_login_and_describe_on_the_cluster(secure: SecureBroker) -> None:
    url = f"https://127.0.0.1:{secure.http_tls_port}/metrics"
    with httpx.Client(verify=trusting(secure), timeout=TIMEOUT) as http:
        assert http.get(url).status_code == 401
        refused = http.get(url, auth=("alice", USERS["alice"]))
        assert refused.status_code == 403 and A not in refused.text
        scraped = http.get(url, auth=("admin", USERS["admin"]))
        assert scraped.status_code == 200
        assert f'kafka_log_log_logendoffset{{partition="0",topic="{A}"}} 3.0' in scraped.text


def test_console_logs_in_and_shows_only_what_acls_allow(secure: SecureBroker) -> None:
    url = f"https://127.0.0.1:{secure.http_tls_port}/console"
    with httpx.Client(verify=trusting(secure), timeout=TIMEOUT) as http:
        anonymous = http.get(f"{url}/topics?q=sec")  # a browser goes to the login page
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/console/login?next=%2Fconsole%2Ftopics%3Fq%3Dsec"
        refused = http.post(f"{url}/topics/{A}/delete", data={"confirm": A})  # a script: 401
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        alice = ("alice", USERS["alice"])
        listed = http.get(f"{url}/topics", auth=alice)
        assert listed.status_code == 200 and f">{A}</a>" in listed.text
        assert f">{B}</a>" not in listed.text
        assert http.get(f"{url}/topics/{B}", auth=alice).status_code == 404
        assert http.get(f"{url}/topics/{A}/messages", auth=alice).status_code == 200
        assert http.get(url, auth=alice).status_code == 403  # the overview names every group
        refused = http.post(f"{url}/topics/{A}/delete", data={"confirm": A}, auth=alice)
        assert refused.status_code == 403 and A in secure_topics(secure)
        admin = http.get(f"{url}/topics", auth=("admin", USERS["admin"]))
        assert f">{A}</a>" in admin.text and f">{B}</a>" in admin.text


def test_console_login_page_sets_a_signed_session_cookie_and_logs_out(
    secure: SecureBroker,
) -> None:
    url = f"https://127.0.0.1:{secure.http_tls_port}"
    with chromium() as browser:
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT * 1000)
        page.goto(f"{url}/console/topics")  # no Basic prompt: the login page
        assert page.url == f"{url}/console/login?next=%2Fconsole%2Ftopics"
        page.get_by_label("User", exact=True).fill("alice")
        page.get_by_label("Password", exact=True).fill("wrong")
        page.get_by_role("button", name="Log in").click()
        assert page.locator("#login-error").inner_text() == "Wrong user or password."
        assert page.get_by_label("User", exact=True).input_value() == "alice"
        page.get_by_label("Password", exact=True).fill(USERS["alice"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{url}/console/topics")
        assert [t.strip() for t in page.locator("#topics td a").all_inner_texts()] == [A]
        assert page.locator(".user").inner_text() == "User:alice"
        # the same ACLs as alice's Basic login: sec-b is absent, the overview refused
        assert page.goto(f"{url}/console/topics/{B}").status == 404  # type: ignore[union-attr]
        assert page.goto(f"{url}/console").status == 403  # type: ignore[union-attr]
        [cookie] = context.cookies()
        assert (cookie["name"], cookie["path"], cookie["httpOnly"], cookie["secure"]) == (
            "bayou_session",
            "/console",
            True,
            True,
        )
        assert cookie["sameSite"] == "Strict"
        session = {"Cookie": f"bayou_session={cookie['value']}"}
        with httpx.Client(verify=trusting(secure), timeout=TIMEOUT) as http:
            # the cookie logs in to the console only, and only as signed by the broker
            assert http.get(f"{url}/console/topics/{A}", headers=session).status_code == 200
            assert http.get(f"{url}/topics", headers=session).status_code == 401
            forged = {"Cookie": f"bayou_session={cookie['value'][:-4]}AAAA"}
            assert http.get(f"{url}/console/topics", headers=forged).status_code == 303
            page.goto(f"{url}/console/topics")
            page.get_by_role("button", name="Log out").click()
            page.wait_for_url(f"{url}/console/login")
            assert context.cookies() == []
            # a copy of the cookie kept from before is refused once logged out
            assert http.get(f"{url}/console/topics", headers=session).status_code == 303
        context.close()


def secure_topics(secure: SecureBroker) -> set[str]:
    return topics_seen(secure.kafka_config("admin", USERS["admin"]))


def test_http_client_certificate_names_the_user(secure: SecureBroker) -> None:
    cert, key, _ = secure.pki.issue("carol", "carol", server=False)
    url = f"https://127.0.0.1:{secure.http_tls_port}"
    context = trusting(secure)
    context.load_cert_chain(cert, key)
    with httpx.Client(verify=context, timeout=TIMEOUT) as http:
        assert http.get(f"{url}/topics").json() == [A]  # carol may describe sec-a only
        assert http.get(f"{url}/topics/{B}").status_code == 403


# -- MQTT -------------------------------------------------------------------------------------


def test_mosquitto_over_tls_with_password(secure: SecureBroker) -> None:
    tls = ["-h", "127.0.0.1", "-p", str(secure.mqtt_tls_port), "--cafile", str(secure.pki.ca_path)]
    alice = ["-u", "alice", "-P", USERS["alice"]]
    sub = subprocess.Popen(
        ["mosquitto_sub", *tls, *alice, "-t", f"{A}/#", "-C", "1", "-W", "20", "-q", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # published until the subscriber is there to receive it (retained would also do)
        deadline = time.monotonic() + TIMEOUT
        while sub.poll() is None and time.monotonic() < deadline:
            pub = subprocess.run(
                ["mosquitto_pub", *tls, *alice, "-t", f"{A}/room", "-m", "hello", "-q", "1"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert pub.returncode == 0, pub.stderr
            with contextlib.suppress(subprocess.TimeoutExpired):
                sub.wait(0.5)
        out, err = sub.communicate(timeout=10)
        assert out.strip() == "hello", err
    finally:
        if sub.poll() is None:
            sub.kill()
    bad = subprocess.run(
        ["mosquitto_sub", *tls, "-u", "alice", "-P", "wrong", "-t", f"{A}/#", "-C", "1", "-W", "5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "not authorised" in bad.stderr.lower() or "bad user name" in bad.stderr.lower()


def _paho(secure: SecureBroker, user: str, version: int) -> tuple[paho.Client, list[Any]]:
    events: list[Any] = []
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=version
    )
    client.username_pw_set(user, USERS[user])
    client.tls_set(ca_certs=str(secure.pki.ca_path))
    client.on_connect = lambda _c, _u, _f, rc, _p: events.append(("connect", rc.value))
    client.on_subscribe = lambda _c, _u, _mid, rcs, _p: events.append(
        ("suback", [r.value for r in rcs])
    )
    client.on_publish = lambda _c, _u, _mid, rc, _p: events.append(("puback", rc.value))
    client.on_disconnect = lambda _c, _u, _f, rc, _p: events.append(("disconnect", rc.value))
    client.connect("127.0.0.1", secure.mqtt_tls_port)
    client.loop_start()
    wait_until("CONNACK", lambda: any(e[0] == "connect" for e in events), TIMEOUT)
    return client, events


def test_mqtt_acls_on_subscribe_and_publish(secure: SecureBroker) -> None:
    v5, events = _paho(secure, "alice", paho.MQTTv5)
    try:
        assert events[0] == ("connect", 0)
        v5.subscribe([(f"{A}/#", 1), (f"{B}/#", 1)])
        wait_until("SUBACK", lambda: any(e[0] == "suback" for e in events), TIMEOUT)
        assert ("suback", [1, 0x87]) in events
        v5.publish(f"{B}/x", b"no", qos=1)
        wait_until("PUBACK", lambda: any(e[0] == "puback" for e in events), TIMEOUT)
        assert ("puback", 0x87) in events
    finally:
        v5.loop_stop()
        v5.disconnect()
    v3, events3 = _paho(secure, "alice", paho.MQTTv311)
    try:
        v3.subscribe([(f"{A}/#", 1), (f"{B}/#", 1)])
        wait_until("SUBACK", lambda: any(e[0] == "suback" for e in events3), TIMEOUT)
        assert ("suback", [1, 0x80]) in events3
    finally:
        v3.loop_stop()
        v3.disconnect()


# -- AMQP -------------------------------------------------------------------------------------


def _pika(secure: SecureBroker, user: str, password: str) -> pika.BlockingConnection:
    context = ssl.create_default_context(cafile=str(secure.pki.ca_path))
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=secure.amqp_tls_port,
        credentials=pika.PlainCredentials(user, password),
        ssl_options=pika.SSLOptions(context, "localhost"),
        connection_attempts=1,
    )
    return pika.BlockingConnection(params)


def test_amqp_pika_over_tls(secure: SecureBroker) -> None:
    conn = _pika(secure, "alice", USERS["alice"])
    try:
        channel = conn.channel()
        method, _props, body = channel.basic_get(A, auto_ack=True)
        assert method is not None and body == f"{A} 0".encode()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_get(B, auto_ack=True)
        assert refused.value.reply_code == 403
        channel = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_delete(B)
        assert refused.value.reply_code == 403
    finally:
        conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as bad:
        _pika(secure, "alice", "wrong")
    assert "403" in str(bad.value) and "ACCESS_REFUSED" in str(bad.value)


# -- revocation, the CLI, certificate reload --------------------------------------------------


def test_revoked_acl_takes_effect_on_open_connections_within_a_second(
    secure: SecureBroker,
) -> None:
    dave = secure.kafka_config("dave", USERS["dave"])
    consumer = Consumer({**dave, "group.id": "g-dave", "enable.auto.commit": False})
    consumer.assign([TopicPartition(A, 0, 0)])
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 3 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
    assert len(got) == 3
    mqtt, events = _paho(secure, "dave", paho.MQTTv5)
    mqtt.subscribe(f"{A}/#", 1)
    wait_until("SUBACK", lambda: any(e[0] == "suback" for e in events), TIMEOUT)
    assert ("suback", [1]) in events
    amqp = _pika(secure, "dave", USERS["dave"])
    amqp_channel = amqp.channel()
    delivered: list[bytes] = []
    amqp_channel.basic_qos(prefetch_count=10)
    amqp_channel.basic_consume(
        A,
        lambda _ch, _m, _p, body: delivered.append(body),
        arguments={"x-stream-offset": "first"},
    )
    deadline = time.monotonic() + TIMEOUT
    while len(delivered) < 3 and time.monotonic() < deadline:
        amqp.process_data_events(time_limit=0.1)
    assert delivered[:3] == [f"{A} {i}".encode() for i in range(3)]
    done = admin_cli(secure, "acl", "remove", "--allow", "dave", "--topic", A)
    assert done.returncode == 0, done.stderr
    revoked = time.monotonic()
    # the Kafka consumer's next fetch is refused ...
    errors = []
    while not errors and time.monotonic() - revoked < 5:
        msg = consumer.poll(0.1)
        if msg is not None and msg.error() is not None:
            errors.append((msg.error().code(), time.monotonic() - revoked))
    consumer.close()
    assert errors and errors[0][0] == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert errors[0][1] < 1.0, errors
    # ... and the MQTT subscriber is disconnected with 0x87
    wait_until("DISCONNECT", lambda: any(e[0] == "disconnect" for e in events), 5)
    assert time.monotonic() - revoked < 1.5
    assert ("disconnect", 0x87) in events
    mqtt.loop_stop()
    # ... and the AMQP consumer's channel is closed with 403
    while amqp_channel.is_open and time.monotonic() - revoked < 5:
        amqp.process_data_events(time_limit=0.1)
    assert amqp_channel.is_closed and time.monotonic() - revoked < 2.5
    amqp.close()


def test_cli_users_and_acls_against_the_running_broker(secure: SecureBroker) -> None:
    added = bayou_cli(
        "user", "add", "erin", "--password-stdin", "--mechanism", "SCRAM-SHA-256",
        "-b", secure.tls_bootstrap, "--tls-ca", str(secure.pki.ca_path), "--sasl-user", "admin",
        stdin="erin-pw\n", env=admin_env(secure),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = admin_cli(secure, "user", "list")
    assert "erin\tSCRAM-SHA-256" in listed.stdout.splitlines()
    erin = {**secure.kafka_config("erin", "erin-pw"), "sasl.mechanism": "SCRAM-SHA-256"}
    assert topics_seen(erin) == set()  # logged in, allowed nothing
    acls = admin_cli(secure, "acl", "list", "--topic", A)
    assert "ALLOW\tUser:alice\tREAD\tTOPIC:sec-a\tLITERAL\thost=*" in acls.stdout.splitlines()
    refused = bayou_cli(
        "acl", "add", "--allow", "alice", "--operation", "ALL", "--cluster",
        "-b", secure.tls_bootstrap, "--tls-ca", str(secure.pki.ca_path), "--sasl-user", "alice",
        env={**os.environ, "BAYOU_SASL_PASSWORD": USERS["alice"]},
    )  # fmt: skip
    assert refused.returncode == 1 and "CLUSTER_AUTHORIZATION_FAILED" in refused.stderr
    removed = admin_cli(secure, "user", "remove", "erin")
    assert removed.returncode == 0, removed.stderr
    assert "erin" not in admin_cli(secure, "user", "list").stdout


def test_cli_quotas_over_tls_and_sasl_and_a_users_quota_throttles_its_client(
    secure: SecureBroker,
) -> None:
    refused = bayou_cli(
        "quota", "set", "--user", "alice", "producer_byte_rate=1000",
        "-b", secure.tls_bootstrap, "--tls-ca", str(secure.pki.ca_path), "--sasl-user", "alice",
        env={**os.environ, "BAYOU_SASL_PASSWORD": USERS["alice"]},
    )  # fmt: skip
    assert refused.returncode == 1 and "CLUSTER_AUTHORIZATION_FAILED" in refused.stderr
    done = admin_cli(secure, "quota", "set", "--user", "alice", "producer_byte_rate=1000")
    assert done.returncode == 0, done.stderr
    try:
        listed = admin_cli(secure, "quota", "list", "--user", "alice")
        assert "user alice\tproducer_byte_rate=1000" in listed.stdout.splitlines(), listed
        throttles: list[float] = []
        producer = Producer(
            secure.kafka_config(
                "alice", USERS["alice"], throttle_cb=lambda e: throttles.append(e.throttle_time)
            )
        )
        producer.produce(A, b"x" * 20_000)  # 2 kB/s over the 10 s window: twice the quota
        assert producer.flush(TIMEOUT) == 0
        wait_until("alice is told to wait", lambda: producer.poll(0.1) >= 0 and bool(throttles))
        assert max(throttles) > 1.0
    finally:
        removed = admin_cli(secure, "quota", "remove", "--user", "alice", "producer_byte_rate")
        assert removed.returncode == 0, removed.stderr
    assert admin_cli(secure, "quota", "list").stdout == ""
    # the other raw-socket command, over TLS + SASL too
    txns = admin_cli(secure, "txn", "list")
    assert txns.returncode == 0, txns.stderr


def test_the_java_client_over_tls_and_scram_sets_quotas_produces_and_consumes(
    secure: SecureBroker, tmp_path: Path
) -> None:
    reason = why_not()
    if reason is not None:
        pytest.skip(reason)
    props = tmp_path / "client.properties"
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{USERS["admin"]}";'
    )
    props.write_text(
        f"bootstrap.servers={secure.tls_bootstrap}\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        f"sasl.jaas.config={jaas}\n"
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={secure.pki.ca_path}\n"
    )
    source = Path(__file__).parents[1] / "support" / "java" / "SecureClients.java"
    try:
        done = subprocess.run(
            ["java", "-cp", classpath(), str(source), str(props), "sec-java", "g-java", "5",
             "java-user"],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        lines = [line.split("\t") for line in done.stdout.splitlines()]
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        assert ["quota", "java-user", "producer_byte_rate", "1048576"] in lines
        assert [f[1:] for f in lines if f[0] == "rec"] == [[f"k{i}", f"java {i}"] for i in range(5)]
    finally:
        admin_cli(secure, "quota", "remove", "--user", "java-user", "producer_byte_rate")
    listed = admin_cli(secure, "quota", "list", "--user", "java-user")
    assert listed.returncode == 0 and listed.stdout == "", listed


def _server_serial(port: int, ca: Path) -> int:
    from cryptography import x509

    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_certificate_reload_on_sighup_keeps_connections(secure: SecureBroker) -> None:
    ca = secure.pki.ca_path
    assert _server_serial(secure.http_tls_port, ca) == secure.serial
    with httpx.Client(verify=trusting(secure), timeout=TIMEOUT) as http:
        url = f"https://127.0.0.1:{secure.http_tls_port}/topics"
        assert http.get(url, auth=("alice", USERS["alice"])).status_code == 200
        new_cert, new_key, new_serial = secure.pki.issue("server-2", "localhost", server=True)
        shutil.copy(new_cert, secure.cert)
        shutil.copy(new_key, secure.key)
        os.kill(secure.pid, signal.SIGHUP)
        for port in (secure.kafka_tls_port, secure.http_tls_port, secure.mqtt_tls_port):
            wait_until(
                "the new certificate", lambda p=port: _server_serial(p, ca) == new_serial, 10
            )
        # the connection opened before the reload still serves (keep-alive: same socket)
        assert http.get(url, auth=("alice", USERS["alice"])).status_code == 200
    assert "TLS certificate reloaded" in secure.log_text()
