"""Exactly-once stream processing with the clients people use for it: Quix Streams
(``processing_guarantee="exactly-once"``) computing window aggregates across a kill -9 of the
processor, and KafkaJS ``producer.transaction()`` committing and aborting.

Quix Streams pins confluent-kafka below the version the rest of the suite uses, so it runs in a
virtual environment of its own, made once beside the test environment (``<venv>/quixstreams-env``);
KafkaJS is installed with npm into a temporary directory.  Each test is skipped only when its
client cannot be installed (no registry reachable)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.integration.test_transactions import create_topic, read_all
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic

REPO = Path(__file__).resolve().parents[2]
QUIX_ENV = Path(sys.prefix) / "quixstreams-env"
QUIX_REQUIREMENT = "quixstreams>=3.20,<4"
KAFKAJS_REQUIREMENT = "kafkajs@2.2.4"
T0 = 1_700_000_000_000
WINDOW_MS = 10_000


@pytest.fixture(scope="module")
def quix_python() -> Path:
    python = QUIX_ENV / "bin" / "python"
    if not python.exists():
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(QUIX_ENV)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if made.returncode != 0:
            pytest.skip(f"cannot make a virtual environment for Quix Streams: {made.stderr}")
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", QUIX_REQUIREMENT],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if pip.returncode != 0:
            shutil.rmtree(QUIX_ENV, ignore_errors=True)
            pytest.skip(f"cannot install {QUIX_REQUIREMENT}: {pip.stderr[-500:]}")
    return python


@pytest.fixture(scope="module")
def eos_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("eos") / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


def run_quix(python: Path, bootstrap: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # -P: not the script's folder on sys.path (tests/support/http.py would shadow http)
        [str(python), "-P", str(REPO / "tests" / "support" / "quix_windows.py"), bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_quix_streams_exactly_once_windows_survive_a_processor_kill(
    quix_python: Path, eos_broker: BrokerProcess, tmp_path: Path
) -> None:
    bootstrap = eos_broker.bootstrap
    source, sink, group = unique_topic("quix-in"), unique_topic("quix-out"), unique_topic("q")
    create_topic(bootstrap, source, 2)
    create_topic(bootstrap, sink, 2)
    producer = Producer({"bootstrap.servers": bootstrap})
    expected: dict[tuple[bytes, int], int] = {}
    for key in (b"a", b"b"):
        for i in range(60):  # 30 s of events: three closed 10 s windows per key
            ts = T0 + i * 500
            n = i + 1 if key == b"a" else 1000 + i
            producer.produce(source, key=key, value=json.dumps({"n": n}).encode(), timestamp=ts)
            window = ts - ts % WINDOW_MS
            expected[(key, window)] = expected.get((key, window), 0) + n
        # an event 40 s in closes the third window (and opens one that stays open)
        producer.produce(source, key=key, value=b'{"n": 0}', timestamp=T0 + 40_000)
    producer.flush(20)

    state = str(tmp_path / "state")
    crashed = run_quix(quix_python, bootstrap, [source, sink, group, state, "70"])
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    finished = run_quix(quix_python, bootstrap, [source, sink, group, state, "-1"])
    assert finished.returncode == 0, finished.stderr[-2000:]

    out = read_all(bootstrap, sink, "read_committed", expect=len(expected), partitions=2)
    windows = sorted((k, json.loads(v)["start"], json.loads(v)["total"]) for _p, k, v in out)
    assert windows == sorted((k, start, total) for (k, start), total in expected.items())
    # nothing more arrives: each window was written exactly once
    assert len(read_all(bootstrap, sink, "read_committed", partitions=2, idle_s=0.5)) == len(
        expected
    )


KAFKAJS_SCRIPT = r"""
const { Kafka, logLevel } = require('kafkajs');
const [bootstrap, topic, tid] = process.argv.slice(2);
const kafka = new Kafka({
  clientId: 'bayou-test', brokers: [bootstrap], logLevel: logLevel.NOTHING,
});
(async () => {
  const producer = kafka.producer({
    transactionalId: tid, idempotent: true, maxInFlightRequests: 1,
  });
  await producer.connect();
  const committed = await producer.transaction();
  await committed.send({ topic, messages: [
    { key: 'k1', value: 'committed-1' }, { key: 'k2', value: 'committed-2' },
  ] });
  await committed.commit();
  const aborted = await producer.transaction();
  await aborted.send({ topic, messages: [{ key: 'k3', value: 'aborted' }] });
  await aborted.abort();
  const again = await producer.transaction();
  await again.send({ topic, messages: [{ key: 'k4', value: 'committed-3' }] });
  await again.commit();
  await producer.disconnect();
  console.log('done');
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def kafkajs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for KafkaJS")
    where = tmp_path_factory.mktemp("kafkajs")
    npm = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", KAFKAJS_REQUIREMENT],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if npm.returncode != 0:
        pytest.skip(f"npm cannot install {KAFKAJS_REQUIREMENT}: {npm.stderr[-500:]}")
    (where / "txn.js").write_text(KAFKAJS_SCRIPT)
    return where


def test_kafkajs_transactions_commit_and_abort(
    kafkajs_dir: Path, eos_broker: BrokerProcess
) -> None:
    bootstrap, topic = eos_broker.bootstrap, unique_topic("kafkajs")
    create_topic(bootstrap, topic)
    ran = subprocess.run(
        ["node", "txn.js", bootstrap, topic, unique_topic("kjs-tid")],
        cwd=kafkajs_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "done"
    committed = read_all(bootstrap, topic, "read_committed", expect=3)
    assert [(k, v) for _p, k, v in committed] == [
        (b"k1", b"committed-1"),
        (b"k2", b"committed-2"),
        (b"k4", b"committed-3"),
    ]
    everything = read_all(bootstrap, topic, "read_uncommitted", expect=4)
    assert [v for _p, _k, v in everything] == [
        b"committed-1",
        b"committed-2",
        b"aborted",
        b"committed-3",
    ]
