"""A new user's first steps as the README gives them: the tour's tools can be installed as it
says, and `make run` takes other ports."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the tour may use without saying how to get it: the project itself, make, and what any
# shell has.
BASE = {"bayou", "make", "curl", "printf", "echo", "scripts/install-test-deps.sh"}
# The other tools, and the Debian package that brings each.
PACKAGES = {
    "kcat": "kcat",
    "mosquitto_sub": "mosquitto-clients",
    "mosquitto_pub": "mosquitto-clients",
}


def _commands(readme: str) -> set[str]:
    """The program of every command in the README's ``sh`` blocks."""
    found: set[str] = set()
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"\||&&|;", line):
                words = shlex.split(part.replace("\\", " "), posix=True) if part.strip() else []
                if words and not words[0].startswith("-") and "=" not in words[0]:
                    found.add(words[0])
    return found


def test_readme_says_how_to_get_every_tool_of_the_tour() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    script = (ROOT / "scripts" / "install-test-deps.sh").read_text(encoding="utf-8")
    tools = _commands(readme) - BASE - {"."}
    assert tools == set(PACKAGES), tools
    assert "scripts/install-test-deps.sh --tour" in readme
    tour_part = script.split('if [ "${1:-}" != "--tour" ]', 1)[0]  # what --tour installs
    for tool, package in PACKAGES.items():
        assert tool in readme and f"need+=({package})" in tour_part, tool


def test_make_run_passes_options_to_serve() -> None:
    planned = subprocess.run(
        ["make", "-n", "run", "ARGS=--http-port 8081 --mqtt-port 0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    serve = [line for line in planned.stdout.splitlines() if "bayou serve" in line]
    assert serve and serve[-1].endswith(
        "bayou serve --data-dir ./data --http-port 8081 --mqtt-port 0"
    ), planned.stdout
    assert 'make run ARGS="--http-port 8081"' in (ROOT / "README.md").read_text()
