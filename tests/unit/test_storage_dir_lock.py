"""The data directory's exclusive lock: one LogManager at a time, released on close."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bayou.storage.dir_lock import DataDirectoryInUse
from bayou.storage.manager import LogManager


def test_a_second_manager_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = LogManager(tmp_path / "data", {})
    first.open()
    second = LogManager(tmp_path / "data", {})
    with pytest.raises(DataDirectoryInUse, match=rf"{tmp_path / 'data'}.*pid {os.getpid()}"):
        second.open()
    first.close()
    second.open()
    second.close()
