"""What the pages show, read from the store through analytics/, cached, with store problems
turned into plain messages on the page.

Each ``load_*`` function opens the store read-only once (``analytics.store_access.
read_store``: short-lived, retries while a writer holds the lock), calls analytics/ and
returns plain data. They are cached with ``st.cache_data`` keyed on the store path, the
store's write version (:func:`store_version`: what the writers last changed, so a write
by another process shows at the next rerun and, until then, every rerun and visitor
reuses the result) and the filters; a window that moves with the clock ("last 24 hours")
adds the time, in :data:`RELATIVE_WINDOW_S` periods (:func:`clock_part`). Pages call them
through :func:`fetch`, the edge where store and analytics errors become ``st.info`` /
``st.warning`` / ``st.error``.
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
from cliffwatch.analytics import result_cache
from cliffwatch.analytics.errors import AnalyticsError
from cliffwatch.analytics.incidents import list_incidents
from cliffwatch.analytics.percentiles import (
    cap_start_dates,
    cost_percentiles,
    daily_percentiles,
    overall_percentiles,
)
from cliffwatch.analytics.rollup_read import write_version
from cliffwatch.analytics.runs import get_run, list_runs, run_spans, task_classes
from cliffwatch.analytics.store_access import (
    StoreBusyError,
    StoreError,
    StoreNotFoundError,
    read_store,
)
from cliffwatch.analytics.store_access import store_label as store_label_of
from cliffwatch.analytics.upper_bound import cache_detail_missing_calls, upper_bound_note
from cliffwatch.dashboard import ui
from cliffwatch.dashboard.filters import ALL_TIME, Filters
from cliffwatch.dashboard.ui import md_text

T = TypeVar("T")

CACHE_TTL_S = 900
"""Seconds a cached result lives at most: results are keyed by the store's write version
(:func:`store_version`), so this only bounds how long an entry a write made obsolete stays
in memory (and a write the version could not see)."""

RELATIVE_WINDOW_S = 30
"""A window that moves with the clock (``since=24h``) is read again after this many
seconds even without a write (:func:`clock_part`)."""

RUN_POINTS_LIMIT = 5_000
"""At most this many runs (the newest) are drawn as points in the Overview's distribution
chart (the What-if page draws half as many runs, two points each); the marks and tables use
every run. Each point carries its run id and hover text: 20,000 made a 2 MB figure whose
parsing and drawing held the browser's main thread for seconds, delaying every element of
the page (the What-if page 5.5 s against 3.6 s, the Overview 5.0 s against 3.3 s to first
paint with 5,000, at a million runs, median of 3 side by side, load 4-5)."""

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


def _file_signature(path: Path) -> tuple[int, ...]:
    parts: list[int] = []
    for file in (path, path.with_name(path.name + ".wal")):
        try:
            stat = file.stat()
        except OSError:
            parts += [0, 0]
        else:
            parts += [stat.st_mtime_ns, stat.st_size]
    return tuple(parts)


VERSION_TIMEOUT_S = 0.5
"""How long :func:`store_version` waits for a store a writer holds before versioning it by
its file signature (the loader then waits the full lock timeout itself)."""

_VERSIONS: dict[Path, tuple[tuple[int, ...], tuple[int, ...]]] = {}
"""Per store: the file signature last seen and the write version read then."""


ENGINE_VERSION_PERIOD_S = 30.0
"""How long a page reuses what it read from a ClickHouse store: such a store has no file to
look at, so its version is the number of these periods since the epoch."""


def store_version(path: Path | str) -> tuple[int, ...]:
    """The store's write version: part of every cache key, so results are reused until a
    writer changes what the pages show, and re-read at the next rerun after it did. A
    ClickHouse store (a URL) is versioned by :data:`ENGINE_VERSION_PERIOD_S` periods.

    The modification time and size of the file and its WAL are checked first (two
    ``stat`` calls); only when they moved is the store opened to read
    :func:`analytics.rollup_read.write_version` (one query over small tables), so a
    checkpoint or a write that changed nothing shown keeps the cache. A store without
    roll-ups (schema before 5), or one that cannot be read now, is versioned by the file
    signature itself (the page's loader then says what is wrong).
    """
    if isinstance(path, str):
        return (2, int(time.time() // ENGINE_VERSION_PERIOD_S))
    signature = _file_signature(path)
    known = _VERSIONS.get(path)
    if known is not None and known[0] == signature:
        return known[1]
    version: tuple[int, ...] | None = None
    if signature[:2] != (0, 0):
        try:
            with read_store(path, timeout_s=VERSION_TIMEOUT_S) as con:
                version = write_version(con)
        except StoreError:
            version = None
    result = (1, *version) if version is not None else (0, *signature)
    if version is not None:
        _VERSIONS[path] = (signature, result)
    return result


def clock_part(args: tuple[Any, ...], now_s: float | None = None) -> tuple[int, ...]:
    """``(n,)`` when one of ``args`` is a :class:`Filters` whose window moves with the
    clock (``7d``, ``24h``, ``today``): the number of :data:`RELATIVE_WINDOW_S` periods
    since the epoch, so such a result is read again after at most that long; ``()`` for
    fixed windows, which stay cached until a write."""
    for arg in args:
        if isinstance(arg, Filters) and arg.moves_with_clock():
            return (int((time.time() if now_s is None else now_s) // RELATIVE_WINDOW_S),)
    return ()


def persisted_key(kind: str, db: str, version: tuple[int, ...], filters: Filters,
                  **params: Any) -> str | None:
    """:func:`analytics.result_cache.analysis_key` of an analysis of ``filters``' window and
    class (``filters.only_class()``: a page filters several classes itself); None when the
    result must not outlive this process (a window from the clock, a version that is not
    the store's write version).

    Args:
        kind: the analysis (``"findings"``, ``"whatif"``).
        db, version: as every ``load_*`` function gets them (:func:`fetch`).
        filters: the sidebar's selection.
        **params: the analysis' other parameters (limits, thresholds), JSON-able.

    Raises:
        WindowError: the filters' window cannot be read.
    """
    written = version[1:] if version[:1] == (1,) else None  # see store_version
    ends = (None if filters.since == ALL_TIME else filters.since, filters.until or None)
    return result_cache.analysis_key(kind, db, written, filters.window(), ends,
                                     filters.only_class(), **params)


def _selected(df: pl.DataFrame, filters: Filters) -> pl.DataFrame:
    # analytics filters on one class at a time; several are filtered here, by row.
    if len(filters.task_classes) < 2 or df.is_empty():
        return df
    return df.filter(pl.col("task_class").is_in(list(filters.task_classes)))


@dataclass(frozen=True, slots=True)
class Overview:
    """The overview's figures for one set of filters: what the page paints first.

    Attributes:
        percentiles: :func:`analytics.percentiles.cost_percentiles` rows of the selection.
        overall: :func:`analytics.percentiles.overall_percentiles` of the selection: one
            row over every matching run (the headline runs, spend and P50/P95/P99), empty
            when nothing matched.
        open_incidents: incidents with status ``open`` in the selection.
        upper_bound: :func:`analytics.upper_bound.upper_bound_note` of the selection's
            calls (None: no call behind the figures lacks cache detail).
    """

    percentiles: pl.DataFrame
    overall: pl.DataFrame
    open_incidents: int
    upper_bound: str | None


@dataclass(frozen=True, slots=True)
class OverviewCharts:
    """The overview's chart data for one set of filters, read after its figures are drawn.

    Attributes:
        daily: :func:`analytics.percentiles.daily_percentiles` rows of the selection (the
            store's per-day roll-ups for the window's full days).
        runs: :func:`analytics.runs.list_runs` of the selection, newest first, at most
            :data:`RUN_POINTS_LIMIT` rows.
        runs_truncated: more runs matched than ``runs`` holds.
        cap_dates: per class in ``daily``, the first day one of its runs had a
            max-workers cap (None: never capped).
    """

    daily: pl.DataFrame
    runs: pl.DataFrame
    runs_truncated: bool
    cap_dates: dict[str, date | None]


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
    """The overview's figures (see :class:`Overview`) in one read-only open of ``db``:
    exact ``quantile_cont`` over the window's runs (one open for everything above the
    first table: an open of a 1M-run store is about 50 ms).

    Raises:
        StoreError: the store is missing, not a store, or busy.
        AnalyticsError: a filter names an unknown class or makes an empty window.
    """
    window = filters.window()
    only = filters.only_class()
    with read_store(db) as con:
        percentiles = _selected(cost_percentiles(con, window, task_class=only), filters)
        overall = overall_percentiles(con, window, task_classes=filters.task_classes)
        incidents = _selected(
            list_incidents(con, window, status="open", task_class=only), filters
        )
        missing = cache_detail_missing_calls(con, window, task_classes=filters.task_classes)
    return Overview(percentiles=percentiles, overall=overall, open_incidents=incidents.height,
                    upper_bound=upper_bound_note(missing))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_overview_charts(db: str, version: tuple[int, ...], filters: Filters) -> OverviewCharts:
    """The overview's chart data (see :class:`OverviewCharts`) in one read-only open.

    Raises:
        StoreError, AnalyticsError: as :func:`load_overview`.
    """
    window = filters.window()
    only = filters.only_class()
    with read_store(db) as con:
        daily = _selected(daily_percentiles(con, window, task_class=only), filters)
        runs = _selected(
            list_runs(con, window, task_class=only, limit=RUN_POINTS_LIMIT + 1), filters
        )
        cap_dates = cap_start_dates(con, daily["task_class"].unique().sort().to_list())
    return OverviewCharts(
        daily=daily,
        runs=runs.head(RUN_POINTS_LIMIT),
        runs_truncated=runs.height > RUN_POINTS_LIMIT,
        cap_dates=cap_dates,
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
        result = loader(str(path), (*store_version(path), *clock_part(args)), *args)
    except StoreNotFoundError:
        st.info(NO_STORE_MESSAGE.format(path=md_text(store_label())))
        ui.stop()
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
        ui.stop()
    except (StoreError, AnalyticsError) as exc:
        st.error(md_text(exc))
        ui.stop()
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
        ui.stop()


def stop_if_no_runs() -> None:
    """Say plainly that the store holds no run yet, and how to fill it, and stop the page.

    Call after a :func:`fetch` of the page's own data came back empty.
    """
    if not fetch(load_task_classes):
        st.info(EMPTY_STORE_MESSAGE.format(path=md_text(store_label())))
        ui.stop()
