"""The figures a counterfactual returns: what became of each sub-task, every charged
item and whether it is recorded or estimated, and the run's outcome and (honest) saving.

:func:`analytics.counterfactual.counterfactual` builds them (its module docstring says how);
they are plain frozen records, kept apart so the replay logic stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cliffwatch.analytics.redo import NOT_COMPLETED
from cliffwatch.orchestrator.dispatch import Limits, PlanVerdict
from cliffwatch.telemetry.conventions import Breach, RunStatus


class Basis(StrEnum):
    """Where a counterfactual figure comes from."""

    RECORDED = "recorded"
    """A cost the record holds for that very call."""
    ESTIMATED = "estimated"
    """Not in the record (never run, cut short, changed by the new limits, or a task the
    limits leave undone): estimated from the same class's recorded calls on the same
    model, or its recorded runs that completed within the limits."""


USD_RESOLUTION = 1e-12
"""The smallest cost difference a counterfactual reports, USD: the same calls summed in
another order (the store's sum, the replay's ledger) can differ in the last bits (1e-19
USD), which is no change. A saving within this of zero is 0.0, and a run whose cost moves
by no more is not affected (:mod:`analytics.whatif_rows`; the SQL what-if,
:mod:`analytics.whatif_sql`, uses the same threshold)."""


REDO_STAGE = "redo"
"""The stage of the item that prices a task the limits leave undone, redone within them."""


@dataclass(frozen=True, slots=True)
class LineItem:
    """One charged figure of a counterfactual run.

    Attributes:
        stage: ``plan``, ``worker``, ``synthesis``, ``critic`` or :data:`REDO_STAGE`.
        label: what it is (``plan``, ``worker 3``, ``synthesis``, ``task redone``...).
        model: the model, or None.
        subtask_index: the sub-task, for workers.
        cost_usd: USD; None when the call is unpriced or nothing can estimate it.
        basis: recorded or estimated.
        note: why an estimated figure is what it is ("" for recorded ones).
    """

    stage: str
    label: str
    model: str | None
    subtask_index: int | None
    cost_usd: float | None
    basis: Basis
    note: str = ""


@dataclass(frozen=True, slots=True)
class SubTaskOutcome:
    """One sub-task of the plan the counterfactual checked.

    Attributes:
        index: position in the plan.
        title, difficulty, model: from the plan.
        outcome: what became of it.
        cost_usd: USD its worker calls cost (0 when none ran; None if unpriced).
        basis: recorded or estimated (None when nothing ran, so nothing was charged).
    """

    index: int
    title: str
    difficulty: str
    model: str
    outcome: Outcome
    cost_usd: float | None
    basis: Basis | None


@dataclass(frozen=True, slots=True)
class Counterfactual:
    """A recorded run replayed under other limits.

    Attributes:
        run_id: the recorded run.
        task_class: its class.
        limits: the limits it was replayed under.
        replayable: False when the run has no planner call (not recorded by cliffwatch's
            orchestrator): it is then left as it was (``cost_usd`` = recorded).
        status, breach: the run's outcome under ``limits``.
        verdicts: every ``check_plan`` verdict, in order (two after a replan).
        proposed: sub-tasks of the plan checked last, or None without a usable plan.
        dispatched: sub-tasks dispatched.
        subtasks: the last checked plan's sub-tasks and what became of each.
        items: every charged figure, in the order charged (a ``redo`` item last when the
            limits leave undone a task the record completed).
        cost_usd: the task's cost under ``limits``, USD (priced items only): the run's
            calls, plus the estimated redo of a task they leave undone
            (:attr:`task_cost_usd` is None when that redo has no estimate).
        estimated_usd: the part of ``cost_usd`` that is estimated.
        recorded_cost_usd: what the run cost as recorded, USD.
        unpriced_items: items with no cost (unpriced, or nothing to estimate from).
        plan_estimated: the second plan was estimated (replan under a different cap).
    """

    run_id: str
    task_class: str
    limits: Limits
    replayable: bool
    status: RunStatus
    breach: Breach | None
    verdicts: tuple[PlanVerdict, ...]
    proposed: int | None
    dispatched: int
    subtasks: tuple[SubTaskOutcome, ...]
    items: tuple[LineItem, ...]
    cost_usd: float
    estimated_usd: float
    recorded_cost_usd: float
    unpriced_items: int
    plan_estimated: bool = False

    @property
    def not_completed(self) -> bool:
        """Whether the limits leave the task undone: rejected, cancelled, or failed where
        the record completed it (then it carries a redo)."""
        return self.status in NOT_COMPLETED or self.redo is not None

    @property
    def redo(self) -> LineItem | None:
        """The ``redo`` item (see the module docstring, step 6), or None."""
        return next((i for i in self.items if i.stage == REDO_STAGE), None)

    @property
    def redo_usd(self) -> float | None:
        """USD of the task redone within the limits, estimated: 0 when no redo is
        charged, None when one is due and nothing can estimate it."""
        redo = self.redo
        return 0.0 if redo is None else redo.cost_usd

    @property
    def task_cost_usd(self) -> float | None:
        """``cost_usd``, or None when it lacks a redo that cannot be estimated."""
        return None if self.redo_usd is None else self.cost_usd

    @property
    def saving_usd(self) -> float | None:
        """Recorded cost minus :attr:`task_cost_usd`, USD (negative: it would cost more);
        exactly 0.0 when the two are within :data:`USD_RESOLUTION` (the same calls summed
        in another order); None when the redo of work left undone cannot be estimated."""
        cost = self.task_cost_usd
        if cost is None:
            return None
        saving = self.recorded_cost_usd - cost
        return 0.0 if abs(saving) <= USD_RESOLUTION else saving

    @property
    def saving_pct(self) -> float | None:
        """``saving_usd`` as a percentage of the recorded cost (None when that is 0, or
        the saving is unknown)."""
        saving = self.saving_usd
        if saving is None or self.recorded_cost_usd <= 0:
            return None
        return 100.0 * saving / self.recorded_cost_usd

    @property
    def has_estimates(self) -> bool:
        """Whether any figure is estimated rather than recorded."""
        return self.plan_estimated or any(i.basis is Basis.ESTIMATED for i in self.items)

    @property
    def reason(self) -> str:
        """One line: the last verdict's reason, or why there is none."""
        if not self.replayable:
            return "not replayable: no planner call recorded (left as it was)"
        if not self.verdicts:
            return "no usable plan: the planner failed, nothing to dispatch"
        return self.verdicts[-1].reason

    def stage_usd(self, *stages: str) -> float:
        """Priced cost of the items of these stages, USD."""
        return sum(i.cost_usd or 0.0 for i in self.items if i.stage in stages)


class Outcome(StrEnum):
    """What became of one sub-task of the plan."""

    DISPATCHED = "dispatched"
    """Dispatched, and its worker answered."""
    FAILED = "failed"
    """Dispatched; every attempt failed."""
    CANCELLED = "cancelled"
    """Dispatched, then cancelled: spend had crossed the ceiling."""
    NOT_DISPATCHED = "not_dispatched"
    """Cut from the plan by the ``truncate`` policy."""
    REJECTED = "rejected"
    """The plan was rejected (cap or ceiling): nothing was dispatched."""
