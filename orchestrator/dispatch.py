"""The dispatch layer: the max-workers cap and the per-task cost ceiling, enforced on every plan.

Pure and synchronous, no I/O: the runner, replay/what-if over recorded plans and the public
guard all call this one implementation. The planner is told the cap in its prompt, but
"the orchestrator can be wrong; the dispatch layer cannot" (the handbook page on
orchestrator-worker, docs/sources.md#handbook-engineering-faq): whatever the planner
proposed, :meth:`DispatchGuard.check_plan` decides what runs.

Decision order for a plan of ``n`` sub-tasks under :class:`Limits`:

1. Cap. ``max_workers`` None means no cap (the "before the cap" era). ``n > max_workers``
   is a cap breach: policy ``reject`` rejects; ``replan`` asks for one more plan (a second
   breach rejects); ``truncate`` keeps the first ``max_workers`` sub-tasks.
2. Ceiling. The estimate is ``spent_usd`` (planner calls already made) + the estimated
   cost of every sub-task to dispatch + ``reserve_usd`` + ``reserve_usd_per_subtask`` x
   the sub-tasks dispatched (synthesis, which reads every worker's output). Over
   ``ceiling_usd`` is a ceiling breach: reject, nothing dispatched.
3. During the run, :meth:`DispatchGuard.record_spend` adds each call's cost; it returns
   True once spend is over the ceiling, and the runner cancels pending workers.
4. A run that ends ok records the breach it survived (:func:`survived_breach`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cliffwatch.formatting import usd
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.telemetry.conventions import Breach, CapPolicy


class Difficulty(StrEnum):
    """How hard the plan says a sub-task is; routing sends ``hard`` to the frontier model."""

    ROUTINE = "routine"
    HARD = "hard"


class Action(StrEnum):
    """What :meth:`DispatchGuard.check_plan` decided."""

    DISPATCH = "dispatch"
    REPLAN = "replan"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits one task class runs under.

    Attributes:
        max_workers: the most sub-tasks dispatched per run; None switches the cap off.
        ceiling_usd: the most a run may cost, in USD; None switches the ceiling off.
        policy: what to do with a plan over ``max_workers`` (default reject).

    Raises:
        ConfigError: max_workers below 1, or ceiling_usd not a positive finite number.
    """

    max_workers: int | None = 8
    ceiling_usd: float | None = None
    policy: CapPolicy = CapPolicy.REJECT

    def __post_init__(self) -> None:
        if self.max_workers is not None and (
            isinstance(self.max_workers, bool)
            or int(self.max_workers) != self.max_workers
            or self.max_workers < 1
        ):
            raise ConfigError(f"max_workers must be a whole number >= 1, got {self.max_workers!r}")
        if self.ceiling_usd is not None and not (
            math.isfinite(self.ceiling_usd) and self.ceiling_usd > 0
        ):
            raise ConfigError(f"ceiling_usd must be > 0, got {self.ceiling_usd!r}")
        try:
            object.__setattr__(self, "policy", CapPolicy(self.policy))
        except ValueError:
            choices = ", ".join(p.value for p in CapPolicy)
            raise ConfigError(f"policy {self.policy!r} is not one of {choices}") from None


@dataclass(frozen=True, slots=True)
class PlannedSubTask:
    """One sub-task of a plan, routed and priced, as dispatch sees it.

    Attributes:
        index: position in the plan, from 0.
        title: the planner's title.
        difficulty: ``routine`` or ``hard``.
        model: the model the sub-task is routed to (a litellm model string).
        max_output_tokens: the output token budget of its worker call.
        estimated_cost_usd: price x (prompt tokens + max_output_tokens) of one attempt, in
            USD; None when the model is unpriced (it then adds nothing to an estimate).
    """

    index: int
    title: str
    difficulty: Difficulty
    model: str
    max_output_tokens: int
    estimated_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class PlanVerdict:
    """What to do with one plan.

    Attributes:
        action: dispatch, replan or reject.
        dispatch: plan indices to dispatch, in order (empty unless action is dispatch).
        breaches: what the plan breached (cap first, then ceiling); a truncated plan
            breached the cap yet is dispatched.
        proposed: sub-tasks the plan proposed.
        estimate_usd: the pre-dispatch estimate in USD over the sub-tasks that would run
            (see the module docstring); None when only a count was checked.
        reason: one human line explaining the verdict.
    """

    action: Action
    dispatch: tuple[int, ...]
    breaches: tuple[Breach, ...]
    proposed: int
    estimate_usd: float | None
    reason: str

    @property
    def breach(self) -> Breach | None:
        """The first breach (the one a run records in ``cliff.breach``), or None."""
        return self.breaches[0] if self.breaches else None


@dataclass
class DispatchGuard:
    """Checks plans against :class:`Limits` and tracks a run's spend against its ceiling.

    One guard per run. Not thread-safe (a run's workers share one event loop).
    """

    limits: Limits
    _spent_usd: float = field(default=0.0, init=False)
    _crossed: bool = field(default=False, init=False)

    @property
    def spent_usd(self) -> float:
        """USD recorded so far through :meth:`record_spend`."""
        return self._spent_usd

    @property
    def ceiling_crossed(self) -> bool:
        """Whether recorded spend has gone over ``ceiling_usd``."""
        return self._crossed

    def record_spend(self, cost_usd: float | None) -> bool:
        """Add one call's cost; True once spend is over the ceiling (stays True).

        Args:
            cost_usd: the call's cost in USD; None (unpriced) adds nothing, since an
                unknown cost cannot be held to a ceiling.
        """
        if cost_usd:
            self._spent_usd += cost_usd
        ceiling = self.limits.ceiling_usd
        if ceiling is not None and self._spent_usd > ceiling:
            self._crossed = True
        return self._crossed

    def check_plan(
        self,
        plan: Sequence[PlannedSubTask] | int,
        *,
        spent_usd: float = 0.0,
        replanned: bool = False,
        reserve_usd: float = 0.0,
        reserve_usd_per_subtask: float = 0.0,
    ) -> PlanVerdict:
        """Decide what to dispatch of ``plan``; see the module docstring for the order.

        Args:
            plan: the routed sub-tasks, or just their count (then no cost estimate is
                made and only the cap is checked).
            spent_usd: USD the run has already spent (its planner calls).
            replanned: True when this plan is the answer to a replan request; a second
                cap breach is then rejected.
            reserve_usd: USD to hold back for calls after the workers (synthesis, critic)
                that do not grow with the number of workers.
            reserve_usd_per_subtask: USD to hold back per dispatched sub-task (the
                synthesis input its output adds).

        Returns:
            The verdict; dispatch indices are the first ``max_workers`` under truncate.
        """
        limits = self.limits
        if isinstance(plan, int):
            proposed, subtasks = plan, None
        else:
            proposed, subtasks = len(plan), list(plan)
        cap = limits.max_workers
        breaches: list[Breach] = []
        keep = proposed
        cap_note = ""
        if cap is not None and proposed > cap:
            breaches.append(Breach.CAP)
            over = f"plan proposed {proposed} sub-tasks, cap {cap}"
            if limits.policy is CapPolicy.TRUNCATE:
                keep = cap
                cap_note = f"{over}: truncated to the first {cap}; "
            elif limits.policy is CapPolicy.REPLAN and not replanned:
                return PlanVerdict(
                    Action.REPLAN, (), tuple(breaches), proposed, None, f"{over}: replan"
                )
            else:
                estimate = self._estimate(
                    subtasks, proposed, spent_usd, reserve_usd, reserve_usd_per_subtask
                )
                how = "after replan: rejected" if replanned else "rejected at dispatch"
                return PlanVerdict(
                    Action.REJECT, (), tuple(breaches), proposed, estimate, f"{over}: {how}"
                )
        estimate = self._estimate(subtasks, keep, spent_usd, reserve_usd, reserve_usd_per_subtask)
        ceiling = limits.ceiling_usd
        if ceiling is not None and estimate is not None and estimate > ceiling:
            breaches.append(Breach.CEILING)
            return PlanVerdict(
                Action.REJECT,
                (),
                tuple(breaches),
                proposed,
                estimate,
                f"{cap_note}estimate {usd(estimate)} over ceiling {usd(ceiling)}: rejected",
            )
        what = f"dispatch {keep} of {proposed}"
        return PlanVerdict(
            Action.DISPATCH,
            tuple(range(keep)),
            tuple(breaches),
            proposed,
            estimate,
            f"{cap_note}{what}",
        )

    @staticmethod
    def _estimate(
        subtasks: list[PlannedSubTask] | None,
        keep: int,
        spent_usd: float,
        reserve_usd: float,
        reserve_usd_per_subtask: float,
    ) -> float | None:
        if subtasks is None:
            return None
        workers = sum(s.estimated_cost_usd or 0.0 for s in subtasks[:keep])
        return spent_usd + workers + reserve_usd + reserve_usd_per_subtask * keep


def survived_breach(verdicts: Sequence[PlanVerdict]) -> Breach | None:
    """The breach a run that ends ok records (``cliff.breach``), from its plans' verdicts.

    The last breach among ``verdicts``: a truncated plan's cap breach, or the cap breach
    that made the run replan even when the second plan fits (the run breached the cap,
    and its record says so). A verdict that rejects ends the run, so it is never among
    the verdicts of a run that ends ok.

    Args:
        verdicts: every :meth:`DispatchGuard.check_plan` verdict of the run, in order.

    Returns:
        ``cap``, ``ceiling`` or None when no plan breached anything.
    """
    return next((v.breach for v in reversed(verdicts) if v.breach is not None), None)


ALIKE_MARGIN = 1e-6
"""Relative margin below a ceiling within which :class:`AlikeBounds` does not call a
figure clear of it: the recorded estimate and spend were summed in the run's order, a
replay sums them in another, and a float sum can differ in its last bits (1e-6 is ten
million times that, and far below a cent of any real ceiling)."""


@dataclass(frozen=True, slots=True)
class AlikeBounds:
    """When two sets of limits decide a run alike, by figures the run recorded.

    :meth:`DispatchGuard.check_plan` and :meth:`DispatchGuard.record_spend` decide the
    same under limits ``a`` and ``b`` for a run whose every plan fits both caps (then
    neither breaches the cap and the policy is never read) when the ceilings are the
    same, or when every ceiling that differs is clear of both the plan's estimate and
    every running total of the run's spend (then neither ceiling ever breaches). The run
    then meets the same verdicts, dispatches the same sub-tasks and is cancelled (or not)
    at the same charge under both: a replay of its record under ``b`` is the record under
    ``a`` (the module docstring's decision order; :func:`alike_bounds`).

    Attributes:
        max_proposed: the most sub-tasks a plan may propose and fit both caps; None when
            neither has a cap.
        same_ceiling: both ceilings equal (or both off).
        below_usd: when the ceilings differ, the figure (USD) the estimate and the spend
            must stay under: the lower ceiling less :data:`ALIKE_MARGIN` of it; None when
            ``same_ceiling``.
    """

    max_proposed: int | None
    same_ceiling: bool
    below_usd: float | None

    def admits(self, proposed: int | None, estimate_usd: float | None,
               peak_spend_usd: float | None) -> bool:
        """Whether a run is decided alike under both limits.

        Args:
            proposed: sub-tasks in the run's largest plan (``cliff.workers_proposed``);
                None when it had no usable plan (never alike: nothing to compare).
            estimate_usd: the plan's pre-dispatch estimate, USD (``cliff.estimate_usd``);
                None when none was made.
            peak_spend_usd: the most the run's running spend ever reached, USD (its total
                when no call cost less than nothing); None when unknown.

        Returns:
            True when every verdict of the run is the same under both limits.
        """
        if proposed is None or (self.max_proposed is not None and proposed > self.max_proposed):
            return False
        if self.same_ceiling:
            return True
        assert self.below_usd is not None
        return (estimate_usd is not None and peak_spend_usd is not None
                and estimate_usd < self.below_usd and peak_spend_usd < self.below_usd)


def alike_bounds(a: Limits, b: Limits) -> AlikeBounds:
    """The :class:`AlikeBounds` of limits ``a`` and ``b`` (either order)."""
    caps = [cap for cap in (a.max_workers, b.max_workers) if cap is not None]
    if a.ceiling_usd == b.ceiling_usd:
        return AlikeBounds(min(caps, default=None), True, None)
    lower = min(c for c in (a.ceiling_usd, b.ceiling_usd) if c is not None)
    return AlikeBounds(min(caps, default=None), False, lower * (1.0 - ALIKE_MARGIN))
