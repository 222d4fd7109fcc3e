"""What the Replay, What-if and Report pages show, and the actions they start.

Reads are cached like :mod:`dashboard.queries` (keyed on the store path, its version and
the request) and called through :func:`dashboard.queries.fetch`, which turns store and
analytics errors into page messages.

A report file (:func:`report_file`) is built in this process, as ``cliffwatch report``
builds it: :func:`analytics.report.build_report` with the workload's configured caps,
rendered by :func:`analytics.report_render.report_bytes`. A live re-run
(:func:`live_rerun`) runs the ``cliffwatch`` command line in a child process instead: it
calls models through the orchestrator and writes a new run, and a child process keeps
litellm and the write lock out of the Streamlit server. Its errors come back as
:class:`ActionError` with the command's one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

import polars as pl
import streamlit as st

from cliffwatch import settings
from cliffwatch.analytics import result_cache
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.recorded import Estimates
from cliffwatch.analytics.replay import LimitsOverride, Replay, replay
from cliffwatch.analytics.report import build_report
from cliffwatch.analytics.report_render import report_bytes
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.whatif import WhatIf, what_if
from cliffwatch.dashboard.filters import Filters
from cliffwatch.dashboard.queries import CACHE_TTL_S, persisted_key, store_path
from cliffwatch.errors import CliffwatchError
from cliffwatch.orchestrator.workload import configured_limits

LIVE_RERUN_TIMEOUT_S = 600
"""Longest a live re-run may take (a real provider's run can take minutes)."""

_CLI = "from cliffwatch.cli import main; main()"

CHANGED_ROWS_SHOWN = 1_000
"""At most this many rows of the What-if page's table of runs the limits change (those with
the largest saving): a browser table of a million rows is megabytes sent on every run; the
page's CSV holds every run."""


class ActionError(CliffwatchError):
    """A live re-run that could not be made; the message is one line."""


@st.cache_resource(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def class_estimates(db: str, version: tuple[int, ...], task_class: str,
                    _con: Any = None) -> Estimates:
    """:func:`analytics.estimates.load_estimates` of one class: read from every recorded
    run of the class (seconds at a million runs), so read once per class and store
    version and shared by every replay of that class's runs (a frozen dataclass: one
    object for every session, never copied).

    Args:
        db, version, task_class: what the result is cached by.
        _con: an open connection to ``db`` (:func:`read_store`'s) to read with, not part
            of the key; None: the store is opened for the read.

    Raises:
        StoreError: the store is missing, not a store, or busy.
    """
    if _con is not None:
        return load_estimates(_con, task_class)
    with read_store(db) as con:
        return load_estimates(con, task_class)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_replay(
    db: str, version: tuple[int, ...], run_id: str, override: LimitsOverride
) -> Replay:
    """:func:`analytics.replay.replay` of ``run_id`` under ``override`` in one read-only
    open; its class's estimates, when the replay asks for one (most replays need none:
    :class:`analytics.replay.OnDemandEstimates`), from :func:`class_estimates` (the same
    figures ``replay`` reads itself).

    Raises:
        RunNotFoundError, ReplayError: a bad run id or limit.
        StoreError: the store is missing, not a store, or busy.
    """
    with read_store(db) as con:
        return replay(con, run_id, override,
                      estimates=lambda task_class: class_estimates(db, version, task_class,
                                                                   _con=con))


WHATIF_CACHE_ENTRIES = 4
"""What-if results kept at once (each holds a row per run: about 100 MB at a million)."""


@st.cache_resource(ttl=CACHE_TTL_S, max_entries=WHATIF_CACHE_ENTRIES, show_spinner=False)
def load_whatif(
    db: str, version: tuple[int, ...], filters: Filters, override: LimitsOverride
) -> WhatIf:
    """:func:`analytics.whatif.what_if` over the sidebar's window and classes, computed
    once per store version, window, classes and limits: read from the result cache when any
    process computed it (:func:`dashboard.queries.persisted_key`), kept there after.

    Cached as a resource, not as data: the one (frozen) result is shared by every rerun
    and visitor, where ``st.cache_data`` would keep it pickled and unpickle a copy of
    its frames, a row per run, on every page run.

    Raises:
        ReplayError, AnalyticsError, StoreError: as :func:`load_replay`.
    """
    window = filters.window()
    key = persisted_key("whatif", db, version, filters, limits=override.cli_args())

    def compute() -> WhatIf:
        with read_store(db) as con:
            return what_if(con, override, window, filters.only_class())

    what = result_cache.whatif_through(key, override, window, filters.only_class(), compute)
    if len(filters.task_classes) < 2:
        return what
    chosen = list(filters.task_classes)
    return dataclasses.replace(
        what,
        runs=what.runs.filter(pl.col("task_class").is_in(chosen)),
        by_class=what.by_class.filter(pl.col("task_class").is_in(chosen)),
    )


def _run_cli(args: list[str], timeout_s: float) -> str:
    """Run ``cliffwatch <args> --db <store>`` in a child process; its stdout.

    Raises:
        ActionError: it failed (its one-line error) or took longer than ``timeout_s``.
    """
    command = [sys.executable, "-c", _CLI, *args, "--db", str(store_path())]
    env = {**os.environ, settings.CLIFFWATCH_DB: str(store_path())}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ActionError(f"cliffwatch {args[0]} took longer than {timeout_s:g} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise ActionError(lines[-1].removeprefix("error: ") if lines else
                          f"cliffwatch {args[0]} failed (exit code {done.returncode})")
    return done.stdout


def live_rerun(run_id: str, override: LimitsOverride) -> dict[str, Any]:
    """Run ``run_id``'s task again through the orchestrator under ``override``.

    Returns:
        The ``live`` part of ``cliffwatch replay --live --format json``: the new
        ``run_id``, ``status``, ``cost_usd``, ``seed``, ``task_source`` and
        ``comparison`` (rows of figure / original / rerun).

    Raises:
        ActionError: the task cannot be recovered, or the run failed to start.
    """
    out = _run_cli(["replay", run_id, "--live", "--format", "json", *override.cli_args()],
                   LIVE_RERUN_TIMEOUT_S)
    return json.loads(out)["live"]


def report_file(fmt: str, filters: Filters) -> bytes:
    """A report of the sidebar's selection (its window; one class, or every class) in
    ``fmt``, as the bytes of the file to download: html, md or json; csv and parquet as a
    zip of one file per table. The what-if uses each class's configured cap (the
    workload's), else its latest recorded one, as ``cliffwatch report`` does.

    Raises:
        StoreError: the store is missing, not a store, or busy.
        AnalyticsError: the selection cannot be reported on (e.g. an unknown class).
        ValueError: ``fmt`` is not a report format.
    """
    class_limits = configured_limits()
    with read_store(store_path()) as con:
        built = build_report(con, filters.window(), filters.only_class(),
                             class_limits=class_limits)
    return report_bytes(built, fmt)
