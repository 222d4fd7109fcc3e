"""Runs as their spans recorded them: the plan, every call, the limits; read in one query.

Why one file: the records (:class:`RecordedRun`, :class:`RecordedCall`,
:class:`Estimates`) and the SQL that fills them change together: a field added to one needs
its column in the other; over a quarter of the file is their docstrings.

Replay and what-if rebuild a run from its spans alone (no model is called). This module
reads what they need from the store and turns it into plain records (LLM calls are the
*leaf* calls, ``spans.is_leaf_call``, as every cost in the store is summed):

- :class:`RecordedRun`: the run's ``runs`` row (status, breach, limits, totals), the task
  it ran (``cliff.task.id``, ``cliff.task.input`` when content capture was on, the seed)
  and its LLM calls in start order (:class:`RecordedCall`), each plan call carrying the
  routed plan it proposed (``cliff.plan.subtasks``) as
  :class:`orchestrator.dispatch.PlannedSubTask` objects, the type the dispatch layer checks.
- :class:`Estimates`: per task class, what a sub-task costs on a model, what synthesis
  costs, the synthesis model's input price, and the class's completed runs (what a task
  redone within some limits costs, :mod:`analytics.redo`): the figures a counterfactual
  uses for work the record does not hold (a sub-task that was never run, a task the
  limits leave undone).

:func:`load_recorded_runs` reads any number of runs with two queries (their calls and
root spans in one read of the spans, their run rows), so what-if over thousands of runs
costs one scan of the spans, not one per run; :func:`read_recorded_runs` keeps what it
read as frames, made into records a part at a time.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics.bulk_read import registered
from cliffwatch.analytics.redo import CompletedRuns, RedoEstimate
from cliffwatch.analytics.runs import require_task_class, resolve_run_id
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.window import Window
from cliffwatch.orchestrator.dispatch import Difficulty, Limits, PlannedSubTask
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import CapPolicy, Role

CANCELLED_ERROR = cv.ERROR_TYPE_CANCELLED
"""``error.type`` of a call cancelled in flight (telemetry/conventions.py)."""


def attr_sql(key: str, sql_type: str | None = None, alias: str = "s") -> str:
    """SQL reading span attribute ``key`` of the spans table aliased ``alias`` (text, or
    ``TRY_CAST`` to ``sql_type``: NULL when absent or not of that type)."""
    expr = f"{alias}.attributes->>'$.\"{key}\"'"
    return f"TRY_CAST({expr} AS {sql_type})" if sql_type else expr


def attrs_sql(keys: Sequence[str], alias: str = "s") -> str:
    """SQL reading several span attributes in one parse of the attributes JSON: a
    ``VARCHAR[]`` of their texts in the order of ``keys`` (NULL where absent)."""
    paths = ", ".join(f"'$.\"{key}\"'" for key in keys)
    return f"json_extract_string({alias}.attributes, [{paths}])"


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One LLM call span of a run.

    Attributes:
        span_id: the span's id.
        role: ``plan``, ``worker``, ``synthesis``, ``critic`` (or ``call`` when ingested).
        name: the span name (``worker 3``).
        model: request model, else response model (a litellm model string).
        start_ns, end_ns: start and end, ns since the Unix epoch.
        input_tokens, output_tokens: token counts (None when not reported).
        cost_usd: the call's cost in USD; None when unpriced.
        status_code: ``ok``, ``error`` or ``unset``.
        error_type: ``error.type`` (``rate_limit``, ``timeout``, ``cancelled``...), or None.
        attempt: ``cliff.attempt`` (1 for a first attempt), or None.
        subtask_index: ``cliff.subtask.index`` of a worker call, or None.
        subtask_title: ``cliff.subtask.title`` of a worker call, or None.
        price_input_usd_per_token: the input price the cost used, or None.
        plan: the routed plan a planner call proposed (``cliff.plan.subtasks``); None
            when the call is not a plan or its answer was unusable.
    """

    span_id: str
    role: str
    name: str
    model: str | None
    start_ns: int
    end_ns: int
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    status_code: str
    error_type: str | None
    attempt: int | None
    subtask_index: int | None
    subtask_title: str | None
    price_input_usd_per_token: float | None
    plan: tuple[PlannedSubTask, ...] | None = None

    @property
    def duration_ms(self) -> float:
        """End minus start, ms."""
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def ok(self) -> bool:
        """The call returned an answer (status not ``error``)."""
        return self.status_code != "error"

    @property
    def cancelled(self) -> bool:
        """The call was cancelled in flight (spend had crossed the ceiling)."""
        return self.error_type == CANCELLED_ERROR


@dataclass(frozen=True, slots=True)
class RecordedRun:
    """One run as the store holds it.

    Attributes:
        run_id: the trace id.
        task_class: the run's task class.
        started_at: start, naive UTC.
        duration_ms: the run span's duration, ms.
        status: ``ok``, ``rejected``, ``cancelled`` or ``failed``.
        breach: ``cap``, ``ceiling`` or None.
        cost_usd: the run's cost, USD (sum of its leaf LLM calls, unpriced excluded).
        unpriced_calls: calls with no price (not in ``cost_usd``).
        limits: the cap, ceiling and policy the run ran under (policy ``reject`` when the
            run did not record one).
        workers_proposed, workers_dispatched, workers_failed, workers_cancelled: as the
            run span recorded them (None when not recorded).
        plan_attempts: planning requests made (``cliff.plan_attempts``), or None.
        estimate_usd: the last pre-dispatch estimate, USD (``cliff.estimate_usd``), or None.
        reserve_usd: USD that estimate held back for the calls after the workers
            (``cliff.reserve_usd``), or None (runs recorded before it was recorded).
        reserve_usd_per_subtask: USD it held back per dispatched sub-task
            (``cliff.reserve_usd_per_subtask``), or None.
        task_id: ``cliff.task.id``, or None.
        task_input: ``cliff.task.input`` (only with content capture on), or None.
        seed: ``cliff.seed``, or None.
        replay_of: the run this run replays (``cliff.replay_of``), or None.
        planner_model, synthesis_model: from the first plan / synthesis call, or None.
        calls: the LLM calls in start order.
    """

    run_id: str
    task_class: str
    started_at: datetime
    duration_ms: float
    status: str
    breach: str | None
    cost_usd: float
    unpriced_calls: int
    limits: Limits
    workers_proposed: int | None
    workers_dispatched: int | None
    workers_failed: int | None
    workers_cancelled: int | None
    plan_attempts: int | None
    estimate_usd: float | None
    task_id: str | None
    task_input: str | None
    seed: int | None
    replay_of: str | None
    planner_model: str | None
    synthesis_model: str | None
    calls: tuple[RecordedCall, ...] = field(default=())
    reserve_usd: float | None = None
    reserve_usd_per_subtask: float | None = None

    def calls_in(self, *roles: str) -> list[RecordedCall]:
        """The calls of these roles, in start order."""
        return [c for c in self.calls if c.role in roles]

    @property
    def plan_calls(self) -> list[RecordedCall]:
        """Every planner call (usable or not, retries included), in start order."""
        return self.calls_in(Role.PLAN)

    @property
    def usable_plans(self) -> list[RecordedCall]:
        """Planner calls whose answer was a usable plan, in order (a replan adds one)."""
        return [c for c in self.plan_calls if c.plan is not None]

    @property
    def replayable(self) -> bool:
        """Whether the run was recorded by cliffwatch's orchestrator (it has plan calls)."""
        return bool(self.plan_calls)

    @property
    def start_ns(self) -> int:
        """The earliest call start, ns (0 without calls)."""
        return min((c.start_ns for c in self.calls), default=0)

    def worker_models(self) -> dict[str, str]:
        """``{difficulty: model}`` as the run routed its sub-tasks (from its plans)."""
        models: dict[str, str] = {}
        for call in self.usable_plans:
            for sub in call.plan or ():
                models.setdefault(sub.difficulty.value, sub.model)
        return models

    def critic_model(self) -> str | None:
        """The model of the run's first critic call, or None."""
        critics = self.calls_in(Role.CRITIC)
        return critics[0].model if critics else None


@dataclass(frozen=True, slots=True)
class WorkerEstimate:
    """What one sub-task costs on one model in one task class, from recorded workers.

    Attributes:
        cost_usd: mean USD per sub-task over its attempts (retries included), over the
            sub-tasks that ran to an end (not cancelled); None when none was priced.
        output_tokens: mean output tokens of the answer (successful attempts).
        samples: sub-tasks the means are over.
    """

    cost_usd: float | None
    output_tokens: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class Estimates:
    """Per task class figures for work a run's own record does not hold.

    Attributes:
        workers: ``{(task_class, model): WorkerEstimate}``.
        synthesis_usd: ``{task_class: mean USD of the synthesis stage per run}``
            (synthesis and critic calls, over runs that reached synthesis).
        synthesis_price_input: ``{task_class: USD per input token of its synthesis
            model}`` (the price a worker's answer costs when synthesis reads it).
        completed: the completed runs a task redone within some limits is estimated
            from (:mod:`analytics.redo`).
    """

    workers: Mapping[tuple[str, str], WorkerEstimate] = field(default_factory=dict)
    synthesis_usd: Mapping[str, float] = field(default_factory=dict)
    synthesis_price_input: Mapping[str, float] = field(default_factory=dict)
    completed: CompletedRuns = field(default_factory=CompletedRuns)

    def worker(self, task_class: str, model: str) -> WorkerEstimate | None:
        """The estimate for a sub-task of ``task_class`` on ``model``, or None."""
        return self.workers.get((task_class, model))

    def redo(self, task_class: str, limits: Limits) -> RedoEstimate:
        """What a ``task_class`` task redone within ``limits`` costs
        (:meth:`analytics.redo.CompletedRuns.redo`)."""
        return self.completed.redo(task_class, limits)


def parse_plan(text: str | None) -> tuple[PlannedSubTask, ...] | None:
    """The routed plan of a ``cliff.plan.subtasks`` JSON array; None when absent or bad.

    Missing per-sub-task fields get neutral values (title ``sub-task i``, difficulty
    routine, no estimate), so a plan recorded by another producer still replays.
    """
    if not text:
        return None
    try:
        items = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(items, list):
        return None
    plan: list[PlannedSubTask] = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            return None
        try:
            difficulty = Difficulty(item.get("difficulty", Difficulty.ROUTINE))
        except ValueError:
            difficulty = Difficulty.ROUTINE
        estimate = item.get("estimated_cost_usd")
        plan.append(
            PlannedSubTask(
                index=int(item.get("index", position)),
                title=str(item.get("title", f"sub-task {position}")),
                difficulty=difficulty,
                model=str(item.get("model") or ""),
                max_output_tokens=int(item.get("max_output_tokens") or 0),
                estimated_cost_usd=float(estimate) if estimate is not None else None,
            )
        )
    return tuple(plan)


def recorded_limits(max_workers: Any, ceiling_usd: Any, policy: Any) -> Limits:
    """The recorded limits; a value the dispatch layer would refuse counts as no limit."""
    try:
        chosen = CapPolicy(policy) if policy else CapPolicy.REJECT
    except ValueError:
        chosen = CapPolicy.REJECT
    try:
        return Limits(max_workers, ceiling_usd, chosen)
    except (TypeError, ValueError):  # orchestrator's ConfigError is a ValueError
        return Limits(None, None, chosen)


_SPAN_KEYS: tuple[tuple[str, str, str | None], ...] = (
    ("error_type", cv.ERROR_TYPE, None),
    ("attempt", cv.CLIFF_ATTEMPT, "INTEGER"),
    ("subtask_index", cv.CLIFF_SUBTASK_INDEX, "INTEGER"),
    ("subtask_title", cv.CLIFF_SUBTASK_TITLE, None),
    ("plan_json", cv.CLIFF_PLAN_SUBTASKS, None),
    ("plan_attempts", cv.CLIFF_PLAN_ATTEMPTS, "INTEGER"),
    ("task_id", cv.CLIFF_TASK_ID, None),
    ("task_input", cv.CLIFF_TASK_INPUT, None),
    ("seed", cv.CLIFF_SEED, "BIGINT"),
    ("reserve_usd", cv.CLIFF_RESERVE_USD, "DOUBLE"),
    ("reserve_usd_per_subtask", cv.CLIFF_RESERVE_USD_PER_SUBTASK, "DOUBLE"),
)
"""The span attributes a recorded run reads: ``(column, key, SQL type or None for
text)``; the first five a call's, the rest its root span's."""

_SPANS_SQL = f"""
    SELECT run_id, span_id, role, name, model, start_ns, end_ns, input_tokens,
        output_tokens, cost_usd, status_code, price_input_usd_per_token, is_call, is_root,
        {", ".join(f"TRY_CAST(a[{i}] AS {t}) AS {c}" if t else f"a[{i}] AS {c}"
                   for i, (c, _, t) in enumerate(_SPAN_KEYS, start=1))}
    FROM (
        SELECT s.trace_id AS run_id, s.span_id, s.role, s.name,
            coalesce(s.request_model, s.response_model) AS model,
            s.start_time_unix_nano AS start_ns, s.end_time_unix_nano AS end_ns,
            s.input_tokens, s.output_tokens, s.cost_usd, s.status_code,
            s.price_input_usd_per_token,
            coalesce(s.is_leaf_call, false) AS is_call,
            s.parent_span_id IS NULL AS is_root,
            -- one parse of the attributes per span
            {attrs_sql([key for _, key, _ in _SPAN_KEYS])} AS a
        FROM spans s
        WHERE s.trace_id IN (SELECT run_id FROM scope)
            AND (s.is_leaf_call OR s.parent_span_id IS NULL)
    )
    ORDER BY run_id, start_ns, span_id
"""
"""The spans a recorded run is rebuilt from, in one read of the spans: its LLM calls
(``is_call``) and its root spans (``is_root``, whose task attributes the last six
columns read), by run, in start order."""

_CALL_COLUMNS: tuple[str, ...] = (
    "run_id", "span_id", "role", "name", "model", "start_ns", "end_ns", "input_tokens",
    "output_tokens", "cost_usd", "status_code", "error_type", "attempt", "subtask_index",
    "subtask_title", "price_input_usd_per_token", "plan_json",
)
"""A call's columns of ``_SPANS_SQL``: the run id, :class:`RecordedCall`'s fields in
their order up to ``plan``, then the plan's text (a call is built from them by position;
a test holds them in step)."""
_ROOT_COLUMNS: tuple[str, ...] = (
    "run_id", "plan_attempts", "task_id", "task_input", "seed", "reserve_usd",
    "reserve_usd_per_subtask",
)

_RUNS_SQL = """
    SELECT r.run_id, r.task_class, r.started_at, r.duration_ms, r.status, r.breach,
        r.cost_usd, r.unpriced_calls, r.max_workers, r.ceiling_usd, r.policy,
        r.workers_proposed, r.workers_dispatched, r.workers_failed, r.workers_cancelled,
        r.estimate_usd, r.replay_of, r.planner_model, r.synthesis_model
    FROM runs r JOIN scope ON r.run_id = scope.run_id
    ORDER BY r.started_at, r.run_id
"""


def _scope_sql(
    window: Window, task_class: str | None, ids_table: str | None
) -> tuple[str, dict[str, Any]]:
    """``(scope CTE, params)``: the run ids in ``window`` (of ``task_class``, among those
    of the registered table ``ids_table`` when given)."""
    conds, params = window.conditions("started_at")
    if task_class is not None:
        conds.append("task_class = $task_class")
        params["task_class"] = task_class
    if ids_table is not None:
        conds.append(f"run_id IN (SELECT run_id FROM {ids_table})")
    return f"WITH scope AS (SELECT run_id FROM runs {where(conds)})", params


def _run_from_row(row: Mapping[str, Any], calls: tuple[RecordedCall, ...]) -> RecordedRun:
    return RecordedRun(
        run_id=row["run_id"],
        task_class=row["task_class"],
        started_at=row["started_at"],
        duration_ms=row["duration_ms"],
        status=row["status"],
        breach=row["breach"],
        cost_usd=row["cost_usd"],
        unpriced_calls=row["unpriced_calls"],
        limits=recorded_limits(row["max_workers"], row["ceiling_usd"], row["policy"]),
        workers_proposed=row["workers_proposed"],
        workers_dispatched=row["workers_dispatched"],
        workers_failed=row["workers_failed"],
        workers_cancelled=row["workers_cancelled"],
        plan_attempts=row["plan_attempts"],
        estimate_usd=row["estimate_usd"],
        task_id=row["task_id"],
        task_input=row["task_input"],
        seed=row["seed"],
        replay_of=row["replay_of"],
        planner_model=row["planner_model"],
        synthesis_model=row["synthesis_model"],
        calls=calls,
        reserve_usd=row["reserve_usd"],
        reserve_usd_per_subtask=row["reserve_usd_per_subtask"],
    )


@dataclass(frozen=True, slots=True)
class RecordedRead:
    """Runs and their calls as one read of the store brought them, as frames; made into
    :class:`RecordedRun` records a part at a time (:meth:`records`), so that a caller
    replaying thousands of runs reads the spans once but holds the records of a part.

    Attributes:
        runs: one row per run, in start order (``started_at``, then ``run_id``): its
            ``runs`` row and its root span's task attributes (null without a root span).
        calls: one row per LLM call, by run id, then start order.
    """

    runs: pl.DataFrame
    calls: pl.DataFrame

    def records(self, run_ids: Collection[str] | None = None) -> list[RecordedRun]:
        """The runs (those among ``run_ids`` when given) with their calls, in start
        order."""
        runs, calls = self.runs, self.calls
        if run_ids is not None:
            wanted = pl.Series(list(run_ids), dtype=pl.String)
            runs = runs.filter(pl.col("run_id").is_in(wanted))
            calls = calls.filter(pl.col("run_id").is_in(wanted))
        by_run: dict[str, list[RecordedCall]] = {}
        # column lists zipped, each call built from its values in field order: half the
        # time of named rows (6,000 runs' calls: 0.64 s against 1.2 s at 100k, issue 11)
        for run_id, *values, plan_json in zip(*(calls[c].to_list() for c in _CALL_COLUMNS),
                                             strict=True):
            plan = parse_plan(plan_json) if values[1] == Role.PLAN else None
            call = RecordedCall(*values, plan)  # type: ignore[call-arg]  # fields by position
            by_run.setdefault(run_id, []).append(call)
        return [_run_from_row(row, tuple(by_run.get(row["run_id"], ())))
                for row in runs.iter_rows(named=True)]


def read_recorded_runs(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
    run_ids: Sequence[str] | None = None,
) -> RecordedRead:
    """Every run started in ``window`` (of ``task_class``, among ``run_ids``) and its
    calls, as frames (:class:`RecordedRead`).

    Two queries, whatever the number of runs: one read of the spans (the LLM calls and the
    root spans of every run in scope, ``_SPANS_SQL``) and one of their ``runs`` rows.
    ``run_ids`` are registered as a table the scope joins, so DuckDB filters the spans by
    them as it scans (its join filter; a store's spans lie in ingestion order with random
    trace ids, so no id range skips any of them): at 1M runs 6,000 runs spread over the
    store read in ~1 s, where six reads of 1,000 by run-id range (calls and root spans
    read apart) took ~7.6 s (issue 11).

    Args:
        con: a store connection (DuckDB, or ClickHouse's).
        window: on the run's ``started_at``.
        task_class: only runs of this class (it must exist in the store).
        run_ids: only these full run ids.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    if task_class is not None:
        require_task_class(con, task_class)
    ids = {} if run_ids is None else {
        "ids": pl.DataFrame({"run_id": list(run_ids)}, schema={"run_id": pl.String})}
    with registered(con, **ids) as names:
        scope, params = _scope_sql(window, task_class, names.get("ids"))
        spans = frame(con, f"{scope} {_SPANS_SQL}", params)
        runs = frame(con, f"{scope} {_RUNS_SQL}", params)
    # a run's first root span in start order holds its task attributes
    roots = (spans.filter(pl.col("is_root")).select(_ROOT_COLUMNS)
             .unique("run_id", keep="first", maintain_order=True))
    calls = spans.filter(pl.col("is_call")).select(_CALL_COLUMNS)
    del spans
    return RecordedRead(runs.join(roots, on="run_id", how="left", maintain_order="left"),
                        calls)


def load_recorded_runs(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
    run_ids: Sequence[str] | None = None,
) -> list[RecordedRun]:
    """Every run started in ``window`` (of ``task_class``, among ``run_ids``) with its calls.

    Two queries, whatever the number of runs (:func:`read_recorded_runs`).

    Args:
        con: a store connection.
        window: on the run's ``started_at``.
        task_class: only runs of this class (it must exist in the store).
        run_ids: only these full run ids.

    Returns:
        The runs in start order.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    return read_recorded_runs(con, window, task_class, run_ids).records()


def load_recorded_run(con: duckdb.DuckDBPyConnection, run_id: str) -> RecordedRun:
    """One run with its calls.

    Args:
        con: a store connection.
        run_id: the run id, or a unique prefix of at least 6 characters.

    Raises:
        RunNotFoundError: no run has that id (or the prefix is ambiguous).
    """
    full = resolve_run_id(con, run_id)
    return load_recorded_runs(con, run_ids=[full])[0]

