"""What the pages show, read from the store through analytics/, cached, with store problems
turned into plain messages on the page.

Each ``load_*`` function opens the store read-only once (``analytics.store_access.
read_store``: short-lived, retries while a writer holds the lock), calls analytics/ and
returns plain data. They are cached with ``st.cache_data`` keyed on the store path, the
store's *version* (modification time and size of the file and its WAL, so a write by
another process shows at the next rerun) and the filters; the TTL bounds how stale a
"last 24 hours" window can get. Pages call them through :func:`fetch`, the edge where
store and analytics errors become ``st.info`` / ``st.warning`` / ``st.error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import streamlit as st

from cliffwatch import settings
from cliffwatch.analytics.errors import AnalyticsError
from cliffwatch.analytics.incidents import list_incidents
from cliffwatch.analytics.percentiles import (
    cap_start_date,
    cost_percentiles,
    daily_percentiles,
    overall_percentiles,
)
from cliffwatch.analytics.runs import get_run, list_runs, run_spans, task_classes
from cliffwatch.analytics.store_access import (
    StoreBusyError,
    StoreError,
    StoreNotFoundError,
    read_store,
)
from cliffwatch.analytics.store_access import store_label as store_label_of
from cliffwatch.dashboard.filters import Filters
from cliffwatch.dashboard.ui import md_text

T = TypeVar("T")

CACHE_TTL_S = 30
"""Seconds a cached result lives even if the store did not change: durations such as
"last 24 hours" end at the time of the query, so they must be re-evaluated now and then."""

RUN_POINTS_LIMIT = 20_000
"""At most this many runs (the newest) are drawn as points in the distribution chart: a
browser draws tens of thousands of points smoothly, millions not at all."""

BUSY_RETRIES = 2
"""Reruns of a page whose store stayed locked past the lock timeout before giving up."""

BUSY_PAUSE_S = 1.0
"""Pause before such a rerun (the timeout itself was already spent retrying)."""

_BUSY_KEY = "cliffwatch_busy_tries"

NO_STORE_MESSAGE = (
    "There is no cliffwatch database at {path} yet. Run `cliffwatch demo` to fill one "
    "with a month of simulated runs, or point `CLIFFWATCH_DB` at your store."
)
EMPTY_STORE_MESSAGE = (
    "The cliffwatch database at {path} has no runs yet. Run `cliffwatch demo` to fill it "
    "with a month of simulated runs, or send spans to it from your pipeline."
)


def store_path() -> Path | str:
    """The store the dashboard reads: ``$CLIFFWATCH_DB``, else the default path; a
    ClickHouse store URL (``clickhouse://``, ``chdb://``) stays the URL text."""
    url = settings.db_url()
    return url if settings.is_engine_store(url) else Path(url)


def store_label() -> str:
    """The store as the pages show it: its path, or its URL without the password."""
    try:
        return store_label_of(store_path())
    except StoreError:
        return "(a store URL that does not parse)"


def store_version(path: Path | str) -> tuple[int, ...]:
    """Modification time (ns) and size of the store file and its WAL; zeros when missing.

    Part of every cache key, so results are re-read as soon as another process writes. A
    ClickHouse store has no file to look at: its results live :data:`CACHE_TTL_S`.
    """
    if isinstance(path, str):
        return ()
    parts: list[int] = []
    for file in (path, path.with_name(path.name + ".wal")):
        try:
            stat = file.stat()
        except OSError:
            parts += [0, 0]
        else:
            parts += [stat.st_mtime_ns, stat.st_size]
    return tuple(parts)


def _selected(df: pl.DataFrame, filters: Filters) -> pl.DataFrame:
    # analytics filters on one class at a time; several are filtered here, by row.
    if len(filters.task_classes) < 2 or df.is_empty():
        return df
    return df.filter(pl.col("task_class").is_in(list(filters.task_classes)))


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows, for one set of filters.

    Attributes:
        percentiles: :func:`analytics.percentiles.cost_percentiles` rows of the selection.
        overall: :func:`analytics.percentiles.overall_percentiles` of the selection: one
            row over every matching run (the headline runs, spend and P50/P95/P99), empty
            when nothing matched.
        daily: :func:`analytics.percentiles.daily_percentiles` rows of the selection.
        runs: :func:`analytics.runs.list_runs` of the selection, newest first, at most
            :data:`RUN_POINTS_LIMIT` rows.
        runs_truncated: more runs matched than ``runs`` holds.
        cap_dates: per class in ``daily``, the first day one of its runs had a
            max-workers cap (None: never capped).
        open_incidents: incidents with status ``open`` in the selection.
    """

    percentiles: pl.DataFrame
    overall: pl.DataFrame
    daily: pl.DataFrame
    runs: pl.DataFrame
    runs_truncated: bool
    cap_dates: dict[str, date | None]
    open_incidents: int


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_task_classes(db: str, version: tuple[int, ...]) -> list[str]:
    """The task classes that have runs in the store, sorted (empty: the store has no run).

    Raises:
        StoreError: the store is missing, not a store, or busy.
    """
    with read_store(db) as con:
        return task_classes(con)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_overview(db: str, version: tuple[int, ...], filters: Filters) -> Overview:
    """The overview's data (see :class:`Overview`) in one read-only open of ``db``.

    Raises:
        StoreError: the store is missing, not a store, or busy.
        AnalyticsError: a filter names an unknown class or makes an empty window.
    """
    window = filters.window()
    only = filters.only_class()
    with read_store(db) as con:
        percentiles = _selected(cost_percentiles(con, window, task_class=only), filters)
        overall = overall_percentiles(con, window, task_classes=filters.task_classes)
        daily = _selected(daily_percentiles(con, window, task_class=only), filters)
        runs = _selected(
            list_runs(con, window, task_class=only, limit=RUN_POINTS_LIMIT + 1), filters
        )
        cap_dates = {
            c: cap_start_date(con, task_class=c) for c in daily["task_class"].unique().sort()
        }
        incidents = _selected(
            list_incidents(con, window, status="open", task_class=only), filters
        )
    runs, truncated = runs.head(RUN_POINTS_LIMIT), runs.height > RUN_POINTS_LIMIT
    return Overview(
        percentiles=percentiles,
        overall=overall,
        daily=daily,
        runs=runs,
        runs_truncated=truncated,
        cap_dates=cap_dates,
        open_incidents=incidents.height,
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_incidents(db: str, version: tuple[int, ...], filters: Filters) -> pl.DataFrame:
    """:func:`analytics.incidents.list_incidents` for the filters, newest first.

    Raises:
        StoreError, AnalyticsError: as :func:`load_overview`.
    """
    with read_store(db) as con:
        found = list_incidents(con, filters.window(), task_class=filters.only_class())
    return _selected(found, filters)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_run(
    db: str, version: tuple[int, ...], run_id: str
) -> tuple[dict[str, Any], pl.DataFrame]:
    """One run's ``runs`` row and its spans (:func:`analytics.runs.run_spans`).

    Raises:
        RunNotFoundError: no run has that id (or unique prefix).
        StoreError: as :func:`load_overview`.
    """
    with read_store(db) as con:
        return get_run(con, run_id), run_spans(con, run_id)


def known_task_classes() -> list[str]:
    """The store's task classes for the sidebar; [] while the store cannot be read (the
    page then says why, through :func:`fetch`)."""
    path = store_path()
    try:
        return load_task_classes(str(path), store_version(path))
    except StoreError:
        return []


def fetch(loader: Callable[..., T], *args: Any) -> T:
    """Call a ``load_*`` function on the current store; stop the page on a store problem.

    A missing store gets an ``st.info`` telling the user to run ``cliffwatch demo``; a
    store still locked after the lock timeout gets ``st.warning`` and a rerun (up to
    :data:`BUSY_RETRIES` times), then ``st.error``; anything else the store or analytics
    reject gets ``st.error`` with their one-line message. Never a traceback.

    Args:
        loader: one of this module's ``load_*`` functions.
        *args: its arguments after ``db`` and ``version``.

    Returns:
        What ``loader`` returned.
    """
    path = store_path()
    try:
        result = loader(str(path), store_version(path), *args)
    except StoreNotFoundError:
        st.info(NO_STORE_MESSAGE.format(path=md_text(store_label())))
        st.stop()
    except StoreBusyError as exc:
        tries = st.session_state.get(_BUSY_KEY, 0)
        if tries < BUSY_RETRIES:
            st.session_state[_BUSY_KEY] = tries + 1
            st.warning(f"Store busy, retrying ({tries + 1}/{BUSY_RETRIES}): {md_text(exc)}")
            time.sleep(BUSY_PAUSE_S)
            st.rerun()
        st.session_state[_BUSY_KEY] = 0
        st.error(f"{md_text(exc)}. Another process is still writing to it: "
                 "reload the page to retry.")
        st.stop()
    except (StoreError, AnalyticsError) as exc:
        st.error(md_text(exc))
        st.stop()
    st.session_state[_BUSY_KEY] = 0
    return result


def cliff_ratio() -> float:
    """The P99 / P50 above which a class is flagged as a Cost Cliff: the threshold the
    findings use too (``settings.findings_cliff_ratio()``, default 10: the handbook's P99
    ~ 10x P50). A value that cannot be read stops the page with ``st.error``.

    Read on every run, outside the cached loaders, so it is never served stale.
    """
    try:
        return settings.findings_cliff_ratio()
    except settings.SettingError as exc:
        st.error(md_text(exc))
        st.stop()


def stop_if_no_runs() -> None:
    """Say plainly that the store holds no run yet, and how to fill it, and stop the page.

    Call after a :func:`fetch` of the page's own data came back empty.
    """
    if not fetch(load_task_classes):
        st.info(EMPTY_STORE_MESSAGE.format(path=md_text(store_label())))
        st.stop()
