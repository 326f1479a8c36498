"""Statements: SQL text → one of the statements views understand, or a ``SqlError`` that
points at the token.

``CREATE VIEW name [WITH ('k' = 'v', …)] AS SELECT …`` (compiled at once, so a query that does
not type-check fails here, before anything is stored), ``DROP VIEW [IF EXISTS] name``,
``SHOW VIEWS``, ``DESCRIBE VIEW name`` (or ``DESCRIBE name``) and pull queries
``SELECT … FROM view [WHERE …]`` (answered from the view's results, ``views.py``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from bayou.streams.sql.dialect import Flink
from bayou.streams.sql.errors import SqlError, at
from bayou.streams.sql.planner import ViewPlan, _options, plan_view

# sqlglot warns (a log line) before it falls back to a Command for a statement it cannot
# parse; the statement is refused here with an error of its own instead
logging.getLogger("sqlglot").setLevel(logging.ERROR)

VIEW_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


@dataclass
class CreateView:
    name: str
    plan: ViewPlan
    replace: bool


@dataclass
class DropView:
    name: str
    if_exists: bool


@dataclass
class ShowViews:
    pass


@dataclass
class DescribeView:
    name: str


@dataclass
class PullQuery:
    view: str
    select: exp.Select


Statement = CreateView | DropView | ShowViews | DescribeView | PullQuery


def _parse_error(exc: ParseError) -> SqlError:
    errors = exc.errors or []
    if not errors:
        return SqlError(str(exc))
    first = errors[0]
    highlight = first.get("highlight") or ""
    line, col = first.get("line") or 0, first.get("col") or 0
    length = max(1, len(highlight))
    description = first.get("description") or "Syntax error"
    near = f" near {highlight!r}" if highlight else ""
    return SqlError(f"{description}{near}", line, max(1, col - length + 1), length)


def parse_one(sql: str) -> exp.Expr:
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise SqlError("An empty statement")
    try:
        statements = sqlglot.parse(text, read=Flink)
    except ParseError as exc:
        raise _parse_error(exc) from None
    except TokenError as exc:
        raise SqlError(f"Cannot read the statement: {exc}") from None
    found = [s for s in statements if s is not None]
    if len(found) != 1:
        raise SqlError(f"Expected one statement, got {len(found)}")
    return found[0]


def _view_name(node: exp.Expr | None) -> str:
    if not isinstance(node, exp.Table) or not node.name:
        raise at(node, "Expected a view name")
    if node.args.get("db") is not None:
        raise at(node, "View names have no schema or catalog part")
    name = node.name
    if not VIEW_NAME.fullmatch(name):
        raise at(node, f"A view name is letters, digits, '.', '_' and '-' (a topic name): {name!r}")
    return name


def parse_statement(sql: str, views: set[str] | None = None) -> Statement:
    """``sql`` as a statement; ``views`` (known view names) tells a pull query from a
    SELECT that is not one."""
    node = parse_one(sql)
    if isinstance(node, exp.Create):
        kind = str(node.args.get("kind") or "").upper()
        if kind != "VIEW":
            raise at(node, f"Only CREATE VIEW is supported, not CREATE {kind}")
        name = _view_name(node.this)
        query = node.expression
        if query is None:
            raise at(node, "CREATE VIEW needs AS SELECT …")
        options = _options(node)
        plan = plan_view(name, query, sql.strip().rstrip(";").strip(), options)
        if name in plan.sources or name in plan.tables:
            raise at(node.this, "A view cannot read its own topic")
        return CreateView(name, plan, bool(node.args.get("replace")))
    if isinstance(node, exp.Drop):
        kind = str(node.args.get("kind") or "").upper()
        if kind != "VIEW":
            raise at(node, f"Only DROP VIEW is supported, not DROP {kind}")
        tables = node.args.get("tables") or [node.this]
        if len(tables) != 1:
            raise at(node, "DROP VIEW takes one name")
        return DropView(_view_name(tables[0]), bool(node.args.get("exists")))
    if isinstance(node, exp.Show):
        if str(node.this).upper() == "VIEWS":
            return ShowViews()
        raise at(node, f"SHOW {node.this} is not supported (SHOW VIEWS is)")
    if isinstance(node, exp.Describe):
        return DescribeView(_view_name(node.this))
    if isinstance(node, exp.Command):  # sqlglot's fallback for a statement it cannot parse
        rest = node.args.get("expression")
        text = rest.name if isinstance(rest, exp.Expr) else str(rest or "")
        words = f"{node.this} {text}".split()
        what = " ".join(words[:2]).upper()
        raise SqlError(f"{what} is not supported", 1, 1, len(str(node.this)))
    if isinstance(node, exp.Select):
        from_ = node.args.get("from_")
        table = from_.this if from_ is not None else None
        if isinstance(table, exp.Table) and isinstance(table.this, exp.Identifier):
            if views is None or table.name in views:
                return PullQuery(table.name, node)
            raise at(table, f"No view named {table.name!r} (a continuous query is CREATE VIEW)")
        raise at(node, "A query reads one view: SELECT … FROM <view> [WHERE …]")
    raise at(node, f"Unsupported statement: {node.key.upper()}")
