"""``file-source``: tail a directory of JSON-lines or CSV files into a topic.

Keys: ``path`` (the directory), ``topic``, ``format`` (``json``: one JSON document a line;
``csv``: a header line, then one record a line as an object of strings), ``key.field`` (the
value's field that becomes the key), ``file.pattern`` (a glob, default ``*``), ``batch.size``
(lines a poll returns at most, default 1000).  With ``tasks.max`` > 1 each file belongs to
one task (by a hash of its name).

Theory of operation
-------------------
Files are read in name order, only up to their last complete line (a line still being
written waits for its newline), and tailed: a file that grows is read on; a new file is
picked up at the next scan; a file that shrank was replaced and is read again from its
start.  The position of each record is the byte offset after its line in its file, plus the
offsets of every other file (shared by the records of one poll, so it costs nothing per
record): the runtime stores it in the same transaction as the records, and ``start`` resumes
every file from there — no line lost, none twice.  A line that is not JSON fails the task,
or is skipped (with a warning) under ``errors.tolerance=all``.  CSV records are one a line
(a quoted field holding a newline is not supported).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import os
import time
import zlib
from collections.abc import Sequence
from typing import Any

from bayou.connect.api import (
    ConfigError,
    ConnectError,
    ConnectorConfig,
    JsonValue,
    SourceRecord,
    SourceTask,
)
from bayou.connect.runtime.errors import RateLimitedLog

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
MAX_LINE_BYTES = 16 << 20
SCAN_INTERVAL_S = 0.1


class FileSourceTask(SourceTask):
    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        self.directory = config.require("path")
        self.topic = config.require("topic")
        self.format = (config.get("format", "json") or "json").lower()
        if self.format not in ("json", "csv"):
            raise ConfigError(f"connector {config.name!r}: format must be json or csv")
        self.key_field = config.get("key.field") or None
        self.pattern = config.get("file.pattern", "*") or "*"
        self.batch_size = max(1, config.get_int("batch.size", 1000))
        self.tasks = max(1, config.get_int("tasks.max", 1))
        self.tolerant = (config.get("errors.tolerance", "none") or "none").lower() == "all"
        self.offsets: dict[str, int] = {}
        self.headers: dict[str, list[str]] = {}
        self.warnings = RateLimitedLog()

    def start(self, position: JsonValue | None) -> None:
        if not os.path.isdir(self.directory):
            raise ConfigError(
                f"connector {self.config.name!r}: path {self.directory!r} is not a directory"
            )
        if isinstance(position, dict):
            self.offsets = {str(k): int(v) for k, v in (position.get("files") or {}).items()}
            if position.get("file") is not None:
                self.offsets[str(position["file"])] = int(position["offset"])

    def _mine(self, name: str) -> bool:
        if not fnmatch.fnmatch(name, self.pattern) or name.startswith("."):
            return False
        return self.tasks == 1 or zlib.crc32(name.encode()) % self.tasks == self.config.task_id

    def poll(self, timeout_s: float) -> Sequence[SourceRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            records = self._read_some()
            if records or time.monotonic() >= deadline:
                return records
            time.sleep(min(SCAN_INTERVAL_S, max(0.0, deadline - time.monotonic())))

    def _read_some(self) -> list[SourceRecord]:
        try:
            names = sorted(n for n in os.listdir(self.directory) if self._mine(n))
        except OSError as exc:
            raise ConnectError(f"cannot list {self.directory}: {exc}") from exc
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                size = os.stat(path).st_size
            except OSError:
                continue  # gone meanwhile
            offset = self.offsets.get(name, 0)
            if size < offset:
                log.warning(
                    "file-source: %s shrank (%d < %d): reading it again from its start",
                    path,
                    size,
                    offset,
                )
                offset = self.offsets[name] = 0
                self.headers.pop(name, None)
            if size > offset:
                records = self._read_file(name, path, offset)
                if records:
                    return records
        return []

    def _read_file(self, name: str, path: str, offset: int) -> list[SourceRecord]:
        with open(path, "rb") as file:
            if self.format == "csv" and name not in self.headers and offset > 0:
                header = file.readline(MAX_LINE_BYTES)
                self.headers[name] = _csv_row(header)
            file.seek(offset)
            data = file.read(READ_CHUNK)
            while b"\n" not in data and len(data) < MAX_LINE_BYTES:
                more = file.read(READ_CHUNK)
                if not more:
                    break
                data += more
        others = {k: v for k, v in self.offsets.items() if k != name}
        records: list[SourceRecord] = []
        position = offset
        start = 0
        while len(records) < self.batch_size:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end]
            start = end + 1
            position = offset + start
            value = self._value(name, path, position, line)
            if value is _SKIP:
                continue
            key = value.get(self.key_field) if self.key_field and isinstance(value, dict) else None
            records.append(
                SourceRecord(
                    self.topic,
                    key,
                    value,
                    {"file": name, "offset": position, "files": others},
                )
            )
        if position > offset:
            self.offsets[name] = position
            if not records:  # only skipped lines: the next record's position covers them
                return (
                    self._read_file(name, path, position) if position < offset + len(data) else []
                )
        return records

    def _value(self, name: str, path: str, position: int, line: bytes) -> Any:
        text = line.rstrip(b"\r")
        if not text.strip():
            return _SKIP
        if self.format == "csv":
            row = _csv_row(text)
            header = self.headers.get(name)
            if header is None:
                self.headers[name] = row
                return _SKIP
            return dict(zip(header, row, strict=False))
        try:
            return json.loads(text)
        except ValueError as exc:
            message = f"file-source: {path} before byte {position}: not JSON: {exc}"
            if not self.tolerant:
                raise ConnectError(message) from None
            self.warnings.warning("%s (skipped)", message)
            return _SKIP


_SKIP: Any = object()


def _csv_row(line: bytes) -> list[str]:
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    return next(csv.reader([text]), [])
