"""Run-id range chunks for reads that group the store's spans by run.

A read that groups every LLM call by run (the what-if's per-run arithmetic, the class
estimates) holds one group per run: at a million runs that is more than DuckDB's memory
bound for bulk reads (:mod:`analytics.bulk_read`), and DuckDB spills to disk (measured at
1M runs, issue 11: the class estimates took 20-30 s under a 512 MB bound against 5.6 s
unbounded). Read a chunk of runs at a time instead, each chunk a run-id range: the same
range filters the spans' ``trace_id``, so DuckDB skips the row groups whose ids lie
outside it (zone maps) where spans are stored in id order.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb

Bounds = tuple[str | None, str | None]
"""A run-id range: ``(low, high)``, low inclusive, high exclusive, None open."""


def chunk_bounds(
    con: duckdb.DuckDBPyConnection, scope_sql: str, params: dict[str, Any], runs: int,
    per_chunk: int,
) -> list[Bounds]:
    """``[(low, high), ...]`` run-id ranges splitting the ``runs`` runs of ``scope_sql``
    (a query with a ``run_id`` column, named parameters ``params``) into chunks of about
    ``per_chunk`` runs; ``[(None, None)]`` (one open range) when one chunk holds them."""
    chunks = -(-runs // per_chunk)
    if chunks <= 1:
        return [(None, None)]
    # the run ids at the quantile_disc positions (1-based ceil(runs * q)), by row number:
    # the same cuts, in SQL that DuckDB and ClickHouse both run (no quantile of strings)
    positions = sorted({max(1, math.ceil(runs * i / chunks)) for i in range(1, chunks)})
    rows = con.sql(f"SELECT run_id FROM (SELECT run_id, row_number() OVER (ORDER BY run_id) "
                   f"AS n FROM ({scope_sql})) WHERE n IN ({', '.join(map(str, positions))})",
                   params=params or None).fetchall()
    cuts = sorted({row[0] for row in rows})
    edges: list[str | None] = [None, *cuts, None]
    return list(zip(edges[:-1], edges[1:], strict=True))


def range_filters(
    bounds: Bounds, run_column: str, span_column: str, params: dict[str, Any]
) -> tuple[list[str], str]:
    """SQL for the run-id range ``bounds``: ``(conditions on run_column, " AND ..." on
    span_column)``, adding ``$chunk_low`` / ``$chunk_high`` to ``params`` (in place). The
    span filter is a plain range (DuckDB skips row groups outside it), on top of the
    caller's join or semi-join to its runs."""
    conds: list[str] = []
    spans = ""
    for key, op, value in (("chunk_low", ">=", bounds[0]), ("chunk_high", "<", bounds[1])):
        if value is not None:
            conds.append(f"{run_column} {op} ${key}")
            spans += f" AND {span_column} {op} ${key}"
            params[key] = value
    return conds, spans
