"""CLI argument parsing without a broker: --from, topic names, bootstrap, serve flags → config."""

from __future__ import annotations

import datetime as dt
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bayou.broker_config import BrokerConfig
from bayou.cli import cli
from bayou.cli._common import UsageProblem, bootstrap_addresses, check_topic_name
from bayou.cli.consume import message_json, parse_start
from bayou.cli.listener import CORRELATION_ID, answer_protocol


def test_parse_start() -> None:
    assert parse_start("earliest") == "earliest"
    assert parse_start("LATEST") == "latest"
    assert parse_start("42") == 42
    assert parse_start("2024-05-01T12:00:00Z") == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    assert parse_start("2024-05-01T14:00:00+02:00") == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    assert parse_start("2024-05-01T12:00") == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    with pytest.raises(UsageProblem, match="--from must be earliest, latest"):
        parse_start("yesterday")
    with pytest.raises(UsageProblem):
        parse_start("-3")


@pytest.mark.parametrize("name", ["orders", "a.b_c-D9", "x" * 249])
def test_valid_topic_names(name: str) -> None:
    assert check_topic_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "bad name", "ümlaut", "a/b", "x" * 250])
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(UsageProblem, match="is not a valid topic name"):
        check_topic_name(name)


def test_bootstrap_addresses() -> None:
    assert bootstrap_addresses("h1:9092, h2:19092") == [("h1", 9092), ("h2", 19092)]
    assert bootstrap_addresses("[::1]:9092") == [("::1", 9092)]
    with pytest.raises(UsageProblem, match="host:port"):
        bootstrap_addresses("localhost")


class _FakeMessage:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self._key, self._value = key, value

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 5

    def timestamp(self) -> tuple[int, int]:
        return 1, 1714564800123

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]]:
        return [("a", b"1"), ("bin", b"\xff"), ("none", None)]


def test_answer_protocol() -> None:
    kafka = (200).to_bytes(4, "big") + CORRELATION_ID.to_bytes(4, "big")
    assert answer_protocol(kafka) is None
    assert answer_protocol(b"HTTP/1.1") == "answers in HTTP"
    assert answer_protocol(b"AMQP\x00\x00\x09\x01") == "answers in AMQP"
    assert answer_protocol(b"") == "closed the connection without answering a Kafka request"
    assert answer_protocol(b"\x15\x03\x03\x00\x02\x02\x46") == "gave an answer that is not Kafka's"
    other_id = (200).to_bytes(4, "big") + (7).to_bytes(4, "big")
    assert answer_protocol(other_id) == "gave an answer that is not Kafka's"


def test_message_json() -> None:
    out = message_json(_FakeMessage(None, b"\xff\x00"))
    assert out == {
        "topic": "t",
        "partition": 2,
        "offset": 5,
        "timestamp": 1714564800123,
        "time": "2024-05-01T12:00:00.123Z",
        "timestamp_type": "create",
        "key": None,
        "key_base64": False,
        "value": "/wA=",
        "value_base64": True,
        "headers": [
            {"key": "a", "value": "1", "value_base64": False},
            {"key": "bin", "value": "/w==", "value_base64": True},
            {"key": "none", "value": None, "value_base64": False},
        ],
    }


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> list[BrokerConfig]:
    """Replace bayou.app.run (imported lazily by `serve`) with a recorder."""
    seen: list[BrokerConfig] = []
    module = types.ModuleType("bayou.app")
    module.run = seen.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bayou.app", module)
    for key in [k for k in __import__("os").environ if k.startswith("BAYOU_")]:
        monkeypatch.delenv(key)
    return seen


def _serve(args: list[str], env: dict[str, Any] | None = None) -> Any:
    return CliRunner().invoke(cli, ["serve", *args], env=env)


def test_serve_flags_map_onto_config(fake_run: list[BrokerConfig], tmp_path: Path) -> None:
    result = _serve(
        [
            "--data-dir",
            str(tmp_path),
            "--host",
            "0.0.0.0",
            "--kafka-port",
            "19092",
            "--http-port",
            "1",
            "--mqtt-port",
            "2",
            "--amqp-port",
            "3",
            "--advertised-host",
            "example",
            "--node-id",
            "4",
            "--no-auto-create-topics",
            "--num-partitions",
            "6",
            "--log-level",
            "debug",
            "--topic-default",
            "retention.ms=1000",
        ]
    )
    assert result.exit_code == 0, result.output
    (config,) = fake_run
    assert (config.data_dir, config.host, config.kafka.port) == (tmp_path, "0.0.0.0", 19092)
    assert (config.http.port, config.mqtt.port, config.amqp.port) == (1, 2, 3)
    assert (config.kafka.advertised_host, config.node_id) == ("example", 4)
    assert config.auto_create_topics_enable is False
    assert (config.num_partitions, config.log_level) == (6, "DEBUG")
    assert config.topic_defaults == {"retention.ms": 1000}


def test_serve_flags_left_out_let_toml_and_env_win(
    fake_run: list[BrokerConfig], tmp_path: Path
) -> None:
    toml = tmp_path / "bayou.toml"
    toml.write_text(
        "kafka_port = 1111\nauto_create_topics_enable = false\n"
        '[topic_defaults]\n"retention.ms" = 5\n'
    )
    result = _serve(["--config", str(toml), "--http-port", "2222"], env={"BAYOU_MQTT_PORT": "3333"})
    assert result.exit_code == 0, result.output
    (config,) = fake_run
    assert (config.kafka.port, config.http.port, config.mqtt.port) == (1111, 2222, 3333)
    assert config.auto_create_topics_enable is False
    assert config.topic_defaults == {"retention.ms": 5}


def test_cors_origins_from_flags_toml_and_env(fake_run: list[BrokerConfig], tmp_path: Path) -> None:
    toml = tmp_path / "bayou.toml"
    toml.write_text('http_cors_origins = ["https://from-toml.example"]\n')
    assert _serve(["--config", str(toml)]).exit_code == 0
    assert (
        _serve(
            ["--config", str(toml)],
            env={"BAYOU_HTTP_CORS_ORIGINS": "http://localhost:3000, https://b.example"},
        ).exit_code
        == 0
    )
    assert (
        _serve(
            [
                "--config",
                str(toml),
                "--http-cors-origin",
                "*",
                "--http-cors-origin",
                "http://127.0.0.1:5173",
            ]
        ).exit_code
        == 0
    )
    assert _serve([]).exit_code == 0
    assert [c.http.cors_origins for c in fake_run] == [
        ("https://from-toml.example",),
        ("http://localhost:3000", "https://b.example"),
        ("*", "http://127.0.0.1:5173"),
        (),
    ]


def test_every_option_has_a_flag_and_sections_work_in_toml(
    fake_run: list[BrokerConfig], tmp_path: Path
) -> None:
    from bayou.options import options

    help_text = _serve(["--help"]).output
    for option in options(BrokerConfig):
        assert f"--{option.flag}" in help_text, option.flat
    toml = tmp_path / "bayou.toml"
    toml.write_text(
        "internal_flush_messages = 1\n[http]\nport = 8081\n"
        "[group]\nconsumer_session_timeout_ms = 9000\n"
    )
    assert _serve(["--config", str(toml), "--fetch-max-bytes", "2048"]).exit_code == 0
    (config,) = fake_run
    assert config.http.port == 8081 and config.group.consumer_session_timeout_ms == 9000
    assert config.internal.flush_messages == 1 and config.kafka.fetch_max_bytes == 2048


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--topic-default", "segment.bytes=3"],
            {},
            "Invalid configuration: Invalid value '3' for configuration segment.bytes: must be "
            "at least 14.\n",
        ),
        (
            [],
            {"BAYOU_KAFKA_PORT": "abc"},
            "Invalid configuration: Option kafka_port cannot be 'abc'.\n",
        ),
        (
            ["--config", "/no/such/bayou.toml"],
            {},
            "Cannot read the config file /no/such/bayou.toml: No such file or directory.\n",
        ),
        (["--topic-default", "oops"], {}, "--topic-default expects KEY=VALUE, got 'oops'.\n"),
        (
            ["--http-cors-origin", "http://localhost:3000/"],
            {},
            "Invalid configuration: Invalid value 'http://localhost:3000/' for "
            "http_cors_origins: an origin is scheme://host[:port] without a path or trailing "
            "slash (e.g. "
            "http://localhost:3000), or * for any origin.\n",
        ),
    ],
)
def test_serve_bad_config_is_one_sentence_exit_2(
    fake_run: list[BrokerConfig], args: list[str], env: dict[str, str], message: str
) -> None:
    result = _serve(args, env=env)
    assert result.exit_code == 2
    assert result.output == message
    assert fake_run == []
