"""``bayou sql``: run SQL view statements against the broker at ``--bootstrap`` — one with
``-e STATEMENT``, or a REPL reading statements ended by ``;`` (``docs/design/streams.md``).

Output: ``SHOW VIEWS`` one name per line; ``DESCRIBE VIEW`` one property per line; a pull
query one JSON object per line; ``--json`` prints every answer as one JSON document instead.
An error prints the message, the statement's line and a caret under the token, and exits 1.
"""

from __future__ import annotations

import json
import sys

import click

from bayou.cli._common import CliError, connection_options, get_connection


@click.command()
@click.option("-e", "--execute", "statement", metavar="STATEMENT", help="Run one statement.")
@click.option("--json", "as_json", is_flag=True, help="Print answers as JSON.")
@connection_options()
def sql(statement: str | None, as_json: bool) -> None:
    """Run SQL statements: CREATE VIEW, DROP VIEW, SHOW VIEWS, DESCRIBE VIEW, pull queries."""
    from bayou.streams.sql.errors import SqlError
    from bayou.streams.views import SqlSession

    conn = get_connection()
    conn.probe()
    session = SqlSession(conn.client_config(), conn.timeout)

    def run(text: str) -> bool:
        try:
            outcome = session.execute(text)
        except SqlError as exc:
            click.echo(f"Error: {exc.render(text)}", err=True)
            return False
        if as_json:
            click.echo(json.dumps(outcome.data, ensure_ascii=False))
        elif outcome.text:
            click.echo(outcome.text)
        return True

    if statement is not None:
        if not run(statement):
            raise SystemExit(1)
        return
    interactive = sys.stdin.isatty()
    buffer: list[str] = []
    failed = False
    while True:
        if interactive:
            try:
                line = input("bayou> " if not buffer else "   ... ")
            except EOFError:
                break
        else:
            raw = sys.stdin.readline()
            if not raw:
                break
            line = raw.rstrip("\n")
        if not buffer and line.strip().lower() in ("quit", "exit", "\\q"):
            break
        buffer.append(line)
        if line.rstrip().endswith(";"):
            text = "\n".join(buffer)
            buffer = []
            if text.strip().rstrip(";").strip():
                failed = not run(text) or failed
    if buffer and "\n".join(buffer).strip():
        failed = not run("\n".join(buffer)) or failed
    if failed and not interactive:
        raise CliError("some statements failed")
