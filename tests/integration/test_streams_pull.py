"""Pull queries answered from a view's state, as a user asks them: ``POST /sql`` (the broker
reads the state of the view it runs) and ``bayou sql -e`` (a client: the view's changelog),
against a real broker fed with confluent-kafka; expected values computed here from the
records produced.  A window still open is answered with its value so far (``_final`` false),
which the view's topic does not hold yet."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

import httpx

from bayou.streams.rows import iso_ms
from bayou.streams.views import _read_to_end
from tests.integration.test_streams_views import create_topic, produce
from tests.support.broker import BrokerProcess
from tests.support.wait import wait_until

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
STEP_MS = 7_000

WINDOWED = (
    "CREATE VIEW pull_avg AS SELECT device, window_start, window_end, AVG(temp) AS avg_temp,"
    " COUNT(*) AS n FROM TABLE(TUMBLE(TABLE pull_src, DESCRIPTOR(_timestamp),"
    " INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, device"
)
UNWINDOWED = (
    "CREATE VIEW pull_count AS SELECT device, COUNT(*) AS n, MAX(temp) AS hottest"
    " FROM pull_src GROUP BY device"
)


def records(n: int, first: int = 0) -> list[tuple[str, Any, int]]:
    out = []
    for i in range(first, first + n):
        device = f"d{i % 3}"
        out.append((device, {"device": device, "temp": 18 + (i * 7) % 11}, T0 + i * STEP_MS))
    return out


def expected(produced: list[tuple[str, Any, int]], device: str) -> list[dict[str, Any]]:
    """Every window of ``device``: those the highest time closed are final, the last open."""
    high = max(ts for _k, _v, ts in produced)
    temps: dict[int, list[float]] = defaultdict(list)
    for key, value, ts in produced:
        if key == device:
            temps[ts - ts % MINUTE].append(value["temp"])
    return [
        {
            "device": device,
            "window_start": iso_ms(start),
            "window_end": iso_ms(start + MINUTE),
            "avg_temp": sum(t) / len(t),
            "n": len(t),
            "_final": start + MINUTE <= high,
        }
        for start, t in sorted(temps.items())
    ]


def http_answer(broker: BrokerProcess, statement: str) -> dict[str, Any]:
    answer = httpx.post(f"{broker.http_url}/sql", content=statement, timeout=30)
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def http_pull(broker: BrokerProcess, statement: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = http_answer(broker, statement)["result"]
    return rows


def cli_pull(broker: BrokerProcess, statement: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bayou", "sql", "-b", broker.bootstrap, "-e", statement],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def rounded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: round(v, 9) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def test_pull_queries_answered_from_state(shared_broker: BrokerProcess) -> None:
    broker = shared_broker
    create_topic(broker, "pull_src", 3)
    produced = records(24)  # minutes 0 and 1 closed, minute 2 open (the last record at 161 s)
    produce(broker, "pull_src", produced)
    http_pull(broker, WINDOWED)
    http_pull(broker, UNWINDOWED)

    query = "SELECT * FROM pull_avg WHERE device = 'd1'"
    want = rounded(expected(produced, "d1"))
    assert [r["_final"] for r in want] == [True, True, False]
    wait_until(
        "the view's state to hold every record", lambda: rounded(http_pull(broker, query)) == want
    )
    # the broker read the view's tasks in place (the view runs in it)
    assert http_answer(broker, query)["answered_from"] == "state"
    # the same answer from the changelog (bayou sql is a client: the state runs elsewhere)
    wait_until("the changelog to hold it", lambda: rounded(cli_pull(broker, query)) == want)
    assert rounded(cli_pull(broker, "SELECT * FROM pull_avg WHERE _key = 'd1'")) == want

    # the open window is not in the view's topic: only state can answer for it
    topic = _read_to_end({"bootstrap.servers": broker.bootstrap}, "pull_avg", [0, 1, 2], 30)
    emitted = {(m.key(), json.loads(m.value())["window_start"]) for m in topic}
    assert (b"d1", want[2]["window_start"]) not in emitted
    assert (b"d1", want[1]["window_start"]) in emitted

    bounded = (
        "SELECT window_start, n, _final FROM pull_avg"
        f" WHERE device = 'd1' AND window_start >= '{iso_ms(T0 + MINUTE)}'"
    )
    want_bounded = [{k: r[k] for k in ("window_start", "n", "_final")} for r in want[1:]]
    assert http_pull(broker, bounded) == want_bounded
    assert cli_pull(broker, bounded) == want_bounded
    assert http_pull(broker, "SELECT * FROM pull_avg WHERE device = 'nobody'") == []

    # one more record in the open window: its value moves, still not final
    more = [("d1", {"device": "d1", "temp": 40}, T0 + 170_000)]
    produce(broker, "pull_src", more)
    want_more = rounded(expected(produced + more, "d1"))
    assert want_more[2]["n"] == want[2]["n"] + 1 and not want_more[2]["_final"]
    wait_until("the open window to move", lambda: rounded(http_pull(broker, query)) == want_more)
    wait_until("its changelog too", lambda: rounded(cli_pull(broker, query)) == want_more)

    every = produced + more
    temps = [v["temp"] for k, v, _ts in every if k == "d2"]
    want_count = [{"device": "d2", "n": len(temps), "hottest": max(temps)}]
    count_query = "SELECT * FROM pull_count WHERE device = 'd2'"
    wait_until("the count", lambda: http_pull(broker, count_query) == want_count)
    assert http_answer(broker, count_query)["answered_from"] == "state"
    assert cli_pull(broker, count_query) == want_count
    everyone = http_pull(broker, "SELECT device, n FROM pull_count")
    assert everyone == [
        {"device": d, "n": sum(1 for k, _v, _t in every if k == d)} for d in ("d0", "d1", "d2")
    ]
