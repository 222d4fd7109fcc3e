"""``cliffwatch audit``: does every stored call's cost recompute from its own row?

Reads the store with :func:`cliffwatch.analytics.audit.audit_costs` and prints the summary,
the problem calls and a one-line verdict; exit code 1 when some stored cost does not
recompute. litellm is loaded (by the analytics, lazily) only to price calls again from the
current price map, and not at all with ``--no-current-map``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cliffwatch.analytics.window import Window
from cliffwatch.cli.options import (
    DbOption,
    OutputFormat,
    SinceOption,
    UntilOption,
    read_only_store,
)
from cliffwatch.cli.output import EXIT_NOT_COMPLETED, json_out, render, say

PROBLEM_TABLE_COLUMNS = ("run_id", "span_id", "problem", "stored_usd", "recomputed_usd")
"""Columns the problems table shows (fits 80 characters; JSON and CSV carry all)."""


def audit(
    db: DbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    current_map: Annotated[
        bool,
        typer.Option("--current-map/--no-current-map",
                     help="Also price every call from the current litellm price map."),
    ] = True,
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", help="Output: tables; one JSON object (verdict, calls, "
                     "not_recomputing, summary and problems, each an array of objects); or "
                     "CSV (the summary rows, then the problem rows, told apart by a section "
                     "column)."),
    ] = OutputFormat.TABLE,
) -> None:
    """Recompute every stored call's cost from its row: spend by cost source, drift,
    unpriced calls, missing cache detail, duplicates. Exit code 1 when a cost does not
    recompute."""
    from cliffwatch.analytics.audit import audit_costs, verdict  # lazy: DuckDB, polars

    window = Window.parse(since, until)
    with read_only_store(db) as con:
        result = audit_costs(con, window, current_map=current_map)
    line = verdict(result.not_recomputing, result.calls)
    if fmt is OutputFormat.JSON:
        from cliffwatch.analytics.plain import plain_rows  # lazy: polars

        json_out({"verdict": line, "calls": result.calls,
                  "not_recomputing": result.not_recomputing,
                  "summary": plain_rows(result.summary),
                  "problems": plain_rows(result.problems)})
    elif fmt is OutputFormat.CSV:  # one table: summary rows, then problem rows
        import polars as pl  # lazy

        render(pl.concat([result.summary.with_columns(section=pl.lit("summary")),
                          result.problems.with_columns(section=pl.lit("problem"))],
                         how="diagonal").select("section", pl.exclude("section")), fmt)
        say(line, stderr=True)
    else:
        render(result.summary, fmt, title="Cost audit", empty="no calls in this window")
        if result.problems.height:
            render(result.problems, fmt, title="Problem calls",
                   table_columns=PROBLEM_TABLE_COLUMNS)
        say(line, style="red" if result.not_recomputing else "green")
    if result.not_recomputing:
        raise typer.Exit(EXIT_NOT_COMPLETED)

