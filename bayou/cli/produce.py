"""``bayou produce``: one message per stdin line."""

from __future__ import annotations

import sys
import time
from typing import Any, BinaryIO

import click
from confluent_kafka import KafkaError, KafkaException

from bayou.cli._common import (
    CliError,
    UsageProblem,
    check_topic_name,
    connection_options,
    get_connection,
    parse_pairs,
    plural,
)


class _Deliveries:
    """Counts delivery reports and keeps the first failure's reason."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err


@click.command()
@click.argument("topic")
@click.option(
    "--key-separator",
    "-K",
    metavar="SEP",
    help="Split each line on the first SEP into key and value. Without it lines are "
    "values with no key; with it a line lacking SEP is reported as failed.",
)
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="KEY=VALUE",
    help="Header added to every message. Repeatable; order is kept.",
)
@click.option(
    "--partition",
    "-p",
    type=click.IntRange(min=0),
    metavar="N",
    help="Send every message to partition N (default: by key, murmur2 as the Java "
    "client and Bayou's other doors partition; keyless messages anywhere).",
)
@click.option(
    "--acks",
    type=click.Choice(["all", "1", "0"]),
    default="all",
    show_default=True,
    help="Acknowledgement the broker must give before a message counts as delivered.",
)
@connection_options()
def produce(
    topic: str,
    key_separator: str | None,
    headers: tuple[str, ...],
    partition: int | None,
    acks: str,
) -> None:
    """Send each line of stdin to TOPIC as one message.

    The line's newline (\\n or \\r\\n) is not part of the message; an empty line is an empty
    message.  Waits for every delivery, prints "produced N messages" on stderr, and exits 1 if
    any message was not delivered.
    """
    from confluent_kafka import Producer

    check_topic_name(topic)
    if key_separator == "":
        raise UsageProblem("--key-separator must not be empty.")
    header_list = [(k, v.encode()) for k, v in parse_pairs(headers, "--header")]
    conn = get_connection()
    conn.probe()
    producer = Producer(
        conn.client_config(
            **{
                "acks": acks,
                "message.timeout.ms": int(conn.timeout * 1000),
                "linger.ms": 5,
                # the Java client's partitioner, which Bayou's HTTP, MQTT and AMQP doors use too:
                # a key lands on the same partition whichever door it came through
                "partitioner": "murmur2_random",
            }
        )
    )
    _check_topic(producer, conn.timeout, topic, partition, conn)
    reports = _Deliveries()
    separator = key_separator.encode() if key_separator is not None else None
    stdin: BinaryIO = sys.stdin.buffer
    extra: dict[str, Any] = {} if partition is None else {"partition": partition}
    if header_list:
        extra["headers"] = header_list
    bad_lines = 0
    for number, raw in enumerate(stdin, start=1):
        line = raw[:-2] if raw.endswith(b"\r\n") else raw.removesuffix(b"\n")
        key: bytes | None = None
        if separator is not None:
            key, sep, line = line.partition(separator)
            if not sep:
                bad_lines += 1
                click.echo(
                    f"Line {number} has no key separator {key_separator!r}; skipped.", err=True
                )
                continue
        _send(producer, topic, key, line, extra, reports)
    remaining = producer.flush(conn.timeout + 1)
    failed = reports.failed + remaining + bad_lines
    click.echo(f"produced {plural(reports.delivered, 'message')}", err=True)
    if failed:
        reason = ""
        if reports.first_error is not None:
            reason = f": {conn.failure(reports.first_error, 'deliver', topic).message}"
        elif remaining:
            reason = f": no acknowledgement within {conn.timeout:g} seconds."
        raise CliError(f"{plural(failed, 'message')} could not be delivered{reason}")


def _send(
    producer: Any,
    topic: str,
    key: bytes | None,
    value: bytes,
    extra: dict[str, Any],
    reports: _Deliveries,
) -> None:
    """Queue one message, waiting for room in the local queue if it is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=reports, **extra)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)


def _check_topic(
    producer: Any, timeout: float, topic: str, partition: int | None, conn: Any
) -> None:
    """Fail early, with a sentence, if the topic or the partition does not exist.

    Asking for the topic's metadata lets a broker with auto-creation on create it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = producer.list_topics(topic=topic, timeout=timeout)
        except KafkaException as exc:
            raise conn.failure(exc, f"look up topic '{topic}'", topic) from None
        found = metadata.topics.get(topic)
        retry = found is not None and found.error is not None and found.error.retriable()
        if not retry or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # e.g. LEADER_NOT_AVAILABLE right after auto-creation
    if found is None or found.error is not None:
        error = found.error if found is not None else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        raise conn.failure(error, f"look up topic '{topic}'", topic)
    if partition is not None and partition not in found.partitions:
        raise CliError(
            f"Topic '{topic}' has {plural(len(found.partitions), 'partition')}; "
            f"there is no partition {partition}."
        )
