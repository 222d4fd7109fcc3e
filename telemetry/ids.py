"""Ids given on the command line: a whole id, or a unique prefix of it (tables show ids
cut short), resolved the same way for runs and incidents. An incident's id is its kind
and its run's id (``runaway-9f7b71dd24f683e0``): a prefix may leave the kind out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliffwatch.telemetry.conventions import IncidentKind

if TYPE_CHECKING:
    import duckdb

MIN_ID_PREFIX = 6
"""Shortest id prefix :func:`resolve_id` accepts (a shown id is often cut short)."""

SHOWN_MATCHES = 5
"""Ids an ambiguous prefix's message names at most."""

INCIDENT_ID_FAMILIES: tuple[str, ...] = tuple(f"{kind}-" for kind in IncidentKind)
"""The leading parts of incident ids (``cap_breach-`` ...): an incident's prefix may
start after them, with the distinctive part."""


def resolve_id(
    con: duckdb.DuckDBPyConnection,
    given: str,
    *,
    table: str,
    column: str,
    noun: str,
    not_found: type[Exception],
    families: tuple[str, ...] = (),
) -> str:
    """The full id in ``table.column`` that ``given`` names: the id itself, or a unique
    prefix of at least :data:`MIN_ID_PREFIX` characters (case and spaces ignored), with or
    without one of ``families`` before it.

    Args:
        con: a store connection.
        given: the id or prefix as the user typed it.
        table, column: where the ids live (trusted names, never user input).
        noun: what an id names, for the messages (``run``, ``incident``).
        not_found: the error raised (a LookupError subclass of the caller's layer).
        families: leading parts an id may have that the prefix may leave out
            (:data:`INCIDENT_ID_FAMILIES`: ``9f7b71`` names ``runaway-9f7b71dd24f683e0``).

    Raises:
        not_found: no id matches, several do (the message names up to
            :data:`SHOWN_MATCHES` of them), or the prefix is shorter than
            :data:`MIN_ID_PREFIX` and no id equals it.
    """
    wanted = given.strip().lower()
    sql = f"SELECT {column} FROM {table} WHERE {column} = ?"
    if con.execute(sql, [wanted]).fetchall():
        return wanted
    if len(wanted) < MIN_ID_PREFIX:
        raise not_found(f"{noun} id prefix {given!r} is too short: give at least "
                        f"{MIN_ID_PREFIX} characters, or the whole id")
    starts = [wanted, *(family + wanted for family in families)]
    matches = " OR ".join(f"starts_with({column}, ?)" for _ in starts)
    found = [str(row[0]) for row in con.execute(
        f"SELECT DISTINCT {column} FROM {table} WHERE {matches} ORDER BY 1 "
        f"LIMIT {SHOWN_MATCHES + 1}",
        starts,
    ).fetchall()]
    if len(found) > 1:
        named = ", ".join(found[:SHOWN_MATCHES]) + (", ..." if len(found) > SHOWN_MATCHES
                                                    else "")
        raise not_found(f"{noun} id prefix {given!r} matches several {noun}s ({named}): "
                        "give more characters")
    if not found:
        raise not_found(f"no {noun} {given!r} in the store")
    return str(found[0])
