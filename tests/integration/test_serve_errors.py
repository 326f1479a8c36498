"""``bayou serve`` refusing to start says why in one line: a port in use is named, whichever
door it belongs to."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess
from tests.support.ports import free_port


@pytest.mark.parametrize("door", ["kafka", "http", "mqtt", "amqp"])
def test_a_port_in_use_is_named_in_one_line(door: str, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        port = holder.getsockname()[1]
        broker = BrokerProcess(tmp_path / "data")
        setattr(broker, f"{door}_port", port)
        done = subprocess.run(broker.command(), capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    errors = [line for line in out.splitlines() if " ERROR " in line]
    assert len(errors) == 1, out
    assert str(port) in errors[0] and "address already in use" in errors[0].lower(), out
    assert "Traceback" not in out
