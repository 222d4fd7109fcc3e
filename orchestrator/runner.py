"""One orchestrator-worker run: plan -> dispatch -> parallel workers -> synthesis (-> critic).

Why one file: one run is one object, :class:`_Run`, whose steps (plan, dispatch,
workers, synthesis, critic) share its root span, virtual clock, spend and dispatch guard,
and cancel each other's pending work through them; split by step, every module would reach
back into that one state. What stands alone already lives elsewhere: prompts
(:mod:`orchestrator.prompts`), routing and estimates (:mod:`orchestrator.routing`), the cap
and ceiling (:mod:`orchestrator.dispatch`), span attributes (:mod:`orchestrator.span_attrs`).

Every call goes through ``litellm.acompletion``, so any litellm model string works: a real
provider where its key is set, or the offline ``sim`` provider. One run is one trace: a
root span (role ``run``) with a child span per planner call, per worker attempt, per
synthesis and per critic review, carrying the GenAI attributes and cliffwatch's
``cliff.*`` (:mod:`telemetry.conventions`). A call's cost is litellm's cost of the
response's whole usage (cache reads and writes, reasoning, tiers), or the cost the
provider reported in the response with litellm's beside it
(:func:`telemetry.pricing.price_call`); an unpriced call has no cost, never $0.

Virtual time (:mod:`orchestrator.clock`): span timestamps are ``started_at_ns`` plus
simulated time. A simulated provider's call lasts its simulated latency, retry backoff
its simulated seconds, whatever the host's load; only a real provider's call lasts its
real elapsed time / ``time_scale``. Every simulated delay is slept for
``delay x time_scale`` real seconds, which only paces the run: a 40 s simulated run takes
0.4 s at ``time_scale=0.01`` and its spans show 40 s, on an idle host or a busy one.
Workers run in ``concurrency`` lanes: sub-task k starts when it is dispatched or, past the
first ``concurrency``, when sub-task k - ``concurrency`` ends.

Billing of failed attempts: a rate-limited or refused request bills nothing; a request
that timed out or was cancelled in flight is charged its prompt tokens (the provider had
started on it), at the model's input price.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ParamSpec, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from cliffwatch import settings
from cliffwatch.orchestrator import prompts
from cliffwatch.orchestrator import span_attrs as sa
from cliffwatch.orchestrator.clock import VirtualClock
from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.dispatch import Action, DispatchGuard, PlanVerdict, survived_breach
from cliffwatch.orchestrator.errors import (
    CostCeilingError,
    CostCliffError,
    OrchestratorError,
    PlanError,
)
from cliffwatch.orchestrator.routing import (
    Reserve,
    RoutedPlan,
    count_prompt_tokens,
    post_worker_reserve,
    route_plan,
)
from cliffwatch.orchestrator.sim_provider import is_sim_model
from cliffwatch.orchestrator.workload import Task
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Breach, Role, RunStatus
from cliffwatch.telemetry.pricing import (
    CallCost,
    TokenUsage,
    import_litellm,
    price_call,
    usage_of_litellm,
)

BACKSTOP_SLACK_S = 30.0
"""Real seconds ``asyncio.wait_for`` waits past a call's own timeout before cancelling it.

A call's timeout is passed to litellm, whose provider raises ``litellm.Timeout`` when it
expires (httpx's read timeout for real providers; the simulated provider's stalls raise it
the same way, in simulated time). ``asyncio.wait_for`` is the hard stop for a provider that
ignores it. The slack is real seconds, generous on purpose: under time_scale a 60 s
timeout is milliseconds of real time, and a busy machine must never turn a healthy call
into a timeout (that would make runs depend on CPU load instead of their seed)."""

Attributes = sa.Attributes

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one run.

    Attributes:
        run_id: the trace id (32 hex chars); the store's ``runs.run_id``.
        task_id: the task's id.
        task_class: the task's class.
        status: ok | rejected | cancelled | failed.
        breach: ``cap`` or ``ceiling`` when one was breached (a truncated or replanned
            plan breached the cap yet may have run), else None.
        cost_usd: USD spent by every priced call of the run (failed attempts included).
        unpriced_calls: calls whose model has no price (not in ``cost_usd``).
        workers_proposed: sub-tasks in the largest usable plan; None when no plan was
            usable.
        workers_dispatched: sub-tasks dispatched (0 when rejected).
        workers_failed: dispatched sub-tasks whose every attempt failed.
        workers_cancelled: dispatched sub-tasks cancelled when spend crossed the ceiling.
        plan_attempts: planning requests made (first plan, a re-ask after an unusable
            answer, a replan); transient retries of one request are not counted.
        estimate_usd: the last pre-dispatch estimate in USD, None if none was made.
        answer: the synthesised answer, None when there is none.
        error: one line on why the run did not end ok, else None.
        started_at_ns: run start, ns since the Unix epoch (simulated time).
        ended_at_ns: run end, ns since the Unix epoch (simulated time).
    """

    run_id: str
    task_id: str
    task_class: str
    status: RunStatus
    breach: Breach | None
    cost_usd: float
    unpriced_calls: int
    workers_proposed: int | None
    workers_dispatched: int
    workers_failed: int
    workers_cancelled: int
    plan_attempts: int
    estimate_usd: float | None
    answer: str | None
    error: str | None
    started_at_ns: int
    ended_at_ns: int

    @property
    def duration_s(self) -> float:
        """Simulated duration in seconds."""
        return (self.ended_at_ns - self.started_at_ns) / 1e9


@dataclass(slots=True)
class _Attempt:
    """One call attempt as recorded on its span."""

    ok: bool
    text: str | None = None
    cost: CallCost | None = None
    error_type: str | None = None
    error_message: str | None = None
    retryable: bool = False


class _Stop(Exception):  # noqa: N818 - internal control flow, never escapes the module
    """Ends a run early with a status (and the breach error to raise, if any)."""

    def __init__(
        self,
        status: RunStatus,
        message: str,
        *,
        breach: Breach | None = None,
        raise_error: OrchestratorError | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.breach = breach
        self.raise_error = raise_error


@cache
def _provider_of(model: str) -> str:
    try:
        return str(import_litellm().get_llm_provider(model)[1])
    except Exception:  # noqa: BLE001 - litellm raises many types for unknown models
        return model.split("/", 1)[0] if "/" in model else "unknown"


def _classify(exc: BaseException) -> tuple[str, bool, bool]:
    """(error type, retryable, billed prompt) of a failed call."""
    litellm = import_litellm()
    if isinstance(exc, TimeoutError | litellm.Timeout):
        return "timeout", True, True
    if isinstance(exc, litellm.RateLimitError):
        return "rate_limit", True, False
    retryable = (
        litellm.APIConnectionError,
        litellm.ServiceUnavailableError,
        litellm.InternalServerError,
    )
    if isinstance(exc, retryable):
        return type(exc).__name__, True, False
    return type(exc).__name__, False, False


@dataclass
class _Run:
    """The state of one run while it executes (one per :func:`aorchestrate` call)."""

    task: Task
    config: TaskClassConfig
    tracer: trace.Tracer
    seed: int
    clock: VirtualClock
    replay_of: str | None
    capture: bool = field(default_factory=settings.capture_content)
    guard: DispatchGuard = field(init=False)
    unpriced_calls: int = 0
    plan_attempts: int = 0
    workers_proposed: int | None = None
    workers_dispatched: int = 0
    workers_failed: int = 0
    workers_cancelled: int = 0
    estimate_usd: float | None = None
    reserve: Reserve | None = None  # what the pre-dispatch estimate holds back
    answer: str | None = None
    _worker_tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _context: Any = None  # the OTel context holding the run span (parent of every call)
    _verdicts: list[PlanVerdict] = field(default_factory=list)  # check_plan verdicts, in order
    _cancelled_at_ns: int | None = None  # simulated time pending workers were cancelled at

    def __post_init__(self) -> None:
        self.guard = DispatchGuard(self.config.limits)

    # --- one call ------------------------------------------------------------------------
    def _record_cost(self, span: trace.Span, cost: CallCost, attrs: Attributes) -> None:
        if cost.cost_usd is None:
            self.unpriced_calls += 1
        span.set_attributes({**attrs, **sa.call_cost_attributes(cost)})
        if self.guard.record_spend(cost.cost_usd):
            self._cancel_pending_workers()

    async def _attempt(
        self,
        *,
        role: Role,
        name: str,
        model: str,
        messages: Sequence[prompts.Message],
        max_tokens: int,
        attempt: int,
        attributes: Attributes,
        annotate: Callable[[str], tuple[Attributes, str | None]] | None,
    ) -> _Attempt:
        """One provider call as one span; records its cost into the guard."""
        config = self.config
        start_ns = self.clock.now_ns()
        span = self.tracer.start_span(
            name,
            context=self._context,
            kind=SpanKind.CLIENT,
            start_time=start_ns,
            attributes={
                **sa.call_request_attributes(
                    role=role,
                    task_class=config.name,
                    model=model,
                    provider=_provider_of(model),
                    max_tokens=max_tokens,
                    seed=self.seed,
                    attempt=attempt,
                ),
                **attributes,
            },
        )
        if self.capture:
            span.set_attribute(cv.GEN_AI_INPUT_MESSAGES, json.dumps(list(messages)))
        timeout_real_s = self.clock.real_s(config.timeout_s)
        litellm = import_litellm()
        try:
            call = asyncio.wait_for(
                litellm.acompletion(
                    model=model,
                    messages=list(messages),
                    max_tokens=max_tokens,
                    seed=self.seed,
                    timeout=timeout_real_s,
                    drop_params=True,
                    metadata={
                        "cliffwatch": {
                            "role": role.value,
                            "task_class": config.name,
                            "seed": self.seed,
                            "attempt": attempt,
                            "time_scale": self.clock.time_scale,
                            "provider_params": dict(config.provider_params),
                        }
                    },
                ),
                timeout=timeout_real_s + BACKSTOP_SLACK_S,
            )
            # simulated time, see the module docstring
            response = await self.clock.timed(call, simulated=is_sim_model(model))
        except asyncio.CancelledError:
            # cancelled in flight (spend crossed the ceiling, or the caller gave up): the
            # span ends when the crossing happened, in simulated time
            if self._cancelled_at_ns is not None:
                self.clock.wait_until(self._cancelled_at_ns)
            self._fail_span(span, model, messages, cv.ERROR_TYPE_CANCELLED, "cancelled in flight",
                            True)
            raise
        except Exception as exc:  # noqa: BLE001 - every provider error becomes a span
            kind, retryable, billed = _classify(exc)
            message = str(exc).splitlines()[0][:300] if str(exc) else kind
            cost = self._fail_span(span, model, messages, kind, message, billed)
            return _Attempt(False, None, cost, kind, message, retryable)
        text = response.choices[0].message.content or ""
        # the response's whole usage (cache reads and writes, reasoning) and the cost the
        # provider reported, if any, priced by litellm's cost logic (telemetry.pricing)
        tokens, provider_cost_usd = usage_of_litellm(getattr(response, "usage", None))
        response_model = getattr(response, "model", None) or model
        # providers answer with dated snapshots ("gpt-4o-mini-2024-07-18") the price map may
        # lack; the model asked for is priced the same
        cost = price_call((response_model, model), tokens, reported_usd=provider_cost_usd)
        attrs = sa.call_usage_attributes(response_model=response_model, usage=tokens)
        if self.capture:
            attrs[cv.GEN_AI_OUTPUT_MESSAGES] = json.dumps([{"role": "assistant", "content": text}])
        problem = None
        if annotate is not None:
            extra, problem = annotate(text)
            attrs.update(extra)
        self._record_cost(span, cost, attrs)
        if problem:
            span.set_attribute(cv.ERROR_TYPE, "PlanError")
            span.set_status(Status(StatusCode.ERROR, problem))
        span.end(end_time=self.clock.now_ns())
        if problem is None:
            return _Attempt(True, text, cost)
        return _Attempt(False, text, cost, "PlanError", problem)

    def _fail_span(
        self,
        span: trace.Span,
        model: str,
        messages: Sequence[prompts.Message],
        kind: str,
        message: str,
        billed_prompt: bool,
    ) -> CallCost:
        in_tokens = count_prompt_tokens(model, messages) if billed_prompt else 0
        # an estimate of a billed prompt (no response to split it): not flagged as missing
        # cache detail, which is about what a provider left out
        cost = price_call(model, TokenUsage(in_tokens, 0), cache_detail_known=True)
        attrs = {
            cv.ERROR_TYPE: kind,
            **sa.call_usage_attributes(
                response_model=None, input_tokens=in_tokens, output_tokens=0
            ),
        }
        self._record_cost(span, cost, attrs)
        span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"))
        span.end(end_time=self.clock.now_ns())
        return cost

    async def _call(
        self,
        *,
        role: Role,
        name: str,
        model: str,
        messages: Sequence[prompts.Message],
        max_tokens: int,
        attributes: Attributes | None = None,
        annotate: Callable[[str], tuple[Attributes, str | None]] | None = None,
    ) -> _Attempt:
        """A call with bounded retries and exponential backoff (each attempt a span).

        Stops early, without a new attempt, once spend has crossed the ceiling.
        """
        result = _Attempt(False, error_type="not_attempted", error_message="ceiling crossed")
        for attempt in range(1, self.config.max_retries + 2):
            if self.guard.ceiling_crossed:
                return result
            result = await self._attempt(
                role=role,
                name=name,
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                attempt=attempt,
                attributes=attributes or {},
                annotate=annotate,
            )
            if result.ok or not result.retryable or attempt > self.config.max_retries:
                return result
            # exponential backoff: base, 2 x base, 4 x base ... (simulated seconds)
            await self.clock.sleep(self.config.backoff_base_s * 2 ** (attempt - 1))
        return result

    # --- stages --------------------------------------------------------------------------
    async def _plan(self) -> tuple[RoutedPlan, PlanVerdict]:
        config, task = self.config, self.task
        limits = config.limits
        messages = prompts.planner_messages(
            task.input_text,
            task_class=config.name,
            max_workers=limits.max_workers,
            guidance=config.planner_guidance,
        )
        reserve = self.reserve = post_worker_reserve(config, task.input_text)
        replanned = reparsed = False
        while True:
            self.plan_attempts += 1
            parsed: list[RoutedPlan] = []

            def annotate(
                text: str, parsed: list[RoutedPlan] = parsed
            ) -> tuple[Attributes, str | None]:
                try:
                    items = prompts.parse_plan(text)
                except PlanError as exc:
                    return {}, f"unusable plan: {exc}"
                routed = route_plan(items, config, task.input_text)
                parsed.append(routed)
                return sa.plan_attributes(routed.subtasks, capture=self.capture), None

            result = await self._call(
                role=Role.PLAN,
                name="plan",
                model=config.planner_model,
                messages=messages,
                max_tokens=config.planner_max_output_tokens,
                annotate=annotate,
            )
            if not parsed:
                if result.error_type == "PlanError" and not reparsed:
                    reparsed = True
                    reason = (result.error_message or "unusable plan").removeprefix(
                        "unusable plan: "
                    )
                    messages = prompts.reparse_messages(messages, result.text or "", reason)
                    continue
                if result.error_type == "PlanError":
                    error = PlanError(
                        f"planner answer unusable after one retry ({result.error_message})"
                    )
                    raise _Stop(RunStatus.FAILED, str(error), raise_error=error)
                raise _Stop(RunStatus.FAILED, f"planner call failed: {result.error_type}")
            routed = parsed[0]
            proposed = len(routed.subtasks)
            self.workers_proposed = max(self.workers_proposed or 0, proposed)
            verdict = self.guard.check_plan(
                routed.subtasks,
                spent_usd=self.guard.spent_usd,
                replanned=replanned,
                reserve_usd=reserve.fixed_usd,
                reserve_usd_per_subtask=reserve.per_subtask_usd,
            )
            self._verdicts.append(verdict)
            if verdict.estimate_usd is not None:
                self.estimate_usd = verdict.estimate_usd
            if verdict.action is Action.REPLAN:
                replanned = True
                assert limits.max_workers is not None  # a replan follows a cap breach
                messages = prompts.replan_messages(
                    messages, result.text or "", proposed=proposed, max_workers=limits.max_workers
                )
                continue
            return routed, verdict

    def _reject(self, verdict: PlanVerdict) -> _Stop:
        limits = self.config.limits
        if verdict.breach is Breach.CAP:
            assert limits.max_workers is not None
            error: OrchestratorError = CostCliffError(
                verdict.proposed,
                limits.max_workers,
                policy=limits.policy.value,
                plan_attempts=self.plan_attempts,
            )
        else:
            assert limits.ceiling_usd is not None
            error = CostCeilingError(
                limits.ceiling_usd, stage="estimate", estimate_usd=verdict.estimate_usd
            )
        return _Stop(RunStatus.REJECTED, str(error), breach=verdict.breach, raise_error=error)

    def _cancel_pending_workers(self) -> None:
        if self._cancelled_at_ns is None:
            self._cancelled_at_ns = self.clock.now_ns()
        current = asyncio.current_task()
        for worker in self._worker_tasks:
            if worker is not current and not worker.done():
                worker.cancel()

    async def _workers(
        self, routed: RoutedPlan, indices: Sequence[int]
    ) -> list[prompts.WorkerResult]:
        config = self.config
        lanes = [self.clock.fork() for _ in indices]

        async def work(position: int, index: int) -> prompts.WorkerResult | None:
            subtask, item = routed.subtasks[index], routed.items[index]
            with self.clock.using(lanes[position]):
                if position >= config.concurrency:
                    # at most `concurrency` in flight: wait for the one ahead in this lane
                    ahead = position - config.concurrency
                    await asyncio.wait([self._worker_tasks[ahead]])
                    self.clock.join([lanes[ahead]])
                if self.guard.ceiling_crossed:
                    return None
                result = await self._call(
                    role=Role.WORKER,
                    name=f"worker {index}",
                    model=subtask.model,
                    messages=routed.worker_messages[index],
                    max_tokens=subtask.max_output_tokens,
                    attributes=sa.subtask_attributes(
                        index, item.title, item.difficulty.value, capture=self.capture
                    ),
                )
            if result.error_type == "not_attempted":
                return None
            return prompts.WorkerResult(index, item.title, result.text if result.ok else None)

        self._worker_tasks = [asyncio.create_task(work(k, i)) for k, i in enumerate(indices)]
        outcomes = await asyncio.gather(*self._worker_tasks, return_exceptions=True)
        self.clock.join(lanes)
        results: list[prompts.WorkerResult] = []
        for outcome in outcomes:
            if isinstance(outcome, asyncio.CancelledError) or outcome is None:
                self.workers_cancelled += 1
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(outcome)
                if outcome.output is None:
                    self.workers_failed += 1
        return results

    def _spend_stop(self) -> _Stop:
        ceiling = self.config.limits.ceiling_usd
        assert ceiling is not None
        error = CostCeilingError(ceiling, stage="spend", spent_usd=self.guard.spent_usd)
        return _Stop(RunStatus.CANCELLED, str(error), breach=Breach.CEILING, raise_error=error)

    async def _synthesise(self, results: Sequence[prompts.WorkerResult]) -> None:
        config, task = self.config, self.task
        feedback: str | None = None
        rounds = config.critic_max_rounds if config.critic_model else 0
        for review in range(rounds + 1):
            result = await self._call(
                role=Role.SYNTHESIS,
                name="synthesis",
                model=config.synthesis_model,
                messages=prompts.synthesis_messages(
                    task.input_text,
                    results,
                    task_class=config.name,
                    previous_answer=self.answer if feedback else None,
                    feedback=feedback,
                ),
                max_tokens=config.synthesis_max_output_tokens,
            )
            if self.guard.ceiling_crossed:
                if result.ok:
                    self.answer = result.text
                raise self._spend_stop()
            if not result.ok:
                if self.answer is None:
                    raise _Stop(RunStatus.FAILED, f"synthesis failed: {result.error_type}")
                return  # a revision failed: keep the answer we have
            self.answer = result.text
            if review == rounds or config.critic_model is None:
                return
            critique = await self._call(
                role=Role.CRITIC,
                name="critic",
                model=config.critic_model,
                messages=prompts.critic_messages(
                    task.input_text, self.answer or "", task_class=config.name
                ),
                max_tokens=config.critic_max_output_tokens,
            )
            if self.guard.ceiling_crossed:
                raise self._spend_stop()
            if not critique.ok:
                return  # the critic is optional: an unreviewed answer still stands
            verdict = prompts.parse_critic(critique.text)
            if verdict.passed or review == rounds - 1:
                return
            feedback = verdict.feedback or "Tighten the answer and name any gap."

    async def _execute(self) -> None:
        routed, verdict = await self._plan()
        if verdict.action is Action.REJECT:
            raise self._reject(verdict)
        self.workers_dispatched = len(verdict.dispatch)
        results = await self._workers(routed, verdict.dispatch)
        if self.guard.ceiling_crossed:
            raise self._spend_stop()
        if not any(r.output is not None for r in results):
            raise _Stop(RunStatus.FAILED, f"all {len(results)} workers failed")
        await self._synthesise(results)

    # --- the run span --------------------------------------------------------------------
    async def run(self) -> tuple[RunResult, OrchestratorError | None]:
        """Execute the run inside its root span; the result and the error to raise, if any."""
        config, task = self.config, self.task
        started_ns = self.clock.started_at_ns
        attrs = sa.run_start_attributes(config.name, config.limits, task_id=task.task_id)
        attrs[cv.CLIFF_SEED] = self.seed
        if self.replay_of:
            attrs[cv.CLIFF_REPLAY_OF] = self.replay_of
        if self.capture:
            attrs[cv.CLIFF_TASK_INPUT] = task.input_text
        span = self.tracer.start_span(
            f"run {config.name}", kind=SpanKind.INTERNAL, start_time=started_ns, attributes=attrs
        )
        self._context = trace.set_span_in_context(span)
        status, breach, error_text = RunStatus.OK, None, None
        to_raise: OrchestratorError | None = None
        try:
            await self._execute()
            breach = survived_breach(self._verdicts)
        except _Stop as stop:
            status, breach, error_text, to_raise = (
                stop.status,
                stop.breach,
                str(stop),
                stop.raise_error,
            )
        except asyncio.CancelledError:
            self._end_run_span(span, RunStatus.FAILED, None, "cancelled by the caller")
            raise
        except BaseException as exc:
            self._end_run_span(span, RunStatus.FAILED, None, f"{type(exc).__name__}: {exc}")
            raise
        ended_ns = self._end_run_span(span, status, breach, error_text)
        result = RunResult(
            run_id=format(span.get_span_context().trace_id, "032x"),
            task_id=task.task_id,
            task_class=config.name,
            status=status,
            breach=breach,
            cost_usd=self.guard.spent_usd,
            unpriced_calls=self.unpriced_calls,
            workers_proposed=self.workers_proposed,
            workers_dispatched=self.workers_dispatched,
            workers_failed=self.workers_failed,
            workers_cancelled=self.workers_cancelled,
            plan_attempts=self.plan_attempts,
            estimate_usd=self.estimate_usd,
            answer=self.answer,
            error=error_text,
            started_at_ns=started_ns,
            ended_at_ns=ended_ns,
        )
        return result, to_raise

    def _end_run_span(
        self, span: trace.Span, status: RunStatus, breach: Breach | None, error: str | None
    ) -> int:
        span.set_attributes(
            sa.run_end_attributes(
                status=status,
                breach=breach,
                workers_proposed=self.workers_proposed,
                workers_dispatched=self.workers_dispatched,
                workers_failed=self.workers_failed,
                workers_cancelled=self.workers_cancelled,
                plan_attempts=self.plan_attempts,
                estimate_usd=self.estimate_usd,
                reserve_usd=None if self.reserve is None else self.reserve.fixed_usd,
                reserve_usd_per_subtask=(
                    None if self.reserve is None else self.reserve.per_subtask_usd
                ),
            )
        )
        span.set_status(sa.run_span_status(status, error))
        ended_ns = self.clock.now_ns()
        span.end(end_time=ended_ns)
        return ended_ns


async def drain_provider_logging(timeout_s: float = 5.0) -> None:
    """Let litellm's background logging queue finish before an event loop closes.

    litellm queues a logging coroutine per call on a worker bound to the running loop; when
    ``asyncio.run`` closes the loop first they are left pending (and carried, with a
    warning, onto the next loop). Best effort: this reaches into litellm's internals, so a
    litellm without them is simply not drained.
    """
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout=timeout_s)
    except (ImportError, AttributeError, TimeoutError):
        pass


async def aorchestrate(
    task: Task,
    config: TaskClassConfig,
    *,
    tracing: Any,
    seed: int = 0,
    started_at_ns: int | None = None,
    time_scale: float = 1.0,
    replay_of: str | None = None,
    raise_on_breach: bool = True,
) -> RunResult:
    """Run ``task`` through plan -> dispatch -> workers -> synthesis (-> critic).

    Args:
        task: the task (its class's settings come in ``config``).
        config: the task class's settings (models, cap, ceiling, policy, budgets).
        tracing: a :class:`telemetry.tracing.Tracing` (anything with a ``.tracer``).
        seed: the run's seed, passed to every call (the ``sim`` provider is deterministic
            for a seed; real providers take it as a hint).
        started_at_ns: the run's start, ns since the epoch (default now); spans are
            stamped from here in simulated time.
        time_scale: real seconds per simulated second (1.0 for real providers).
        replay_of: run id this run replays, recorded as ``cliff.replay_of``.
        raise_on_breach: raise breaches and an unusable plan (after the run span is
            recorded); False returns them as a result with status ``rejected``,
            ``cancelled`` or ``failed`` and ``error`` set (the demo runs this way).

    Returns:
        The run's :class:`RunResult`. Provider failures that outlast their retries
        (the planner call, every worker, the synthesis) come back as status ``failed``
        with ``error`` set; they are not raised.

    Raises:
        CostCliffError: the plan breached ``max_workers`` and was rejected (policy
            reject, or replan whose second plan breached too); nothing dispatched.
        CostCeilingError: the estimate was over ``ceiling_usd`` (stage ``estimate``,
            nothing dispatched) or spend crossed it mid-run (stage ``spend``, pending
            workers cancelled).
        PlanError: the planner's answer was not a usable plan, twice.
    """
    clock = VirtualClock(started_at_ns, time_scale)
    run = _Run(task, config, tracing.tracer, seed, clock, replay_of)
    with clock.using():
        result, error = await run.run()
    if error is not None and raise_on_breach:
        raise error
    return result


def _blocking(
    run_async: Callable[_P, Coroutine[Any, Any, _R]], *, name: str, doc: str
) -> Callable[_P, _R]:
    """A synchronous twin of ``run_async``, with its very signature (one parameter list).

    The twin runs ``run_async`` on an event loop of its own (so not from inside one), then
    :func:`drain_provider_logging` before that loop closes.

    Args:
        run_async: the coroutine function.
        name: the twin's ``__name__``.
        doc: the twin's docstring.
    """

    @functools.wraps(run_async)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        async def run_then_drain() -> _R:
            try:
                return await run_async(*args, **kwargs)
            finally:
                await drain_provider_logging()

        return asyncio.run(run_then_drain())

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    return run


orchestrate = _blocking(
    aorchestrate,
    name="orchestrate",
    doc="""Synchronous :func:`aorchestrate` (runs its own event loop; not from inside one).

    Arguments, result and errors are those of :func:`aorchestrate`.
    """,
)
