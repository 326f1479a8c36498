"""HTTP gateway benchmark: REST produce throughput and SSE fan-out.

Theory of operation
-------------------
A broker is started here (``bayou serve`` on free loopback ports, its own data directory,
stopped by PID at the end) unless ``--url`` names a running one.  Two phases:

1. **produce**: ``--connections`` keep-alive HTTP/1.1 connections (httpx, asyncio), spread
   over ``--workers`` processes, each POSTing requests of ``--batch`` JSON records (default
   100) to one topic as fast as answers come, for ``--seconds``.  Reports records/s,
   requests/s and request latency p50/p99.
2. **fan-out**: ``--subscribers`` SSE streams (``GET /topics/{t}/stream``) follow a topic while
   one producer writes ``--fanout-records`` records in requests of ``--batch``.  Delivered
   records/s = every subscriber's received records together / (last delivery - first send).
   Events are counted on the raw byte stream (``data:`` lines), not JSON-decoded, so that the
   load generator is not the bottleneck.

Run ``python -m bench.http_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.broker import BrokerProcess


def _body(batch: int, size: int, seed: int) -> bytes:
    pad = "x" * max(0, size - 20)
    return json.dumps(
        {
            "records": [
                {"key": f"k{(seed + i) % 1000}", "value": {"i": seed + i, "pad": pad}}
                for i in range(batch)
            ]
        }
    ).encode()


# ----------------------------------------------------------------------------- produce


async def _produce_worker(
    url: str, topic: str, connections: int, batch: int, size: int, seconds: float
) -> dict[str, Any]:
    body = _body(batch, size, os.getpid())
    headers = {"Content-Type": "application/vnd.kafka.json.v2+json"}
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                start = time.perf_counter()
                r = await http.post(f"/topics/{topic}", content=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors += 1

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "elapsed": elapsed,
        "latencies": latencies,
    }


def _produce_proc(args: tuple[str, str, int, int, int, float]) -> dict[str, Any]:
    return asyncio.run(_produce_worker(*args))


def run_produce(url: str, a: argparse.Namespace) -> dict[str, Any]:
    topic = f"http-bench-{os.getpid()}-{int(time.time())}"
    httpx.post(f"{url}/topics/{topic}", json={"records": [{"value": 0}]}).raise_for_status()
    per = max(1, a.connections // a.workers)
    job = (url, topic, per, a.batch, a.size, a.seconds)
    with multiprocessing.get_context("spawn").Pool(a.workers) as pool:
        results = pool.map(_produce_proc, [job] * a.workers)
    requests = sum(r["requests"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "records_per_s": requests * a.batch / elapsed,
        "requests_per_s": requests / elapsed,
        "errors": sum(r["errors"] for r in results),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "connections": per * a.workers,
        "batch": a.batch,
    }


# ----------------------------------------------------------------------------- fan-out


async def _subscriber(
    http: httpx.AsyncClient,
    topic: str,
    expected: int,
    ready: asyncio.Event,
    counts: list[int],
    done_at: list[float],
) -> None:
    seen = 0
    tail = b""
    async with http.stream("GET", f"/topics/{topic}/stream", params={"from": "latest"}) as r:
        async for chunk in r.aiter_raw():
            if not ready.is_set():
                ready.set()
            data = tail + chunk
            seen += data.count(b"\ndata: ") + (1 if data.startswith(b"data: ") else 0)
            tail = data[-6:] if not data.endswith(b"\n") else b""
            if seen >= expected:
                break
    counts.append(seen)
    done_at.append(time.monotonic())


async def _fanout(url: str, a: argparse.Namespace) -> dict[str, Any]:
    topic = f"http-fanout-{os.getpid()}-{int(time.time())}"
    async with httpx.AsyncClient(base_url=url, timeout=60) as setup:
        (await setup.post(f"/topics/{topic}", json={"records": [{"value": 0}]})).raise_for_status()
    limits = httpx.Limits(max_connections=a.subscribers + 1)
    counts: list[int] = []
    done_at: list[float] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        readies = [asyncio.Event() for _ in range(a.subscribers)]
        subs = [
            asyncio.create_task(_subscriber(http, topic, a.fanout_records, ev, counts, done_at))
            for ev in readies
        ]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in readies)), 60)
        headers = {"Content-Type": "application/vnd.kafka.json.v2+json"}
        started = time.monotonic()
        for i in range(0, a.fanout_records, a.batch):
            n = min(a.batch, a.fanout_records - i)
            r = await http.post(f"/topics/{topic}", content=_body(n, a.size, i), headers=headers)
            r.raise_for_status()
        produced = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*subs), a.seconds * 20 + 60)
    delivered = sum(counts)
    elapsed = max(done_at) - started
    return {
        "subscribers": a.subscribers,
        "records": a.fanout_records,
        "delivered": delivered,
        "delivered_per_s": delivered / elapsed,
        "produce_s": produced - started,
        "elapsed_s": elapsed,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--url", help="a running broker's HTTP gateway (default: start one)")
    p.add_argument("--phases", default="produce,fanout")
    p.add_argument("--seconds", type=float, default=10.0, help="produce phase duration")
    p.add_argument("--batch", type=int, default=100, help="records per request")
    p.add_argument("--size", type=int, default=100, help="approximate value size in bytes")
    p.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    p.add_argument("--workers", type=int, default=1, help="load-generator processes")
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--fanout-records", type=int, default=20_000)
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bayou-http-bench-"))
    broker = (
        None
        if a.url
        else BrokerProcess(
            root / "data", doors=("http",), extra_args=["--log-level", "WARNING"]
        ).start()
    )
    try:
        url = a.url or broker.http_url  # type: ignore[union-attr]
        results: dict[str, Any] = {}
        if "produce" in a.phases:
            results["produce"] = run_produce(url, a)
            r = results["produce"]
            print(
                f"produce: {r['records_per_s']:,.0f} records/s "
                f"({r['requests_per_s']:,.0f} requests/s of {r['batch']}, "
                f"{r['connections']} keep-alive connections, p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, errors {r['errors']})",
                flush=True,
            )
        if "fanout" in a.phases:
            results["fanout"] = asyncio.run(_fanout(url, a))
            r = results["fanout"]
            print(
                f"fan-out: {r['delivered_per_s']:,.0f} delivered records/s "
                f"({r['subscribers']} SSE subscribers x {r['records']} records in "
                f"{r['elapsed_s']:.2f} s; producing took {r['produce_s']:.2f} s)",
                flush=True,
            )
        if a.json:
            a.json.write_text(json.dumps(results, indent=2))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
