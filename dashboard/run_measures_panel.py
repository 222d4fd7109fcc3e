"""The Overview's "Per run: cost, latency, tokens, calls" section: P50/P95/P99 of each
measure per task class and over every selected class, as text."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import streamlit as st

from cliffwatch.analytics.run_measures import MEASURES, QUANTILES
from cliffwatch.dashboard import cells, downloads, queries, tables, ui
from cliffwatch.dashboard.filters import Filters
from cliffwatch.dashboard.runs_queries import load_run_measures

MEASURE_TEXT: dict[str, tuple[str, Callable[[float | None], str]]] = {
    "cost_usd": ("Cost", ui.usd),
    "duration_ms": ("Latency", cells.duration),
    "tokens": ("Tokens (in + out)", cells.count),
    "llm_calls": ("LLM calls", cells.count),
}
"""Measure -> its row label and how its values read."""

ALL_SELECTED = "All selected classes"
"""The class cell of the rows over every selected class."""

assert set(MEASURE_TEXT) == set(MEASURES)


def measure_rows(stats: pl.DataFrame) -> pl.DataFrame:
    """:func:`analytics.run_measures.run_measure_percentiles` as text rows: columns
    ``Task class``, ``Measure``, ``Runs``, ``P50``, ``P95``, ``P99`` (one row per class and
    measure, the classes' rows first)."""
    rows = []
    for stat in stats.iter_rows(named=True):
        name = ALL_SELECTED if stat["task_class"] is None else cells.text(stat["task_class"])
        for measure, (label, show) in MEASURE_TEXT.items():
            rows.append({
                "Task class": name, "Measure": label, "Runs": cells.count(stat["runs"]),
                **{q.upper(): show(stat[f"{measure}_{q}"]) for q, _ in QUANTILES},
            })
    return pl.DataFrame(rows, schema=["Task class", "Measure", "Runs", "P50", "P95", "P99"])


def render(selected: Filters) -> None:
    """Draw the section for the sidebar's selection (nothing when no run matches)."""
    stats = queries.fetch(load_run_measures, selected)
    if stats.is_empty():
        return
    st.subheader("Per run: cost, latency, tokens and LLM calls")
    tables.show(measure_rows(stats), key="run_measures")
    downloads.csv_button(stats, "run_measures")
    st.caption(
        "Percentiles over every run of the selection (linear interpolation, as numpy's "
        "default). Latency is the run's root span, start to end; "
        "tokens and calls count the run's leaf LLM calls."
    )
