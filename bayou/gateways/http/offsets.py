"""Committed offsets of HTTP consumer groups.

``OffsetStore`` is what consumer instances need: commit a group's offsets (durably, before
answering) and read them back.  ``FileOffsetStore`` keeps them in one JSON file in the data
directory, rewritten atomically (temporary file, fsync, rename) in a worker thread.

This is the stand-in until the broker's group coordinator lands: then a store that goes
through the coordinator (OffsetCommit/OffsetFetch's path) replaces it, and HTTP and Kafka
consumers of one group see each other's commits.  See ``docs/design/http.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Protocol

TopicPartition = tuple[str, int]
Committed = tuple[int, str | None]  # (next offset to read, metadata)

FILE_NAME = "http-consumer-offsets.json"


class OffsetStore(Protocol):
    async def commit(self, group: str, offsets: dict[TopicPartition, Committed]) -> None: ...

    def committed(self, group: str, partitions: list[TopicPartition]
                  ) -> dict[TopicPartition, Committed]: ...


class FileOffsetStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        self._groups: dict[str, dict[TopicPartition, Committed]] = {}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Read the file (blocking; call before serving)."""
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        for group, entries in doc.items():
            self._groups[group] = {
                (topic, int(p)): (int(offset), metadata)
                for topic, partitions in entries.items()
                for p, (offset, metadata) in partitions.items()
            }

    def committed(self, group: str, partitions: list[TopicPartition]
                  ) -> dict[TopicPartition, Committed]:
        known = self._groups.get(group, {})
        return {tp: known[tp] for tp in partitions if tp in known}

    async def commit(self, group: str, offsets: dict[TopicPartition, Committed]) -> None:
        if not offsets:
            return
        self._groups.setdefault(group, {}).update(offsets)
        async with self._lock:  # one writer at a time; each write has every commit so far
            await asyncio.to_thread(self._write, self._snapshot())

    def _snapshot(self) -> str:
        doc: dict[str, dict[str, dict[str, list[object]]]] = {}
        for group, entries in self._groups.items():
            topics = doc.setdefault(group, {})
            for (topic, p), (offset, metadata) in entries.items():
                topics.setdefault(topic, {})[str(p)] = [offset, metadata]
        return json.dumps(doc, sort_keys=True)

    def _write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
