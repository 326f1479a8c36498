"""Where the Parquet sink puts its files: a local directory or an S3 bucket and prefix.

Both offer the four things the sink needs: put a finished file *atomically*, list the keys
under a prefix, read one back (tests and tools), delete one.  Locally a file is written
under a hidden temporary name (``.NAME.tmp``, in the same directory), flushed to disk with
``fsync`` and renamed over its final name, then the directory is synced: a reader or a
restart sees the whole file or none of it.  On S3 the finished file is one PUT (a multipart
upload for large ones, completed in one call): S3 shows an object only once it is complete.

S3 keys (Confluent's S3 sink spells them ``store.url``/``aws.*``; these follow Bayou's own
``s3.*`` names):  ``s3.endpoint`` (an S3-compatible endpoint such as SeaweedFS or MinIO;
default AWS, or ``AWS_ENDPOINT_URL``), ``s3.region`` (default ``AWS_REGION``, else
``us-east-1``), ``s3.access.key.id`` and ``s3.secret.access.key`` (default the
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` variables or the instance credentials).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import obstore
from obstore.store import S3Store

from bayou.connect.api import ConfigError, ConnectorConfig, RetriableError

TEMP_SUFFIX = ".tmp"


class LakeFiles(ABC):
    """Keys are ``/``-separated paths relative to the configured root."""

    url: str

    @abstractmethod
    def put_atomic(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (a directory-like prefix ending in ``/``)."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...


class LocalFiles(LakeFiles):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)
        root.mkdir(parents=True, exist_ok=True)

    def put_atomic(self, key: str, data: bytes) -> None:
        final = self.root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}{TEMP_SUFFIX}")
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for directory, _, names in os.walk(base):
            for name in names:
                yield (Path(directory) / name).relative_to(self.root).as_posix()

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3Files(LakeFiles):
    def __init__(
        self, bucket: str, prefix: str, config: ConnectorConfig, environ: Mapping[str, str]
    ) -> None:
        self.url = f"s3://{bucket}/{prefix}"
        endpoint = config.get("s3.endpoint") or environ.get("AWS_ENDPOINT_URL")
        region = (
            config.get("s3.region")
            or environ.get("AWS_REGION")
            or environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        s3: dict[str, Any] = {"region": region}
        if endpoint:
            s3["endpoint"] = endpoint
        key_id = config.get("s3.access.key.id") or environ.get("AWS_ACCESS_KEY_ID")
        secret = config.get("s3.secret.access.key") or environ.get("AWS_SECRET_ACCESS_KEY")
        if key_id and secret:
            s3["access_key_id"] = key_id
            s3["secret_access_key"] = secret
        self._store = S3Store(
            bucket,
            prefix=prefix.strip("/") or None,
            config=s3,  # type: ignore[arg-type]
            client_options={"allow_http": bool(endpoint and endpoint.startswith("http://"))},
        )

    def put_atomic(self, key: str, data: bytes) -> None:
        try:
            obstore.put(self._store, key, data)
        except Exception as exc:  # obstore raises its own exception tree
            raise RetriableError(f"put {self.url}/{key}: {exc}") from exc

    def list(self, prefix: str) -> Iterator[str]:
        try:
            for chunk in obstore.list(self._store, prefix):
                for meta in chunk:
                    yield meta["path"]
        except Exception as exc:
            raise RetriableError(f"list {self.url}/{prefix}: {exc}") from exc

    def get(self, key: str) -> bytes:
        return bytes(obstore.get(self._store, key).bytes())

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise RetriableError(f"delete {self.url}/{key}: {exc}") from exc


def open_lake_files(config: ConnectorConfig, environ: Mapping[str, str] | None = None) -> LakeFiles:
    path = config.require("path")
    if path.startswith("s3://"):
        bucket, _, prefix = path[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"connector {config.name!r}: 'path' {path!r} names no bucket")
        return S3Files(bucket, prefix, config, os.environ if environ is None else environ)
    if "://" in path and not path.startswith("file://"):
        raise ConfigError(f"connector {config.name!r}: 'path' must be a directory or s3://")
    return LocalFiles(Path(path.removeprefix("file://")).expanduser())
