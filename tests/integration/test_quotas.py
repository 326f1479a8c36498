"""Client quotas with real clients: AlterClientQuotas/DescribeClientQuotas through
kafka-python's admin client, a confluent-kafka producer and consumer slowed to their byte
rates and told the throttle time, request-time quotas, the other doors slowed by
back-pressure, and a per-address connection-rate limit on every door.

The broker measures quotas over 2 samples of 1 s (``--quota-window-num 2``), so a client's
allowance for a burst is about one second of its quota.  The rate bounds asserted are
loose (2.5 times the quota): without throttling each of these transfers runs at several
MB/s on loopback, more than ten times the bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess
from tests.support.quota_admin import QuotaAdmin

QUOTA = 200_000  # bytes/s
TOTAL = 1_000_000  # bytes moved under a quota
VALUE = b"v" * 1000
FLOOD_HOST = "127.0.0.2"  # the flooding address (all of 127/8 is loopback)


@pytest.fixture(scope="module")
def quota_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("quotas") / "data"
    data.mkdir()
    broker = BrokerProcess(
        data, extra_args=["--quota-window-num", "2", "--quota-window-size-seconds", "1"]
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def admin(quota_broker: BrokerProcess) -> Iterator[QuotaAdmin]:
    client = QuotaAdmin(quota_broker.bootstrap)
    try:
        yield client
    finally:
        client.close()


def set_quota(admin: QuotaAdmin, entity: dict[str, str | None], **values: float | None) -> None:
    assert admin.alter(entity, values) == (0, None)


# -- managing quotas ---------------------------------------------------------------------


def test_admin_client_sets_describes_and_removes_quotas_and_they_survive_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    broker = BrokerProcess(data, doors=()).start()
    try:
        admin = QuotaAdmin(broker.bootstrap)
        try:
            set_quota(admin, {"user": "alice"}, producer_byte_rate=1024, consumer_byte_rate=2048)
            set_quota(admin, {"user": "alice", "client-id": None}, request_percentage=50.5)
            set_quota(admin, {"user": None}, producer_byte_rate=4096)
            set_quota(admin, {"client-id": "etl"}, consumer_byte_rate=8192)
            set_quota(admin, {"ip": "::ffff:10.1.2.3"}, connection_creation_rate=7)
            # validate_only writes nothing; bad entries get Kafka's INVALID_REQUEST (42)
            assert admin.alter({"client-id": "dry"}, {"producer_byte_rate": 1}, True) == (0, None)
            assert admin.alter({"user": "alice"}, {"producer_byte_rate": 1.5}) == (
                42,
                "Configuration producer_byte_rate must be a Long value",
            )
            assert admin.alter({"ip": "10.1.2.3"}, {"producer_byte_rate": 1})[0] == 42
            assert (
                admin.alter({"user": "alice", "ip": "10.1.2.3"}, {"request_percentage": 1})[0] == 42
            )
            assert admin.alter({"group": "g"}, {"producer_byte_rate": 1})[0] == 42
        finally:
            admin.close()
        broker.restart()
        admin = QuotaAdmin(broker.bootstrap)
        try:
            everything = admin.describe()
            assert everything == {
                (("user", "alice"),): {"producer_byte_rate": 1024.0, "consumer_byte_rate": 2048.0},
                (("user", "alice"), ("client-id", None)): {"request_percentage": 50.5},
                (("user", None),): {"producer_byte_rate": 4096.0},
                (("client-id", "etl"),): {"consumer_byte_rate": 8192.0},
                (("ip", "10.1.2.3"),): {"connection_creation_rate": 7.0},
            }
            assert set(admin.describe([("user", 0, "alice")])) == {
                (("user", "alice"),),
                (("user", "alice"), ("client-id", None)),
            }
            assert set(admin.describe([("user", 0, "alice")], strict=True)) == {
                (("user", "alice"),)
            }
            assert set(admin.describe([("user", 1, None)])) == {(("user", None),)}
            assert set(admin.describe([("ip", 2, None)])) == {(("ip", "10.1.2.3"),)}
            set_quota(admin, {"user": "alice"}, producer_byte_rate=None)
            set_quota(admin, {"user": "alice"}, consumer_byte_rate=None)
            assert (("user", "alice"),) not in admin.describe()
            with pytest.raises(RuntimeError, match=r"^DescribeClientQuotas: 35 "):
                admin.describe([("group", 0, "g")])
        finally:
            admin.close()
    finally:
        broker.stop()
