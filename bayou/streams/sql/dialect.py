"""Flink SQL, as far as Bayou's views need it, as a sqlglot dialect.

sqlglot (30.x) has no Flink dialect.  Flink's grammar for queries is close to PostgreSQL's, so
``Flink`` extends sqlglot's PostgreSQL dialect with what Flink adds, by subclassing its parser
rather than writing one:

- windowing table functions: ``TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))``,
  ``HOP``, ``CUMULATE`` and ``SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap)``, whose
  ``TABLE name`` argument PostgreSQL's grammar does not accept;
- ``SHOW VIEWS``;
- ``CREATE VIEW … WITH ('key' = 'value')`` is PostgreSQL's view options already, and Flink's
  ``/*+ OPTIONS(…) */`` hint survives as a comment the compiler reads.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.parsers.postgres import PostgresParser
from sqlglot.tokenizer_core import TokenType
from sqlglot.trie import new_trie

WINDOW_TVFS = ("TUMBLE", "HOP", "CUMULATE", "SESSION")


def _parse_window_tvf(name: str) -> Any:
    def parse(self: FlinkParser) -> exp.Expr:
        args: list[exp.Expr] = []
        while True:
            if self._match(TokenType.TABLE):
                table = self._parse_table_parts()
                if table is None:
                    self.raise_error(f"Expected a table name in {name}")
                    break
                args.append(table)
                if self._match(TokenType.PARTITION_BY) or self._match_text_seq("PARTITION", "BY"):
                    # one column, or several in parentheses (commas separate the arguments)
                    if self._match(TokenType.L_PAREN):
                        cols = self._parse_csv(self._parse_column)
                        self._match_r_paren()
                    else:
                        column = self._parse_column()
                        cols = [column] if column is not None else []
                    args.append(exp.Anonymous(this="PARTITION", expressions=cols))
            else:
                arg = self._parse_lambda()
                if arg is None:
                    self.raise_error(f"Expected an argument of {name}")
                    break
                args.append(arg)
            if not self._match(TokenType.COMMA):
                break
        return self.expression(exp.Anonymous(this=name, expressions=args))

    return parse


class FlinkParser(PostgresParser):
    FUNCTION_PARSERS = {
        **PostgresParser.FUNCTION_PARSERS,
        **{name: _parse_window_tvf(name) for name in WINDOW_TVFS},
    }
    FUNC_TOKENS = {*PostgresParser.FUNC_TOKENS, TokenType.SESSION}
    SHOW_PARSERS = {
        **PostgresParser.SHOW_PARSERS,
        "VIEWS": lambda self: self.expression(exp.Show(this="VIEWS")),
    }
    SHOW_TRIE = new_trie(key.split(" ") for key in SHOW_PARSERS)
    STATEMENT_PARSERS = {
        **PostgresParser.STATEMENT_PARSERS,
        TokenType.SHOW: lambda self: self._parse_show(),
    }


class Flink(Postgres):
    class Tokenizer(Postgres.Tokenizer):
        KEYWORDS = {**Postgres.Tokenizer.KEYWORDS, "SHOW": TokenType.SHOW}

    Parser = FlinkParser
