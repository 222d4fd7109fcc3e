"""The work limits leave undone: what redoing a task within those limits would cost.

A counterfactual that rejects a run (a cap or ceiling breach at dispatch) or cancels it
(spend over the ceiling) does not pay for the run's workers, but the task is not done: the
work is still to do. Savings count it (:mod:`analytics.counterfactual`): such a task is
priced as the task redone within the same limits, *estimated* from the class's recorded
runs that completed within them.

Reference runs: every run of the task class in the store (not only the window: the more
completed runs, the better the estimate) with status ``ok``, every call priced
(``unpriced_calls = 0``, so no cost is a lower bound), a recorded ``workers_dispatched``
of at least 1 (an orchestrator run whose plan went through dispatch and did work) and at
most the cap, and a cost of at most the ceiling: runs that did the class's work within
those limits. A limit switched off (None) filters nothing.

The statistic is their **mean** cost per run. The mean, not the median: a what-if's spend
is a sum over runs, and the mean is the figure whose sum over the runs it stands for is
unbiased; cost per run is right-skewed (the Cost Cliff), so the median sits below the
mean and would understate the redo spend, overstating the saving. The mean can still
understate one refused task's redo: the tasks limits refuse tend to be the large ones, and
a large task redone within the cap may cost more than the class's average completed run.
A saving that counts redo work is therefore an upper bound, never a made-up figure: when
no reference run exists, the redo cost is None (unknown), and so is the saving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics.store_access import frame, where
from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.telemetry.conventions import RunStatus

NOT_COMPLETED: frozenset[RunStatus] = frozenset({RunStatus.REJECTED, RunStatus.CANCELLED})
"""Run statuses in which the limits left the task undone (rejected at dispatch, or
cancelled once spend crossed the ceiling). A run that fails under other limits where the
record completed it is undone by them too (:attr:`analytics.counterfactual.Counterfactual.
not_completed`)."""


@dataclass(frozen=True, slots=True)
class RedoEstimate:
    """What redoing one task of a class within some limits costs.

    Attributes:
        cost_usd: mean USD per reference run (see the module docstring); None when the
            class has no run that completed within the limits.
        samples: reference runs the mean is over.
        note: one line saying what the figure is, or why there is none.
    """

    cost_usd: float | None
    samples: int
    note: str


_COMPLETED_SCHEMA = pl.Schema(
    {"task_class": pl.String, "workers_dispatched": pl.Int64, "cost_usd": pl.Float64}
)

_COMPLETED_CONDITIONS = (
    f"status = '{RunStatus.OK.value}'", "unpriced_calls = 0",
    "workers_dispatched >= 1", "cost_usd IS NOT NULL",
)


@dataclass(frozen=True, slots=True)
class CompletedRuns:
    """The store's completed, fully priced orchestrator runs, to estimate redo work from.

    Attributes:
        runs: one row per run: ``task_class``, ``workers_dispatched``, ``cost_usd`` (USD).
    """

    runs: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_COMPLETED_SCHEMA))
    _cache: dict[tuple[str, int | None, float | None], RedoEstimate] = field(
        default_factory=dict, compare=False, repr=False
    )

    def redo(self, task_class: str, limits: Limits) -> RedoEstimate:
        """The estimated cost of a ``task_class`` task redone within ``limits`` (cap and
        ceiling; the policy does not change what completed). See the module docstring."""
        key = (task_class, limits.max_workers, limits.ceiling_usd)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._estimate(task_class, limits)
        return found

    def _estimate(self, task_class: str, limits: Limits) -> RedoEstimate:
        cond = pl.col("task_class") == task_class
        if limits.max_workers is not None:
            cond &= pl.col("workers_dispatched") <= limits.max_workers
        if limits.ceiling_usd is not None:
            cond &= pl.col("cost_usd") <= limits.ceiling_usd
        costs = self.runs.filter(cond)["cost_usd"]
        within = _within(limits)
        if costs.is_empty():
            return RedoEstimate(
                None, 0,
                f"no recorded {task_class} run completed within {within}: the cost of the "
                "task redone, and so the saving, is unknown",
            )
        mean = float(costs.sum()) / costs.len()
        return RedoEstimate(
            mean, costs.len(),
            f"the task redone within {within}: mean cost of the {costs.len()} recorded "
            f"{task_class} runs that completed within them",
        )


def _within(limits: Limits) -> str:
    parts = []
    if limits.max_workers is not None:
        parts.append(f"{limits.max_workers} workers")
    if limits.ceiling_usd is not None:
        parts.append(f"${limits.ceiling_usd:g}")
    return " and ".join(parts) if parts else "no limits"


def load_completed_runs(
    con: duckdb.DuckDBPyConnection, task_class: str | None = None
) -> CompletedRuns:
    """The reference runs of ``task_class`` (None: every class), one query.

    Args:
        con: a store connection.
        task_class: one class, or None for all.

    Returns:
        :class:`CompletedRuns` (empty when the store holds none).
    """
    conds = list(_COMPLETED_CONDITIONS)
    params: dict[str, Any] = {}
    if task_class is not None:
        conds.append("task_class = $task_class")
        params["task_class"] = task_class
    rows = frame(con, f"SELECT task_class, workers_dispatched, cost_usd FROM runs "
                      f"{where(conds)}", params)
    return CompletedRuns(rows.cast(_COMPLETED_SCHEMA) if rows.height else CompletedRuns().runs)
