"""The object-store client (``bayou.storage.objects``) against a real S3 (SeaweedFS), with a
proxy in front that answers 500s and holds responses: what is retried, what is not, and
what reaches the caller."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.errors import ErrorCode
from bayou.storage.objects import ObjectNotFound, ObjectStore, ObjectStoreError
from tests.support.fault_proxy import FaultProxy
from tests.support.ports import free_port
from tests.support.seaweedfs import SeaweedFS

MIB = 1024 * 1024


@pytest.fixture
def proxy(seaweedfs: SeaweedFS) -> Iterator[FaultProxy]:
    p = FaultProxy(seaweedfs.host, seaweedfs.s3_port, free_port()).start()
    try:
        yield p
    finally:
        p.stop()


def _store(s3: SeaweedFS, endpoint: str, **params: object) -> ObjectStore:
    query = "&".join([f"endpoint={endpoint}", *(f"{k}={v}" for k, v in params.items())])
    url = f"s3://{s3.bucket}/client-{uuid.uuid4().hex[:8]}?{query}"
    return ObjectStore.from_url(url, environ={**os.environ, **s3.env})


def test_put_get_ranges_list_delete(seaweedfs: SeaweedFS) -> None:
    store = _store(seaweedfs, seaweedfs.endpoint)
    data = os.urandom(100_000)

    async def scenario() -> None:
        await store.put("p/0/a.log", data)
        await store.put("p/0/b.log", b"second")
        assert bytes(await store.get("p/0/a.log")) == data
        assert bytes(await store.get_range("p/0/a.log", 1000, 1100)) == data[1000:1100]
        assert bytes(await store.get_range("p/0/a.log", 99_990, 100_000)) == data[-10:]
        listed = sorted((o.key, o.size) for o in await store.list("p/0/"))
        assert listed == [("p/0/a.log", 100_000), ("p/0/b.log", 6)]
        await store.delete(["p/0/a.log", "p/0/never-was"])
        with pytest.raises(ObjectNotFound):
            await store.get_range("p/0/a.log", 0, 10)
        assert [o.key for o in await store.list("p/")] == ["p/0/b.log"]

    asyncio.run(scenario())


def test_large_file_goes_up_in_parts(
    seaweedfs: SeaweedFS, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A file over part_bytes is a multipart upload (initiate, parts, complete) — and a part
    answered with a 500 is sent again, not the whole file."""
    store = _store(seaweedfs, proxy.endpoint, part_bytes=5 * MIB, backoff_ms=10)
    data = os.urandom(12 * MIB + 123)
    path = tmp_path / "segment.log"
    path.write_bytes(data)
    proxy.fail(1, methods=("PUT",))

    async def scenario() -> bytes:
        await store.put_file("seg/00000000000000000000.log", path)
        return bytes(await store.get("seg/00000000000000000000.log"))

    assert asyncio.run(scenario()) == data
    assert proxy.outcomes("POST") == ["forwarded", "forwarded"]  # initiate, complete
    assert proxy.outcomes("PUT").count("answered 500") == 1
    assert proxy.outcomes("PUT").count("forwarded") == 3  # three parts: 5 + 5 + 2 MiB


def test_server_errors_are_retried_with_backoff(seaweedfs: SeaweedFS, proxy: FaultProxy) -> None:
    store = _store(seaweedfs, proxy.endpoint, retries=3, backoff_ms=10)
    proxy.fail(2, methods=("PUT",))
    proxy.fail(2, status=503, methods=("GET",))

    async def scenario() -> bytes:
        await store.put("k", b"value")
        return bytes(await store.get_range("k", 1, 4))

    assert asyncio.run(scenario()) == b"alu"
    assert proxy.outcomes("PUT") == ["answered 500", "answered 500", "forwarded"]
    assert proxy.outcomes("GET") == ["answered 503", "answered 503", "forwarded"]


def test_slow_responses_are_given_up_and_retried(seaweedfs: SeaweedFS, proxy: FaultProxy) -> None:
    """A request held longer than timeout_ms is abandoned and sent again — reads and writes
    alike (a PUT of a whole object is idempotent) — instead of waiting for the slow answer."""
    store = _store(seaweedfs, proxy.endpoint, timeout_ms=500, backoff_ms=10)
    proxy.delay(1, 15.0, methods=("PUT",))
    proxy.delay(1, 15.0, methods=("GET",))

    async def scenario() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await store.put("slow", b"0123456789")
        got = bytes(await store.get_range("slow", 2, 6))
        return got, loop.time() - started

    got, elapsed = asyncio.run(scenario())
    assert got == b"2345"
    assert proxy.outcomes("PUT") == ["held 15.0s", "forwarded"]
    assert proxy.outcomes("GET") == ["held 15.0s", "forwarded"]
    assert elapsed < 15.0  # neither waited for its held request


def test_what_keeps_failing_reaches_the_caller_as_a_retriable_error(
    seaweedfs: SeaweedFS, proxy: FaultProxy
) -> None:
    store = _store(seaweedfs, proxy.endpoint, retries=2, backoff_ms=10)
    proxy.fail(100, methods=("GET",))
    with pytest.raises(ObjectStoreError) as caught:
        asyncio.run(store.get_range("anything", 0, 10))
    assert caught.value.code == ErrorCode.KAFKA_STORAGE_ERROR
    assert proxy.outcomes("GET") == ["answered 500"] * 3  # the first try and two retries


def test_a_refused_request_is_not_retried(seaweedfs: SeaweedFS, proxy: FaultProxy) -> None:
    """Wrong credentials (403) do not get better: one request, then the error."""
    url = f"s3://{seaweedfs.bucket}/x?endpoint={proxy.endpoint}&retries=3&backoff_ms=10"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bayou-test", "AWS_SECRET_ACCESS_KEY": "wrong"}
    store = ObjectStore.from_url(url, environ=env)
    with pytest.raises(ObjectStoreError, match="PUT"):
        asyncio.run(store.put("k", b"v"))
    assert proxy.outcomes("PUT") == ["forwarded"]


def test_an_unreachable_store_fails_within_the_retry_budget() -> None:
    """Nothing listening: connection errors are retried, then reported (bounded in time)."""
    port = free_port()
    store = ObjectStore.from_url(
        f"s3://b/p?endpoint=http://127.0.0.1:{port}&retries=2&backoff_ms=10",
        environ={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
    )
    with pytest.raises(ObjectStoreError):
        asyncio.run(store.get("k"))
