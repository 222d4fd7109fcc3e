"""The write path's SQL, parsed once per thread: a write runs about thirty statements whose
text is the same at every write, and DuckDB 2.0's parser (a PEG parser) spent a seventh of a
1,000-span write's CPU parsing them again: 57 M of 397 M instructions per write of a held
writer (callgrind, bench/store_write.py's batch over 100k runs of history, the class P50s
fresh); parsed once, the write takes 332 M.

:class:`ParsedStatements` wraps the write's connection: its ``execute`` runs a statement
parsed before (``DuckDBPyConnection.extract_statements``; DuckDB copies a parsed statement
before binding it, so one parse serves every run) and parses a text it has not seen. The
plan is not kept: DuckDB binds and optimizes every run (the Python API has no prepared
statement, and SQL ``PREPARE`` / ``EXECUTE`` binds again at each ``EXECUTE``). Anything
else is the connection's own (``register``, ``sql``, results).

Parsed statements are kept per thread (a connection is used by one thread at a time, and
a parsed tree is not shared across threads), at most :data:`MAX_STATEMENTS` of them, the
least recently run dropped first: statements whose text holds a literal (a time window)
differ at every write, and only push out each other.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import duckdb

MAX_STATEMENTS = 256
"""Parsed statements kept per thread (a write runs about forty distinct texts)."""

_LOCAL = threading.local()


def _cache() -> OrderedDict[str, duckdb.Statement | None]:
    cache: OrderedDict[str, duckdb.Statement | None] | None = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = OrderedDict()
    return cache


def parsed(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement | None:
    """``sql`` parsed (by ``con``'s parser the first time this thread sees the text), or
    None when it is not one statement (then it is run as text)."""
    cache = _cache()
    if sql in cache:
        cache.move_to_end(sql)
        return cache[sql]
    statements = con.extract_statements(sql)
    statement = statements[0] if len(statements) == 1 else None
    cache[sql] = statement
    while len(cache) > MAX_STATEMENTS:
        cache.popitem(last=False)
    return statement


class ParsedStatements:
    """A DuckDB connection whose ``execute`` runs parsed statements (module docstring).

    Args:
        con: the connection (owned by the caller; nothing here closes it).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.connection = con

    def execute(self, sql: str, parameters: object = None) -> duckdb.DuckDBPyConnection:
        """``con.execute(sql, parameters)`` with ``sql`` parsed once (module docstring).

        Returns:
            The connection, holding the statement's result.

        Raises:
            What ``DuckDBPyConnection.execute`` raises (a parse error when the text is
            first seen).
        """
        statement = parsed(self.connection, sql)
        return self.connection.execute(sql if statement is None else statement, parameters)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the connection's own attributes
        return getattr(self.connection, name)
