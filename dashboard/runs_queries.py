"""What the Runs page, the per-run percentiles and the Compare page read, cached like
:mod:`dashboard.queries` (keyed on the store's path and version and on the filters as
the user wrote them; relative windows such as ``7d`` are read inside, at query time).
Call them through :func:`dashboard.queries.fetch`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl
import streamlit as st

from cliffwatch.analytics.run_measures import run_measure_percentiles
from cliffwatch.analytics.run_table import RunQuery, count_runs, run_statuses, runs_page
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.analytics.window_compare import compare_windows
from cliffwatch.dashboard.filters import Filters
from cliffwatch.dashboard.queries import CACHE_TTL_S


@dataclass(frozen=True, slots=True)
class RunsPage:
    """One page of the run table.

    Attributes:
        rows: :func:`analytics.run_table.runs_page` rows.
        total: runs matching the filters, every page together.
        page: the page shown, from 1 (the one asked for, or the last when past it).
        pages: how many pages there are (at least 1).
    """

    rows: pl.DataFrame
    total: int
    page: int
    pages: int


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_runs_page(
    db: str, version: tuple[int, ...], filters: Filters, spec: RunQuery, page: int,
    page_size: int,
) -> RunsPage:
    """Page ``page`` (from 1; past the last page: the last) of ``page_size`` runs of
    ``spec`` (the page's own filters and order) within the sidebar's ``filters`` (which
    replace ``spec``'s window and classes).

    Raises:
        StoreError: the store is missing, not a store, or busy.
        AnalyticsError: a filter names an unknown class or makes an empty window.
        RunQueryError: the spec cannot be run (shown as a page error).
    """
    # The count does not depend on the order or the page: cached apart, so paging and
    # re-sorting a large store count its runs once.
    total = load_run_count(db, version, filters, replace(spec, sort_by="started_at",
                                                         descending=True))
    pages = max(1, -(-total // page_size))
    page = min(max(page, 1), pages)
    query = replace(spec, window=filters.window(), task_classes=filters.task_classes)
    with read_store(db) as con:
        rows = runs_page(con, query, offset=(page - 1) * page_size, limit=page_size)
    return RunsPage(rows=rows, total=total, page=page, pages=pages)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_run_count(db: str, version: tuple[int, ...], filters: Filters, spec: RunQuery) -> int:
    """How many runs :func:`load_runs_page` pages through (every page together).

    Raises:
        StoreError, AnalyticsError: as :func:`load_runs_page`.
    """
    query = replace(spec, window=filters.window(), task_classes=filters.task_classes)
    with read_store(db) as con:
        return count_runs(con, query)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_statuses(db: str, version: tuple[int, ...]) -> list[str]:
    """The run statuses present in the store (the Runs page's status choices)."""
    with read_store(db) as con:
        return run_statuses(con)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_run_measures(db: str, version: tuple[int, ...], filters: Filters) -> pl.DataFrame:
    """:func:`analytics.run_measures.run_measure_percentiles` of the sidebar's selection.

    Raises:
        StoreError, AnalyticsError: as :func:`load_runs_page`.
    """
    with read_store(db) as con:
        return run_measure_percentiles(con, filters.window(), filters.task_classes)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_comparison(
    db: str, version: tuple[int, ...], before: tuple[str, str], after: tuple[str, str],
    task_classes: tuple[str, ...],
) -> pl.DataFrame:
    """:func:`analytics.window_compare.compare_windows` of two ``(since, until)`` pairs as
    typed ("" = open end), read at query time.

    Raises:
        WindowError: a window cannot be read or is empty.
        StoreError, AnalyticsError: as :func:`load_runs_page`.
    """
    windows = [Window.parse(since or None, until or None) for since, until in (before, after)]
    with read_store(db) as con:
        return compare_windows(con, windows[0], windows[1], task_classes)
