"""Helpers for the HTTP gateway tests: REST Proxy content types and bounded polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

V2 = "application/vnd.kafka.v2+json"
JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"

T = TypeVar("T")


def client(base_url: str, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=timeout)


def wait_until(
    probe: Callable[[], T | None], timeout: float = 30.0, what: str = "", interval: float = 0.0
) -> T:
    """Call ``probe`` until it returns something truthy (bounded in time), and return it;
    ``interval`` spaces the calls of a probe that does not wait by itself."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what or probe!r} after {timeout}s")
        pause.wait(interval)


def create_instance(http: httpx.Client, group: str, name: str, **config: Any) -> str:
    r = http.post(
        f"/consumers/{group}", json={"name": name, **config}, headers={"Content-Type": V2}
    )
    assert r.status_code == 200, r.text
    assert r.json()["instance_id"] == name
    return f"/consumers/{group}/instances/{name}"


def read_records(
    http: httpx.Client, base: str, accept: str, expected: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """GET .../records (long polls of 1 s) until ``expected`` records came, bounded."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        r = http.get(f"{base}/records", params={"timeout": 1000}, headers={"Accept": accept})
        assert r.status_code == 200, r.text
        got.extend(r.json())
    return got
