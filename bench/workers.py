"""Load-generator phases, each run in its own child process by ``bench.kafka_bench``.

Usage (internal): ``python -m bench.workers PHASE 'JSON-SPEC'``. The worker prints ``READY`` when
it is set up (the latency consumer needs this before the producer starts) and, last, one line
``RESULT {json}``. Running each phase in a fresh process keeps one client's threads and memory from
leaking into the next measurement, and lets the latency producer and consumer run on separate
interpreters (no shared GIL).

Phases:

- ``produce``: N messages of S bytes as fast as librdkafka accepts them, then ``flush()``; the
  clock runs from the first ``produce()`` to the end of ``flush()``, so every message is acked.
  Values come from ``payloads``: text-like records that compress about as real JSON events do
  (lz4 ≈ 2x), the same for every codec, so that only the codec differs between rows.
- ``consume``: read the offset ranges ``assignment`` names (every partition from the earliest
  offset by default) until each range is read; a range that ends before its partition's end is
  unassigned when done, and such a consumer keeps a smaller pre-fetch queue, so that several
  processes can share one partition without each reading far past its share.

Throughput phases that several processes run together take a start barrier: with ``barrier``
in the spec the worker, once ``READY``, waits for a ``GO`` line on stdin, and reports its own
``start_ns``/``end_ns`` (``CLOCK_MONOTONIC``, the same clock in every process) so that the
parent measures from the first start to the last end.
- ``latency-consume`` / ``latency-produce``: a paced producer embeds the *scheduled* send time
  (``CLOCK_MONOTONIC``, shared by all processes on one host) in each value; the consumer records
  receive time minus that. Using the schedule rather than the moment ``produce()`` ran means a
  stalled producer shows up as latency instead of being hidden (no coordinated omission).
- ``commit``: synchronous offset commits, one after the other (each waits for its answer), for
  a fixed time after one unmeasured commit (which finds the group coordinator): commits/s and
  the latency of each commit.
- ``transform``: consume-transform-produce from a filled input topic to an output topic, in
  batches of ``batch`` records, ``guarantee`` ``exactly-once`` (a transactional producer; each
  batch's records and consumed offsets committed in one transaction with
  ``send_offsets_to_transaction``; input read at read_committed) or ``at-least-once`` (the
  same loop with an idempotent producer: ``flush()`` then a synchronous offset commit per
  batch).  The clock runs from the first ``consume()`` to the last commit; the output is
  then counted (at read_committed) and must hold every input record exactly once.
"""

from __future__ import annotations

import json
import os
import random
import resource
import struct
import sys
import time
import uuid
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

Spec = dict[str, Any]

# flag (1 = warm-up, 0 = measured), sequence number, scheduled send time in ns (CLOCK_MONOTONIC)
LATENCY_HEADER = struct.Struct(">BQq")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _log(msg: str) -> None:
    print(f"[{os.getpid()}] {msg}", file=sys.stderr, flush=True)


class _Errors:
    """Counts delivery errors (librdkafka reports only failures: delivery.report.only.error)."""

    only_errors = True

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.count += 1
            if self.first is None:
                self.first = str(err)


class _AckTimes(_Errors):
    """Also records, per measured message, ack time minus scheduled send time (the produce leg)."""

    only_errors = False

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[int] = []

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        now_ns = time.monotonic_ns()
        super().on_delivery(err, msg)
        value = msg.value()
        if err is None and value:
            flag, _seq, due_ns = LATENCY_HEADER.unpack_from(value)
            if not flag:
                self.samples.append(now_ns - due_ns)


_VOCABULARY = (
    "device sensor reading value status ok warn error temperature humidity pressure "
    "voltage current door open closed user order item price quantity region eu us apac "
    "created updated session click view page cart checkout payment true false null id "
    "timestamp level info debug trace service gateway api latency ms bytes count total"
)
_WORDS = _VOCABULARY.split(" ")


def payloads(size: int, count: int = 4096, seed: int = 7) -> list[bytes]:
    """``count`` distinct values of ``size`` bytes that look like JSON events (keys repeat,
    numbers and words vary): lz4 makes them about half as large, zstd a third."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts: list[str] = []
        length = 0
        while length < size:
            field = (
                f'"{rng.choice(_WORDS)}":"{rng.choice(_WORDS)}-{rng.randrange(10**6)}",'
                if rng.random() < 0.6
                else f'"{rng.choice(_WORDS)}":{rng.random() * 1000:.3f},'
            )
            parts.append(field)
            length += len(field)
        out.append(("{" + "".join(parts))[:size].encode())
    return out


def _await_go(spec: Spec) -> None:
    """With a barrier, wait for the parent's ``GO`` (after ``READY``)."""
    if spec.get("barrier"):
        line = sys.stdin.readline()
        if line.strip() != "GO":
            raise RuntimeError(f"expected GO on stdin, got {line!r}")


def _producer(spec: Spec, errors: _Errors, *, linger_ms: float) -> Producer:
    conf: dict[str, Any] = {
        "bootstrap.servers": spec["bootstrap"],
        "acks": spec["acks"],
        "linger.ms": linger_ms,
        "batch.size": spec["batch_size"],
        "compression.type": spec.get("compression") or "none",
        "queue.buffering.max.kbytes": 1024 * 1024,
        "delivery.report.only.error": errors.only_errors,
        "on_delivery": errors.on_delivery,
    }
    if spec.get("idempotence") is not None:
        conf["enable.idempotence"] = bool(spec["idempotence"])
    conf.update(spec.get("producer_config") or {})
    return Producer(conf)


def _consumer(spec: Spec, **overrides: Any) -> Consumer:
    conf: dict[str, Any] = {
        "bootstrap.servers": spec["bootstrap"],
        "group.id": f"bench-throwaway-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **overrides,
    }
    conf.update(spec.get("consumer_config") or {})
    return Consumer(conf)


def _assign_all(consumer: Consumer, topic: str, partitions: int) -> None:
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])


def produce(spec: Spec) -> Spec:
    n, size = int(spec["messages"]), int(spec["size"])
    errors = _Errors()
    producer = _producer(spec, errors, linger_ms=spec["linger_ms"])
    values = payloads(size)  # reused buffers (librdkafka copies them)
    topic = spec["topic"]
    producer.list_topics(topic, timeout=10.0)  # connect before the clock starts
    print("READY", flush=True)
    _await_go(spec)
    cpu0 = _cpu_seconds()
    start_ns = time.monotonic_ns()
    t0 = time.perf_counter()
    # produce_batch: the load generator's own CPU per message is what limits this machine
    # (librdkafka copies each value; a Python call per message costs ~20 % more)
    batches = [[{"value": v} for v in values[i : i + 1024]] for i in range(0, 4096, 1024)]
    produce_batch = producer.produce_batch
    sent = 0
    while sent < n:
        batch = batches[(sent >> 10) & 3][: n - sent]
        queued = produce_batch(topic, batch)
        sent += queued
        if queued < len(batch):  # local queue full: let deliveries drain
            for message in batch[queued:]:
                message.pop("_error", None)  # produce_batch marks the ones it refused
            producer.poll(0.001)
        producer.poll(0)
    enqueued_s = time.perf_counter() - t0
    left = producer.flush(spec["timeout_s"])
    elapsed = time.perf_counter() - t0
    end_ns = time.monotonic_ns()
    if left:
        raise RuntimeError(f"{left} messages still unacknowledged after {spec['timeout_s']}s")
    if errors.count:
        raise RuntimeError(f"{errors.count} delivery errors, first: {errors.first}")
    return {
        "elapsed_s": elapsed,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "enqueue_s": enqueued_s,
        "messages": n,
        "bytes": n * size,
        "client_cpu_s": _cpu_seconds() - cpu0,
    }


def consume(spec: Spec) -> Spec:
    """Read the ranges of ``assignment`` ([partition, first offset, end offset]; every
    partition from the start, ``messages`` in all, when absent).  ``shared``: some range ends
    before its partition does (another process reads the rest)."""
    partitions = int(spec["partitions"])
    ranges: list[list[int]] | None = spec.get("assignment")
    n = sum(hi - lo for _p, lo, hi in ranges) if ranges else int(spec["messages"])
    ranges = ranges or [[p, 0, -1] for p in range(partitions)]
    shared = bool(spec.get("shared"))
    fetch_max = int(spec["fetch_max_bytes"])
    consumer = _consumer(
        spec,
        **{
            "fetch.max.bytes": fetch_max,
            "max.partition.fetch.bytes": int(spec["max_partition_fetch_bytes"]),
            "receive.message.max.bytes": fetch_max + 1024 * 1024,
            # a share of a partition: keep the read-ahead past its end small
            "queued.max.messages.kbytes": 16 * 1024 if shared else 256 * 1024,
            "queued.min.messages": 500_000,
            # librdkafka waits this long (default 1 s) before fetching again once its queue
            # is over the limit above: with 8 MiB fetch responses a shared partition's 16 MiB
            # queue hit it at every other fetch, and the phase measured the back-off
            "fetch.queue.backoff.ms": 10,
            "enable.partition.eof": False,
        },
    )
    consumer.list_topics(spec["topic"], timeout=10.0)  # connect before the clock starts
    print("READY", flush=True)
    _await_go(spec)
    ends = {p: hi for p, _lo, hi in ranges} if shared else {}
    got = nbytes = 0
    cpu0 = _cpu_seconds()
    start_ns = time.monotonic_ns()
    t0 = time.perf_counter()
    last_progress = t0
    first_s: float | None = None
    try:
        consumer.assign(
            [TopicPartition(spec["topic"], p, lo or OFFSET_BEGINNING) for p, lo, _hi in ranges]
        )
        while got < n:
            batch = consumer.consume(num_messages=min(10_000, n - got), timeout=1.0)
            now = time.perf_counter()
            if not batch:
                if now - last_progress > spec["idle_timeout_s"]:
                    raise RuntimeError(
                        f"consumed {got}/{n}, then nothing for {spec['idle_timeout_s']}s"
                    )
                continue
            if first_s is None:
                first_s = now - t0
            last_progress = now
            for msg in batch:
                err = msg.error()
                if err is not None:
                    raise RuntimeError(f"consume error: {err}")
                if ends:
                    end = ends[msg.partition()]
                    offset = msg.offset()
                    if offset >= end:
                        got -= 1  # read ahead past this process's share
                        continue
                    if offset == end - 1:  # the share is read: stop fetching it
                        consumer.incremental_unassign(
                            [TopicPartition(spec["topic"], msg.partition())]
                        )
                value = msg.value()
                nbytes += len(value) if value is not None else 0
            got += len(batch)
        elapsed = time.perf_counter() - t0
        end_ns = time.monotonic_ns()
    finally:
        consumer.close()
    return {
        "elapsed_s": elapsed,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "first_message_s": first_s,
        "messages": got,
        "bytes": nbytes,
        "client_cpu_s": _cpu_seconds() - cpu0,
    }


def _percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanosecond samples, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    rank = max(1, min(len(sorted_ns), round(q * len(sorted_ns) + 0.5)))
    return sorted_ns[rank - 1] / 1e6


def latency_consume(spec: Spec) -> Spec:
    expected = int(spec["expected"])
    consumer = _consumer(spec, **{"fetch.wait.max.ms": int(spec["fetch_wait_max_ms"])})
    _assign_all(consumer, spec["topic"], int(spec["partitions"]))
    consumer.poll(0.2)  # let it connect and start fetching before the producer begins
    print("READY", flush=True)
    samples: list[int] = []
    seen: set[int] = set()
    warmup = dups = 0
    cpu0 = _cpu_seconds()
    deadline = time.monotonic() + spec["timeout_s"]
    last_progress = time.monotonic()
    try:
        while len(samples) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            now_ns = time.monotonic_ns()
            if msg is None:
                if samples and time.monotonic() - last_progress > spec["idle_timeout_s"]:
                    break
                continue
            err = msg.error()
            if err is not None:
                raise RuntimeError(f"consume error: {err}")
            last_progress = time.monotonic()
            value = msg.value() or b""
            flag, seq, sent_ns = LATENCY_HEADER.unpack_from(value)
            if flag:
                warmup += 1
            elif seq in seen:
                dups += 1
            else:
                seen.add(seq)
                samples.append(now_ns - sent_ns)
    finally:
        consumer.close()
    samples.sort()
    return {
        "messages": len(samples),
        "expected": expected,
        "lost": expected - len(samples),
        "duplicates": dups,
        "warmup_messages": warmup,
        "p50_ms": _percentile(samples, 0.50),
        "p99_ms": _percentile(samples, 0.99),
        "p999_ms": _percentile(samples, 0.999),
        "max_ms": samples[-1] / 1e6 if samples else float("nan"),
        "mean_ms": sum(samples) / len(samples) / 1e6 if samples else float("nan"),
        "client_cpu_s": _cpu_seconds() - cpu0,
    }


def latency_produce(spec: Spec) -> Spec:
    rate, size = float(spec["rate"]), int(spec["size"])
    warmup_n = int(rate * spec["warmup_s"])
    measured_n = int(spec["expected"])
    errors = _AckTimes()
    producer = _producer(spec, errors, linger_ms=spec["latency_linger_ms"])
    topic = spec["topic"]
    pad = os.urandom(max(0, size - LATENCY_HEADER.size))
    interval_ns = 1e9 / rate
    producer.list_topics(topic, timeout=10.0)
    print("READY", flush=True)
    cpu0 = _cpu_seconds()
    max_behind_ns = 0
    start_ns = time.monotonic_ns() + 1_000_000
    for i in range(warmup_n + measured_n):
        due = start_ns + int(i * interval_ns)
        now = time.monotonic_ns()
        if due > now:
            time.sleep((due - now) / 1e9)
        else:
            max_behind_ns = max(max_behind_ns, now - due)
        warm = i < warmup_n
        value = LATENCY_HEADER.pack(1 if warm else 0, i - warmup_n if not warm else i, due) + pad
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    elapsed = (time.monotonic_ns() - start_ns) / 1e9
    left = producer.flush(spec["timeout_s"])
    if left or errors.count:
        raise RuntimeError(
            f"latency producer: {left} unacked, {errors.count} errors (first: {errors.first})"
        )
    acks = sorted(errors.samples)
    return {
        "sent": warmup_n + measured_n,
        "ack_p50_ms": _percentile(acks, 0.50),
        "ack_p99_ms": _percentile(acks, 0.99),
        "ack_p999_ms": _percentile(acks, 0.999),
        "achieved_rate": (warmup_n + measured_n) / elapsed if elapsed > 0 else 0.0,
        "max_behind_schedule_ms": max_behind_ns / 1e6,
        "client_cpu_s": _cpu_seconds() - cpu0,
    }


def commit(spec: Spec) -> Spec:
    topic, duration_s = spec["topic"], float(spec["duration_s"])
    consumer = _consumer(spec)
    consumer.list_topics(topic, timeout=10.0)  # connect before the clock starts
    consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)  # coordinator
    print("READY", flush=True)
    samples: list[int] = []
    cpu0 = _cpu_seconds()
    start_ns = time.monotonic_ns()
    end_ns = start_ns + int(duration_s * 1e9)
    offset = 0
    now_ns = start_ns
    while now_ns < end_ns:
        offset += 1
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        done_ns = time.monotonic_ns()
        samples.append(done_ns - now_ns)
        now_ns = done_ns
    elapsed = (now_ns - start_ns) / 1e9
    cpu = _cpu_seconds() - cpu0
    [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=10.0)
    consumer.close()
    if committed.offset != offset:
        raise RuntimeError(f"committed offset is {committed.offset}, expected {offset}")
    samples.sort()
    return {
        "elapsed_s": elapsed,
        "commits": len(samples),
        "p50_ms": _percentile(samples, 0.50),
        "p99_ms": _percentile(samples, 0.99),
        "p999_ms": _percentile(samples, 0.999),
        "client_cpu_s": cpu,
    }


def transform(spec: Spec) -> Spec:
    source, sink, n = spec["topic"], spec["sink"], int(spec["messages"])
    exactly_once = spec["guarantee"] == "exactly-once"
    batch = int(spec["batch"])
    consumer = _consumer(
        spec,
        **{
            "group.id": f"bench-transform-{uuid.uuid4().hex[:12]}",
            "isolation.level": "read_committed",
            "fetch.max.bytes": 64 * 1024 * 1024,
        },
    )
    conf: Spec = {
        "bootstrap.servers": spec["bootstrap"],
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
    }
    if exactly_once:
        conf["transactional.id"] = f"bench-transform-{uuid.uuid4().hex[:12]}"
    else:
        conf["enable.idempotence"] = True
    producer = Producer(conf)
    if exactly_once:
        producer.init_transactions(30)
    consumer.subscribe([source])
    while not consumer.assignment():  # join the group before the clock starts
        consumer.poll(0.1)
    print("READY", flush=True)
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    done = transactions = 0
    deadline = time.monotonic() + float(spec["timeout_s"])
    while done < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {n} records transformed in time")
        messages = [m for m in consumer.consume(batch, 0.5) if not m.error()]
        if not messages:
            continue
        if exactly_once:
            producer.begin_transaction()
        for msg in messages:
            while True:
                try:
                    producer.produce(sink, key=msg.key(), value=msg.value())
                    break
                except BufferError:
                    producer.poll(0.001)
        if exactly_once:
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(30)
        else:
            producer.flush(30)
            consumer.commit(offsets=consumer.position(consumer.assignment()), asynchronous=False)
        transactions += 1
        done += len(messages)
    elapsed = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    consumer.close()
    check = _consumer(spec, **{"isolation.level": "read_committed"})
    _assign_all(check, sink, int(spec["partitions"]))
    seen = 0
    quiet_until = time.monotonic() + 5.0
    while time.monotonic() < quiet_until:
        got = [m for m in check.consume(10_000, 0.5) if not m.error()]
        if got:
            seen += len(got)
            quiet_until = time.monotonic() + 2.0
    check.close()
    if seen != done:
        raise RuntimeError(f"the output holds {seen} records for {done} inputs")
    return {
        "elapsed_s": elapsed,
        "messages": done,
        "bytes": done * int(spec["size"]),
        "batches": transactions,
        "client_cpu_s": cpu,
    }


PHASES = {
    "produce": produce,
    "consume": consume,
    "latency-consume": latency_consume,
    "latency-produce": latency_produce,
    "commit": commit,
    "transform": transform,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in PHASES:
        print(f"usage: python -m bench.workers {{{','.join(PHASES)}}} JSON", file=sys.stderr)
        return 2
    spec: Spec = json.loads(argv[1])
    try:
        result = PHASES[argv[0]](spec)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        return 130
    except Exception as exc:
        _log(f"{argv[0]} failed: {exc}")
        print("RESULT " + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
