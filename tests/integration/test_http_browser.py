"""The HTTP door from a browser (headless Chromium): pages on other origins (CORS, the
WebSocket origin check) and the API docs working without internet."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess
from tests.support.browser import CHROMIUM, chromium, page_server
from tests.support.http import JSON_V2, client
from tests.support.kafka import unique_topic

WAIT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),  # in CI, missing is a failure
    reason="Debian's chromium is installed by make test (scripts/install-test-deps.sh)",
)

# A dashboard on another origin: follows a topic with EventSource and WebSocket, renders each
# record as a list item, and produces with fetch (a JSON POST: preflighted).
DASHBOARD = """<!doctype html><meta charset="utf-8"><title>dashboard</title>
<ul id="records"></ul>
<script>
const q = new URLSearchParams(location.search);
const broker = q.get("broker"), topic = q.get("topic");
const path = `/topics/${topic}/stream?from=latest`;
window.sse = "connecting"; window.ws = "connecting";
function show(kind, r) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = `${r.key}=${JSON.stringify(r.value)}`;
  document.getElementById("records").appendChild(li);
}
const es = new EventSource(broker + path);
es.onopen = () => { window.sse = "open"; };
es.onmessage = (e) => show("sse", JSON.parse(e.data));
es.onerror = () => { if (es.readyState === EventSource.CLOSED) window.sse = "refused"; };
const ws = new WebSocket(broker.replace("http://", "ws://") + path);
ws.onopen = () => { window.ws = "open"; };
ws.onmessage = (e) => show("ws", JSON.parse(e.data));
ws.onclose = () => { if (window.ws !== "open") window.ws = "refused"; };
window.produce = async (records) => {
  try {
    const r = await fetch(`${broker}/topics/${topic}`, {method: "POST",
      headers: {"Content-Type": "JSON_V2"}, body: JSON.stringify({records})});
    return {status: r.status, body: await r.json()};
  } catch (e) {
    return {error: String(e)};
  }
};
</script>
""".replace("JSON_V2", JSON_V2)


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """Two origins serving the dashboard: the first is allowed, the second is not."""
    with page_server(DASHBOARD) as allowed, page_server(DASHBOARD) as refused:
        yield allowed, refused


@pytest.fixture(scope="module")
def cors_broker(
    tmp_path_factory: pytest.TempPathFactory, origins: tuple[str, str]
) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("browser") / "data", extra_args=["--http-cors-origin", origins[0]]
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def _items(page: Any, kind: str) -> list[str]:
    return list(page.eval_on_selector_all(f"li.{kind}", "els => els.map(e => e.textContent)"))


def test_allowed_origin_follows_live_records_and_produces(
    cors_broker: BrokerProcess, origins: tuple[str, str], page: Any
) -> None:
    topic = unique_topic("cors")
    create_topic(cors_broker.bootstrap, topic, 1)
    page.goto(f"{origins[0]}/?broker={cors_broker.http_url}&topic={topic}")
    page.wait_for_function("window.sse === 'open' && window.ws === 'open'", timeout=WAIT_MS)
    with client(cors_broker.http_url) as http:  # another producer, while the page watches
        r = http.post(
            f"/topics/{topic}",
            json={"records": [{"key": f"k{i}", "value": {"n": i}} for i in range(3)]},
        )
        assert r.status_code == 200, r.text
    answer = page.evaluate("produce([{key: 'page', value: {n: 99}}])")
    assert answer["status"] == 200, answer
    assert answer["body"]["offsets"][0]["offset"] == 3
    page.wait_for_function(
        "document.querySelectorAll('li.sse').length >= 4 && "
        "document.querySelectorAll('li.ws').length >= 4",
        timeout=WAIT_MS,
    )
    expected = [f'k{i}={{"n":{i}}}' for i in range(3)] + ['page={"n":99}']
    assert _items(page, "sse") == expected
    assert _items(page, "ws") == expected


def test_other_origin_is_refused(
    cors_broker: BrokerProcess, origins: tuple[str, str], page: Any
) -> None:
    topic = unique_topic("nocors")
    create_topic(cors_broker.bootstrap, topic, 1)
    page.goto(f"{origins[1]}/?broker={cors_broker.http_url}&topic={topic}")
    page.wait_for_function("window.sse === 'refused' && window.ws === 'refused'", timeout=WAIT_MS)
    answer = page.evaluate("produce([{key: 'page', value: 1}])")
    assert "error" in answer, answer  # the preflight was refused: the POST never went out
    with client(cors_broker.http_url) as http:
        http.post(f"/topics/{topic}", json={"records": [{"key": "late", "value": 1}]})
        offsets = http.get(f"/topics/{topic}/partitions/0/offsets").json()
        # the broker refuses the preflight itself, and the WebSocket upgrade with 403
        preflight = http.options(
            f"/topics/{topic}",
            headers={"Origin": origins[1], "Access-Control-Request-Method": "POST"},
        )
        upgrade = http.get(
            f"/topics/{topic}/stream",
            headers={
                "Origin": origins[1],
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
    assert offsets == {"beginning_offset": 0, "end_offset": 1}  # only the late record
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    assert upgrade.status_code == 403
    assert _items(page, "sse") == [] and _items(page, "ws") == []


def test_docs_render_without_internet(cors_broker: BrokerProcess, page: Any) -> None:
    """Every request that leaves the broker's origin is cut, as on a machine offline; the root
    sends the browser to the docs, which list every operation of the OpenAPI document."""
    elsewhere: list[str] = []

    def only_the_broker(route: Any) -> None:
        if route.request.url.startswith(cors_broker.http_url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_broker)
    with client(cors_broker.http_url) as http:
        doc = http.get("/openapi.json").json()
    operations = sum(len(methods) for methods in doc["paths"].values())
    page.goto(cors_broker.http_url + "/")
    assert page.url == cors_broker.http_url + "/docs"
    page.wait_for_function(
        f"document.querySelectorAll('.opblock').length === {operations}", timeout=WAIT_MS
    )
    paths = page.eval_on_selector_all(
        ".opblock-summary-path", "els => els.map(e => e.getAttribute('data-path'))"
    )
    assert set(paths) == set(doc["paths"])
    assert elsewhere == []
