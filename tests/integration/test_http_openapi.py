"""The OpenAPI document: served, browsable, and schemathesis finds no 5xx against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.broker import BrokerProcess

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


def test_schemathesis_finds_no_server_error(api_broker: BrokerProcess) -> None:
    """Coverage and fuzzing phases over every operation but the never-ending streams
    (tested in test_http_stream.py); a fixed seed keeps the run reproducible."""
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(cli), "run", f"{api_broker.http_url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES),
         "--exclude-path-regex", "/stream$", "--phases", "coverage,fuzzing",
         "--request-timeout", "10", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=RUN_LIMIT_S,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


def test_document_and_docs_page(api_broker: BrokerProcess, tmp_path: Path) -> None:
    with httpx.Client(base_url=api_broker.http_url) as http:
        doc = http.get("/openapi.json").json()
        assert {"/topics/{topic}", "/consumers/{group}",
                "/consumers/{group}/instances/{name}/records"} <= set(doc["paths"])
        body = doc["paths"]["/topics/{topic}"]["post"]["requestBody"]["content"]
        assert {"application/vnd.kafka.json.v2+json",
                "application/vnd.kafka.binary.v2+json", "application/json"} <= set(body)
        assert "ProduceRequest" in doc["components"]["schemas"]
        page = http.get("/docs")
        assert page.status_code == 200 and "swagger" in page.text.lower()
        # the root says where things are; a browser is sent to the docs
        index = http.get("/")
        assert index.status_code == 200, index.text
        assert index.json()["docs"] == "/docs" and index.json()["openapi"] == "/openapi.json"
        browser = http.get("/", headers={"Accept": "text/html,*/*;q=0.8"})
        assert (browser.status_code, browser.headers["location"]) == (307, "/docs")
