"""The console's views page in headless Chromium: a view created with ``bayou sql`` is listed
with its query, and "Chart" opens a live chart of one of its columns, a line per group key,
plotting the results the view writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.integration.test_streams_joins import create_topic
from tests.integration.test_streams_views import sql_ok
from tests.support.broker import BrokerProcess
from tests.support.browser import CHROMIUM, chromium

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),  # in CI, missing is a failure
    reason="Debian's chromium is installed by make test (scripts/install-test-deps.sh)",
)


@pytest.fixture
def page() -> Iterator[Any]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()


def test_a_views_column_charted_live(shared_broker: BrokerProcess, page: Any) -> None:
    broker = shared_broker
    create_topic(broker, "cv_readings", 1)
    sql_ok(
        broker,
        "CREATE VIEW cv_avg AS SELECT device, COUNT(*) AS n, AVG(temp) AS avg_temp"
        " FROM cv_readings GROUP BY device",
    )
    page.goto(f"{broker.http_url}/console/views")
    view = page.locator("#view-cv_avg")
    assert "AVG(temp) AS avg_temp" in view.locator("pre").inner_text()
    assert "Reads cv_readings" in view.inner_text()
    # the group key and the window bounds are not charted; the other columns are
    assert view.get_by_role("button").all_inner_texts() == ["Chart n", "Chart avg_temp"]
    view.get_by_role("button", name="Chart avg_temp").click()
    page.wait_for_url("**/console/dashboards/cv-avg-avg-temp")
    page.wait_for_function("window.consoleBoard && window.consoleBoard.ticks >= 1")

    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("cv_readings", json.dumps({"device": "d1", "temp": 20.5}).encode(), b"d1")
    producer.produce("cv_readings", json.dumps({"device": "d2", "temp": 30}).encode(), b"d2")
    assert producer.flush(15) == 0
    page.wait_for_function(
        "['d1', 'd2'].every(k => (window.consoleBoard.lines[k] || []).some(v => v !== null))"
    )
    plotted = page.evaluate(
        "Object.fromEntries(['d1', 'd2'].map(k => "
        "[k, [...new Set(window.consoleBoard.lines[k].filter(v => v !== null))]]))"
    )
    assert plotted == {"d1": [20.5], "d2": [30]}

    # a pull query in the page: the view's current result for a key, from its state
    page.goto(f"{broker.http_url}/console/views")
    page.fill("#pull-sql", "SELECT device, n, avg_temp FROM cv_avg WHERE device = 'd2'")
    page.locator("#pull").get_by_role("button", name="Run").click()
    table = page.locator("table#pull-rows")
    assert table.locator("th").all_inner_texts() == ["device", "n", "avg_temp"]
    assert [r.locator("td").all_inner_texts() for r in table.locator("tbody tr").all()] == [
        ["d2", "1", "30.0"]
    ]
    page.fill("#pull-sql", "DROP VIEW cv_avg")
    page.locator("#pull").get_by_role("button", name="Run").click()
    assert "Only pull queries" in page.locator("#pull-error").inner_text()
    assert "cv_avg" in page.locator("#view-cv_avg").inner_text()  # still there
