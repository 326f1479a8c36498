"""Kafka's dynamic broker configs through confluent-kafka's admin client: accepted by name,
validated by type and scope, persisted across a crash, described with their dynamic source."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from tests.support.broker import BrokerProcess
from tests.support.kafka_raw import RawKafka

TIMEOUT_S = 15
SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE


def alter(admin: AdminClient, **configs: tuple[str | None, AlterConfigOpType]) -> None:
    resource = ConfigResource(
        ResourceType.BROKER,
        "0",
        incremental_configs=[
            ConfigEntry(name.replace("__", "."), value, incremental_operation=op)
            for name, (value, op) in configs.items()
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(TIMEOUT_S)


def describe(admin: AdminClient) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ResourceType.BROKER, "0")
    return dict(admin.describe_configs([resource])[resource].result(TIMEOUT_S))


def refused(admin: AdminClient, name: str, value: str) -> KafkaError:
    resource = ConfigResource(
        ResourceType.BROKER,
        "0",
        incremental_configs=[ConfigEntry(name, value, incremental_operation=SET)],
    )
    with pytest.raises(KafkaException) as info:
        admin.incremental_alter_configs([resource])[resource].result(TIMEOUT_S)
    err: KafkaError = info.value.args[0]
    assert err.code() == KafkaError.INVALID_CONFIG, err
    return err


# confluent-kafka cannot name the cluster-wide default (resource ""): raw requests do


def alter_cluster_default(bootstrap: str, **configs: str) -> tuple[int, str | None]:
    request = m.IncrementalAlterConfigsRequest(
        resources=[
            m.IncrementalAlterConfigsRequest.AlterConfigsResource(
                resource_type=4,
                resource_name="",
                configs=[
                    m.IncrementalAlterConfigsRequest.AlterableConfig(
                        name=name.replace("__", "."), config_operation=0, value=value
                    )
                    for name, value in configs.items()
                ],
            )
        ]
    )
    with RawKafka(bootstrap) as raw:
        [answer] = raw.call(request, 1).responses
    return answer.error_code, answer.error_message


def describe_cluster_default(bootstrap: str) -> dict[str, tuple[str | None, int]]:
    request = m.DescribeConfigsRequest(
        resources=[
            m.DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=4, resource_name="", configuration_keys=None
            )
        ]
    )
    with RawKafka(bootstrap) as raw:
        [result] = raw.call(request, 4).results
    return {c.name: (c.value, c.config_source) for c in result.configs}


def source(entry: ConfigEntry) -> ConfigSource:
    return ConfigSource(entry.source)


def test_dynamic_broker_configs_are_kept_and_described(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    alter(
        admin,
        background__threads=("20", SET),
        log__cleaner__threads=("2", SET),
        sasl__kerberos__service__name=("kafka", SET),
        listener__name__plaintext__ssl__keystore__password=("s3cret", SET),
        log__retention__ms=("7200000", SET),
    )
    assert alter_cluster_default(
        broker.bootstrap, num__io__threads="16", background__threads="12"
    ) == (ErrorCode.NONE, None)

    def check() -> None:
        mine = describe(admin)
        assert mine["background.threads"].value == "20"
        assert source(mine["background.threads"]) == ConfigSource.DYNAMIC_BROKER_CONFIG
        assert mine["num.io.threads"].value == "16"
        assert source(mine["num.io.threads"]) == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
        assert mine["log.cleaner.threads"].value == "2"
        assert mine["sasl.kerberos.service.name"].value == "kafka"
        secret = mine["listener.name.plaintext.ssl.keystore.password"]
        assert secret.is_sensitive and secret.value is None
        assert mine["log.retention.ms"].value == "7200000"  # a topic default: applied
        assert describe_cluster_default(broker.bootstrap) == {
            "num.io.threads": ("16", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value),
            "background.threads": ("12", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value),
        }

    check()
    broker.kill()  # kill -9: the configs were persisted before they were acknowledged
    broker.start()
    check()

    alter(admin, background__threads=(None, DELETE))
    after = describe(admin)
    assert after["background.threads"].value == "12"  # the cluster-wide default shows through
    assert source(after["background.threads"]) == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG


def test_dynamic_broker_configs_are_validated(shared_broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    assert "background.threads" in refused(admin, "background.threads", "many").str()
    assert "background.threads" in refused(admin, "background.threads", "0").str()
    assert "per listener" in refused(admin, "ssl.keystore.password", "x").str()
    assert "at start" in refused(admin, "listeners", "PLAINTEXT://:9999").str()
    assert "Unknown" in refused(admin, "no.such.config", "1").str()
    assert "ssl.client.auth" in refused(admin, "ssl.client.auth", "maybe").str()
    code, message = alter_cluster_default(
        shared_broker.bootstrap, sasl__kerberos__service__name="kafka"
    )
    assert code == ErrorCode.INVALID_CONFIG and "per broker" in (message or "")
    mine = describe(admin)
    assert "background.threads" not in mine and "ssl.client.auth" not in mine
    assert mine["listeners"].is_read_only
