"""Ids given on the command line: a whole id, or a unique prefix of it (tables show ids
cut short), resolved the same way for runs and incidents."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

MIN_ID_PREFIX = 6
"""Shortest id prefix :func:`resolve_id` accepts (a shown id is often cut short)."""


def resolve_id(
    con: duckdb.DuckDBPyConnection,
    given: str,
    *,
    table: str,
    column: str,
    noun: str,
    not_found: type[Exception],
) -> str:
    """The full id in ``table.column`` that ``given`` names: the id itself, or a unique
    prefix of at least :data:`MIN_ID_PREFIX` characters (case and spaces ignored).

    Args:
        con: a store connection.
        given: the id or prefix as the user typed it.
        table, column: where the ids live (trusted names, never user input).
        noun: what an id names, for the messages (``run``, ``incident``).
        not_found: the error raised (a LookupError subclass of the caller's layer).

    Raises:
        not_found: no id matches, several do, or the prefix is shorter than
            :data:`MIN_ID_PREFIX` and no id equals it.
    """
    wanted = given.strip().lower()
    sql = f"SELECT {column} FROM {table} WHERE {column} = ?"
    if con.execute(sql, [wanted]).fetchall():
        return wanted
    if len(wanted) < MIN_ID_PREFIX:
        raise not_found(f"{noun} id prefix {given!r} is too short: give at least "
                        f"{MIN_ID_PREFIX} characters, or the whole id")
    found = [row[0] for row in con.execute(
        f"SELECT {column} FROM {table} WHERE starts_with({column}, ?) ORDER BY 1 LIMIT 2",
        [wanted],
    ).fetchall()]
    if len(found) > 1:
        raise not_found(f"{noun} id prefix {given!r} matches several {noun}s: give more "
                        "characters")
    if not found:
        raise not_found(f"no {noun} {given!r} in the store")
    return str(found[0])
