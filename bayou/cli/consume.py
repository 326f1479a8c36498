"""``bayou consume``: print a topic's messages.

Theory of operation
-------------------
Without ``--group`` the consumer assigns partitions directly (no group membership, nothing
committed; confluent-kafka still needs a ``group.id``, so a throwaway one is generated).  The
start of every partition is resolved to a number before assigning: ``earliest``/``latest`` are
the watermarks, an offset is clamped into them, a time goes through ``offsets_for_times``.

Without ``--follow`` the high watermark of each partition is read once at start; a partition is
finished when a message at ``high - 1`` has been printed or a partition-EOF event arrives
(``enable.partition.eof``), and messages at or past that watermark are not printed.  The command
ends when every partition is finished: no sleeps, and a broker that stops answering for
``--timeout`` seconds is an error rather than a hang.

With ``--group`` the consumer joins the group (``subscribe``, or ``assign`` with ``--partition``),
starts from the group's committed offsets (or ``--from`` when given, which overrides them) and
commits the offsets of the messages it printed.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import json
import os
import sys
import time
import uuid
from typing import Any, BinaryIO

import click
from confluent_kafka import OFFSET_STORED, KafkaError, KafkaException, TopicPartition

from bayou.cli._common import (
    CliError,
    Connection,
    UsageProblem,
    check_topic_name,
    connection_options,
    get_connection,
    iso_time,
    plural,
)

JOIN_GRACE_S = 50.0  # beyond --timeout, for a consumer-group join (rebalances take a while)

Start = str | int | dt.datetime  # "earliest" | "latest" | offset | time


def parse_start(raw: str) -> Start:
    """Parse ``--from``: earliest, latest, an offset, or an ISO-8601 time (UTC if no zone)."""
    text = raw.strip()
    if text.lower() in ("earliest", "latest"):
        return text.lower()
    if text.isdigit():
        return int(text)
    when = iso_time(text)
    if when is None:
        raise UsageProblem(
            f"--from must be earliest, latest, an offset or an ISO-8601 time, not '{raw}'."
        )
    return when


@click.command()
@click.argument("topic")
@click.option(
    "--from",
    "start",
    metavar="WHERE",
    help="Where to start in each partition: earliest, latest, an OFFSET, or an "
    "ISO-8601 time such as 2024-05-01T12:00:00Z (UTC when no zone is given). "
    "Default: earliest, or the group's committed offsets with --group.",
)
@click.option(
    "--partition",
    "-p",
    type=click.IntRange(min=0),
    metavar="N",
    help="Read only partition N (default: all partitions).",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep waiting for new messages (stop with Ctrl-C). Without it, stop at the "
    "end each partition had when the command started.",
)
@click.option(
    "--max-messages",
    "-n",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after printing N messages.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: the value, one per line. json: one object per line with topic, "
    "partition, offset, timestamp, time, key, value and headers.",
)
@click.option("--print-key", is_flag=True, help="With --format text, print KEY<TAB>VALUE.")
@click.option(
    "--group",
    "-g",
    metavar="GROUP",
    help="Consume as a member of consumer group GROUP and commit what is printed.",
)
@click.option(
    "--isolation",
    type=click.Choice(["read_uncommitted", "read_committed"]),
    default="read_uncommitted",
    show_default=True,
    help="read_committed: only messages of committed transactions, and none past "
    "the first transaction still open (the last stable offset). "
    "read_uncommitted: every message, aborted ones too.",
)
@connection_options()
def consume(
    topic: str,
    start: str | None,
    partition: int | None,
    follow: bool,
    max_messages: int | None,
    fmt: str,
    print_key: bool,
    group: str | None,
    isolation: str,
) -> None:
    """Print the messages of TOPIC to stdout.

    In json format, keys, values and header values that are not UTF-8 are base64-encoded and
    flagged (key_base64, value_base64, value_base64 on the header).  The number of messages
    printed goes to stderr at the end.
    """
    from confluent_kafka import Consumer

    check_topic_name(topic)
    where = parse_start(start) if start is not None else None
    conn = get_connection()
    conn.probe()
    if group is not None:
        _check_group(conn, group)
    lost: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal():
            lost.append(err)

    consumer = Consumer(
        conn.client_config(
            **{
                "group.id": group or f"bayou-cli-{uuid.uuid4().hex}",
                "enable.auto.commit": group is not None,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "isolation.level": isolation,
                "error_cb": on_error,
            }
        )
    )
    run = _Run(conn, consumer, topic, follow, max_messages, _Printer(fmt, print_key), lost)
    try:
        partitions = _partitions(conn, consumer, topic, partition)
        marks = {p: _watermarks(conn, consumer, topic, p) for p in partitions}
        positions = _resolve(conn, consumer, topic, marks, where) if where is not None else None
        if not follow:
            run.targets = {p: high for p, (_low, high) in marks.items()}
        if group is None or partition is not None:
            assigned = {
                p: (positions or {}).get(p, OFFSET_STORED if group else marks[p][0])
                for p in partitions
            }
            consumer.assign([TopicPartition(topic, p, off) for p, off in assigned.items()])
            run.assigned(
                p for p, off in assigned.items() if off == OFFSET_STORED or off < marks[p][1]
            )
        else:
            run.subscribe(positions)
        run.loop(commit=group is not None)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        consumer.close()
    click.echo(f"consumed {plural(run.count, 'message')}", err=True)


class _Printer:
    """Writes messages to stdout in the chosen format."""

    def __init__(self, fmt: str, print_key: bool) -> None:
        self.fmt = fmt
        self.print_key = print_key
        self.out: BinaryIO = sys.stdout.buffer

    def write(self, msg: Any) -> None:
        if self.fmt == "json":
            self.out.write(json.dumps(message_json(msg), ensure_ascii=False).encode() + b"\n")
            return
        value = msg.value() or b""
        if self.print_key:
            value = (msg.key() or b"") + b"\t" + value
        self.out.write(value + b"\n")

    def flush(self) -> None:
        self.out.flush()


def _text(data: bytes | None) -> tuple[str | None, bool]:
    """UTF-8 text if it decodes, else base64 (flagged True)."""
    if data is None:
        return None, False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def message_json(msg: Any) -> dict[str, Any]:
    """The JSON object ``--format json`` prints for one message."""
    ts_type, ts = msg.timestamp()
    timestamp = ts if ts_type != 0 and ts >= 0 else None
    key, key_b64 = _text(msg.key())
    value, value_b64 = _text(msg.value())
    headers = []
    for name, raw in msg.headers() or []:
        text, b64 = _text(raw)
        headers.append({"key": name, "value": text, "value_base64": b64})
    when = None
    if timestamp is not None:
        when = dt.datetime.fromtimestamp(timestamp / 1000, tz=dt.UTC)
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": timestamp,
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None,
        "timestamp_type": {1: "create", 2: "log_append"}.get(ts_type),
        "key": key,
        "key_base64": key_b64,
        "value": value,
        "value_base64": value_b64,
        "headers": headers,
    }


def _check_group(conn: Connection, group: str) -> None:
    """Ask for the group's committed offsets: fails within --timeout, with a sentence, when the
    broker has no group coordinator (librdkafka's consumer would wait silently)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(conn.client_config())
    request = [ConsumerGroupTopicPartitions(group)]
    futures = admin.list_consumer_group_offsets(request, request_timeout=conn.timeout)
    try:
        for future in futures.values():
            future.result(timeout=conn.timeout + 5)
    except (KafkaException, concurrent.futures.TimeoutError) as exc:
        code = exc.args[0].code() if isinstance(exc, KafkaException) else KafkaError._TIMED_OUT
        if code == KafkaError._TIMED_OUT:
            raise CliError(
                f"Cannot use consumer group '{group}': the broker at {conn.bootstrap} named no "
                f"group coordinator within {conn.timeout:g} seconds (does it support consumer "
                "groups?)"
            ) from None
        raise conn.failure(exc, f"use consumer group '{group}'") from None


def _partitions(conn: Connection, consumer: Any, topic: str, only: int | None) -> list[int]:
    try:
        metadata = consumer.list_topics(timeout=conn.timeout)
    except KafkaException as exc:
        raise conn.failure(exc, "list topics", topic) from None
    found = metadata.topics.get(topic)
    if found is None:
        raise CliError(f"Topic '{topic}' does not exist.")
    if found.error is not None and not found.partitions:
        raise conn.failure(found.error, f"read topic '{topic}'", topic)
    if only is None:
        return sorted(found.partitions)
    if only not in found.partitions:
        raise CliError(
            f"Topic '{topic}' has {plural(len(found.partitions), 'partition')}; "
            f"there is no partition {only}."
        )
    return [only]


def _watermarks(conn: Connection, consumer: Any, topic: str, p: int) -> tuple[int, int]:
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=conn.timeout, cached=False
        )
    except KafkaException as exc:
        raise conn.failure(exc, f"read the offsets of topic '{topic}'", topic) from None
    return int(low), int(high)


def _resolve(
    conn: Connection, consumer: Any, topic: str, marks: dict[int, tuple[int, int]], where: Start
) -> dict[int, int]:
    """The numeric start offset of each partition for ``--from``."""
    if where == "earliest":
        return {p: low for p, (low, _high) in marks.items()}
    if where == "latest":
        return {p: high for p, (_low, high) in marks.items()}
    if isinstance(where, int):
        return {p: min(max(where, low), high) for p, (low, high) in marks.items()}
    assert isinstance(where, dt.datetime)
    ms = int(where.timestamp() * 1000)
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, ms) for p in marks], timeout=conn.timeout
        )
    except KafkaException as exc:
        raise conn.failure(exc, f"look up offsets by time in topic '{topic}'", topic) from None
    # No message at or after the time: start at the end.
    return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found}


class _Run:
    """The consume loop and its stop conditions."""

    def __init__(
        self,
        conn: Connection,
        consumer: Any,
        topic: str,
        follow: bool,
        max_messages: int | None,
        printer: _Printer,
        lost: list[KafkaError],
    ) -> None:
        self.conn = conn
        self.consumer = consumer
        self.topic = topic
        self.follow = follow
        self.max_messages = max_messages
        self.printer = printer
        self.lost = lost
        self.targets: dict[int, int] = {}  # partition -> high watermark at start (no --follow)
        self.remaining: set[int] = set()
        self.finished: set[int] = set()
        self.started = False
        self.quiet_since = time.monotonic()
        self.count = 0

    def assigned(self, partitions: Any) -> None:
        self.started = True
        self.quiet_since = time.monotonic()
        self.remaining.update(p for p in partitions if p not in self.finished)

    def _finish(self, p: int) -> None:
        self.remaining.discard(p)
        self.finished.add(p)

    def subscribe(self, positions: dict[int, int] | None) -> None:
        def on_assign(consumer: Any, tps: list[TopicPartition]) -> None:
            if positions is not None:
                for tp in tps:
                    tp.offset = positions.get(tp.partition, tp.offset)
                consumer.assign(tps)
            self.assigned(tp.partition for tp in tps)

        def on_revoke(_consumer: Any, tps: list[TopicPartition]) -> None:
            for tp in tps:
                self.remaining.discard(tp.partition)

        self.consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)

    def _done(self) -> bool:
        if self.max_messages is not None and self.count >= self.max_messages:
            return True
        return not self.follow and self.started and not self.remaining

    def loop(self, commit: bool) -> None:
        self.quiet_since = time.monotonic()
        while not self._done():
            if self.lost:
                raise CliError(
                    f"Lost the connection to the broker at {self.conn.bootstrap}: "
                    f"{self.lost[0].str()}"
                )
            batch = self.consumer.consume(num_messages=500, timeout=0.5)
            if not self.started:
                # Joining a group waits for the other members to rejoin: be patient, but not
                # forever (the broker's liveness is watched by the error callback meanwhile).
                if time.monotonic() - self.quiet_since > self.conn.timeout + JOIN_GRACE_S:
                    raise CliError(
                        f"The group coordinator at {self.conn.bootstrap} assigned no "
                        f"partitions within "
                        f"{self.conn.timeout + JOIN_GRACE_S:g} seconds."
                    )
                if not batch:
                    continue
            if not batch:
                if not self.follow and time.monotonic() - self.quiet_since > self.conn.timeout:
                    raise self.conn.no_answer()
                continue
            self.quiet_since = time.monotonic()
            for msg in batch:
                self._handle(msg, commit)
                if self._done():
                    break
            self.printer.flush()

    def _handle(self, msg: Any, commit: bool) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if not self.follow:
                    self._finish(msg.partition())
                return
            if err.fatal() or err.code() in (
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                KafkaError._UNKNOWN_TOPIC,
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
            ):
                raise self.conn.failure(err, f"read topic '{self.topic}'", self.topic)
            return  # transient: librdkafka retries on its own
        p, offset = msg.partition(), msg.offset()
        high = self.targets.get(p)
        if not self.follow and high is not None and offset >= high:
            self._finish(p)
            return
        self.printer.write(msg)
        self.count += 1
        if commit:
            self.consumer.store_offsets(message=msg)
        if not self.follow and high is not None and offset + 1 >= high:
            self._finish(p)
