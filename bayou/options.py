"""Typed options: one frozen dataclass per section, flags and environment generated from them.

Theory of operation
-------------------
A configuration is a root dataclass whose fields are either plain options or *sections*
(frozen dataclasses of options, e.g. ``http: HttpOptions``).  Every option has one *flat
name*: the field name for a root option (``data_dir``), ``<section>_<field>`` for a section's
(``http_port``), unless its metadata names another (``flat=``).  The flat name is the option
everywhere a user writes it, so each source maps one-to-one onto the dataclasses, as uvicorn's
CLI maps onto its ``Config``:

- the command line: ``--http-port`` (``_`` → ``-``; booleans as ``--x/--no-x``; tuples are
  repeatable flags) — ``click_options`` generates them with the field's help text;
- the environment: ``BAYOU_HTTP_PORT`` (tuples comma-separated);
- a TOML file: ``http_port = 8080`` at the top level, or ``port = 8080`` under ``[http]``.

Types come from the dataclass (``typing.get_type_hints``), never from annotation text:
``int``, ``float``, ``str``, ``bool``, ``Path``, ``X | None`` and ``tuple[str, ...]``.
Values are coerced and range-checked once, with the option's flat name in the error.
Sources apply in order — defaults, TOML, environment, flags — later winning.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bayou.errors import InvalidConfig

T = TypeVar("T")
ENV_PREFIX = "BAYOU_"


def opt(
    help: str,
    *,
    flat: str | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    min: int | float | None = None,
    max: int | float | None = None,
    choices: tuple[str, ...] | None = None,
    cli: bool = True,
) -> dict[str, Any]:
    """Field metadata of an option: ``field(default=…, metadata=opt("…"))``.

    ``flat`` overrides the flat name; ``flag`` the command-line flag (without dashes; for
    booleans the positive form); ``cli=False`` leaves it off the command line (TOML and
    environment only)."""
    return {
        "bayou": {
            "help": help,
            "flat": flat,
            "flag": flag,
            "metavar": metavar,
            "min": min,
            "max": max,
            "choices": choices,
            "cli": cli,
        }
    }


@dataclass(frozen=True)
class Option:
    """One option as the sources see it."""

    flat: str
    section: str | None  # None: a root field
    name: str  # the field name in its dataclass
    type: Any
    default: Any
    help: str
    flag: str
    metavar: str | None
    min: int | float | None
    max: int | float | None
    choices: tuple[str, ...] | None
    cli: bool

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flat.upper()

    @property
    def base_type(self) -> Any:
        return _strip_optional(self.type)[0]

    @property
    def optional(self) -> bool:
        return _strip_optional(self.type)[1]

    @property
    def repeated(self) -> bool:
        return typing.get_origin(self.base_type) is tuple


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"option {f.name} needs a default")


def options(root: type[Any]) -> list[Option]:
    """Every option of ``root`` (root fields and section fields), in declaration order."""
    out: list[Option] = []
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        tp = hints[f.name]
        if _is_section(tp):
            section_hints = typing.get_type_hints(tp)
            for sf in dataclasses.fields(tp):
                out.append(_option(sf, section_hints[sf.name], f.name))
        elif "bayou" in f.metadata:
            out.append(_option(f, tp, None))
    names = [o.flat for o in out]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise TypeError(f"options with the same flat name: {sorted(duplicates)}")
    return out


def _option(f: dataclasses.Field[Any], tp: Any, section: str | None) -> Option:
    meta = f.metadata.get("bayou")
    if meta is None:
        raise TypeError(f"option {section}.{f.name} has no opt() metadata")
    flat = meta["flat"] or (f"{section}_{f.name}" if section else f.name)
    return Option(
        flat=flat,
        section=section,
        name=f.name,
        type=tp,
        default=_default(f),
        help=meta["help"],
        flag=meta["flag"] or flat.replace("_", "-"),
        metavar=meta["metavar"],
        min=meta["min"],
        max=meta["max"],
        choices=meta["choices"],
        cli=meta["cli"],
    )


def coerce(option: Option, value: Any) -> Any:
    """``value`` (from TOML, the environment or a flag) as the option's type; raises
    ``InvalidConfig`` naming the option."""
    if value is None:
        if option.optional:
            return None
        raise InvalidConfig(f"Option {option.flat} cannot be empty")
    tp = option.base_type
    try:
        if tp is bool:
            if isinstance(value, bool):
                result: Any = value
            elif str(value).lower() in ("1", "true", "yes", "on"):
                result = True
            elif str(value).lower() in ("0", "false", "no", "off"):
                result = False
            else:
                raise ValueError
        elif tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            result = int(value)
        elif tp is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
        elif tp is Path:
            result = Path(value)
        elif option.repeated:
            items = value.split(",") if isinstance(value, str) else list(value)
            result = tuple(str(v).strip() for v in items if str(v).strip())
        else:
            result = str(value)
    except (TypeError, ValueError):
        raise InvalidConfig(f"Option {option.flat} cannot be {value!r}") from None
    if option.min is not None and result < option.min:
        raise InvalidConfig(f"Option {option.flat} must be at least {option.min}: {value!r}")
    if option.max is not None and result > option.max:
        raise InvalidConfig(f"Option {option.flat} must be at most {option.max}: {value!r}")
    if option.choices is not None and result not in option.choices:
        raise InvalidConfig(
            f"Option {option.flat} must be one of {', '.join(option.choices)}: {value!r}"
        )
    return result


def load(
    root: type[T],
    toml: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    *,
    extra: Iterable[str] = (),
) -> tuple[T, dict[str, Any]]:
    """Build ``root`` from defaults, a parsed TOML document, the environment and flags
    (by flat name; None means unset).  Keys named in ``extra`` (root fields that are not
    simple options, e.g. ``topic_defaults``) are left to the caller: returned raw, per source
    in order, merged."""
    opts = options(root)
    by_flat = {o.flat: o for o in opts}
    sections = {o.section for o in opts if o.section}
    extras = set(extra)
    raw: dict[str, Any] = {}
    leftovers: dict[str, Any] = {}
    for key, value in (toml or {}).items():
        key = key.replace("-", "_")
        if key in sections and isinstance(value, Mapping):
            for sub, sub_value in value.items():
                raw[f"{key}_{sub.replace('-', '_')}"] = sub_value
        elif key in extras:
            leftovers[key] = value
        else:
            raw[key] = value
    for key, value in (environ or {}).items():
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in by_flat:
            raw[key[len(ENV_PREFIX) :].lower()] = value
    for key, value in (flags or {}).items():
        if key in extras:
            continue
        if value is not None and value != ():
            raw[key] = value
    unknown = sorted(set(raw) - set(by_flat))
    if unknown:
        raise InvalidConfig(f"Unknown option(s): {', '.join(unknown)}")
    values: dict[str | None, dict[str, Any]] = {}
    for o in opts:
        value = coerce(o, raw[o.flat]) if o.flat in raw else o.default
        values.setdefault(o.section, {})[o.name] = value
    hints = typing.get_type_hints(root)
    kwargs = dict(values.get(None, {}))
    for f in dataclasses.fields(root):  # type: ignore[arg-type]
        if _is_section(hints[f.name]):
            kwargs[f.name] = hints[f.name](**values.get(f.name, {}))
    return root(**kwargs), leftovers


def click_options(root: type[Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding one click option per command-line option of ``root`` (every
    option's destination is its flat name; unset options arrive as None)."""
    import click

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for o in reversed([o for o in options(root) if o.cli]):
            tp = o.base_type
            kwargs: dict[str, Any] = {"help": _help(o), "default": None, "metavar": o.metavar}
            if tp is bool:
                decls = [f"--{o.flag}/--no-{o.flag}", o.flat]
                kwargs.pop("metavar")
            else:
                decls = [f"--{o.flag}", o.flat]
                if o.repeated:
                    kwargs["multiple"] = True
                    kwargs["default"] = ()
                elif o.choices is not None:
                    kwargs["type"] = click.Choice(o.choices, case_sensitive=False)
                elif tp is int:
                    kwargs["type"] = click.IntRange(o.min, o.max)  # type: ignore[arg-type]
                elif tp is float:
                    kwargs["type"] = click.FloatRange(o.min, o.max)
                elif tp is Path:
                    kwargs["type"] = click.Path(path_type=Path)
            command = click.option(*decls, **kwargs)(command)
        return command

    return decorate


def _help(o: Option) -> str:
    default = o.default
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif default in (None, ()):
        shown = "none"
    else:
        shown = str(default)
    return f"{o.help} Default {shown}. [env {o.env}]"
