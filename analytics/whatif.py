"""What-if over the fleet: every run in a window replayed under other limits, per class.

:func:`what_if` reads the class estimates, then replays every run of the window
(:func:`analytics.whatif_rows.replay_rows`): the counterfactual's arithmetic pushed into
DuckDB, by run-id range chunks, for the runs it decides without following spend charge by
charge, and the Python counterfactual (:func:`analytics.counterfactual.counterfactual`,
the orchestrator's own dispatch layer) for the others (a replan, spend reaching the
ceiling), a chunk of runs at a time; ``tests/test_whatif_sql.py`` holds the two equal.
Memory is bounded by a chunk of calls and the per-run result, not by the spans of the
window. Per task class it reports the runs the new limits change (affected) and, of
those, the runs they would reject, truncate or cancel and the tasks they would leave
undone (:data:`CHANGE_COUNTS`: a run they decide as its record did, such as one rejected
as recorded, is not counted: every count is a subset of the affected runs), spend and
P50/P95/P99 cost per run before and after, the saving in dollars and percent, and that
saving projected over a year at the window's rate.

Savings count the work still to do. A run the new limits reject or cancel (or make fail)
where the record completed it costs its planner calls (and any work done before the
cancel) *plus* the task redone within the limits, estimated from the class's runs that
completed within them (:mod:`analytics.redo`: their mean cost); such tasks, and those of
affected runs the record left undone too (a run cancelled as recorded that the limits
reject), are counted in ``tasks_not_completed``; a run left undone as recorded and not
changed by the limits is not. When a class has no run
that completed within the limits, that redo cannot be estimated: the runs' cost after,
and the class's spend, percentiles and saving after, are None (unknown), and
``tasks_redo_unknown`` counts them.

Percentiles are continuous (linear interpolation, numpy's default and DuckDB's
``quantile_cont``), over one cost per run. The year projection is
``saving_usd x 365 / window_days``, where the window runs from ``--since`` (else the
first run's start) to ``--until`` (else now when ``--since`` is given, else the last
run's start), the first and last run being those of every class in the store's window
(:func:`window_days`): one length for all classes, so a class's yearly figure is the same
with ``--task-class`` as without it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics import bulk_read
from cliffwatch.analytics.bulk_read import run_bounded
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.recorded import Estimates
from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.runs import require_task_class, run_span
from cliffwatch.analytics.whatif_rows import (
    RUN_COLUMNS,
    RUN_SCHEMA,
    Overrides,
    RunFilter,
    override_for,
    python_rows,
    replay_rows,
)
from cliffwatch.analytics.window import Window, utc_now
from cliffwatch.formatting import number, usd
from cliffwatch.telemetry.conventions import RunStatus

DAYS_PER_YEAR = 365.0

CLASS_COLUMNS: tuple[str, ...] = (
    "task_class", "limits", "runs", "runs_affected", "runs_rejected", "runs_truncated",
    "runs_cancelled", "tasks_not_completed", "runs_estimated", "runs_not_replayable",
    "spend_before_usd", "spend_after_usd", "p50_before_usd", "p50_after_usd",
    "p95_before_usd", "p95_after_usd", "p99_before_usd", "p99_after_usd", "saving_usd",
    "saving_pct", "annual_saving_usd", "estimated_usd", "redo_usd", "tasks_redo_unknown",
)
"""Columns of :attr:`WhatIf.by_class`, in order."""

def _of_affected(flag: pl.Expr) -> pl.Expr:
    return (pl.col("affected") & flag).sum()


CHANGE_COUNTS: dict[str, pl.Expr] = {
    "runs_affected": pl.col("affected").sum(),
    "runs_rejected": _of_affected(pl.col("status_after") == RunStatus.REJECTED.value),
    "runs_cancelled": _of_affected(pl.col("status_after") == RunStatus.CANCELLED.value),
    "tasks_not_completed": _of_affected(pl.col("not_completed")),
}
"""The what-if's run counts over a frame of :data:`RUN_COLUMNS` rows, as aggregations
(one place for :class:`WhatIf`'s ``by_class`` and ``totals()`` and the findings'
evidence): the runs the limits change (``affected``) and, of those, the ones they reject,
cancel or leave undone. A run the limits decide as its record did (one rejected as
recorded) is none of them: every count is of what the new limits change, a subset of
``runs_affected``."""

COUNTS_NOTE = ("Rejected, truncated, cancelled and not completed count the affected runs "
               "only: a run the limits decide as its record did (one rejected as recorded) "
               "is not counted")
"""The one sentence the CLI, the What-if page and the report say under the counts of
:data:`CHANGE_COUNTS`, as it is (capitalised, without its full stop) in all three."""


def window_days(
    con: duckdb.DuckDBPyConnection, window: Window, now: datetime | None = None
) -> float | None:
    """Length of the window in days, for the year projection (see the module docstring).

    One length for every class: ``window``'s own ends where it has them, else the first
    and last start of the store's runs in it *of every class* (:func:`analytics.runs.
    run_span`), whatever class a what-if or the findings look at, so that a class's
    yearly figure is the same with or without a class filter.

    Returns:
        Days (> 0), or None when the window has no length (one run, no ``--since``).
    """
    since, until = window.since, window.until
    if since is None:
        first, last = run_span(con, window)
        if first is None or last is None:
            return None
        since, until = first, until or last
    elif until is None:
        until = now or utc_now()
    days = (until - since).total_seconds() / 86_400.0
    return days if days > 0 else None


def _by_class(runs: pl.DataFrame, days: float | None, overrides: Overrides) -> pl.DataFrame:
    def q(column: str, quantile: float, name: str) -> pl.Expr:
        return pl.col(column).quantile(quantile, interpolation="linear").alias(name)

    per_class = runs.with_columns(pl.col("task_class").cast(pl.String)).group_by("task_class").agg(
        pl.len().alias("runs"),
        *(count.alias(name) for name, count in CHANGE_COUNTS.items()),
        _of_affected(pl.col("_truncated")).alias("runs_truncated"),
        pl.col("_estimated").sum().alias("runs_estimated"),
        (~pl.col("replayable")).sum().alias("runs_not_replayable"),
        pl.col("cost_before_usd").sum().alias("spend_before_usd"),
        pl.col("cost_after_usd").sum().alias("spend_after_usd"),
        q("cost_before_usd", 0.5, "p50_before_usd"),
        q("cost_after_usd", 0.5, "p50_after_usd"),
        q("cost_before_usd", 0.95, "p95_before_usd"),
        q("cost_after_usd", 0.95, "p95_after_usd"),
        q("cost_before_usd", 0.99, "p99_before_usd"),
        q("cost_after_usd", 0.99, "p99_after_usd"),
        pl.col("estimated_usd").sum().alias("estimated_usd"),
        pl.col("redo_usd").sum().alias("redo_usd"),
        pl.col("redo_usd").is_null().sum().alias("tasks_redo_unknown"),
    )
    # A run whose redo cannot be estimated has no cost after: nor has its class.
    unknown = pl.col("tasks_redo_unknown") > 0
    per_class = per_class.with_columns(
        pl.when(unknown).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("spend_after_usd", "p50_after_usd", "p95_after_usd", "p99_after_usd")
    )
    saving = pl.col("spend_before_usd") - pl.col("spend_after_usd")
    return (
        per_class.with_columns(saving.alias("saving_usd"))
        .with_columns(
            pl.when(pl.col("spend_before_usd") > 0)
            .then(100.0 * pl.col("saving_usd") / pl.col("spend_before_usd"))
            .alias("saving_pct"),
            (pl.col("saving_usd") * DAYS_PER_YEAR / days if days else pl.lit(None))
            .cast(pl.Float64)
            .alias("annual_saving_usd"),
        )
        .with_columns(
            pl.col(pl.UInt32).cast(pl.Int64),
            pl.col("task_class")
            .map_elements(lambda c: override_for(overrides, c).describe(),
                          return_dtype=pl.String)
            .alias("limits"),
        )
        .select(CLASS_COLUMNS)
        .sort("task_class")
    )


@dataclass(frozen=True, slots=True)
class WhatIf:
    """The counterfactual over every run of a window.

    Attributes:
        overrides: the limits asked for (one for all classes, or per class).
        window: the window of run starts.
        task_class: the one class looked at, or None for all.
        runs: :data:`RUN_COLUMNS`, one row per run (oldest first): its cost and status
            before (recorded) and after (counterfactual, with the estimated redo of a
            task the limits leave undone; None when that redo has no estimate),
            ``estimated_usd`` the estimated part of ``cost_after_usd``, ``redo_usd`` the
            redo in it (0 when none, None when unknown), ``not_completed`` whether the
            limits leave the task undone (rejected, cancelled, or failed where the record
            completed), ``affected`` whether
            anything changed.
        by_class: :data:`CLASS_COLUMNS`, one row per class: runs, runs affected and, of
            the affected runs (:data:`CHANGE_COUNTS`), rejected, truncated (a sub-task not
            dispatched), cancelled (spend over the ceiling), ``tasks_not_completed``
            (tasks the limits leave undone: rejected, cancelled, or failed where the
            record completed); runs with an estimated figure, not replayable (kept at
            their recorded cost); spend and P50/P95/P99 per run before and after (USD);
            saving in USD and percent of the spend before; ``annual_saving_usd`` the
            saving projected over a year (None without a window length);
            ``estimated_usd`` the estimated part of the spend after, ``redo_usd`` the redo
            in it; ``tasks_redo_unknown`` the tasks left undone whose redo cannot be
            estimated (then every "after" figure and the saving are None); ``limits`` the
            override its runs were replayed under (what is not overridden stays as each
            run recorded it).
        window_days: the window's length in days (None: no length).
        elapsed_s: wall-clock seconds the load and the replays took.
        load_s: of which reading the class estimates (0 when the caller gave them).
        python_runs: runs replayed by the Python counterfactual (the rest in DuckDB).
    """

    overrides: Overrides
    window: Window
    task_class: str | None
    runs: pl.DataFrame
    by_class: pl.DataFrame
    window_days: float | None
    elapsed_s: float
    load_s: float
    python_runs: int = 0

    def totals(self) -> dict[str, Any]:
        """Figures over every class: runs, affected, tasks not completed (of the affected
        runs, :data:`CHANGE_COUNTS`), spend
        before/after, saving (USD, %), annual saving, estimated part and the redo in it
        (USD), tasks whose redo cannot be estimated (then spend after and every saving
        are None)."""
        runs = self.runs
        before = float(runs["cost_before_usd"].sum())
        unknown = runs["redo_usd"].null_count()
        after = None if unknown else float(runs["cost_after_usd"].sum())
        saving = None if after is None else before - after
        counts = runs.select(count.alias(name) for name, count in CHANGE_COUNTS.items())
        return {
            "runs": runs.height,
            "runs_affected": int(counts["runs_affected"].item()),
            "tasks_not_completed": int(counts["tasks_not_completed"].item()),
            "spend_before_usd": before,
            "spend_after_usd": after,
            "saving_usd": saving,
            "saving_pct": 100.0 * saving / before if saving is not None and before > 0
            else None,
            "annual_saving_usd": saving * DAYS_PER_YEAR / self.window_days
            if saving is not None and self.window_days else None,
            "estimated_usd": float(runs["estimated_usd"].sum()),
            "redo_usd": float(runs["redo_usd"].sum()),
            "tasks_redo_unknown": unknown,
        }

    def headline(self) -> str:
        """One line over every class: runs, affected, tasks left undone, spend before and
        after, the saving (with the estimated redo of work left undone; "unknown" when it
        cannot be estimated) and its yearly projection."""
        t = self.totals()
        line = f"all classes: {number(t['runs'])} runs, {number(t['runs_affected'])} affected"
        if t["tasks_not_completed"]:
            line += (f", {number(t['tasks_not_completed'])} tasks not completed (their redo "
                     f"within the limits estimated at {usd(t['redo_usd'])})")
        if t["saving_usd"] is None:
            return (f"{line}; spend {usd(t['spend_before_usd'])} -> unknown, saving unknown: "
                    f"{number(t['tasks_redo_unknown'])} tasks left undone have no run of their "
                    "class that completed within the limits to estimate their redo from")
        pct = "-" if t["saving_pct"] is None else f"{number(t['saving_pct'], 1)}%"
        year = ("" if t["annual_saving_usd"] is None else
                f", {usd(t['annual_saving_usd'])} a year at this window's rate "
                f"({self.window_days:.1f} days)")
        return (f"{line}; spend {usd(t['spend_before_usd'])} -> {usd(t['spend_after_usd'])}, "
                f"saving {usd(t['saving_usd'])} ({pct}){year}")

    def describe(self) -> str:
        """One line naming the limits replayed under."""
        if isinstance(self.overrides, LimitsOverride):
            return self.overrides.describe()
        return "; ".join(f"{c}: {o.describe()}" for c, o in sorted(self.overrides.items()))

    def to_dict(self) -> dict[str, Any]:
        """The limits, the window (naive UTC datetimes or None), timing, totals and the
        per-class rows, for :func:`analytics.plain.json_text`."""
        return {
            "limits": self.describe(),
            "since": self.window.since,
            "until": self.window.until,
            "task_class": self.task_class,
            "window_days": self.window_days,
            "elapsed_s": self.elapsed_s,
            "totals": self.totals(),
            "by_class": self.by_class.to_dicts(),
        }


def what_if(
    con: duckdb.DuckDBPyConnection,
    overrides: Overrides,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
    *,
    now: datetime | None = None,
    pushdown: bool = True,
    estimates: Estimates | None = None,
) -> WhatIf:
    """Replay every run started in ``window`` under ``overrides``.

    Args:
        con: a store connection.
        overrides: one :class:`LimitsOverride` for all, or ``{task_class: override}``.
        window: on the run's ``started_at``.
        task_class: only this class (it must exist in the store).
        now: the end of an open window with a ``since`` (default the clock).
        pushdown: compute the runs the SQL can decide in DuckDB
            (:func:`analytics.whatif_rows.replay_rows`); False replays every run with the
            Python counterfactual (the reference; slower, same figures).
        estimates: the class estimates of ``task_class`` when the caller has them already
            (:func:`analytics.estimates.load_estimates`; they do not depend on the limits).

    Returns:
        The :class:`WhatIf`.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
        ReplayError: an override gives invalid limits for some run.
    """
    return what_ifs(con, [overrides], window, task_class, now=now, pushdown=pushdown,
                    estimates=estimates)[0]


def what_ifs(
    con: duckdb.DuckDBPyConnection,
    variants: Sequence[Overrides],
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
    *,
    now: datetime | None = None,
    pushdown: bool = True,
    estimates: Estimates | None = None,
    keeps: Sequence[RunFilter | None] | None = None,
    summaries: Sequence[bool] | None = None,
) -> list[WhatIf]:
    """:func:`what_if` under each of ``variants``, in order, from one read of the calls
    (the pushed-down SQL computes every variant in the same pass). Arguments, errors and
    figures as :func:`what_if`'s; ``keeps``, per variant, a
    :data:`analytics.whatif_rows.RunFilter` of the runs it replays (None, or a None
    entry: every run of the window): a variant's rows and figures are then over the runs
    it keeps. ``summaries``, per variant, True when only its ``by_class`` and
    ``window_days`` are wanted (pushed down: its per-run rows are summed as read, never
    sorted into one frame, :func:`analytics.whatif_rows.replay_rows`): its ``runs`` are
    then empty (its ``totals()`` not to be read)."""
    began = time.perf_counter()
    if task_class is not None:
        require_task_class(con, task_class)
    loaded = began

    def replay() -> list[tuple[pl.DataFrame, int]]:
        nonlocal loaded
        known = load_estimates(con, task_class) if estimates is None else estimates
        loaded = time.perf_counter()
        if pushdown:
            return replay_rows(con, variants, window, task_class, known, keeps, summaries)
        return [(rows, rows.height) for rows in (
            python_rows(con, overrides, window, task_class, known, keep)
            for overrides, keep in zip(variants, keeps or [None] * len(variants),
                                       strict=True))]

    # read under the what-if's bound when it reads its own class estimates (the whatif
    # command, the What-if page); callers that bring theirs (the findings, the report) read
    # under their own
    results = run_bounded(con, replay,
                          limit=bulk_read.WHATIF_MEMORY_LIMIT if estimates is None else None)
    days = window_days(con, window, now)  # the store's window: one for every variant
    out = []
    for overrides, (runs, python_runs) in zip(variants, results, strict=True):
        by_class = _by_class(runs, days, overrides) if runs.height else pl.DataFrame(
            schema={c: pl.Float64 for c in CLASS_COLUMNS}
        ).with_columns(pl.col("task_class", "limits").cast(pl.String))
        if not set(RUN_COLUMNS) <= set(runs.columns):  # a summary's rows
            runs = pl.DataFrame(schema={c: RUN_SCHEMA[c] for c in RUN_COLUMNS})
        out.append(WhatIf(
            overrides=overrides,
            window=window,
            task_class=task_class,
            runs=runs.select(RUN_COLUMNS),
            by_class=by_class,
            window_days=days,
            elapsed_s=time.perf_counter() - began,
            load_s=loaded - began,
            python_runs=python_runs,
        ))
    return out
