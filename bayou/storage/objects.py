"""Object storage (S3 and compatibles): the small async client every Bayou part uses.

Theory of operation
-------------------
Bayou needs five things from an object store — put an object (a file or bytes), get a byte
range, get a whole (small) object, delete keys, list a prefix — so ``ObjectStore`` offers
exactly those, async, and nothing else.  Tiered storage (``storage/tiered/``) uses it today;
the ``s3://…?metadata=postgres://…`` engine is meant to reuse it unchanged.

The work is done by `obstore`_ (Apache Arrow's Rust ``object_store`` crate): requests run on
its own Tokio threads, so the event loop only awaits them — no request, no file read of an
upload and no copy of a download ever runs on the loop or holds the GIL.  It signs
requests (SigV4), uploads files larger than ``part_bytes`` as multipart uploads of
``part_bytes`` parts with ``concurrency`` parts in flight, and *retries* what is worth
retrying: 5xx answers, refused or dropped connections and requests that time out
(``timeout_ms`` per request), with exponential back-off and jitter from ``backoff_ms`` up to
``max_backoff_ms``, at most ``retries`` times and never beyond ``retry_timeout_ms`` after the
first attempt.  What still fails reaches the caller as ``ObjectStoreError`` — a
``KAFKA_STORAGE_ERROR``, which Kafka clients retry — or ``ObjectNotFound``.  4xx answers other
than 404 (wrong credentials, a missing bucket) are not retried: they do not get better.

Configuration is one URL, ``s3://BUCKET[/PREFIX][?name=value&…]``:

- ``endpoint``: the S3 endpoint (``http://127.0.0.1:8333`` for SeaweedFS or MinIO; default
  AWS, or ``AWS_ENDPOINT_URL``); ``region`` (default ``AWS_REGION``/``AWS_DEFAULT_REGION``,
  else ``us-east-1``); path-style addressing unless ``virtual_hosted=true``;
- ``timeout_ms``, ``connect_timeout_ms``, ``retries``, ``retry_timeout_ms``, ``backoff_ms``,
  ``max_backoff_ms``, ``part_bytes``, ``concurrency``: the knobs above.

Credentials are never in the URL: the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) or the instance/container credentials the
AWS SDKs also use.  A caller may claim more query parameters for itself (tiered storage's
cache size): ``parse_url`` returns the ones it does not know, and ``from_url`` refuses them.

.. _obstore: https://developmentseed.org/obstore/
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import obstore

from bayou.errors import ErrorCode, InvalidConfig, KafkaError

if TYPE_CHECKING:
    from obstore.store import S3Store

Buffer = bytes | bytearray | memoryview

_MIB = 1024 * 1024


class ObjectStoreError(KafkaError):
    """An object-store request failed after its retries (retriable for clients)."""

    code = ErrorCode.KAFKA_STORAGE_ERROR


class ObjectNotFound(ObjectStoreError):
    """The key does not exist."""


@dataclass(frozen=True)
class ObjectStoreConfig:
    """Where the objects are and how to talk to the store (see the module docstring)."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    virtual_hosted: bool = False
    timeout_ms: int = 30_000
    connect_timeout_ms: int = 5_000
    retries: int = 5
    retry_timeout_ms: int = 30_000
    backoff_ms: int = 100
    max_backoff_ms: int = 2_000
    part_bytes: int = 8 * _MIB
    concurrency: int = 4
    extra: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def url(self) -> str:
        """The store as an operator names it (no credentials, no options)."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


_INT_PARAMS = frozenset(
    (
        "timeout_ms",
        "connect_timeout_ms",
        "retries",
        "retry_timeout_ms",
        "backoff_ms",
        "max_backoff_ms",
        "part_bytes",
        "concurrency",
    )
)
_MIN_PART_BYTES = 5 * _MIB  # S3's smallest multipart part (the last one excepted)


def parse_url(url: str) -> ObjectStoreConfig:
    """``s3://bucket/prefix?…`` → the config; unknown parameters end up in ``extra``."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidConfig(f"Invalid object store URL {url!r}: expected s3://BUCKET[/PREFIX]")
    values: dict[str, Any] = {"bucket": parts.netloc, "prefix": parts.path.strip("/")}
    extra: dict[str, str] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        if name in _INT_PARAMS:
            try:
                values[name] = int(raw)
            except ValueError:
                raise InvalidConfig(
                    f"Invalid {name}={raw!r} in {url!r}: expected an integer"
                ) from None
            if values[name] < 0:
                raise InvalidConfig(f"Invalid {name}={raw!r} in {url!r}: must not be negative")
        elif name in ("endpoint", "region"):
            values[name] = raw or None
        elif name == "virtual_hosted":
            values[name] = raw.lower() in ("1", "true", "yes")
        else:
            extra[name] = raw
    config = ObjectStoreConfig(**values, extra=extra)
    if config.part_bytes < _MIN_PART_BYTES:
        raise InvalidConfig(f"Invalid part_bytes in {url!r}: S3 parts are at least 5 MiB")
    if config.concurrency < 1 or config.timeout_ms < 1:
        raise InvalidConfig(f"Invalid {url!r}: concurrency and timeout_ms must be at least 1")
    return config


def _short(exc: BaseException) -> str:
    """obstore's messages carry a debug dump of the whole error chain: its first line."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore:
    """Async access to one bucket and prefix (see the module docstring).  Keys are relative
    to the prefix, ``/``-separated, without empty parts."""

    def __init__(self, config: ObjectStoreConfig, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        env = os.environ if environ is None else environ
        endpoint = config.endpoint or env.get("AWS_ENDPOINT_URL") or None
        region = (
            config.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        s3: dict[str, Any] = {"region": region}
        if endpoint:
            s3["endpoint"] = endpoint
        s3["virtual_hosted_style_request"] = config.virtual_hosted
        for name, var in (
            ("access_key_id", "AWS_ACCESS_KEY_ID"),
            ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
            ("session_token", "AWS_SESSION_TOKEN"),
        ):
            if env.get(var):
                s3[name] = env[var]
        self._store: S3Store = obstore.store.S3Store(
            config.bucket,
            prefix=config.prefix or None,
            config=s3,  # type: ignore[arg-type]
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "timeout": timedelta(milliseconds=config.timeout_ms),
                "connect_timeout": timedelta(milliseconds=config.connect_timeout_ms),
            },
            retry_config={
                "max_retries": config.retries,
                "retry_timeout": timedelta(milliseconds=config.retry_timeout_ms),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=config.backoff_ms),
                    "max_backoff": timedelta(milliseconds=config.max_backoff_ms),
                    "base": 2,
                },
            },
        )

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> ObjectStore:
        config = parse_url(url)
        if config.extra:
            raise InvalidConfig(
                f"Unknown parameter(s) {', '.join(sorted(config.extra))} in {config.url!r}"
            )
        return cls(config, environ)

    def __repr__(self) -> str:
        return f"ObjectStore({self.config.url})"

    # ------------------------------------------------------------------ writes

    async def put(self, key: str, data: Buffer) -> None:
        """Store ``data`` under ``key`` (replacing it): all of it or nothing."""
        try:
            await obstore.put_async(
                self._store,
                key,
                data,
                use_multipart=len(data) > self.config.part_bytes,
                chunk_size=self.config.part_bytes,
                max_concurrency=self.config.concurrency,
            )
        except Exception as exc:
            raise self._error("PUT", key, exc) from None

    async def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key``: read and sent by the store's own threads,
        as a multipart upload when it is larger than ``part_bytes`` (all of it or nothing:
        a failed multipart upload is aborted)."""
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise ObjectStoreError(f"PUT {key}: cannot read {path.name}: {exc}") from None
        try:
            await obstore.put_async(
                self._store,
                key,
                path,
                use_multipart=size > self.config.part_bytes,
                chunk_size=self.config.part_bytes,
                max_concurrency=self.config.concurrency,
            )
        except Exception as exc:
            raise self._error("PUT", key, exc) from None

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` (keys that do not exist are no error)."""
        if not keys:
            return
        try:
            await obstore.delete_async(self._store, list(keys))
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._error("DELETE", keys[0], exc) from None

    # ------------------------------------------------------------------ reads

    async def get(self, key: str) -> memoryview:
        """The whole object (meant for small ones: indexes, manifests)."""
        try:
            result = await obstore.get_async(self._store, key)
            return memoryview(await result.bytes_async())
        except Exception as exc:
            raise self._error("GET", key, exc) from None

    async def get_range(self, key: str, start: int, end: int) -> memoryview:
        """Bytes ``[start, end)`` of the object (one ranged GET; ``end`` is capped by the
        store at the object's size)."""
        try:
            return memoryview(await obstore.get_range_async(self._store, key, start=start, end=end))
        except Exception as exc:
            raise self._error("GET", key, exc) from None

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` (a key prefix ending at a ``/``)."""
        out: list[ObjectInfo] = []
        try:
            async for chunk in obstore.list(self._store, prefix, chunk_size=1000):
                out.extend(ObjectInfo(meta["path"], meta["size"]) for meta in chunk)
        except Exception as exc:
            raise self._error("LIST", prefix, exc) from None
        return out

    def _error(self, op: str, key: str, exc: BaseException) -> ObjectStoreError:
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFound(f"{op} {self.config.url}/{key}: not found")
        return ObjectStoreError(f"{op} {self.config.url}/{key} failed: {_short(exc)}")
