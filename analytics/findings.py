"""Findings: the handbook's orchestrator-worker anti-patterns, measured in your own runs.

Why one file: the six kinds of finding are short functions over one shared context
(the window's runs, the what-if replay, the thresholds), and this docstring is the one place
that maps each to the handbook's words and says how its saving is projected; one module per
kind would scatter that mapping and pass the context around.

The handbook page on orchestrator-worker (docs/sources.md#handbook-anti-patterns) names
the causes of the Cost Cliff; :func:`find_findings` looks for each in the runs of a window
and says, per task class, what it found, the evidence (counts, costs, percentiles, the runs
behind it), the fix, and what the fix would have saved, projected over a year.

Kinds (thresholds from :class:`Thresholds`, i.e. the settings, with their sources):

- ``implicit_max_workers``: runs with no max-workers cap ("Leaving the cap to the
  orchestrator's judgement"). Evidence: their P50/P95/P99 and P99/P50 beside the same
  class's capped runs and beside every capped run of the window.
- ``cap_above_safe_maximum``: runs capped above ``safe_max_workers`` (8: "Past 8,
  synchronisation overhead exceeds LLM token cost").
- ``no_cost_ceiling``: runs with no per-task ceiling ("a single bad plan can run a
  five-figure overage").
- ``cost_cliff``: a class whose P99/P50 exceeds ``cliff_ratio`` (10) over at least
  :data:`MIN_RUNS_FOR_PERCENTILES` runs: the Cost Cliff itself.
- ``synthesis_on_planner_model``: runs whose synthesis ran on the planner's model ("Run
  it on a smaller cheaper model, especially for fan-out tasks").
- ``orchestrating_small_tasks``: a class whose median plan has fewer than
  ``min_workers`` (3) sub-tasks, or whose planning + synthesis (+ critic) spend exceeds
  its workers' spend ("do not orchestrate. Chain the prompts").

Only runs that recorded a plan size (``workers_proposed``: cliffwatch's orchestrator, the
guard, or any producer setting ``cliff.workers_proposed``) are judged for the cap,
ceiling and small-task findings: a trace ingested from elsewhere is not an orchestrator
run just because it has no cap.

Projected yearly saving (``yearly_saving_usd``) = the window's saving x 365 /
``window_days``, the window's length as :func:`analytics.whatif.window_days` measures it
(``--since`` or the first run, to ``--until``, or now when only ``--since`` is given, or
the last run; the first and last run of every class in the window, whatever
``--task-class`` says: a class's yearly saving is the same with the filter as without).
The window's saving, per kind:

- cap findings: the what-if (:func:`analytics.whatif.what_if`, which replays each run's
  recorded plan through the orchestrator's own dispatch layer, with recorded costs)
  under a cap of ``safe_max_workers`` with policy ``truncate``, summed over the runs the
  finding names: ``sum(recorded cost - counterfactual cost)``. ``truncate`` stands for
  the handbook's first layer, the cap stated in the planning prompt: a planner told the
  cap proposes at most ``safe_max_workers`` sub-tasks, which run at their recorded cost
  (no second planner call, no task left undone by the cap). ``reject`` would leave the
  runaways' tasks undone, to be redone; ``replan`` would charge an estimated second
  planner call.
- ceiling findings (``no_cost_ceiling``, ``cost_cliff``): the same what-if under a
  ceiling of ``ceiling_k`` x the class's P50 cost per run in the window (k = 10, the
  runaway multiple, which is the handbook's P99 ~ 10x P50: the ceiling cuts the tail, not
  the body), over the runs with no ceiling (or, for ``cost_cliff``, a higher one).
- ``synthesis_on_planner_model``: ``sum(synthesis cost - synthesis tokens priced at the
  class's cheapest worker model)`` (:func:`telemetry.pricing.price_for`); none when no
  worker model is cheaper.
- ``orchestrating_small_tasks``: the class's planner, synthesis and critic spend (what a
  chain of the same worker prompts would not pay).

Every what-if saving is the honest one (:mod:`analytics.whatif`): a task the limits leave
undone (rejected, cancelled over the ceiling, or made to fail) is counted redone within
them, at the mean cost of its class's runs that completed within them
(:mod:`analytics.redo`, estimated), never as a saving of everything but its planner call.
The evidence's ``what_if`` says how many of the runs it changed it left undone
(``tasks_not_completed``, also a column; :data:`analytics.whatif.CHANGE_COUNTS`: a run
left undone as recorded and not changed is not counted), the redo counted
(``redo_usd``), and how many of them had nothing to estimate their redo from
(``tasks_redo_unknown``; the saving is then None, unknown).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from cliffwatch import settings
from cliffwatch.analytics import bulk_read
from cliffwatch.analytics.bulk_read import run_bounded
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.plain import plain_value
from cliffwatch.analytics.recorded import Estimates
from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.runs import require_task_class
from cliffwatch.analytics.scalars import as_float, as_int
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.whatif import (
    CHANGE_COUNTS,
    DAYS_PER_YEAR,
    Overrides,
    RunFilter,
    WhatIf,
    what_if,
    what_ifs,
    window_days,
)
from cliffwatch.analytics.window import Window
from cliffwatch.formatting import usd
from cliffwatch.telemetry.conventions import CapPolicy
from cliffwatch.telemetry.pricing import price_for

_CAP_KINDS = frozenset({"implicit_max_workers", "cap_above_safe_maximum"})
"""Kinds whose saving is the cap what-if's."""
_CEILING_KINDS = frozenset({"no_cost_ceiling", "cost_cliff"})
"""Kinds whose saving is the ceiling what-if's."""

MIN_RUNS_FOR_PERCENTILES = 20
"""A class's P99/P50 counts as evidence over at least this many runs (as the runaway
incident rule: telemetry.incident_rules.RUNAWAY_MIN_RUNS)."""

EXAMPLE_RUNS = 10
"""Run ids listed in a finding's evidence (the costliest first)."""

FINDING_KINDS: tuple[str, ...] = (
    "implicit_max_workers",
    "cap_above_safe_maximum",
    "no_cost_ceiling",
    "cost_cliff",
    "synthesis_on_planner_model",
    "orchestrating_small_tasks",
)
"""Every kind of finding, in the handbook's order of importance."""

FINDING_COLUMNS: tuple[str, ...] = (
    "kind",
    "task_class",
    "title",
    "runs",
    "cost_usd",
    "saving_usd",
    "yearly_saving_usd",
    "tasks_not_completed",
    "still_present",
    "first_seen",
    "last_seen",
    "fix",
    "basis",
    "evidence",
)
"""Columns of :func:`find_findings`, in order."""

REPORT_FINDING_COLUMNS: tuple[str, ...] = (
    "kind", "task_class", "title", "runs", "saving_usd", "yearly_saving_usd",
    "tasks_not_completed", "still_present", "fix",
)
"""The columns a report shows (analytics/report.py); the evidence stays in JSON output."""

_SCHEMA: dict[str, Any] = {
    "kind": pl.String, "task_class": pl.String, "title": pl.String, "runs": pl.Int64,
    "cost_usd": pl.Float64, "saving_usd": pl.Float64, "yearly_saving_usd": pl.Float64,
    "tasks_not_completed": pl.Int64, "still_present": pl.Boolean, "first_seen": pl.Datetime("us"),
    "last_seen": pl.Datetime("us"), "fix": pl.String, "basis": pl.String,
    "evidence": pl.String,
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The thresholds findings use; :meth:`from_settings` reads them (sources there).

    Attributes:
        safe_max_workers: largest cap treated as safe, and the cap of the cap what-if.
        cliff_ratio: P99/P50 above which a class is on the Cost Cliff.
        min_workers: median plan size below which a class should chain prompts.
        ceiling_k: the ceiling what-if's ceiling, as a multiple of the class's P50.
    """

    safe_max_workers: int = 8
    cliff_ratio: float = 10.0
    min_workers: int = 3
    ceiling_k: float = 10.0

    @classmethod
    def from_settings(cls) -> Thresholds:
        """Thresholds from the environment (cliffwatch/settings.py documents each).

        Raises:
            SettingError: a malformed value.
        """
        return cls(
            safe_max_workers=settings.findings_safe_max_workers(),
            cliff_ratio=settings.findings_cliff_ratio(),
            min_workers=settings.findings_min_workers(),
            ceiling_k=settings.runaway_k(),
        )


_RUNS_SQL = """
    SELECT run_id, task_class, started_at, cost_usd, workers_proposed,
           workers_dispatched, max_workers, ceiling_usd, planner_model, synthesis_model
    FROM runs {where}
"""
"""The runs' columns the detectors read (one row per run of the window)."""

_COSTS_SQL = "SELECT task_class, cost_usd FROM runs {where}"
"""What the what-ifs' overrides read of the runs (the class P50s: :meth:`_Context.class_p50`)."""

_ROLE_COST_SQL = """
    SELECT r.task_class,
           coalesce(sum(s.cost_usd) FILTER (WHERE s.role = 'worker'), 0) AS worker_usd,
           coalesce(sum(s.cost_usd) FILTER (WHERE s.role = 'plan'), 0) AS plan_usd,
           coalesce(sum(s.cost_usd) FILTER (WHERE s.role = 'synthesis'), 0) AS synthesis_usd,
           coalesce(sum(s.cost_usd) FILTER (WHERE s.role = 'critic'), 0) AS critic_usd
    FROM spans AS s JOIN runs AS r ON r.run_id = s.trace_id
    {where} AND s.is_leaf_call AND r.workers_proposed IS NOT NULL
    GROUP BY r.task_class
"""
"""Per class, the leaf calls' spend by role over its runs that recorded a plan size
(:func:`_planned`), summed in DuckDB: one row per class, not one per run (at 1M runs a
per-run frame held ~80 MB through the what-if; issue 11)."""

_SYNTHESIS_TOKENS_SQL = """
    SELECT r.task_class, count(DISTINCT r.run_id) AS runs,
           sum(coalesce(s.input_tokens, 0)) AS input_tokens,
           sum(coalesce(s.output_tokens, 0)) AS output_tokens,
           sum(s.cost_usd) AS synthesis_usd
    FROM spans AS s JOIN runs AS r ON r.run_id = s.trace_id
    {where} AND s.is_leaf_call AND s.role = 'synthesis' AND r.run_id IN (SELECT unnest($ids))
    GROUP BY r.task_class
"""

_WORKER_MODELS_SQL = """
    SELECT DISTINCT r.task_class, coalesce(s.response_model, s.request_model) AS model
    FROM spans AS s JOIN runs AS r ON r.run_id = s.trace_id
    {where} AND s.is_leaf_call AND s.role = 'worker'
"""


def _bare(model: str | None) -> str | None:
    """A model name without its provider prefix (``sim/gpt-4.1`` -> ``gpt-4.1``)."""
    return None if model is None else model.rsplit("/", 1)[-1]


def _bare_expr(column: str) -> pl.Expr:
    """:func:`_bare` of a column, in polars (no Python call per run)."""
    return pl.col(column).str.split("/").list.last()


def _quantiles(costs: pl.Series) -> dict[str, float | None]:
    """P50/P95/P99 (linear, numpy's default) and P99/P50 of a series of run costs, USD."""
    if costs.is_empty():
        return {"p50_usd": None, "p95_usd": None, "p99_usd": None, "cliff_ratio": None}
    p50, p95, p99 = (as_float(costs.quantile(q, interpolation="linear")) for q in (0.5, .95, .99))
    return {"p50_usd": p50, "p95_usd": p95, "p99_usd": p99,
            "cliff_ratio": p99 / p50 if p50 > 0 else None}


def _examples(runs: pl.DataFrame) -> list[str]:
    # the two columns sorted, not every column of the runs concerned; runs of equal cost by
    # run id, so the examples do not hang on the order the rows were read in
    return (runs.select("run_id", "cost_usd")
            .sort(["cost_usd", "run_id"], descending=[True, False])["run_id"]
            .head(EXAMPLE_RUNS).to_list())


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


@dataclass
class _Context:
    """What every detector reads: the window's runs (``task_class`` and ``cost_usd`` only
    while the what-ifs are prefetched, then :data:`_RUNS_SQL`'s columns), per-class role
    costs (read when first asked) and the what-ifs."""

    con: duckdb.DuckDBPyConnection
    window: Window
    task_class: str | None
    thresholds: Thresholds
    runs: pl.DataFrame
    days: float | None
    now: datetime | None
    conds: list[str]
    params: dict[str, Any]
    estimates: Estimates | None = None
    _roles: pl.DataFrame | None = None
    _what_ifs: dict[str, pl.DataFrame] = field(default_factory=dict)

    def class_estimates(self) -> Estimates:
        """The class estimates the what-ifs share: the caller's, else read once here
        (:func:`analytics.estimates.load_estimates`), never once per what-if (at 1M runs
        on a store of random trace ids a read is ~8 s; issue 11)."""
        if self.estimates is None:
            self.estimates = load_estimates(self.con, self.task_class)
        return self.estimates

    def class_roles(self) -> pl.DataFrame:
        """Per task class (``task_class``, ``worker_usd``, ``plan_usd``, ``synthesis_usd``,
        ``critic_usd``, USD): the leaf calls' spend by role over the class's runs that
        recorded a plan size (read once, when first asked)."""
        if self._roles is None:
            conds = ["r." + c for c in self.conds]
            self._roles = frame(self.con, _ROLE_COST_SQL.format(
                where=where(conds) or "WHERE TRUE"), self.params)
        return self._roles

    def yearly(self, saving_usd: float | None) -> float | None:
        if saving_usd is None or not self.days:
            return None
        return saving_usd * DAYS_PER_YEAR / self.days

    def class_p50(self, task_class: str) -> float | None:
        costs = self.runs.filter(pl.col("task_class") == task_class)["cost_usd"]
        return None if costs.is_empty() else as_float(costs.quantile(0.5, interpolation="linear"))

    def _cap_override(self) -> LimitsOverride:
        return LimitsOverride(max_workers=self.thresholds.safe_max_workers,
                              policy=CapPolicy.TRUNCATE)

    def _cap_runs(self) -> RunFilter:
        """The runs the cap findings sum (:func:`_implicit_max_workers`,
        :func:`_cap_above_safe`): no recorded cap, or one above ``safe_max_workers`` (and
        those without a plan size, which they leave out later). A run capped tighter is
        never summed, so the cap what-if does not replay it."""
        cap = self.thresholds.safe_max_workers

        def keep(_class: str, max_workers: Any, _ceiling: Any, _policy: Any) -> bool:
            return max_workers is None or not max_workers <= cap

        return keep

    def _ceiling_overrides(self) -> dict[str, LimitsOverride]:
        overrides = {}
        for task_class in self.runs["task_class"].unique().to_list():
            p50 = self.class_p50(task_class)
            if p50 and p50 > 0:
                ceiling = self.thresholds.ceiling_k * p50
                overrides[task_class] = LimitsOverride(ceiling_usd=ceiling)
        return overrides

    @staticmethod
    def _ceiling_runs(overrides: dict[str, LimitsOverride]) -> RunFilter:
        """The runs the ceiling findings sum (:func:`_no_cost_ceiling`,
        :func:`_cost_cliff`): of a class with a ceiling override, no recorded ceiling or
        one above the override's (a NaN one too: kept, never lost). A run with a tighter
        ceiling is never summed, so the ceiling what-if does not replay it."""

        def keep(task_class: str, _cap: Any, ceiling_usd: Any, _policy: Any) -> bool:
            override = overrides.get(task_class)
            return override is not None and (
                ceiling_usd is None or not ceiling_usd <= (override.ceiling_usd or 0.0))

        return keep

    def prefetch(self, kinds: Sequence[str], also: Overrides | None = None) -> WhatIf | None:
        """Replay the cap and the ceiling what-ifs the ``kinds`` need, and the what-if under
        ``also`` when given (returned), in one pass over the calls
        (:func:`analytics.whatif.what_ifs`), rather than one pass each; the cap and the
        ceiling what-ifs replay only the runs their findings sum (:meth:`_cap_runs`,
        :meth:`_ceiling_runs`). The spend by role (:meth:`class_roles`) is read first, while
        little else is in memory (read after the what-ifs, its read of every call came on
        top of their 1M-row frames: a report's peak at 1M runs, issue 11)."""
        if "orchestrating_small_tasks" in kinds:
            self.class_roles()
        cap = bool(set(kinds) & _CAP_KINDS)
        ceiling = self._ceiling_overrides() if set(kinds) & _CEILING_KINDS else {}
        variants: list[tuple[str, Any, RunFilter | None]] = (
            [("cap", self._cap_override(), self._cap_runs())] if cap else [])
        if ceiling:
            variants.append(("ceiling", ceiling, self._ceiling_runs(ceiling)))
        if also is not None:
            variants.append(("also", also, None))
        if len(variants) < 2 and also is None:
            return None  # one what-if: read when first asked
        # the span blocks read so far (a report's spend by model and role), let go; the
        # class estimates and the what-ifs read under the findings' lower bound, inside a
        # report too (each read holds a chunk of runs: at 1M runs the report's three
        # what-ifs held ~250 MB more under its 512 MB)
        bulk_read.release_cache(self.con)
        results = run_bounded(self.con, lambda: what_ifs(
            self.con, [v for _, v, _ in variants], self.window, self.task_class,
            now=self.now, estimates=self.class_estimates(), keeps=[k for _, _, k in variants],
            summaries=[name == "also" for name, _, _ in variants]),
            limit=bulk_read.FINDINGS_MEMORY_LIMIT)
        asked = None
        for (name, _, _), result in zip(variants, results, strict=True):
            if name == "also":
                # the caller (the report) reads its classes only: replayed as a summary,
                # no per-run rows kept (issue 11)
                asked = result
                continue
            self._what_ifs[name] = _kept(result.runs)
        return asked

    def cap_what_if(self) -> pl.DataFrame:
        """Per run (:data:`analytics.whatif.RUN_COLUMNS`): the window's runs the cap
        findings sum (:meth:`_cap_runs`) replayed under a cap of ``safe_max_workers``
        (policy truncate)."""
        if "cap" not in self._what_ifs:
            result = what_ifs(self.con, [self._cap_override()], self.window, self.task_class,
                              now=self.now, estimates=self.class_estimates(),
                              keeps=[self._cap_runs()])[0]
            self._what_ifs["cap"] = _kept(result.runs)
        return self._what_ifs["cap"]

    def ceiling_what_if(self) -> pl.DataFrame:
        """Per run: the window's runs the ceiling findings sum (:meth:`_ceiling_runs`)
        replayed under a ceiling of ``ceiling_k`` x their class's P50 (classes whose P50 is
        0 are left out)."""
        if "ceiling" not in self._what_ifs:
            overrides = self._ceiling_overrides()
            runs = pl.DataFrame(schema={"run_id": pl.String, "task_class": pl.String})
            if overrides:
                runs = what_ifs(self.con, [overrides], self.window, self.task_class,
                                now=self.now, estimates=self.class_estimates(),
                                keeps=[self._ceiling_runs(overrides)])[0].runs
            self._what_ifs["ceiling"] = _kept(runs)
        return self._what_ifs["ceiling"]


_WHAT_IF_KEPT = ("run_id", "saving_usd", "affected", "status_after", "not_completed",
                 "redo_usd", "dispatched_after", "dispatched_before", "estimated_usd")
"""The what-if's per-run columns :func:`_what_if_of` reads: the rest of the 1M-row frame
is let go once the what-ifs are replayed (issue 11)."""


def _kept(runs: pl.DataFrame) -> pl.DataFrame:
    """``runs`` with only :data:`_WHAT_IF_KEPT` (those it has)."""
    return runs.select([c for c in _WHAT_IF_KEPT if c in runs.columns])


def _what_if_of(
    replayed: pl.DataFrame, run_ids: pl.Series
) -> tuple[float | None, dict[str, Any]]:
    """The saving (USD; None when a task left undone has no redo estimate) of a what-if
    over ``run_ids``, and what it did to them. The ids stay a polars Series (a semi-join,
    no Python string per run: at 1M runs a list of them cost ~100 MB; issue 11)."""
    if "run_id" not in replayed.columns:
        return 0.0, {"runs_changed": 0, "tasks_not_completed": 0}
    mine = replayed.join(run_ids.to_frame("run_id").unique(), on="run_id", how="semi")
    if mine.is_empty() or "saving_usd" not in mine.columns:
        return 0.0, {"runs_changed": 0, "tasks_not_completed": 0}
    fewer = pl.col("dispatched_after") < pl.col("dispatched_before")
    unknown = mine["saving_usd"].null_count()
    counts = mine.select(count.alias(name) for name, count in CHANGE_COUNTS.items()).row(
        0, named=True)
    return None if unknown else float(mine["saving_usd"].sum()), {
        "runs_changed": int(counts["runs_affected"]),
        "runs_rejected": int(counts["runs_rejected"]),
        "runs_cancelled": int(counts["runs_cancelled"]),
        "tasks_not_completed": int(counts["tasks_not_completed"]),
        "redo_usd": float(mine["redo_usd"].sum()),
        "tasks_redo_unknown": unknown,
        "runs_with_fewer_workers": mine.filter(fewer).height,
        "estimated_usd": float(mine["estimated_usd"].sum()),
    }


def _cap_saving(ctx: _Context, runs: pl.DataFrame) -> tuple[float | None, dict[str, Any]]:
    """The cap what-if (:meth:`_Context.cap_what_if`) over ``runs``: its saving (USD) and
    the evidence entry saying what it replayed under and what it did."""
    saving, replayed = _what_if_of(ctx.cap_what_if(), runs["run_id"])
    return saving, {"cap": ctx.thresholds.safe_max_workers,
                    "policy": CapPolicy.TRUNCATE.value, **replayed}


_YEARLY_BASIS = f"yearly = window saving x {DAYS_PER_YEAR:g} / window days"
"""How every finding's yearly saving is projected (:meth:`_Context.yearly`)."""

_REDO_BASIS = ("a task the limits leave undone counts as redone within them (estimated: the "
               "mean cost of its class's runs that completed within them)")
"""How a what-if finding's saving counts the work it leaves undone (:mod:`analytics.redo`)."""


def _finding(
    ctx: _Context,
    kind: str,
    task_class: str,
    concerned: pl.DataFrame,
    *,
    title: str,
    fix: str,
    basis: str,
    saving_usd: float | None,
    still_present: bool,
    evidence: dict[str, Any],
) -> dict[str, Any]:
    evidence = {**evidence, "run_ids": _examples(concerned)}
    what = evidence.get("what_if") or {}
    return {
        "kind": kind,
        "task_class": task_class,
        "title": title,
        "runs": concerned.height,
        "cost_usd": float(concerned["cost_usd"].sum()),
        "saving_usd": saving_usd,
        "yearly_saving_usd": ctx.yearly(saving_usd),
        "tasks_not_completed": what.get("tasks_not_completed"),
        "still_present": still_present,
        "first_seen": concerned["started_at"].min(),
        "last_seen": concerned["started_at"].max(),
        "fix": fix,
        "basis": f"{basis}; {_REDO_BASIS + '; ' if what else ''}{_YEARLY_BASIS}",
        "evidence": json.dumps(evidence, default=str),
    }


def _newest_of(ctx: _Context, task_class: str) -> dict[str, Any]:
    """The class's newest run (``started_at``), as a row (found, not sorted for)."""
    mine = ctx.runs.filter(pl.col("task_class") == task_class)
    return mine.row(as_int(mine["started_at"].arg_max()), named=True)


def _planned(ctx: _Context) -> pl.DataFrame:
    """Runs that recorded a plan size (orchestrator-worker runs)."""
    return ctx.runs.filter(pl.col("workers_proposed").is_not_null())


def _implicit_max_workers(ctx: _Context) -> list[dict[str, Any]]:
    planned = _planned(ctx)
    uncapped = planned.filter(pl.col("max_workers").is_null())
    if uncapped.is_empty():
        return []
    capped_all = planned.filter(pl.col("max_workers").is_not_null())
    cap = ctx.thresholds.safe_max_workers
    out = []
    for task_class in sorted(uncapped["task_class"].unique().to_list()):
        mine = uncapped.filter(pl.col("task_class") == task_class)
        capped = capped_all.filter(pl.col("task_class") == task_class)
        tail = _quantiles(mine["cost_usd"])
        capped_tail = _quantiles(capped["cost_usd"])
        all_capped_tail = _quantiles(capped_all["cost_usd"])
        over = mine.filter(pl.col("workers_proposed") > cap)
        saving, replayed = _cap_saving(ctx, mine)
        compare = (f"; capped runs of the class: {_ratio_text(capped_tail['cliff_ratio'])}"
                   if capped.height else "")
        out.append(_finding(
            ctx, "implicit_max_workers", task_class, mine,
            title=(f"{mine.height} runs with no max-workers cap (largest plan "
                   f"{as_int(mine['workers_proposed'].max())} workers, {over.height} over {cap}); "
                   f"their P99/P50 is {_ratio_text(tail['cliff_ratio'])}{compare}"),
            fix=(f"Make the cap explicit: state max_workers={cap} in the planning prompt and "
                 f"enforce it at dispatch (cliffwatch_guard(max_workers={cap}))."),
            basis=(f"what-if: the runs' recorded plans replayed through the dispatch layer "
                   f"with a cap of {cap} (policy truncate: a planner told the cap)"),
            saving_usd=saving,
            still_present=_newest_of(ctx, task_class)["max_workers"] is None,
            evidence={
                "uncapped": {"runs": mine.height, **tail,
                             "max_proposed": as_int(mine["workers_proposed"].max()),
                             "runs_over_cap": over.height},
                "capped_same_class": {"runs": capped.height, **capped_tail},
                "capped_all_classes": {"runs": capped_all.height, **all_capped_tail},
                "what_if": replayed,
            },
        ))
    return out


def _cap_above_safe(ctx: _Context) -> list[dict[str, Any]]:
    cap = ctx.thresholds.safe_max_workers
    high = _planned(ctx).filter(pl.col("max_workers") > cap)
    out = []
    for task_class in sorted(high["task_class"].unique().to_list()):
        mine = high.filter(pl.col("task_class") == task_class)
        caps = sorted(set(mine["max_workers"].to_list()))
        saving, replayed = _cap_saving(ctx, mine)
        newest = _newest_of(ctx, task_class)["max_workers"]
        out.append(_finding(
            ctx, "cap_above_safe_maximum", task_class, mine,
            title=(f"{mine.height} runs capped at {', '.join(map(str, caps))} workers, above "
                   f"{cap}; {mine.filter(pl.col('workers_dispatched') > cap).height} "
                   f"dispatched more than {cap}"),
            fix=(f"Lower the cap to {cap} or fewer: past {cap} workers, synchronisation "
                 f"overhead exceeds the LLM token cost."),
            basis=f"what-if: recorded plans replayed with a cap of {cap} (policy truncate)",
            saving_usd=saving,
            still_present=newest is not None and newest > cap,
            evidence={"caps": caps, **_quantiles(mine["cost_usd"]),
                      "max_dispatched": mine["workers_dispatched"].max(),
                      "what_if": replayed},
        ))
    return out


def _no_cost_ceiling(ctx: _Context) -> list[dict[str, Any]]:
    open_ended = _planned(ctx).filter(pl.col("ceiling_usd").is_null())
    out = []
    k = ctx.thresholds.ceiling_k
    for task_class in sorted(open_ended["task_class"].unique().to_list()):
        mine = open_ended.filter(pl.col("task_class") == task_class)
        p50 = ctx.class_p50(task_class)
        ceiling = k * p50 if p50 else None
        over = mine.filter(pl.col("cost_usd") > ceiling) if ceiling else mine.clear()
        saving, replayed = (_what_if_of(ctx.ceiling_what_if(), mine["run_id"])
                            if ceiling else (None, {}))
        suggested = f" (e.g. ceiling_usd={ceiling:.4g}, {k:g}x its P50)" if ceiling else ""
        out.append(_finding(
            ctx, "no_cost_ceiling", task_class, mine,
            title=(f"{mine.height} runs with no per-task cost ceiling; the costliest was "
                   f"{usd(as_float(mine['cost_usd'].max()))}, {over.height} cost over "
                   f"{k:g}x the class P50"),
            fix=f"Set a per-task cost ceiling at dispatch{suggested}.",
            basis=(f"what-if: runs replayed with a ceiling of {k:g}x the class's P50 cost "
                   f"per run in the window, as dispatch enforces it (a plan whose estimate is "
                   f"over is rejected; once spend is over, pending workers are cancelled)"),
            saving_usd=saving,
            still_present=_newest_of(ctx, task_class)["ceiling_usd"] is None,
            evidence={**_quantiles(mine["cost_usd"]), "class_p50_usd": p50,
                      "runs_over_ceiling": over.height,
                      "what_if": {"ceiling_usd": ceiling, **replayed}},
        ))
    return out


def _cost_cliff(ctx: _Context) -> list[dict[str, Any]]:
    out = []
    k = ctx.thresholds.ceiling_k
    for task_class in sorted(ctx.runs["task_class"].unique().to_list()):
        mine = ctx.runs.filter(pl.col("task_class") == task_class)
        if mine.height < MIN_RUNS_FOR_PERCENTILES:
            continue
        tail = _quantiles(mine["cost_usd"])
        ratio = tail["cliff_ratio"]
        if ratio is None or ratio <= ctx.thresholds.cliff_ratio:
            continue
        ceiling = k * (tail["p50_usd"] or 0.0)
        looser = mine.filter(pl.col("ceiling_usd").is_null() | (pl.col("ceiling_usd") > ceiling))
        saving, replayed = _what_if_of(ctx.ceiling_what_if(), looser["run_id"])
        newest = mine.sort("started_at")
        recent = newest.tail(MIN_RUNS_FOR_PERCENTILES)["cost_usd"]
        recent_ratio = _quantiles(recent)["cliff_ratio"]
        out.append(_finding(
            ctx, "cost_cliff", task_class, mine,
            title=(f"P99 is {ratio:.1f}x P50 over {mine.height} runs (P50 "
                   f"{usd(tail['p50_usd'])}, P99 {usd(tail['p99_usd'])}): the Cost Cliff"),
            fix=("Cap the plan at dispatch and put a cost ceiling on each task; the tail is "
                 "where the money goes."),
            basis=(f"what-if: the class's runs without a ceiling of at most {k:g}x its P50 "
                   "replayed with that ceiling"),
            saving_usd=saving,
            still_present=recent_ratio is not None and recent_ratio > ctx.thresholds.cliff_ratio,
            evidence={**tail, "threshold": ctx.thresholds.cliff_ratio,
                      "what_if": {"ceiling_usd": ceiling, **replayed},
                      "recent_cliff_ratio": recent_ratio,
                      "recent_runs": recent.len()},
        ))
    return out


def _synthesis_on_planner_model(ctx: _Context) -> list[dict[str, Any]]:
    same = ctx.runs.filter(
        pl.col("synthesis_model").is_not_null()
        & (_bare_expr("planner_model") == _bare_expr("synthesis_model"))
    )
    if same.is_empty():
        return []
    conds = ["r." + c for c in ctx.conds]
    tokens = frame(ctx.con, _SYNTHESIS_TOKENS_SQL.format(where=where(conds) or "WHERE TRUE"),
                   {**ctx.params, "ids": same["run_id"].to_list()})
    workers = frame(ctx.con, _WORKER_MODELS_SQL.format(where=where(conds) or "WHERE TRUE"),
                    ctx.params)
    out = []
    for task_class in sorted(same["task_class"].unique().to_list()):
        mine = same.filter(pl.col("task_class") == task_class)
        model = mine["synthesis_model"][0]
        row = tokens.filter(pl.col("task_class") == task_class)
        synth_usd = float(row["synthesis_usd"].sum() or 0.0) if row.height else 0.0
        target = _cheaper_model(
            model, workers.filter(pl.col("task_class") == task_class)["model"].to_list())
        saving = None
        if target is not None and row.height:
            price = price_for(target)
            assert price is not None
            repriced = (int(row["input_tokens"][0]) * price.input_usd_per_token
                        + int(row["output_tokens"][0]) * price.output_usd_per_token)
            saving = max(0.0, synth_usd - repriced)
        fan_out = as_float(mine["workers_dispatched"].drop_nulls().median() or 0.0)
        out.append(_finding(
            ctx, "synthesis_on_planner_model", task_class, mine,
            title=(f"{mine.height} runs synthesised on the planner's model {model} "
                   f"(median fan-out {fan_out:g} workers; synthesis spend {usd(synth_usd)})"),
            fix=(f"Run synthesis on a smaller, cheaper model"
                 f"{f' such as {target}' if target else ''}: it does not need the "
                 f"planner's context budget."),
            basis=("synthesis calls' recorded tokens re-priced at the class's cheapest worker "
                   "model (litellm price map)"),
            saving_usd=saving,
            still_present=_bare(_newest_of(ctx, task_class)["synthesis_model"])
            == _bare(_newest_of(ctx, task_class)["planner_model"]),
            evidence={"model": model, "synthesis_usd": synth_usd, "median_fan_out": fan_out,
                      "cheaper_model": target},
        ))
    return out


def _cheaper_model(model: str, candidates: Sequence[str | None]) -> str | None:
    """The cheapest priced candidate whose output price is below ``model``'s, or None."""
    base = price_for(model)
    best: tuple[float, str] | None = None
    for candidate in {c for c in candidates if c}:
        price = price_for(candidate)
        if price is None or (base is not None and
                             price.output_usd_per_token >= base.output_usd_per_token):
            continue
        key = (price.output_usd_per_token, candidate)
        best = key if best is None or key < best else best
    return best[1] if best else None


def _orchestrating_small_tasks(ctx: _Context) -> list[dict[str, Any]]:
    planned = _planned(ctx)
    roles = {row["task_class"]: row for row in ctx.class_roles().iter_rows(named=True)}
    out = []
    for task_class in sorted(planned["task_class"].unique().to_list()):
        mine = planned.filter(pl.col("task_class") == task_class)
        median_plan = as_float(mine["workers_proposed"].median() or 0.0)
        spend = roles.get(task_class) or {}  # no leaf call: nothing spent
        workers_usd = float(spend.get("worker_usd") or 0.0)
        plan_usd, synthesis_usd, critic_usd = (
            float(spend.get(f"{role}_usd") or 0.0) for role in ("plan", "synthesis", "critic"))
        overhead_usd = plan_usd + synthesis_usd + critic_usd
        small = median_plan < ctx.thresholds.min_workers
        heavy = overhead_usd > workers_usd
        if not (small or heavy):
            continue
        why = []
        if small:
            plural = "" if median_plan == 1 else "s"
            why.append(f"median plan of {median_plan:g} worker{plural} "
                       f"(< {ctx.thresholds.min_workers})")
        if heavy:
            why.append(f"planning + synthesis {usd(overhead_usd)} > workers {usd(workers_usd)}")
        recent = mine.sort("started_at").tail(MIN_RUNS_FOR_PERCENTILES)
        out.append(_finding(
            ctx, "orchestrating_small_tasks", task_class, mine,
            title=f"{'; '.join(why)}: chain the prompts instead",
            fix=("Do not orchestrate: chain the prompts. Below about three worker calls the "
                 "planning call and dispatch overhead exceed the work."),
            basis=("the class's planner, synthesis and critic spend, which a chain of the same "
                   "worker prompts would not pay"),
            saving_usd=overhead_usd,
            still_present=as_float(recent["workers_proposed"].median() or 0.0)
            < ctx.thresholds.min_workers or heavy,
            evidence={"median_plan_workers": median_plan, "workers_usd": workers_usd,
                      "plan_usd": plan_usd, "synthesis_usd": synthesis_usd,
                      "critic_usd": critic_usd,
                      "overhead_share": overhead_usd / (overhead_usd + workers_usd)
                      if overhead_usd + workers_usd > 0 else None},
        ))
    return out


_DETECTORS: dict[str, Callable[[_Context], list[dict[str, Any]]]] = {
    "implicit_max_workers": _implicit_max_workers,
    "cap_above_safe_maximum": _cap_above_safe,
    "no_cost_ceiling": _no_cost_ceiling,
    "cost_cliff": _cost_cliff,
    "synthesis_on_planner_model": _synthesis_on_planner_model,
    "orchestrating_small_tasks": _orchestrating_small_tasks,
}


def find_findings(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    *,
    task_class: str | None = None,
    kinds: Sequence[str] | None = None,
    thresholds: Thresholds | None = None,
    now: datetime | None = None,
    estimates: Estimates | None = None,
) -> pl.DataFrame:
    """The anti-patterns found in the runs started in ``window``, costliest fix first.

    Args:
        con: a store connection.
        window: on the run's ``started_at`` (``since`` inclusive, ``until`` exclusive).
        task_class: only this class (it must exist in the store).
        kinds: only these kinds (default all of :data:`FINDING_KINDS`).
        thresholds: default :meth:`Thresholds.from_settings`.
        now: the end of a window given only a ``since`` (default the clock).
        estimates: the class estimates of ``task_class``
            (:func:`analytics.estimates.load_estimates`), when the caller has them already
            (None: read once here, for every what-if of the findings).

    Returns:
        One row per (kind, task class), columns :data:`FINDING_COLUMNS`: ``title`` one
        line, ``runs`` / ``cost_usd`` the runs concerned and their spend (USD),
        ``saving_usd`` what the fix would have saved over the window and
        ``yearly_saving_usd`` that projected over a year (null without a window length or
        a basis; the module docstring gives each formula), ``still_present`` whether the
        class's newest runs still show it, ``first_seen`` / ``last_seen`` (naive UTC),
        ``fix`` and ``basis`` one line each, ``evidence`` a JSON object (figures and up to
        :data:`EXAMPLE_RUNS` run ids, costliest first). Sorted by yearly saving,
        largest first. Empty (same columns) when nothing is found.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
        ValueError: an unknown kind.
        SettingError: a malformed threshold setting.
    """
    found, _ = _find(con, window, task_class, kinds, thresholds, now, estimates, None)
    return found


def findings_and_what_if(
    con: duckdb.DuckDBPyConnection,
    overrides: Overrides,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    *,
    task_class: str | None = None,
    now: datetime | None = None,
    estimates: Estimates | None = None,
) -> tuple[pl.DataFrame, WhatIf]:
    """:func:`find_findings` (every kind, default thresholds) and
    :func:`analytics.whatif.what_if` under ``overrides`` over the same window, their
    what-ifs replayed in one pass over the calls (what the report shows). Arguments and
    errors as theirs. The what-if's figures are its ``by_class`` and ``window_days``: its
    ``runs`` (per-run rows) are empty when the window has runs (replayed as a summary,
    :func:`analytics.whatif.what_ifs`' ``summaries``: no per-run rows kept, issue 11),
    so its ``totals()`` are not to be read."""
    found, what = _find(con, window, task_class, None, None, now, estimates, overrides)
    if what is None:  # no run in the window: nothing to share
        what = what_if(con, overrides, window, task_class, now=now, estimates=estimates)
    return found, what


def _find(
    con: duckdb.DuckDBPyConnection,
    window: Window,
    task_class: str | None,
    kinds: Sequence[str] | None,
    thresholds: Thresholds | None,
    now: datetime | None,
    estimates: Estimates | None,
    also: Overrides | None,
) -> tuple[pl.DataFrame, WhatIf | None]:
    wanted = tuple(kinds) if kinds else FINDING_KINDS
    unknown = sorted(set(wanted) - set(FINDING_KINDS))
    if unknown:
        raise ValueError(f"unknown finding kind(s) {', '.join(unknown)} "
                         f"(use {', '.join(FINDING_KINDS)})")
    conds, params = window.conditions("started_at")
    if task_class is not None:
        require_task_class(con, task_class)
        conds.append("task_class = $task_class")
        params["task_class"] = task_class
    def detect() -> tuple[WhatIf | None, list[dict[str, Any]]] | None:
        # every read under the bulk-read memory bound: the role costs and the what-ifs read
        # every call of the window, and DuckDB would keep what it read (issue 11)
        # the what-ifs first, with only the runs' classes and costs in memory (the ceiling
        # what-if's P50s); the runs' other columns are read after them (issue 11)
        costs = frame(con, _COSTS_SQL.format(where=where(conds)), params)
        if costs.is_empty():
            return None
        ctx = _Context(
            con=con, window=window, task_class=task_class,
            thresholds=thresholds or Thresholds.from_settings(), runs=costs,
            days=None, now=now, conds=conds, params=params, estimates=estimates,
        )
        asked = ctx.prefetch(wanted, also)
        del costs
        # the span blocks the what-ifs read, let go before the runs' columns are read
        bulk_read.release_cache(con)
        ctx.runs = frame(con, _RUNS_SQL.format(where=where(conds)), params)
        ctx.days = window_days(con, window, now)
        return asked, [row for kind in wanted for row in _DETECTORS[kind](ctx)]

    # findings on their own under their lower bound; inside a report, under the report's
    detected = run_bounded(con, detect,
                           limit=bulk_read.FINDINGS_MEMORY_LIMIT if also is None else None)
    if detected is None:
        return pl.DataFrame(schema=_SCHEMA), None
    asked, rows = detected
    if not rows:
        return pl.DataFrame(schema=_SCHEMA), asked
    order = {k: i for i, k in enumerate(FINDING_KINDS)}
    found = pl.DataFrame(rows, schema=_SCHEMA)
    return found.with_columns(pl.col("kind").replace_strict(order).alias("_order")).sort(
        ["yearly_saving_usd", "_order", "task_class"], descending=[True, False, False],
        nulls_last=True,
    ).drop("_order").select(FINDING_COLUMNS), asked


def findings_records(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows of :func:`find_findings` as JSON-ready dicts with ``evidence`` parsed (for
    ``--format json``): every other value through :func:`analytics.plain.plain_value`
    (timestamps ISO 8601 UTC ending in ``Z``, NaN as None)."""
    return [
        {key: (json.loads(value) if value else {}) if key == "evidence"
         else plain_value(value) for key, value in row.items()}
        for row in df.iter_rows(named=True)
    ]
