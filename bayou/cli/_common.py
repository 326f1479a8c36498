"""What every client command shares: the connection options, errors as sentences, exit codes.

Theory of operation
-------------------
Exit codes: 0 success, 1 the operation failed (``CliError``), 2 the command line or the
configuration is wrong (``UsageProblem`` and click's own usage errors).  Errors print one
sentence on stderr, without a traceback.

The connection options (``--bootstrap/-b``, ``--timeout``) are accepted both on ``bayou`` itself
and on every client command; the value nearest the command wins.  ``Connection`` turns them into
confluent-kafka settings.  Before building a client it connects to the bootstrap addresses
and sends one ApiVersions request (``listener.py``), so a dead broker, or a port that speaks
HTTP, MQTT or AMQP instead of Kafka, is reported at once instead of after librdkafka's
retries; every later wait is bounded by ``--timeout``.  librdkafka's own log lines are
silenced unless ``--verbose`` is given.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from confluent_kafka import KafkaError, KafkaException

from bayou.cli.listener import not_kafka
from bayou.cli.raw import RawSecurity

DEFAULT_KAFKA_PORT = 9092
DEFAULT_BOOTSTRAP = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
DEFAULT_TIMEOUT_S = 10.0
_META = "bayou.cli"

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]+")
_MAX_TOPIC_NAME = 249

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """The operation failed: print the sentence, exit 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(sentence(message))

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


class UsageProblem(CliError):
    """The command line or configuration is wrong: print the sentence, exit 2."""

    exit_code = 2


def sentence(text: str) -> str:
    """Capitalised, ending with a full stop (or other terminal punctuation)."""
    text = text.strip()
    if not text:
        return "Unknown error."
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?)`" else text + "."


# --------------------------------------------------------------------------- connection options


@dataclass
class Connection:
    """Where the broker is and how long to wait for it."""

    bootstrap: str
    timeout: float
    verbose: bool
    sasl_user: str | None = None
    sasl_password: str | None = None
    sasl_mechanism: str = "SCRAM-SHA-512"
    tls_ca: str | None = None

    def security_config(self) -> dict[str, Any]:
        """librdkafka's security settings for ``--sasl-user`` and ``--tls-ca``."""
        out: dict[str, Any] = {}
        sasl = self.sasl_user is not None
        if self.tls_ca is not None:
            out["security.protocol"] = "SASL_SSL" if sasl else "SSL"
            out["ssl.ca.location"] = self.tls_ca
        elif sasl:
            out["security.protocol"] = "SASL_PLAINTEXT"
        if sasl:
            out["sasl.mechanism"] = self.sasl_mechanism
            out["sasl.username"] = self.sasl_user
            out["sasl.password"] = self.sasl_password or ""
        return out

    def raw_security(self) -> RawSecurity | None:
        """``--tls-ca`` and ``--sasl-user`` for the CLI's own requests (``raw.py``)."""
        if self.tls_ca is None and self.sasl_user is None:
            return None
        return RawSecurity(
            self.tls_ca, self.sasl_user, self.sasl_password or "", self.sasl_mechanism
        )

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """confluent-kafka settings common to Admin, Producer and Consumer clients."""
        logger = logging.getLogger("bayou.cli.librdkafka")
        if self.verbose:
            if not logger.handlers:
                logger.addHandler(logging.StreamHandler())
            logger.setLevel(logging.DEBUG)
        else:
            logger.handlers = [logging.NullHandler()]
        logger.propagate = False
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "logger": logger,
            "socket.timeout.ms": int(self.timeout * 1000),
            "socket.connection.setup.timeout.ms": int(self.timeout * 1000),
        }
        config.update(self.security_config())
        config.update(extra)
        return config

    def unreachable(self) -> CliError:
        return CliError(f"Cannot reach a broker at {self.bootstrap} (is `bayou serve` running?)")

    def no_answer(self) -> CliError:
        return CliError(
            f"The broker at {self.bootstrap} did not answer within {self.timeout:g} seconds."
        )

    def probe(self) -> None:
        """Fail fast with a sentence unless some bootstrap address is a Kafka listener: one
        that refuses connections is unreachable; one that answers in another protocol (the
        HTTP, MQTT or AMQP port by mistake) is named as such (``listener.not_kafka``)."""
        if self.tls_ca is not None:
            return  # a TLS listener does not answer a plain probe; the client reports errors
        wait = min(self.timeout, 5.0)
        other: list[tuple[str, int, str]] = []
        for host, port in bootstrap_addresses(self.bootstrap):
            try:
                with socket.create_connection((host, port), timeout=wait):
                    pass
            except OSError:
                continue
            verdict = not_kafka(host, port, wait)
            if verdict is None:
                return
            other.append((host, port, verdict))
        if other:
            host, port, verdict = other[0]
            raise CliError(
                f"{host}:{port} {verdict}: that port is not a Kafka listener "
                f"(Bayou's Kafka port is {DEFAULT_KAFKA_PORT} unless `bayou serve "
                "--kafka-port` says otherwise)"
            )
        raise self.unreachable()

    def admin(self) -> Any:
        """A reachable AdminClient (typed Any: confluent-kafka ships no complete stubs)."""
        from confluent_kafka.admin import AdminClient

        self.probe()
        return AdminClient(self.client_config())

    def failure(
        self,
        err: KafkaError | KafkaException | BaseException,
        action: str,
        topic: str | None = None,
    ) -> CliError:
        """A Kafka error as a sentence about ``action`` (e.g. "create topic 'x'")."""
        if isinstance(err, KafkaException):
            err = err.args[0] if err.args and isinstance(err.args[0], KafkaError) else err
        if not isinstance(err, KafkaError):
            return CliError(f"Could not {action}: {err}")
        code = err.code()
        what = f"Topic '{topic}'" if topic else "The topic"
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            return CliError(f"{what} does not exist.")
        if code == KafkaError.TOPIC_ALREADY_EXISTS:
            return CliError(f"{what} already exists.")
        if code == KafkaError.TOPIC_EXCEPTION:
            return UsageProblem(f"'{topic}' is not a valid topic name (the broker refused it).")
        if code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE):
            return self.unreachable()
        if code in (KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT):
            return self.no_answer()
        detail = err.str().removeprefix("Broker: ").rstrip(".")
        if code == KafkaError.INVALID_CONFIG:
            return CliError(f"Could not {action}: invalid configuration ({detail})")
        if code == KafkaError.INVALID_PARTITIONS:
            return CliError(f"Could not {action}: invalid number of partitions ({detail})")
        return CliError(f"Could not {action}: {detail} ({err.name()})")


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """Parse ``host:port[,host:port...]`` (IPv6 hosts in brackets)."""
    addresses = []
    for item in bootstrap.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise UsageProblem(f"Bootstrap address '{item}' is not of the form host:port.")
        addresses.append((host.strip("[]"), int(port)))
    if not addresses:
        raise UsageProblem("No bootstrap address given.")
    return addresses


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            ctx.meta[f"{_META}.{key}"] = value
        return value

    return callback


def connection_options(root: bool = False) -> Callable[[F], F]:
    """``--bootstrap/-b``, ``--timeout`` and ``--verbose``, on ``bayou`` and on each command."""

    def decorate(f: F) -> F:
        f = click.option(
            "--bootstrap",
            "-b",
            metavar="HOST:PORT",
            expose_value=False,
            is_eager=True,
            envvar="BAYOU_BOOTSTRAP" if root else None,
            show_envvar=root,
            default=DEFAULT_BOOTSTRAP if root else None,
            callback=_remember("bootstrap"),
            help=(
                "Broker address(es), comma-separated. Default: $BAYOU_BOOTSTRAP or "
                f"{DEFAULT_BOOTSTRAP}."
            ),
        )(f)
        f = click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            metavar="SECONDS",
            expose_value=False,
            is_eager=True,
            default=DEFAULT_TIMEOUT_S if root else None,
            callback=_remember("timeout"),
            help=(
                f"Longest wait for any one answer from the broker (default {DEFAULT_TIMEOUT_S:g})."
            ),
        )(f)
        f = click.option(
            "--verbose",
            "-v",
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_remember("verbose"),
            help="Show the Kafka client's log lines on stderr.",
        )(f)
        f = click.option(
            "--sasl-user",
            metavar="NAME",
            expose_value=False,
            is_eager=True,
            envvar="BAYOU_SASL_USER" if root else None,
            callback=_remember("sasl_user"),
            help="Log in as NAME (SASL); the password is read from $BAYOU_SASL_PASSWORD.",
        )(f)
        f = click.option(
            "--sasl-mechanism",
            type=click.Choice(["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]),
            expose_value=False,
            is_eager=True,
            callback=_remember("sasl_mechanism"),
            help="SASL mechanism of --sasl-user (default SCRAM-SHA-512).",
        )(f)
        f = click.option(
            "--tls-ca",
            metavar="FILE",
            expose_value=False,
            is_eager=True,
            envvar="BAYOU_TLS_CA" if root else None,
            callback=_remember("tls_ca"),
            help="Connect over TLS, trusting the broker certificates signed by this CA.",
        )(f)
        return f

    return decorate


def get_connection() -> Connection:
    """The connection options in force for the current command."""
    meta = click.get_current_context().meta
    bootstrap = meta.get(f"{_META}.bootstrap", DEFAULT_BOOTSTRAP)
    bootstrap_addresses(bootstrap)  # validate early
    user = meta.get(f"{_META}.sasl_user")
    return Connection(
        bootstrap=bootstrap,
        timeout=float(meta.get(f"{_META}.timeout", DEFAULT_TIMEOUT_S)),
        verbose=bool(meta.get(f"{_META}.verbose", False)),
        sasl_user=user,
        sasl_password=os.environ.get("BAYOU_SASL_PASSWORD") if user else None,
        sasl_mechanism=meta.get(f"{_META}.sasl_mechanism") or "SCRAM-SHA-512",
        tls_ca=meta.get(f"{_META}.tls_ca"),
    )


# --------------------------------------------------------------------------- argument helpers


def check_topic_name(name: str) -> str:
    """Kafka's topic-name rule, checked before asking the broker."""
    if name in (".", "..") or len(name) > _MAX_TOPIC_NAME or not _TOPIC_NAME.fullmatch(name):
        raise UsageProblem(
            f"'{name}' is not a valid topic name: use 1 to {_MAX_TOPIC_NAME} ASCII letters, "
            "digits, '.', '_' or '-' (and not '.' or '..' alone)."
        )
    return name


def iso_time(text: str) -> dt.datetime | None:
    """An ISO-8601 time (``2024-05-01T12:00:00Z``, ``…+02:00``, ``2024-05-01``), zone-aware:
    a time without a zone is UTC, in every command.  None when ``text`` is not such a time."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def epoch_ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def parse_pairs(values: Iterable[str], option: str) -> list[tuple[str, str]]:
    """``k=v`` arguments of a repeatable option, in order; a missing '=' is a usage error."""
    pairs = []
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise UsageProblem(f"{option} expects KEY=VALUE, got '{raw}'.")
        pairs.append((key, value))
    return pairs


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
