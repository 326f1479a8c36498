"""docs/cli.md covers every command and option of the ``bayou`` CLI: each command has a
synopsis line naming all its options, and every short form is mentioned."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from bayou.cli import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
# On every client command; documented once, under "Connecting to a broker".
CONNECTION = {"--bootstrap", "--timeout", "--verbose"}


def _commands(command: click.Command, path: list[str]) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, [*path, name])
    else:
        yield " ".join(path), command


def _code_lines(text: str) -> list[str]:
    """The lines inside the doc's fenced code blocks."""
    inside, out = False, []
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            out.append(line)
    return out


def _synopsis(code: list[str], command: str) -> str | None:
    """The synopsis of ``command``: its line in a code block and the indented lines that
    continue it."""
    for i, line in enumerate(code):
        if line == command or line.startswith(command + " "):
            more = []
            for following in code[i + 1 :]:
                if not following.startswith(" "):
                    break
                more.append(following)
            return "\n".join([line, *more])
    return None


def test_cli_md_covers_every_command_and_option() -> None:
    text = DOC.read_text(encoding="utf-8")
    code = _code_lines(text)
    missing: list[str] = []
    for name, command in _commands(cli, ["bayou"]):
        if name == "bayou":
            continue
        synopsis = _synopsis(code, name)
        if synopsis is None:
            missing.append(f"{name}: no synopsis")
            continue
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            names = param.opts + param.secondary_opts
            for long in (n for n in names if n.startswith("--")):
                # in the synopsis, or (bayou serve's many options) a row of its table
                in_table = re.search(rf"`(--[\w-]+/)?{re.escape(long)}(/--[\w-]+)?[` ]", text)
                if long not in CONNECTION and long not in synopsis and not in_table:
                    missing.append(f"{name} {long}")
            for short in (n for n in names if not n.startswith("--")):
                if not re.search(rf"[/(`]{re.escape(short)}\b", text):
                    missing.append(f"{name} {short}")
    for option in [*sorted(CONNECTION), "--version", "--help"]:
        if option not in text:
            missing.append(option)
    assert not missing, "docs/cli.md does not cover: " + ", ".join(missing)
