"""What a recorded run would have cost under other limits, without calling any model.

Why one file: :class:`_Replayer` follows the runner's order step by step (the list
below) over one ledger of spend, so it reads best beside ``orchestrator/runner.py`` as one
piece; the records it replays are :mod:`analytics.recorded`'s and the rendering is
:mod:`analytics.replay`'s.

:func:`counterfactual` pushes the run's recorded plan through the orchestrator's own
dispatch layer (:class:`orchestrator.dispatch.DispatchGuard`: the same ``check_plan`` and
``record_spend`` the runner calls, not a copy) under the given :class:`Limits`, and
charges each call the cost the record holds for it. It follows the runner's order
(orchestrator/runner.py):

1. Planning. Every planner call up to the first usable plan is spent whatever the limits
   (retries and re-asks included). The plan is checked with ``spent_usd`` = that spend.
   On ``replan``: if the run was recorded under the same cap, its own replan calls and
   second plan are used (the same replan request got that answer); otherwise the second
   plan is *estimated* as the first ``max_workers`` sub-tasks of the first (a planner
   that obeys the cap on replan), at the cost of the run's own replan calls when it made
   some (under its cap), else of its first planner call. Once planner spend is over the
   ceiling no replan call is made (the run fails, as the runner's does).
2. Reject: nothing is dispatched; the run costs its planner calls.
3. Workers: the dispatched sub-tasks' recorded calls are charged in the order they
   ended (``record_spend`` after each, as the runner does when each call finishes);
   once spend is over the ceiling, later calls are not made, except calls the record
   shows cancelled in flight, which are charged as recorded. A dispatched sub-task the
   record does not hold (never run, or cut short) is *estimated*: the mean cost of the
   same class's recorded sub-tasks on the same model (:class:`analytics.recorded.
   Estimates`), else its plan's dispatch estimate (``estimated_cost_usd``); estimated
   sub-tasks follow the recorded ones, in plan order.
4. Spend over the ceiling after the workers: cancelled. No worker answered: failed.
   A run that ends ok keeps the cap breach it survived (a truncated plan, or the plan
   that made it replan), as the runner records it.
5. Synthesis (and critic rounds): the recorded calls, each followed by
   ``record_spend``; when the set of worker answers differs from the record, each
   synthesis call that read answers is adjusted by the difference in answer tokens x the
   synthesis model's input price (*estimated*); a call never reads fewer tokens than none
   (the difference is bounded by the call's recorded input tokens; a call that read
   nothing, such as a rate-limited attempt, is left as recorded). A run that never
   reached synthesis gets the class's mean synthesis cost (*estimated*).
6. Work left undone. A run the limits reject or cancel while the record completed it
   (status ``ok``) has not done its task: the task is still to do. So has one that
   completed as recorded and fails under the limits (spend over the ceiling before a
   replan call; a truncated plan whose kept workers all failed): with the same calls, only
   the limits can make it fail. It is charged one more
   item, stage ``redo``: the task redone within the same limits, *estimated* as the mean
   cost of the class's recorded runs that completed within them
   (:mod:`analytics.redo`, which says why the mean). With no such run the item has no
   cost, and the saving is unknown (None), never the run's cost less its planner calls.
   A run the record left undone too is not charged a redo: both sides leave the same task
   to do. The redo is not charged through the dispatch guard: it is another run.

The pre-dispatch ceiling estimate includes the runner's reserve for synthesis. The
run span records it (``cliff.reserve_usd`` and ``cliff.reserve_usd_per_subtask``), and
the counterfactual checks plans with exactly that reserve, under any limits. Runs
recorded before the reserve was recorded fall back to recovering it from the estimate
the runner made under its own limits (``cliff.estimate_usd``, less planner spend and the
dispatched sub-tasks' estimates), split as ``max_output_tokens`` x the synthesis input
price per dispatched sub-task (the synthesis input one answer adds; the runner adds a
few framing tokens per answer, not recorded) plus a fixed part: exact under the run's
own limits, inexact by those framing tokens when another limit changes how many
sub-tasks are dispatched.

Under the limits the run was recorded with, the counterfactual reproduces the record:
the same verdict, status, breach, dispatched sub-tasks and cost (every call charged as
recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cliffwatch.analytics.counterfactual_result import (
    REDO_STAGE,
    Basis,
    Counterfactual,
    LineItem,
    Outcome,
    SubTaskOutcome,
)
from cliffwatch.analytics.recorded import Estimates, RecordedCall, RecordedRun
from cliffwatch.orchestrator.dispatch import (
    Action,
    DispatchGuard,
    Limits,
    PlannedSubTask,
    PlanVerdict,
    survived_breach,
)
from cliffwatch.telemetry.conventions import Breach, Role, RunStatus

__all__ = [
    "REDO_STAGE",
    "Basis",
    "Counterfactual",
    "LineItem",
    "Outcome",
    "SubTaskOutcome",
    "counterfactual",
    "recorded_reserve",
]


@dataclass
class _Ledger:
    """The guard plus every charged item (one per counterfactual)."""

    guard: DispatchGuard
    items: list[LineItem] = field(default_factory=list)

    def charge(self, item: LineItem) -> bool:
        self.items.append(item)
        return self.guard.record_spend(item.cost_usd)

    def charge_call(self, call: RecordedCall, stage: str | None = None) -> bool:
        return self.charge(
            LineItem(stage or call.role, call.name, call.model, call.subtask_index,
                     call.cost_usd, Basis.RECORDED)
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    """A plan the counterfactual checks: its sub-tasks and which usable plan it came from
    (a position in ``run.usable_plans``), so recorded workers can be matched to it."""

    subtasks: tuple[PlannedSubTask, ...]
    source: int


def recorded_reserve(run: RecordedRun, synthesis_price_input: float | None) -> tuple[float, float]:
    """The runner's post-worker reserve for ``run``: ``(fixed_usd, per_subtask_usd)``.

    The reserve the run recorded (``cliff.reserve_usd``, ``cliff.reserve_usd_per_subtask``)
    when it has both. Otherwise (older runs) it is recovered: ``per_subtask_usd`` is
    ``max_output_tokens`` of the plan's sub-tasks x the synthesis input price;
    ``fixed_usd`` is what the recorded estimate leaves after planner spend, the
    dispatched sub-tasks' estimates and ``per_subtask_usd`` per dispatched sub-task
    (computed by the dispatch layer itself under the recorded limits, ceiling left out so
    the verdict's sub-task count is the one the estimate was made over). ``(0, 0)``
    parts when the record has no estimate or no usable plan.

    Args:
        run: the recorded run.
        synthesis_price_input: USD per input token of the run's synthesis model (used
            only to recover a reserve the run did not record).
    """
    if run.reserve_usd is not None and run.reserve_usd_per_subtask is not None:
        return run.reserve_usd, run.reserve_usd_per_subtask
    plans = run.usable_plans
    if not plans:
        return 0.0, 0.0
    tokens = max((s.max_output_tokens for s in plans[-1].plan or ()), default=0)
    per_subtask = tokens * (synthesis_price_input or 0.0)
    if run.estimate_usd is None:
        return 0.0, per_subtask
    last = plans[-1]
    spent = _spend_through(run, last)
    uncapped_ceiling = Limits(run.limits.max_workers, None, run.limits.policy)
    verdict = DispatchGuard(uncapped_ceiling).check_plan(
        last.plan or (),
        spent_usd=spent,
        replanned=len(plans) > 1,
        reserve_usd_per_subtask=per_subtask,
    )
    if verdict.estimate_usd is None:
        return 0.0, per_subtask
    return max(0.0, run.estimate_usd - verdict.estimate_usd), per_subtask


def _spend_through(run: RecordedRun, call: RecordedCall) -> float:
    """USD of every planner call up to and including ``call``."""
    spent = 0.0
    for plan_call in run.plan_calls:
        spent += plan_call.cost_usd or 0.0
        if plan_call is call:
            break
    return spent


def _synthesis_price(run: RecordedRun, estimates: Estimates) -> float | None:
    for call in run.calls_in(Role.SYNTHESIS):
        if call.price_input_usd_per_token is not None:
            return call.price_input_usd_per_token
    return estimates.synthesis_price_input.get(run.task_class)


def _read_delta(call: RecordedCall, delta_tokens: float) -> float:
    """The change in answer tokens one synthesis call reads: ``delta_tokens``, but never
    more tokens removed than the call read (a call that read nothing keeps reading none)."""
    if call.input_tokens == 0:
        return 0.0
    if call.input_tokens is None or delta_tokens >= 0:
        return delta_tokens
    return max(delta_tokens, -float(call.input_tokens))


def _status(value: str | None, default: RunStatus) -> RunStatus:
    if value is None:
        return default
    try:
        return RunStatus(value)
    except ValueError:
        return default


def _breach(value: str | None) -> Breach | None:
    try:
        return Breach(value) if value else None
    except ValueError:
        return None


def _unchanged(run: RecordedRun, limits: Limits) -> Counterfactual:
    return Counterfactual(
        run_id=run.run_id, task_class=run.task_class, limits=limits, replayable=False,
        status=_status(run.status, RunStatus.OK), breach=_breach(run.breach), verdicts=(),
        proposed=run.workers_proposed, dispatched=run.workers_dispatched or 0, subtasks=(),
        items=(), cost_usd=run.cost_usd, estimated_usd=0.0, recorded_cost_usd=run.cost_usd,
        unpriced_items=run.unpriced_calls,
    )


def counterfactual(
    run: RecordedRun, limits: Limits, estimates: Estimates | None = None
) -> Counterfactual:
    """Replay ``run`` under ``limits`` through the dispatch layer; no model is called.

    See the module docstring for the steps and for which figures are estimated.

    Args:
        run: the recorded run (:func:`analytics.recorded.load_recorded_runs`).
        limits: the cap, ceiling and policy to replay it under.
        estimates: the class's figures for work the record does not hold
            (:func:`analytics.estimates.load_estimates`); None: only the plan's own
            dispatch estimates are available.

    Returns:
        The :class:`Counterfactual`.
    """
    if not run.replayable:
        return _unchanged(run, limits)
    estimates = estimates or Estimates()
    return _Replayer(run, limits, estimates).run()


class _Replayer:
    """One counterfactual: the steps of the module docstring over one run."""

    def __init__(self, run: RecordedRun, limits: Limits, estimates: Estimates) -> None:
        self.record = run
        self.limits = limits
        self.estimates = estimates
        self.ledger = _Ledger(DispatchGuard(limits))
        self.verdicts: list[PlanVerdict] = []
        self.synth_price = _synthesis_price(run, estimates)
        self.reserve_fixed, self.reserve_per = recorded_reserve(run, self.synth_price)
        self.plan_estimated = False

    # --- steps ---------------------------------------------------------------------------
    def run(self) -> Counterfactual:
        run = self.record
        usable = run.usable_plans
        if not usable:
            for call in run.calls:
                self.ledger.charge_call(call)
            return self._result(_status(run.status, RunStatus.FAILED), None, None, ())
        plan, verdict = self._plan(usable)
        if plan is None:
            return self._result(RunStatus.FAILED, None, None, ())
        assert verdict is not None
        if verdict.action is Action.REJECT:
            outcomes = self._outcomes(plan, verdict, {}, {})
            return self._result(RunStatus.REJECTED, verdict.breach, plan, outcomes)
        charged, outcome_of = self._workers(plan, verdict)
        outcomes = self._outcomes(plan, verdict, charged, outcome_of)
        if self.ledger.guard.ceiling_crossed:
            return self._result(RunStatus.CANCELLED, Breach.CEILING, plan, outcomes)
        if not any(o is Outcome.DISPATCHED for o in outcome_of.values()):
            return self._result(RunStatus.FAILED, None, plan, outcomes)
        status = self._synthesis(plan, outcome_of)
        if self.ledger.guard.ceiling_crossed:
            return self._result(RunStatus.CANCELLED, Breach.CEILING, plan, outcomes)
        if status is RunStatus.FAILED:
            return self._result(status, None, plan, outcomes)
        # A run that ends ok records the breach it survived, by the runner's own rule.
        return self._result(status, survived_breach(self.verdicts), plan, outcomes)

    def _check(self, subtasks: tuple[PlannedSubTask, ...], replanned: bool) -> PlanVerdict:
        verdict = self.ledger.guard.check_plan(
            subtasks,
            spent_usd=self.ledger.guard.spent_usd,
            replanned=replanned,
            reserve_usd=self.reserve_fixed,
            reserve_usd_per_subtask=self.reserve_per,
        )
        self.verdicts.append(verdict)
        return verdict

    def _plan(self, usable: list[RecordedCall]) -> tuple[_Plan | None, PlanVerdict | None]:
        run, ledger = self.record, self.ledger
        plan_calls = run.plan_calls
        first = usable[0]
        first_at = plan_calls.index(first)
        for call in plan_calls[: first_at + 1]:
            ledger.charge_call(call)
        plan = _Plan(first.plan or (), 0)
        verdict = self._check(plan.subtasks, replanned=False)
        if verdict.action is not Action.REPLAN:
            return plan, verdict
        if ledger.guard.ceiling_crossed:
            return None, None  # the runner makes no call once spend is over the ceiling
        later = plan_calls[first_at + 1 :]
        same_request = later and run.limits.max_workers == self.limits.max_workers
        if same_request:
            # The run made this very replan request: follow its record.
            second = usable[1] if len(usable) > 1 else None
            for call in later:
                ledger.charge_call(call)
                if call is second:
                    break
            if second is None:
                return None, None  # the replan answer was unusable: the run failed
            plan = _Plan(second.plan or (), 1)
        else:
            cap = self.limits.max_workers
            assert cap is not None  # a replan verdict follows a cap breach
            self.plan_estimated = True
            ledger.charge(self._estimated_replan(first, later, cap))
            plan = _Plan(plan.subtasks[:cap], 0)
        return plan, self._check(plan.subtasks, replanned=True)

    def _estimated_replan(
        self, first: RecordedCall, later: list[RecordedCall], cap: int
    ) -> LineItem:
        """The replan call a run did not make under this cap: costed as the replan it
        made under its own cap when there is one, else as its first planner call."""
        keep = f"replan assumed to keep the first {cap} sub-tasks"
        if later:
            costs = [c.cost_usd for c in later]
            cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
            note = f"{keep}, at the cost of the run's own replan (under cap "
            note += f"{self.record.limits.max_workers})"
        else:
            cost, note = first.cost_usd, f"{keep}, at the cost of the first planner call"
        return LineItem(Role.PLAN, "plan (replan)", first.model, None, cost, Basis.ESTIMATED,
                        note)

    def _recorded_workers(self, plan: _Plan) -> dict[int, list[RecordedCall]]:
        """Recorded worker calls per sub-task index, when they ran for this plan."""
        run = self.record
        if plan.source != len(run.usable_plans) - 1:
            return {}  # the record dispatched another plan
        calls: dict[int, list[RecordedCall]] = {}
        for call in run.calls_in(Role.WORKER):
            if call.subtask_index is not None:
                calls.setdefault(call.subtask_index, []).append(call)
        return calls

    def _estimate_worker(self, sub: PlannedSubTask) -> LineItem:
        found = self.estimates.worker(self.record.task_class, sub.model)
        cost: float | None  # None: the model is unpriced (LineItem.cost_usd)
        if found is not None and found.cost_usd is not None:
            cost, note = found.cost_usd, (
                f"mean of {found.samples} recorded {self.record.task_class} sub-tasks on "
                f"{sub.model}"
            )
        else:
            cost, note = sub.estimated_cost_usd, "the plan's dispatch estimate (no recorded "
            note += f"{self.record.task_class} sub-task on {sub.model})"
        return LineItem(Role.WORKER, f"worker {sub.index}", sub.model, sub.index, cost,
                        Basis.ESTIMATED, note)

    def _workers(
        self, plan: _Plan, verdict: PlanVerdict
    ) -> tuple[dict[int, list[LineItem]], dict[int, Outcome]]:
        recorded = self._recorded_workers(plan)
        by_index = {s.index: s for s in plan.subtasks}
        events = sorted(
            ((index, call) for index in verdict.dispatch for call in recorded.get(index, [])),
            key=lambda e: e[1].end_ns,
        )
        guard = self.ledger.guard
        charged: dict[int, list[LineItem]] = {}
        answered: set[int] = set()
        attempted: set[int] = set()
        cancelled: set[int] = set()
        to_estimate = {i for i in verdict.dispatch if not recorded.get(i)}

        def charge(index: int, item: LineItem) -> None:
            charged.setdefault(index, []).append(item)
            self.ledger.charge(item)

        for index, call in events:
            if guard.ceiling_crossed:
                cancelled.add(index)
                if call.cancelled:  # in flight when spend crossed: billed as recorded
                    charge(index, LineItem(Role.WORKER, call.name, call.model, index,
                                           call.cost_usd, Basis.RECORDED))
                continue  # otherwise not started
            if call.cancelled:
                to_estimate.add(index)  # cut short in the record, runs on here
                continue
            charge(index, LineItem(Role.WORKER, call.name, call.model, index, call.cost_usd,
                                   Basis.RECORDED))
            (answered if call.ok else attempted).add(index)
        for index in verdict.dispatch:
            if index not in to_estimate or index in answered:
                continue
            if guard.ceiling_crossed:
                cancelled.add(index)
                continue
            charge(index, self._estimate_worker(by_index[index]))
            answered.add(index)
        outcome_of: dict[int, Outcome] = {}
        for index in verdict.dispatch:
            if index in answered:
                outcome_of[index] = Outcome.DISPATCHED
            elif index in cancelled or index not in attempted:
                outcome_of[index] = Outcome.CANCELLED
            else:
                outcome_of[index] = Outcome.FAILED
        return charged, outcome_of

    def _answer_tokens(self, outcome_of: dict[int, Outcome], plan: _Plan) -> float:
        """Output tokens of the worker answers synthesis would read."""
        recorded = self._recorded_workers(plan)
        by_index = {s.index: s for s in plan.subtasks}
        total = 0.0
        for index, outcome in outcome_of.items():
            if outcome is not Outcome.DISPATCHED:
                continue
            answers = [c for c in recorded.get(index, []) if c.ok and not c.cancelled]
            if answers:
                total += answers[-1].output_tokens or 0
            else:
                found = self.estimates.worker(self.record.task_class, by_index[index].model)
                total += (found.output_tokens or 0.0) if found else 0.0
        return total

    def _recorded_answer_tokens(self) -> float:
        run = self.record
        total = 0.0
        answered: dict[int, RecordedCall] = {}
        for call in run.calls_in(Role.WORKER):
            if call.ok and not call.cancelled and call.subtask_index is not None:
                answered[call.subtask_index] = call
        for call in answered.values():
            total += call.output_tokens or 0
        return total

    def _synthesis(self, plan: _Plan, outcome_of: dict[int, Outcome]) -> RunStatus:
        run, ledger = self.record, self.ledger
        stage = run.calls_in(Role.SYNTHESIS, Role.CRITIC)
        if not stage:
            cost = self.estimates.synthesis_usd.get(run.task_class)
            ledger.charge(
                LineItem(Role.SYNTHESIS, "synthesis", run.synthesis_model, None, cost,
                         Basis.ESTIMATED,
                         f"mean synthesis cost of recorded {run.task_class} runs"
                         if cost is not None else "no recorded synthesis to estimate from")
            )
            return RunStatus.OK
        delta_tokens = self._answer_tokens(outcome_of, plan) - self._recorded_answer_tokens()
        for call in stage:
            tokens = _read_delta(call, delta_tokens) if call.role == Role.SYNTHESIS else 0.0
            if tokens:
                adjust = tokens * (self.synth_price or 0.0)
                cost = None if call.cost_usd is None else max(0.0, call.cost_usd + adjust)
                crossed = ledger.charge(
                    LineItem(Role.SYNTHESIS, call.name, call.model, None, cost,
                             Basis.ESTIMATED,
                             f"recorded call reading {abs(tokens):,.0f} "
                             f"{'more' if tokens > 0 else 'fewer'} worker answer tokens, "
                             "at the input price")
                )
            else:
                crossed = ledger.charge_call(call)
            if crossed:
                break
        if run.status == RunStatus.FAILED:
            return RunStatus.FAILED
        return RunStatus.OK

    def _redo(self, status: RunStatus) -> None:
        """Step 6: the task redone within the limits, when they leave undone a task the
        record completed (a failure it did not have is the limits' doing too)."""
        if self.record.status != RunStatus.OK.value or status is RunStatus.OK:
            return
        found = self.estimates.redo(self.record.task_class, self.limits)
        self.ledger.items.append(
            LineItem(REDO_STAGE, "task redone", None, None, found.cost_usd, Basis.ESTIMATED,
                     found.note)
        )

    # --- result --------------------------------------------------------------------------
    def _outcomes(
        self,
        plan: _Plan,
        verdict: PlanVerdict,
        charged: dict[int, list[LineItem]],
        outcome_of: dict[int, Outcome],
    ) -> tuple[SubTaskOutcome, ...]:
        out = []
        for sub in plan.subtasks:
            if verdict.action is Action.REJECT:
                outcome = Outcome.REJECTED
            else:
                outcome = outcome_of.get(sub.index, Outcome.NOT_DISPATCHED)
            items = charged.get(sub.index, [])
            costs = [i.cost_usd for i in items]
            cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
            basis = None
            if items:
                estimated = any(i.basis is Basis.ESTIMATED for i in items)
                basis = Basis.ESTIMATED if estimated else Basis.RECORDED
            out.append(
                SubTaskOutcome(sub.index, sub.title, sub.difficulty.value, sub.model, outcome,
                               cost if items else 0.0, basis)
            )
        return tuple(out)

    def _result(
        self,
        status: RunStatus,
        breach: Breach | None,
        plan: _Plan | None,
        subtasks: tuple[SubTaskOutcome, ...],
    ) -> Counterfactual:
        self._redo(status)
        items = tuple(self.ledger.items)
        run = self.record
        return Counterfactual(
            run_id=run.run_id,
            task_class=run.task_class,
            limits=self.limits,
            replayable=True,
            status=status,
            breach=breach,
            verdicts=tuple(self.verdicts),
            proposed=None if plan is None else len(plan.subtasks),
            dispatched=sum(1 for s in subtasks if s.outcome not in (
                Outcome.NOT_DISPATCHED, Outcome.REJECTED)),
            subtasks=subtasks,
            items=items,
            cost_usd=sum(i.cost_usd or 0.0 for i in items),
            estimated_usd=sum(i.cost_usd or 0.0 for i in items if i.basis is Basis.ESTIMATED),
            recorded_cost_usd=run.cost_usd,
            unpriced_items=sum(1 for i in items if i.cost_usd is None),
            plan_estimated=self.plan_estimated,
        )

