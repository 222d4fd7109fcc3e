"""The orchestrator's own exceptions.

Breaches (:class:`CostCliffError`, :class:`CostCeilingError`) are raised by
:func:`orchestrator.runner.aorchestrate` after the run's span is recorded, so a rejected
run is always visible in the store. Callers at the edge (CLI, dashboard) turn them into
one line; nothing here formats for a terminal.
"""

from __future__ import annotations

from cliffwatch.errors import CliffwatchError
from cliffwatch.formatting import usd


class OrchestratorError(CliffwatchError, RuntimeError):
    """Base of every error the orchestrator raises on purpose."""


class CostCliffError(OrchestratorError):
    """A plan proposed more sub-tasks than ``max_workers``; nothing was dispatched.

    Attributes:
        proposed: sub-tasks in the (last) plan that breached the cap.
        max_workers: the cap in force.
        policy: the cap policy that rejected it (``reject``, or ``replan`` after its replan).
        plan_attempts: planner calls made (2 after a replan).
    """

    def __init__(
        self, proposed: int, max_workers: int, *, policy: str = "reject", plan_attempts: int = 1
    ) -> None:
        self.proposed = proposed
        self.max_workers = max_workers
        self.policy = policy
        self.plan_attempts = plan_attempts
        super().__init__(
            f"plan proposed {proposed} sub-tasks, cap is {max_workers}: "
            f"rejected at dispatch (policy {policy}, {plan_attempts} plan attempt(s))"
        )


class CostCeilingError(OrchestratorError):
    """A run's cost went, or would go, over its ceiling.

    Attributes:
        ceiling_usd: the per-task ceiling in USD.
        stage: ``"estimate"`` (the pre-dispatch estimate was over; nothing dispatched) or
            ``"spend"`` (spend crossed the ceiling mid-run; pending workers cancelled).
        estimate_usd: the pre-dispatch estimate in USD (stage ``estimate``), else None.
        spent_usd: what the run had spent in USD when it stopped (stage ``spend``), else
            None.
    """

    def __init__(
        self,
        ceiling_usd: float,
        *,
        stage: str,
        estimate_usd: float | None = None,
        spent_usd: float | None = None,
    ) -> None:
        self.ceiling_usd = ceiling_usd
        self.stage = stage
        self.estimate_usd = estimate_usd
        self.spent_usd = spent_usd
        if stage == "estimate":
            what = f"estimated cost {usd(estimate_usd)} is over the ceiling {usd(ceiling_usd)}"
            what += ": nothing dispatched"
        else:
            what = f"spend {usd(spent_usd)} crossed the ceiling {usd(ceiling_usd)}"
            what += ": pending workers cancelled"
        super().__init__(what)


class PlanError(OrchestratorError):
    """The planner's output could not be used as a plan, even after one retry."""


class ConfigError(OrchestratorError, ValueError):
    """A task-class setting or workload file holds a value the orchestrator cannot use."""
