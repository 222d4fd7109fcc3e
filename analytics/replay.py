"""Replay one run: what happened, step by step, and what other limits would have done.

Why one file: the replay of one run (timeline, sub-tasks, comparison) and the parsing
of the limits it replays under are one feature, read together by the CLI and the dashboard's
replay page; the counterfactual itself is :mod:`analytics.counterfactual`.

:func:`replay` rebuilds a run from its spans alone (:mod:`analytics.recorded`): the task
and its class, every planner call with the plan it proposed (each sub-task and the model
it was routed to), the dispatch decision, every worker call (tokens, cost, duration,
status), synthesis and critic calls, and the run's total, on one timeline. Beside it, the
counterfactual (:mod:`analytics.counterfactual`) under the limits asked for, which runs the
recorded plan through the orchestrator's own dispatch layer with the recorded costs.

Limits to replay under are given as a :class:`LimitsOverride`: each of cap, ceiling and
policy is either a new value, ``None`` (switched off) or :data:`KEEP` (as the run was
recorded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import duckdb
import polars as pl

from cliffwatch.analytics.counterfactual import (
    REDO_STAGE,
    Basis,
    Counterfactual,
    Outcome,
    counterfactual,
)
from cliffwatch.analytics.errors import AnalyticsError
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.recorded import (
    Estimates,
    RecordedCall,
    RecordedRun,
    load_recorded_run,
)
from cliffwatch.analytics.runs import get_run
from cliffwatch.formatting import number, usd
from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.telemetry.conventions import CapPolicy, Role

OFF_WORDS = frozenset({"none", "off", "no", "0"})
"""Values of ``--max-workers`` / ``--ceiling-usd`` that switch the limit off (0, as
``cliffwatch run`` takes it, or a word)."""


class ReplayError(AnalyticsError, ValueError):
    """A replay request that cannot be met (a bad limit value)."""


class _Keep(Enum):
    KEEP = "keep"

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep.KEEP
"""Keep the limit the run was recorded with."""


@dataclass(frozen=True, slots=True)
class LimitsOverride:
    """Limits to replay runs under, each new, switched off (None) or kept (:data:`KEEP`).

    Attributes:
        max_workers: the cap; None: no cap.
        ceiling_usd: the per-run ceiling, USD; None: no ceiling.
        policy: the cap policy.
    """

    max_workers: int | None | _Keep = KEEP
    ceiling_usd: float | None | _Keep = KEEP
    policy: CapPolicy | _Keep = KEEP

    def apply(self, recorded: Limits) -> Limits:
        """The limits for a run recorded under ``recorded``.

        Raises:
            ReplayError: the result is not valid limits (cap below 1, ceiling <= 0).
        """
        try:
            return Limits(
                recorded.max_workers if self.max_workers is KEEP else self.max_workers,
                recorded.ceiling_usd if self.ceiling_usd is KEEP else self.ceiling_usd,
                recorded.policy if self.policy is KEEP else self.policy,
            )
        except ValueError as exc:  # orchestrator's ConfigError is a ValueError
            raise ReplayError(str(exc)) from None

    @property
    def keeps_everything(self) -> bool:
        """Whether every limit is kept as recorded."""
        return KEEP is self.max_workers is self.ceiling_usd is self.policy

    def describe(self) -> str:
        """One line: ``cap 8, ceiling as recorded, policy as recorded``."""

        def part(name: str, value: Any, fmt: str) -> str:
            if value is KEEP:
                return f"{name} as recorded"
            if value is None:
                return f"no {name}"
            return f"{name} {fmt.format(value)}"

        policy = "policy as recorded" if self.policy is KEEP else f"policy {self.policy}"
        return ", ".join(
            (part("cap", self.max_workers, "{}"), part("ceiling", self.ceiling_usd, "${:g}"),
             policy)
        )

    def cli_args(self) -> list[str]:
        """The ``cliffwatch replay`` / ``whatif`` options that ask for these limits."""
        args: list[str] = []
        if self.max_workers is not KEEP:
            args += ["--max-workers", str(self.max_workers or 0)]
        if self.ceiling_usd is not KEEP:
            args += ["--ceiling-usd", repr(self.ceiling_usd or 0.0)]
        if self.policy is not KEEP:
            args += ["--policy", self.policy.value]
        return args

    @classmethod
    def parse(
        cls,
        max_workers: str | int | None = None,
        ceiling_usd: str | float | None = None,
        policy: str | None = None,
    ) -> LimitsOverride:
        """Read command-line values: None keeps the recorded limit, 0 (or ``none``,
        ``off``) switches it off, another number sets it.

        Raises:
            ReplayError: a value that is not a whole number >= 1 (cap), a number > 0
                (ceiling), or a policy name.
        """
        return cls(
            _parse_limit(max_workers, "--max-workers", int),
            _parse_limit(ceiling_usd, "--ceiling-usd", float),
            _parse_policy(policy),
        )


def _parse_limit(value: Any, name: str, kind: type) -> Any:
    if value is None:
        return KEEP
    if isinstance(value, str):
        text = value.strip().lower()
        if text in OFF_WORDS:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ReplayError(f"{name} must be a number (0 for none), got {value!r}") from None
    if not isinstance(value, bool) and value == 0:
        return None
    if kind is int and (isinstance(value, bool) or int(value) != value or value < 1):
        raise ReplayError(f"{name} must be a whole number (0 for no cap), got {value!r}")
    if kind is float and not (math.isfinite(value) and value > 0):
        raise ReplayError(f"{name} must be a number > 0 (0 for no ceiling), got {value!r}")
    return kind(value)


def _parse_policy(value: str | None) -> CapPolicy | _Keep:
    if value is None:
        return KEEP
    try:
        return CapPolicy(value.strip().lower())
    except ValueError:
        choices = ", ".join(p.value for p in CapPolicy)
        raise ReplayError(f"--policy must be one of {choices}, got {value!r}") from None


TIMELINE_COLUMNS: tuple[str, ...] = (
    "step", "offset_ms", "duration_ms", "kind", "name", "model", "subtask_index",
    "input_tokens", "output_tokens", "cost_usd", "status", "detail",
)
"""Columns of :attr:`Replay.timeline`, in order."""

SUBTASK_COLUMNS: tuple[str, ...] = (
    "index", "title", "difficulty", "model", "outcome", "attempts", "input_tokens",
    "output_tokens", "cost_usd", "duration_ms",
)
"""Columns of :attr:`Replay.subtasks`, in order."""


def _call_status(call: RecordedCall) -> str:
    if call.cancelled:
        return "cancelled"
    return "error" if not call.ok else "ok"


def _timeline(run: RecordedRun, as_recorded: Counterfactual) -> pl.DataFrame:
    """One row per call in start order (calls started together in sub-task order, as the
    run's waterfall, :func:`analytics.runs.run_spans`), the dispatch decision after the
    plan it judged, each numbered by ``step``; then the total, without a step."""
    rows: list[dict[str, Any]] = []
    verdicts = list(as_recorded.verdicts)
    start = run.start_ns
    in_order = sorted(run.calls, key=lambda c: (
        c.start_ns, -1 if c.subtask_index is None else c.subtask_index))
    for call in in_order:
        detail = call.error_type or ""
        if call.role == Role.PLAN:
            detail = (f"proposed {len(call.plan)} sub-tasks" if call.plan is not None
                      else f"no usable plan{': ' + call.error_type if call.error_type else ''}")
        elif call.subtask_title:
            detail = call.subtask_title + (f" ({call.error_type})" if call.error_type else "")
        rows.append({
            "offset_ms": (call.start_ns - start) / 1e6, "duration_ms": call.duration_ms,
            "kind": call.role, "name": call.name, "model": call.model,
            "subtask_index": call.subtask_index, "input_tokens": call.input_tokens,
            "output_tokens": call.output_tokens, "cost_usd": call.cost_usd,
            "status": _call_status(call), "detail": detail,
        })
        if call.plan is not None and verdicts:
            verdict = verdicts.pop(0)
            rows.append({
                "offset_ms": (call.end_ns - start) / 1e6, "duration_ms": 0.0,
                "kind": "dispatch", "name": "dispatch", "model": None, "subtask_index": None,
                "input_tokens": None, "output_tokens": None, "cost_usd": None,
                "status": verdict.action.value, "detail": verdict.reason,
            })
    for step, row in enumerate(rows, start=1):
        row["step"] = step
    total_detail = run.status + (f", {run.breach} breach" if run.breach else "")
    if run.unpriced_calls:
        total_detail += f", {run.unpriced_calls} unpriced calls not in the cost"
    rows.append({
        "step": None, "offset_ms": 0.0, "duration_ms": run.duration_ms, "kind": "total",
        "name": "run",
        "model": None, "subtask_index": None,
        "input_tokens": sum(c.input_tokens or 0 for c in run.calls),
        "output_tokens": sum(c.output_tokens or 0 for c in run.calls),
        "cost_usd": run.cost_usd, "status": run.status, "detail": total_detail,
    })
    return pl.DataFrame(
        rows,
        schema={
            "step": pl.Int64, "offset_ms": pl.Float64, "duration_ms": pl.Float64,
            "kind": pl.String, "name": pl.String, "model": pl.String,
            "subtask_index": pl.Int64, "input_tokens": pl.Int64, "output_tokens": pl.Int64,
            "cost_usd": pl.Float64, "status": pl.String, "detail": pl.String,
        },
    ).select(TIMELINE_COLUMNS)


def _recorded_outcome(run: RecordedRun, index: int, calls: list[RecordedCall]) -> Outcome:
    dispatched = run.workers_dispatched
    if dispatched is None:
        dispatched = 0 if not calls else index + 1
    if index >= dispatched:
        return Outcome.REJECTED if run.status == "rejected" else Outcome.NOT_DISPATCHED
    if any(c.ok and not c.cancelled for c in calls):
        return Outcome.DISPATCHED
    if not calls or any(c.cancelled for c in calls):
        return Outcome.CANCELLED
    return Outcome.FAILED


def _subtasks(run: RecordedRun) -> pl.DataFrame:
    """The dispatched plan's sub-tasks (the last usable plan) and what became of each."""
    plans = run.usable_plans
    rows: list[dict[str, Any]] = []
    by_index: dict[int, list[RecordedCall]] = {}
    for call in run.calls_in(Role.WORKER):
        if call.subtask_index is not None:
            by_index.setdefault(call.subtask_index, []).append(call)
    for sub in (plans[-1].plan or ()) if plans else ():
        calls = by_index.get(sub.index, [])
        costs = [c.cost_usd for c in calls]
        rows.append({
            "index": sub.index, "title": sub.title, "difficulty": sub.difficulty.value,
            "model": sub.model, "outcome": _recorded_outcome(run, sub.index, calls).value,
            "attempts": len(calls),
            "input_tokens": sum(c.input_tokens or 0 for c in calls) if calls else None,
            "output_tokens": sum(c.output_tokens or 0 for c in calls) if calls else None,
            "cost_usd": (None if any(c is None for c in costs) else sum(costs)) if calls
            else 0.0,
            "duration_ms": ((max(c.end_ns for c in calls) - min(c.start_ns for c in calls)) / 1e6
                            if calls else None),
        })
    return pl.DataFrame(
        rows,
        schema={
            "index": pl.Int64, "title": pl.String, "difficulty": pl.String,
            "model": pl.String, "outcome": pl.String, "attempts": pl.Int64,
            "input_tokens": pl.Int64, "output_tokens": pl.Int64, "cost_usd": pl.Float64,
            "duration_ms": pl.Float64,
        },
    )


@dataclass(frozen=True, slots=True)
class Replay:
    """One run reconstructed, and replayed under other limits.

    Attributes:
        run: the run as recorded.
        override: the limits asked for.
        timeline: :data:`TIMELINE_COLUMNS`, one row per call in start order (``kind``
            plan | worker | synthesis | critic), a ``dispatch`` row after each plan the
            dispatch layer judged (``status`` dispatch | replan | reject, ``detail`` its
            reason), and a last ``total`` row (the run's cost, tokens, duration, status;
            ``step`` null). Calls that started together are in sub-task order.
            ``offset_ms`` from the first call's start; ``status`` ok | error | cancelled.
        subtasks: :data:`SUBTASK_COLUMNS`, the dispatched plan's sub-tasks: ``outcome``
            dispatched | failed | cancelled | not_dispatched | rejected, with the sums over
            their worker attempts (``cost_usd`` 0 when none ran, null when unpriced).
        counterfactual: the run under ``override`` applied to its recorded limits.
        as_recorded: the run under its own recorded limits (reproduces the record).
    """

    run: RecordedRun
    override: LimitsOverride
    timeline: pl.DataFrame
    subtasks: pl.DataFrame
    counterfactual: Counterfactual
    as_recorded: Counterfactual

    @property
    def reproduces_record(self) -> bool:
        """Whether the counterfactual under the recorded limits gives back the record
        (status, breach, dispatched, cost to 1e-9 USD, nothing estimated)."""
        same = self.as_recorded
        run = self.run
        return (
            same.status == run.status
            and (same.breach or None) == (run.breach or None)
            and same.dispatched == (run.workers_dispatched or 0)
            and abs(same.cost_usd - run.cost_usd) <= 1e-9
            and not same.has_estimates
        )

    def comparison(self) -> pl.DataFrame:
        """What happened beside the counterfactual: columns ``figure``, ``recorded``,
        ``counterfactual``, ``basis`` (all text, ready to print)."""
        return comparison_frame(self.run, self.counterfactual, self.as_recorded.reason)

    def plan_beside_counterfactual(self) -> pl.DataFrame | None:
        """The recorded plan's sub-tasks with the counterfactual's outcome, cost and basis
        of each (``cf_outcome``, ``cf_cost_usd``, ``cf_basis``), when the counterfactual
        checked that same plan; None when it checked another (a replan)."""
        cf = self.counterfactual_subtasks()
        if cf.is_empty() or cf["title"].to_list() != self.subtasks["title"].to_list():
            return None
        return self.subtasks.with_columns(
            cf["outcome"].alias("cf_outcome"), cf["cost_usd"].alias("cf_cost_usd"),
            cf["basis"].alias("cf_basis"),
        )

    def counterfactual_subtasks(self) -> pl.DataFrame:
        """The counterfactual's sub-tasks: index, title, difficulty, model, outcome,
        cost_usd, basis."""
        return subtask_outcomes_frame(self.counterfactual)

    def counterfactual_items(self) -> pl.DataFrame:
        """Every figure the counterfactual charged: stage, label, model, subtask_index,
        cost_usd, basis, note."""
        return line_items_frame(self.counterfactual)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain data for :func:`analytics.plain.json_text` (which writes
        ``run.started_at``, a naive UTC datetime, as ISO 8601 with ``Z``)."""
        run, cf = self.run, self.counterfactual
        return {
            "run": {
                "run_id": run.run_id, "task_class": run.task_class,
                "task_id": run.task_id, "task_input_recorded": run.task_input is not None,
                "seed": run.seed, "started_at": run.started_at,
                "status": run.status, "breach": run.breach, "cost_usd": run.cost_usd,
                "duration_ms": run.duration_ms, "unpriced_calls": run.unpriced_calls,
                "limits": limits_dict(run.limits), "replay_of": run.replay_of,
                "planner_model": run.planner_model, "synthesis_model": run.synthesis_model,
            },
            "timeline": self.timeline.to_dicts(),
            "subtasks": self.subtasks.to_dicts(),
            "counterfactual": counterfactual_dict(cf),
            "override": self.override.describe(),
            "reproduces_record": self.reproduces_record,
        }


def limits_text(limits: Limits) -> str:
    """``cap 8, ceiling $0.05, reject`` (``none`` for a limit that is off)."""
    cap = "none" if limits.max_workers is None else str(limits.max_workers)
    ceiling = "none" if limits.ceiling_usd is None else usd(limits.ceiling_usd)
    return f"cap {cap}, ceiling {ceiling}, {limits.policy.value}"


def limits_dict(limits: Limits) -> dict[str, Any]:
    """``{"max_workers", "ceiling_usd", "policy"}`` of ``limits`` (None = off)."""
    return {"max_workers": limits.max_workers, "ceiling_usd": limits.ceiling_usd,
            "policy": limits.policy.value}


def counterfactual_dict(cf: Counterfactual) -> dict[str, Any]:
    """A :class:`Counterfactual` as JSON-ready data."""
    return {
        "limits": limits_dict(cf.limits),
        "replayable": cf.replayable,
        "status": cf.status.value,
        "breach": cf.breach.value if cf.breach else None,
        "reason": cf.reason,
        "verdicts": [
            {"action": v.action.value, "proposed": v.proposed, "dispatch": list(v.dispatch),
             "breaches": [b.value for b in v.breaches], "estimate_usd": v.estimate_usd,
             "reason": v.reason}
            for v in cf.verdicts
        ],
        "proposed": cf.proposed,
        "dispatched": cf.dispatched,
        "cost_usd": cf.cost_usd,
        "task_cost_usd": cf.task_cost_usd,
        "not_completed": cf.not_completed,
        "redo_usd": cf.redo_usd,
        "recorded_cost_usd": cf.recorded_cost_usd,
        "saving_usd": cf.saving_usd,
        "saving_pct": cf.saving_pct,
        "estimated_usd": cf.estimated_usd,
        "has_estimates": cf.has_estimates,
        "plan_estimated": cf.plan_estimated,
        "unpriced_items": cf.unpriced_items,
        "subtasks": subtask_outcomes_frame(cf).to_dicts(),
        "items": line_items_frame(cf).to_dicts(),
    }


def subtask_outcomes_frame(cf: Counterfactual) -> pl.DataFrame:
    """The counterfactual's sub-tasks (see :meth:`Replay.counterfactual_subtasks`)."""
    return pl.DataFrame(
        [
            {"index": s.index, "title": s.title, "difficulty": s.difficulty, "model": s.model,
             "outcome": s.outcome.value, "cost_usd": s.cost_usd,
             "basis": s.basis.value if s.basis else None}
            for s in cf.subtasks
        ],
        schema={"index": pl.Int64, "title": pl.String, "difficulty": pl.String,
                "model": pl.String, "outcome": pl.String, "cost_usd": pl.Float64,
                "basis": pl.String},
    )


def line_items_frame(cf: Counterfactual) -> pl.DataFrame:
    """The counterfactual's charged figures as a DataFrame."""
    return pl.DataFrame(
        [
            {"stage": str(i.stage), "label": i.label, "model": i.model,
             "subtask_index": i.subtask_index, "cost_usd": i.cost_usd,
             "basis": i.basis.value, "note": i.note}
            for i in cf.items
        ],
        schema={"stage": pl.String, "label": pl.String, "model": pl.String,
                "subtask_index": pl.Int64, "cost_usd": pl.Float64, "basis": pl.String,
                "note": pl.String},
    )


def _basis(cf: Counterfactual, *stages: str) -> str:
    items = [i for i in cf.items if i.stage in stages]
    if not items:
        return "recorded" if cf.replayable else "-"
    if any(i.basis is Basis.ESTIMATED for i in items):
        return "estimated" if all(i.basis is Basis.ESTIMATED for i in items) else "partly estimated"
    return "recorded"


def _done(status: str) -> str:
    return "yes" if status == "ok" else f"no ({status})"


def comparison_frame(
    run: RecordedRun, cf: Counterfactual, recorded_reason: str | None = None
) -> pl.DataFrame:
    """What happened beside a counterfactual of it (see :meth:`Replay.comparison`);
    ``recorded_reason`` is the dispatch decision as recorded (a row when given). A task
    the limits leave undone gets a ``task redone $`` row (its redo, estimated); with no
    estimate its total and saving read ``unknown``."""
    recorded_stage = {
        stage: sum(c.cost_usd or 0.0 for c in run.calls_in(*roles))
        for stage, roles in (("plan", (Role.PLAN,)), ("worker", (Role.WORKER,)),
                             ("synthesis", (Role.SYNTHESIS, Role.CRITIC)))
    }
    redo = cf.redo
    pct = "-" if cf.saving_pct is None else f"{cf.saving_pct:.1f}%"
    saving = "unknown" if cf.saving_usd is None else f"{usd(cf.saving_usd)} ({pct})"
    total = "unknown" if cf.task_cost_usd is None else usd(cf.task_cost_usd)
    rows = [
        ("limits", limits_text(run.limits), limits_text(cf.limits), "given"),
        *([("dispatch decision", recorded_reason, cf.reason, "dispatch layer")]
          if recorded_reason is not None else []),
        ("status", run.status, cf.status.value, "dispatch layer"),
        ("breach", run.breach or "-", cf.breach.value if cf.breach else "-", "dispatch layer"),
        ("sub-tasks proposed", str(run.workers_proposed if run.workers_proposed is not None
                                   else "-"),
         str(cf.proposed if cf.proposed is not None else "-"), "recorded"
         if not cf.plan_estimated else "estimated"),
        ("sub-tasks dispatched", str(run.workers_dispatched or 0), str(cf.dispatched),
         "dispatch layer"),
        ("task completed", _done(run.status), _done(cf.status.value), "dispatch layer"),
        ("planner $", usd(recorded_stage["plan"]), usd(cf.stage_usd(Role.PLAN)),
         _basis(cf, Role.PLAN)),
        ("workers $", usd(recorded_stage["worker"]), usd(cf.stage_usd(Role.WORKER)),
         _basis(cf, Role.WORKER)),
        ("synthesis $", usd(recorded_stage["synthesis"]),
         usd(cf.stage_usd(Role.SYNTHESIS, Role.CRITIC)),
         _basis(cf, Role.SYNTHESIS, Role.CRITIC)),
        *([("task redone $", "-", "unknown" if redo.cost_usd is None else usd(redo.cost_usd),
            _basis(cf, REDO_STAGE))] if redo is not None else []),
        ("total $", usd(run.cost_usd), total,
         "partly estimated" if cf.has_estimates else "recorded"),
        ("saving", "-", saving,
         redo.note if redo is not None and redo.cost_usd is None
         else f"{usd(cf.estimated_usd)} of the cost estimated" if cf.has_estimates
         else "recorded"),
    ]
    return pl.DataFrame(rows, schema=["figure", "recorded", "counterfactual", "basis"],
                        orient="row")


def replay(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    override: LimitsOverride = LimitsOverride(),  # noqa: B008 - frozen
    *,
    estimates: Estimates | Callable[[str], Estimates] | None = None,
) -> Replay:
    """Reconstruct run ``run_id`` and replay it under ``override``.

    Args:
        con: a store connection.
        run_id: the run id, or a unique prefix of at least 6 characters.
        override: the limits to replay under (default: as recorded).
        estimates: figures for work the record lacks, or a function reading them for a
            task class; default read from the store (every recorded run of the run's
            class: seconds at a million runs). Read only when the replay asks for a
            figure the record lacks (:class:`OnDemandEstimates`): a run replayed under
            limits that keep its recorded work needs none.

    Returns:
        The :class:`Replay`.

    Raises:
        RunNotFoundError: no such run.
        ReplayError: the override gives invalid limits.
    """
    run = load_recorded_run(con, run_id)
    limits = override.apply(run.limits)
    if not isinstance(estimates, Estimates):
        read = estimates or (lambda task_class: load_estimates(con, task_class))
        estimates = OnDemandEstimates.of(lambda: read(run.task_class))
    as_recorded = counterfactual(run, run.limits, estimates)
    return Replay(
        run=run,
        override=override,
        timeline=_timeline(run, as_recorded),
        subtasks=_subtasks(run),
        counterfactual=counterfactual(run, limits, estimates),
        as_recorded=as_recorded,
    )


class OnDemandEstimates:
    """An :class:`~analytics.recorded.Estimates` read the first time one of its figures is
    asked for (any attribute or method), then that one object's: a counterfactual asks
    only for work its run's record lacks (a sub-task it never ran, a failed worker's
    answer, a missing synthesis, a task redone), so most replays read none. The figures
    are the same either way: the read is the same function, called at most once.
    """

    def __init__(self, read: Callable[[], Estimates]) -> None:
        self._read = read
        self._value: Estimates | None = None

    @classmethod
    def of(cls, read: Callable[[], Estimates]) -> Estimates:
        """An on-demand stand-in for ``read()``, typed as the :class:`Estimates` it
        answers for (it has every attribute and method of one)."""
        return cast(Estimates, cls(read))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes: not a figure
            raise AttributeError(name)
        if self._value is None:
            self._value = self._read()
        return getattr(self._value, name)


RUN_COMPARISON_FIGURES: Mapping[str, str] = {
    "status": "status",
    "breach": "breach",
    "max_workers": "cap",
    "ceiling_usd": "ceiling $",
    "policy": "policy",
    "workers_proposed": "sub-tasks proposed",
    "workers_dispatched": "sub-tasks dispatched",
    "workers_failed": "workers failed",
    "workers_cancelled": "workers cancelled",
    "llm_calls": "LLM calls",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "cost_usd": "cost $",
    "duration_ms": "duration ms",
}
"""``runs`` columns :func:`compare_runs` puts side by side, with their labels."""


def compare_runs(con: duckdb.DuckDBPyConnection, run_id: str, other_id: str) -> pl.DataFrame:
    """Two runs side by side (an original and its live re-run).

    Returns:
        Columns ``figure``, ``original``, ``rerun`` (text) for each of
        :data:`RUN_COMPARISON_FIGURES`, then the cost difference.

    Raises:
        RunNotFoundError: either run is missing.
    """
    first, second = get_run(con, run_id), get_run(con, other_id)

    def text(column: str, value: Any) -> str:
        if value is None:
            return "-"
        if column.endswith("_usd"):
            return usd(value)
        if isinstance(value, float):
            return number(value, 0)
        return str(value)

    rows = [(label, text(col, first[col]), text(col, second[col]))
            for col, label in RUN_COMPARISON_FIGURES.items()]
    diff = second["cost_usd"] - first["cost_usd"]
    pct = f" ({100 * diff / first['cost_usd']:+.1f}%)" if first["cost_usd"] else ""
    rows.append(("cost change $", "-", f"{usd(diff, signed=True)}{pct}"))
    rows.append(("run id", first["run_id"], second["run_id"]))
    return pl.DataFrame(rows, schema=["figure", "original", "rerun"], orient="row")
