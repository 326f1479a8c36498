"""The OpenAPI document: served, browsable, and true — schemathesis, with every check it has,
finds no answer that the document does not describe (status, media type, body), no valid
request refused and no invalid one accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.broker import BrokerProcess
from tests.support.http import V2

MAX_EXAMPLES = 8
RUN_LIMIT_S = 90


@pytest.fixture(scope="module")
def api_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("openapi") / "data").start()
    try:
        with httpx.Client(base_url=proc.http_url) as http:  # something to find
            http.post("/topics/known", json={"records": [{"key": "k", "value": 1}]})
        yield proc
    finally:
        proc.kill()


def test_schemathesis_finds_no_mismatch(api_broker: BrokerProcess) -> None:
    """Examples, coverage and fuzzing phases over every operation but the never-ending
    streams (tested in test_http_stream.py), POST /sql (a statement's validity is SQL's,
    which no JSON schema states; tested in test_streams_views.py) and /connectors (Kafka
    Connect's API, whose configurations no JSON schema states either; tested in
    test_connect_rest.py), all checks; a fixed seed
    keeps the run reproducible."""
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"{api_broker.http_url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--exclude-path-regex",
            "(/stream$)|(^/sql$)|(^/connector)",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "10",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


def test_document_and_docs_page(api_broker: BrokerProcess, tmp_path: Path) -> None:
    with httpx.Client(base_url=api_broker.http_url) as http:
        doc = http.get("/openapi.json").json()
        assert {
            "/topics/{topic}",
            "/consumers/{group}",
            "/consumers/{group}/instances/{name}/records",
        } <= set(doc["paths"])
        body = doc["paths"]["/topics/{topic}"]["post"]["requestBody"]["content"]
        assert {
            "application/vnd.kafka.json.v2+json",
            "application/vnd.kafka.binary.v2+json",
            "application/json",
        } <= set(body)
        assert "ProduceRequest" in doc["components"]["schemas"]
        # every answer is documented under the media type it is sent with
        for path, methods in doc["paths"].items():
            for method, operation in methods.items():
                for status, answer in operation["responses"].items():
                    media = set(answer.get("content", {}))
                    # Kafka Connect's API answers application/json, REST Proxy's its own
                    json_type = {"application/json"} if path.startswith("/connector") else {V2}
                    expected = (
                        {"text/event-stream"}
                        if (path, status) == ("/topics/{topic}/stream", "200")
                        else json_type
                    )
                    assert media <= expected, (method, path, status, media)
                    if status >= "400":
                        assert media == json_type, (method, path, status)
        # OPTIONS and 405 name every method served at the path (two routes here)
        offsets = "/consumers/g/instances/i/offsets"
        options = http.options(offsets)
        assert (options.status_code, options.headers["allow"]) == (204, "GET, OPTIONS, POST")
        assert http.put(offsets).headers["allow"] == "GET, OPTIONS, POST"
        page = http.get("/docs")
        assert page.status_code == 200 and "swagger" in page.text.lower()
        # the root says where things are; a browser is sent to the docs
        index = http.get("/")
        assert index.status_code == 200, index.text
        assert index.json()["docs"] == "/docs" and index.json()["openapi"] == "/openapi.json"
        browser = http.get("/", headers={"Accept": "text/html,*/*;q=0.8"})
        assert (browser.status_code, browser.headers["location"]) == (307, "/docs")
