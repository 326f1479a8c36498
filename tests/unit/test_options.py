"""Typed options: flat names, sections, the order of sources, coercion, generated flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bayou.errors import InvalidConfig
from bayou.options import click_options, load, opt, options


@dataclass(frozen=True)
class Web:
    port: int = field(default=8080, metadata=opt("HTTP port.", min=0, max=65535))
    origins: tuple[str, ...] = field(
        default=(), metadata=opt("Allowed origins.", flag="cors-origin")
    )


@dataclass(frozen=True)
class Root:
    data_dir: Path = field(default=Path("./data"), metadata=opt("Data directory."))
    verbose: bool = field(default=False, metadata=opt("Talk more."))
    name: str | None = field(default=None, metadata=opt("A name."))
    secret: int = field(default=3, metadata=opt("Not a flag.", cli=False))
    web: Web = field(default_factory=Web)


def test_flat_names_and_sections() -> None:
    flats = [(o.flat, o.section, o.flag, o.env) for o in options(Root)]
    assert flats == [
        ("data_dir", None, "data-dir", "BAYOU_DATA_DIR"),
        ("verbose", None, "verbose", "BAYOU_VERBOSE"),
        ("name", None, "name", "BAYOU_NAME"),
        ("secret", None, "secret", "BAYOU_SECRET"),
        ("web_port", "web", "web-port", "BAYOU_WEB_PORT"),
        ("web_origins", "web", "cors-origin", "BAYOU_WEB_ORIGINS"),
    ]


def test_sources_in_order_later_wins() -> None:
    toml = {"web": {"port": 1}, "verbose": True, "web_origins": ["a", "b"]}
    env = {"BAYOU_WEB_PORT": "2", "BAYOU_NAME": "env", "OTHER": "x"}
    root, extra = load(Root, toml, env, {"web_port": 3, "name": None})
    assert root == Root(Path("./data"), True, "env", 3, Web(3, ("a", "b")))
    assert extra == {}
    root, _ = load(Root, None, {"BAYOU_WEB_ORIGINS": "x, y", "BAYOU_VERBOSE": "off"}, None)
    assert root.web.origins == ("x", "y") and root.verbose is False
    assert load(Root)[0] == Root()


def test_bad_values_name_the_option() -> None:
    with pytest.raises(InvalidConfig, match="web_port"):
        load(Root, {"web_port": "lots"})
    with pytest.raises(InvalidConfig, match="web_port must be at most 65535"):
        load(Root, None, {"BAYOU_WEB_PORT": "70000"})
    with pytest.raises(InvalidConfig, match="verbose"):
        load(Root, {"verbose": "maybe"})
    with pytest.raises(InvalidConfig, match="Unknown option"):
        load(Root, {"colour": "blue"})


def test_generated_flags() -> None:
    seen = {}

    @click.command()
    @click_options(Root)
    def cmd(**kwargs: object) -> None:
        seen.update(kwargs)

    result = CliRunner().invoke(
        cmd, ["--web-port", "81", "--cors-origin", "a", "--cors-origin", "b", "--no-verbose"]
    )
    assert result.exit_code == 0, result.output
    assert seen == {
        "data_dir": None,
        "verbose": False,
        "name": None,
        "web_port": 81,
        "web_origins": ("a", "b"),
    }
    assert "--secret" not in CliRunner().invoke(cmd, ["--help"]).output
    bad = CliRunner().invoke(cmd, ["--web-port", "99999"])
    assert bad.exit_code == 2
