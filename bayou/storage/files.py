"""File naming and small durable-write helpers shared by the storage modules.

Segment files are named by their base offset, zero-padded to 20 digits (Kafka's
``LogFileUtils``), so a directory listing sorts in offset order::

    00000000000000000000.log        record batches, exactly as produced (offsets patched)
    00000000000000000000.index      offset index: 8-byte entries (relative offset, position)
    00000000000000000000.timeindex  time index: 12-byte entries (timestamp, relative offset)
    00000000000000000000.txnindex   aborted transactions: 34-byte entries (txn_index.py)

Small metadata files (topic metadata, recovery checkpoint, producer-state snapshot) are
replaced atomically: written to ``<name>.tmp``, fsynced, renamed over the old file, and the
directory fsynced.  A ``.tmp`` found on startup is the residue of a crash and is removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
TXN_INDEX_SUFFIX = ".txnindex"
TMP_SUFFIX = ".tmp"


def segment_path(directory: Path, base_offset: int, suffix: str) -> Path:
    """``directory/<20-digit base offset><suffix>``."""
    return directory / f"{base_offset:020d}{suffix}"


def parse_base_offset(name: str) -> int | None:
    """The base offset encoded in a segment file name, or None if it is not one."""
    stem, dot, _suffix = name.partition(".")
    if not dot or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (creations, renames, removals) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new content."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, doc: Any) -> None:
    """Atomically replace ``path`` with ``doc`` as JSON."""
    write_atomic(path, json.dumps(doc, sort_keys=True, indent=1).encode())


def read_json(path: Path) -> Any:
    """The JSON document in ``path`` (raises OSError / ValueError as ``json`` does)."""
    with open(path, "rb") as f:
        return json.loads(f.read())


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until everything is written (regular files rarely write short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
