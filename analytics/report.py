"""A cost report for a window: computed once as a :class:`Report`, rendered per format.

:func:`build_report` calls the analytics functions once and keeps their DataFrames and
figures; :mod:`analytics.report_render` writes them as HTML (one self-contained file),
Markdown (to paste into a ticket), CSV, JSON or Parquet. The tables, in order
(:data:`REPORT_TABLES`):

- ``summary``: the window, runs, spend, incidents (open ones too), unpriced calls;
- ``percentiles``: per task class, runs, spend, P50/P95/P99 cost per run, cliff ratio
  (P99 / P50) and breaches (:func:`analytics.percentiles.cost_percentiles`);
- ``incidents``: every incident of the window with its run's cost, status and workers;
- ``whatif``: per class, the saving had every run of the window run under the class's
  configured cap and policy (the workload's class config when the caller passes it,
  else the class's latest recorded cap; its ceiling stays as each run recorded it),
  from :func:`analytics.whatif.what_if`: the tasks it leaves undone
  (``tasks_not_completed``) are counted redone within the limits (estimated), and a
  class with nothing to estimate that from has no saving (unknown);
- ``spend_by_model`` / ``spend_by_role``: spend and per-run percentiles per model and
  per role;
- ``unpriced``: models whose calls had no price (their cost is missing, never $0);
- ``findings``: the handbook's anti-patterns found in the window, per class, with the
  fix and its projected yearly saving (:func:`analytics.findings.find_findings`).

Figures: the cost distribution per class with P50/P95/P99 marked, the daily percentile
trend with the cap's first day (both from :mod:`analytics.charts`) and spend before and
after the what-if per class (:mod:`analytics.replay_charts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb
import plotly.graph_objects as go
import polars as pl

from cliffwatch.analytics import charts, replay_charts
from cliffwatch.analytics.bulk_read import run_bounded
from cliffwatch.analytics.findings import REPORT_FINDING_COLUMNS, findings_and_what_if
from cliffwatch.analytics.incidents import list_incidents
from cliffwatch.analytics.percentiles import (
    cap_start_date,
    cost_percentiles,
    daily_percentiles,
    model_and_role_percentiles,
)
from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.runs import list_runs, run_span
from cliffwatch.analytics.store_access import frame
from cliffwatch.analytics.upper_bound import cache_detail_missing_calls, upper_bound_note
from cliffwatch.analytics.whatif import COUNTS_NOTE
from cliffwatch.analytics.window import Window, utc_now
from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.telemetry.conventions import CapPolicy

REPORT_TABLES: dict[str, str] = {
    "summary": "Summary",
    "percentiles": "Cost per run by task class",
    "incidents": "Incidents",
    "whatif": "What-if at each class's configured cap",
    "spend_by_model": "Spend by model",
    "spend_by_role": "Spend by role",
    "unpriced": "Unpriced calls",
    "findings": "Findings: the handbook's anti-patterns",
}
"""Table names (file names in CSV/Parquet output) and their headings, in report order."""

REPORT_FIGURES: dict[str, str] = {
    "distribution": "Cost per run, P50/P95/P99 marked",
    "trend": "Daily P50/P95/P99, one panel per task class",
    "whatif": "Spend before and after the what-if",
}
"""Figure names and their headings, in report order."""

DISTRIBUTION_POINTS_LIMIT = 20_000
"""Runs drawn as points in the distribution figure (the newest): a self-contained HTML
file stays a few MB, and the percentile marks use every run."""


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a report shows, computed once.

    Attributes:
        title: the report's title.
        generated_at: when it was built (naive UTC).
        window: the window of run starts.
        task_class: the one class reported on, or None for all.
        tables: name -> DataFrame, in :data:`REPORT_TABLES` order.
        figures: name -> plotly figure, in :data:`REPORT_FIGURES` order (a figure is
            left out when there is nothing to draw).
        notes: one line under a heading: keyed by table name, or ``figure_<name>``
            for a figure.
    """

    title: str
    generated_at: datetime
    window: Window
    task_class: str | None
    tables: dict[str, pl.DataFrame]
    figures: dict[str, go.Figure] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def describe_window(self) -> str:
        """The runs' start times in words, both ends included, to the minute:
        ``2026-11-01 00:00 to 2026-11-30 23:59 UTC`` for ``--since 2026-11-01 --until
        2026-12-01`` (the exclusive end's last minute). An open end is the first or last
        run's start; with no run there, ``the first run`` / ``now``."""
        summary = self.tables.get("summary")
        first = last = None
        if summary is not None and summary.height:
            first, last = summary["first_run"][0], summary["last_run"][0]
        since = self.window.since or first
        until = self.window.until - timedelta(microseconds=1) if self.window.until else last
        shown_since = since.strftime("%Y-%m-%d %H:%M") if since else "the first run"
        shown_until = until.strftime("%Y-%m-%d %H:%M") if until else "now"
        return f"{shown_since} to {shown_until} UTC"


def _recorded_caps(con: duckdb.DuckDBPyConnection) -> dict[str, Limits]:
    """Each class's latest recorded cap and its policy (classes that had one)."""
    rows = frame(
        con,
        """
        SELECT task_class, arg_max(max_workers, started_at) AS max_workers,
               arg_max(policy, started_at) AS policy
        FROM runs WHERE max_workers IS NOT NULL GROUP BY task_class
        """,
    )
    out: dict[str, Limits] = {}
    for row in rows.iter_rows(named=True):
        try:
            policy = CapPolicy(row["policy"] or CapPolicy.REJECT)
            out[row["task_class"]] = Limits(row["max_workers"], None, policy)
        except ValueError:  # an unknown policy, or a cap Limits refuses (ConfigError)
            continue
    return out


def whatif_overrides(
    con: duckdb.DuckDBPyConnection,
    classes: list[str],
    class_limits: Mapping[str, Limits] | None,
) -> tuple[dict[str, LimitsOverride], dict[str, str]]:
    """Each class's configured cap and policy as an override, and where it came from.

    Args:
        con: a store connection.
        classes: the classes to cover.
        class_limits: the workload's limits per class (``orchestrator.workload``'s class
            configs, passed by the caller); None or a missing class: the class's latest
            recorded cap.

    Returns:
        ``({class: override}, {class: "workload" | "recorded" | "none"})``; a class with
        neither keeps its recorded limits (no change).
    """
    recorded = _recorded_caps(con)
    overrides: dict[str, LimitsOverride] = {}
    sources: dict[str, str] = {}
    for task_class in classes:
        if class_limits and task_class in class_limits:
            limits, source = class_limits[task_class], "workload"
        elif task_class in recorded:
            limits, source = recorded[task_class], "recorded"
        else:
            overrides[task_class], sources[task_class] = LimitsOverride(), "none"
            continue
        overrides[task_class] = LimitsOverride(max_workers=limits.max_workers,
                                               policy=limits.policy)
        sources[task_class] = source
    return overrides, sources


def _incidents(con: duckdb.DuckDBPyConnection, window: Window,
               task_class: str | None) -> pl.DataFrame:
    found = list_incidents(con, window, task_class=task_class)
    runs = frame(
        con,
        """
        SELECT run_id, status AS run_status, cost_usd AS run_cost_usd,
               workers_proposed, workers_dispatched, max_workers
        FROM runs WHERE list_contains($ids, run_id)
        """,
        {"ids": found["run_id"].to_list()},
    )
    return found.join(runs, on="run_id", how="left").select(
        "incident_id", "kind", "status", "task_class", "detected_at", "run_id", "run_status",
        "run_cost_usd", "workers_proposed", "workers_dispatched", "max_workers", "detail",
        "note",
    )


def _summary(
    percentiles: pl.DataFrame, incidents: pl.DataFrame, span: tuple[Any, Any],
    window: Window, generated_at: datetime,
) -> pl.DataFrame:
    spend = float(percentiles["total_usd"].sum()) if percentiles.height else 0.0
    return pl.DataFrame(
        [{
            "since": window.since,
            "until": window.until,
            "first_run": span[0],
            "last_run": span[1],
            "task_classes": percentiles.height,
            "runs": int(percentiles["runs"].sum()) if percentiles.height else 0,
            "spend_usd": spend,
            "incidents": incidents.height,
            "open_incidents": int((incidents["status"] == "open").sum())
            if incidents.height else 0,
            "unpriced_calls": int(percentiles["unpriced_calls"].sum())
            if percentiles.height else 0,
            "generated_at": generated_at,
        }],
        schema={"since": pl.Datetime("us"), "until": pl.Datetime("us"),
                "first_run": pl.Datetime("us"), "last_run": pl.Datetime("us"),
                "task_classes": pl.Int64, "runs": pl.Int64, "spend_usd": pl.Float64,
                "incidents": pl.Int64, "open_incidents": pl.Int64,
                "unpriced_calls": pl.Int64, "generated_at": pl.Datetime("us")},
    )


def _spend(df: pl.DataFrame, key: str) -> pl.DataFrame:
    return df.select(key, "runs", "total_usd", "mean_usd", "p50_usd", "p95_usd", "p99_usd",
                     "unpriced_calls").sort("total_usd", descending=True)


def build_report(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
    *,
    class_limits: Mapping[str, Limits] | None = None,
    title: str = "cliffwatch cost report",
    now: datetime | None = None,
) -> Report:
    """Compute every table and figure of the report once.

    Args:
        con: a store connection.
        window: on the run's ``started_at`` (incidents: on ``detected_at``).
        task_class: only this class (it must exist in the store).
        class_limits: the workload's limits per class, for the what-if (see
            :func:`whatif_overrides`).
        title: the report's title.
        now: the build time (naive UTC; default the clock); also ends an open window for
            the what-if's year projection.

    Returns:
        The :class:`Report`.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    # every read under the bulk-read memory bound (order kept: the tables are shown as
    # read): at 1M runs the spend by model and role group every call, and DuckDB would
    # keep what it read (issue 11)
    return run_bounded(con, lambda: _build_report(con, window, task_class, class_limits,
                                                  title, now), keep_order=True)


def _build_report(
    con: duckdb.DuckDBPyConnection, window: Window, task_class: str | None,
    class_limits: Mapping[str, Limits] | None, title: str, now: datetime | None,
) -> Report:
    generated_at = now or utc_now()
    percentiles = cost_percentiles(con, window, task_class=task_class)
    by_model, by_role = model_and_role_percentiles(con, window, task_class)  # one read
    runs = list_runs(con, window, task_class=task_class, limit=DISTRIBUTION_POINTS_LIMIT)
    incidents = _incidents(con, window, task_class)
    classes = percentiles["task_class"].to_list()
    overrides, sources = whatif_overrides(con, classes, class_limits)
    # one read of the calls for the what-if and the findings
    found, what = findings_and_what_if(con, overrides, window, task_class=task_class,
                                       now=generated_at)
    whatif_table = what.by_class.with_columns(
        pl.col("task_class").replace_strict(sources, default="none").alias("cap_source")
    ).select("task_class", "limits", "cap_source", *[
        c for c in what.by_class.columns if c not in ("task_class", "limits")])
    tables = {
        "summary": _summary(percentiles, incidents, run_span(con, window, task_class), window,
                            generated_at),
        "percentiles": percentiles,
        "incidents": incidents,
        "whatif": whatif_table,
        "spend_by_model": _spend(by_model, "model"),
        "spend_by_role": _spend(by_role, "role"),
        "unpriced": by_model.filter(pl.col("unpriced_calls") > 0).select(
            "model", "unpriced_calls", "runs"),
        "findings": found.select(REPORT_FINDING_COLUMNS),
    }
    figures: dict[str, go.Figure] = {}
    if runs.height:
        figures["distribution"] = charts.cost_distribution(runs, percentiles)
        figures["trend"] = charts.daily_trend_by_class(
            daily_percentiles(con, window, task_class), cap_start_date(con, task_class)
        )
        figures["whatif"] = replay_charts.whatif_spend(what.by_class)
    notes = {
        "percentiles": "Cost per run in USD; cliff ratio = P99 / P50 (the Cost Cliff is "
        "about 10x in a pipeline without caps). Percentiles are continuous (linear).",
        "whatif": f"Every run of the window replayed through the dispatch layer under its "
        f"class's configured cap and policy (source: workload config, else the latest "
        f"recorded cap), with recorded per-call costs; estimated figures are counted in "
        f"estimated_usd. A task the limits leave undone (tasks not completed) is counted "
        f"redone within them at the mean cost of its class's runs that completed within "
        f"them (redo_usd, estimated); where no such run exists (tasks redo unknown) the "
        f"spend after and the saving are unknown (-). Runs affected: the runs the limits "
        f"change. {COUNTS_NOTE}. Year projection over a "
        f"{what.window_days or 0:.1f}-day window.",
        "unpriced": "Calls on models without a price add nothing to any cost above: "
        "those costs are lower bounds.",
        "findings": "Largest projected yearly saving first; yearly = the window's saving x "
        "365 / the window's days. `cliffwatch findings --format json` gives the evidence "
        "and the runs behind each.",
    }
    upper_bound = upper_bound_note(cache_detail_missing_calls(con, window, task_class))
    if upper_bound:  # the spend and every percentile include those calls' costs
        notes["summary"] = f"Spend: {upper_bound}."
        notes["percentiles"] += f" Costs are an {upper_bound}."
    if runs.height == DISTRIBUTION_POINTS_LIMIT:
        notes["figure_distribution"] = (
            f"Points: the newest {DISTRIBUTION_POINTS_LIMIT:,} runs; marks use every run."
        )
    return Report(title, generated_at, window, task_class, tables, figures, notes)


def report_meta(report: Report) -> dict[str, Any]:
    """The report's header (title, window and build time as datetimes, class), for
    :func:`analytics.plain.json_text`."""
    return {
        "title": report.title,
        "generated_at": report.generated_at,
        "since": report.window.since,
        "until": report.window.until,
        "task_class": report.task_class,
        "tables": list(report.tables),
    }
