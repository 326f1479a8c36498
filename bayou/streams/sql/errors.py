"""SQL errors that point at the token: line, column and a caret under the statement."""

from __future__ import annotations

from typing import Any

from sqlglot import exp


class SqlError(Exception):
    """A statement that does not parse or type-check (``line``/``column`` 1-based, or 0 when
    no position is known), or one that cannot be done (an unknown view)."""

    def __init__(self, message: str, line: int = 0, column: int = 0, length: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.length = max(1, length)

    def caret(self, sql: str) -> str:
        """The statement's line and a caret under the token, or '' without a position."""
        lines = sql.splitlines()
        if not self.line or self.line > len(lines):
            return ""
        text = lines[self.line - 1]
        return f"{text}\n{' ' * (self.column - 1)}{'^' * min(self.length, max(1, len(text)))}"

    def render(self, sql: str) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line else ""
        caret = self.caret(sql)
        return f"{self.message}{where}" + (f"\n{caret}" if caret else "")

    def as_dict(self, sql: str) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.line:
            out.update(line=self.line, column=self.column, caret=self.caret(sql))
        return out


def at(node: exp.Expr | None, message: str) -> SqlError:
    """An error at ``node``'s first token that has a position."""
    if node is not None:
        for sub in node.walk():
            meta = sub.meta if isinstance(sub, exp.Expr) else {}
            if "line" in meta:
                start, end = meta.get("start", 0), meta.get("end", 0)
                length = end - start + 1
                col = meta["col"] - length + 1  # sqlglot's col is the token's last character
                return SqlError(message, meta["line"], max(1, col), length)
    return SqlError(message)
