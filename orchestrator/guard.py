"""The public guard: cliffwatch's cap and ceiling for an orchestrator you already have.

Why one file: it is the public API of the guard, one class whose methods all act on one
lock-protected run state (plan checks, recorded calls, spend, the run span), and close to a
third of it is the docstrings users read; the checks themselves are
:mod:`orchestrator.dispatch`'s. One module keeps the whole contract readable in one place.

Most teams already dispatch sub-tasks somewhere (a LangGraph fan-out, a task queue, a
``for`` loop). :class:`Guard` puts the same dispatch layer :func:`orchestrator.runner.
aorchestrate` uses (:class:`orchestrator.dispatch.DispatchGuard`, one implementation)
where *they* dispatch, and records what happened as one cliffwatch run, so a team that
only uses the guard still gets P50/P95/P99 per task class, incidents and alerts::

    from cliffwatch.orchestrator.guard import cliffwatch_guard

    with cliffwatch_guard("research", max_workers=8, ceiling_usd=0.50) as guard:
        approved = guard.check_plan(subtasks)      # CostCliffError over the cap
        for subtask in approved:
            if guard.should_cancel:                # spend crossed the ceiling
                break
            reply = call_worker(subtask)
            guard.record_call("gpt-4o-mini", reply.input_tokens, reply.output_tokens)

What a guard records (the runner's span conventions, :mod:`telemetry.conventions`): one
trace per run, a root span (role ``run``) carrying ``cliff.task_class``,
``cliff.max_workers``, ``cliff.ceiling_usd``, ``cliff.policy``, ``cliff.status``,
``cliff.breach``, ``cliff.workers_proposed`` / ``_dispatched`` / ``_failed`` /
``_cancelled``, ``cliff.plan_attempts``, ``cliff.estimate_usd`` and the reserve that
estimate held back (``cliff.reserve_usd``; ``cliff.reserve_usd_per_subtask`` is 0, as a
guard holds back a fixed amount), and one child span per call reported with
:meth:`Guard.record_call` (role ``plan``, ``worker``, ``synthesis``, ``critic`` or
``call``; GenAI model and token attributes; ``cliff.cost_usd``
priced by :func:`telemetry.pricing.price_call` from the tokens and their cache and reasoning
split, or the cost you pass). The plan checked by
:meth:`Guard.check_plan` is stored on the latest planner call as ``cliff.plan.subtasks``.
Spans go through :func:`telemetry.tracing.configure_tracing` into the store (and to an
OTLP endpoint when one is set); :func:`telemetry.write_pipeline.write_spans` materialises the run
and records ``cap_breach`` / ``cost_ceiling`` incidents, which alerts pick up.

Call spans are kept in memory and emitted when the guard closes (they are children of
the run span, which only a closed run has), then the tracing pipeline is flushed so the
run is in the store when the ``with`` block ends.

Status of the recorded run: ``rejected`` when a plan was rejected (cap or estimate over
the ceiling), else ``cancelled`` when spend crossed the ceiling, else ``failed`` when an
exception other than a breach left the ``with`` block, else ``ok``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from cliffwatch import settings
from cliffwatch.formatting import usd
from cliffwatch.orchestrator import span_attrs as sa
from cliffwatch.orchestrator.dispatch import (
    Action,
    Difficulty,
    DispatchGuard,
    Limits,
    PlannedSubTask,
    PlanVerdict,
    survived_breach,
)
from cliffwatch.orchestrator.errors import (
    ConfigError,
    CostCeilingError,
    CostCliffError,
    OrchestratorError,
)
from cliffwatch.orchestrator.routing import estimate_call_usd
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.call_usage import normalised_tokens
from cliffwatch.telemetry.conventions import Breach, CapPolicy, Role, RunStatus
from cliffwatch.telemetry.pricing import CallCost, TokenUsage, price_call
from cliffwatch.telemetry.tracing import Tracing, configure_tracing

T = TypeVar("T")

CALL_ROLES = frozenset({Role.PLAN, Role.WORKER, Role.SYNTHESIS, Role.CRITIC, Role.CALL})
"""Roles :meth:`Guard.record_call` accepts (the LLM-call roles of the span conventions)."""

_tracings: dict[str, Tracing] = {}
_tracings_lock = threading.Lock()


def tracing_for(db: str | os.PathLike[str] | None = None) -> Tracing:
    """The process-wide tracing pipeline guards use for the store ``db`` (created once).

    Args:
        db: the DuckDB store, or a ClickHouse store URL (spans go into its Collector-shaped
            traces table; docs/fleet.md); default $CLIFFWATCH_DB, else
            ``data/cliffwatch.duckdb``.

    Returns:
        A batching :class:`telemetry.tracing.Tracing` shared by every guard of this
        process on that store (its provider is shut down at interpreter exit).
    """
    url = settings.db_url(db)
    store: str | os.PathLike[str] = (
        url if settings.is_engine_store(url) else settings.db_path(db).resolve())
    key = str(store)
    with _tracings_lock:
        if key not in _tracings:
            _tracings[key] = configure_tracing(store, service_name="cliffwatch")
        return _tracings[key]


@dataclass(frozen=True, slots=True)
class SubTask:
    """One sub-task of a plan, as much as the guard needs to price it.

    Every field is optional; a missing one falls back to the guard's defaults
    (``worker_model``, ``worker_input_tokens``, ``worker_max_output_tokens``).

    Attributes:
        title: what the planner called it.
        model: the litellm model string the sub-task will run on (prices the estimate).
        input_tokens: prompt tokens of its worker call (default 0 when unknown).
        max_output_tokens: output token budget of its worker call.
        difficulty: ``routine`` or ``hard``.
    """

    title: str = ""
    model: str | None = None
    input_tokens: int | None = None
    max_output_tokens: int | None = None
    difficulty: str = Difficulty.ROUTINE.value


@dataclass(frozen=True, slots=True)
class PlanCheck(Generic[T]):
    """What :meth:`Guard.check_plan` decided, with your sub-tasks to dispatch.

    Iterating a ``PlanCheck`` (or ``len``, indexing) goes over ``approved``, so
    ``for subtask in guard.check_plan(plan)`` dispatches exactly what may run.

    Attributes:
        verdict: the dispatch layer's :class:`~orchestrator.dispatch.PlanVerdict`.
        approved: the sub-tasks to dispatch, your own objects, in plan order (the first
            ``max_workers`` under policy ``truncate``; empty unless the action is
            ``dispatch``). For a plan given as a count, the indices to dispatch.
    """

    verdict: PlanVerdict
    approved: tuple[T, ...]

    @property
    def action(self) -> Action:
        """``dispatch``, ``replan`` (ask the planner again, then check its new plan) or
        ``reject``."""
        return self.verdict.action

    @property
    def replan(self) -> bool:
        """True when policy ``replan`` asks for one more plan."""
        return self.verdict.action is Action.REPLAN

    @property
    def breach(self) -> Breach | None:
        """``cap`` or ``ceiling`` when the plan breached one (a truncated plan too)."""
        return self.verdict.breach

    @property
    def estimate_usd(self) -> float | None:
        """The pre-dispatch estimate in USD (None when only a count was checked)."""
        return self.verdict.estimate_usd

    @property
    def reason(self) -> str:
        """One human line explaining the verdict."""
        return self.verdict.reason

    def __iter__(self) -> Iterator[T]:
        return iter(self.approved)

    def __len__(self) -> int:
        return len(self.approved)

    def __getitem__(self, index: int) -> T:
        return self.approved[index]


@dataclass(slots=True)
class _Call:
    """One reported call, kept until the guard closes."""

    role: Role
    model: str
    usage: TokenUsage
    cost: CallCost
    started_at_ns: int
    ended_at_ns: int
    provider: str | None
    subtask_index: int | None
    title: str | None
    error: str | None
    attributes: dict[str, Any] = field(default_factory=dict)


def _subtask_value(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def _provider_of(model: str, provider: str | None) -> str | None:
    if provider:
        return provider
    return model.split("/", 1)[0] if "/" in model else None


class Guard:
    """The max-workers cap and the per-task cost ceiling for one run of your orchestrator.

    One guard per run (one task). Thread-safe: workers running in threads may report
    calls and read :attr:`should_cancel` concurrently. Use it as a context manager (or
    call :meth:`start` and :meth:`close`); see :func:`cliffwatch_guard`.

    Args:
        task_class: the kind of task this run is (``research``, ``content_update``...):
            what percentiles and findings are grouped by.
        max_workers: most sub-tasks dispatched per run (default 8, the handbook's cap);
            None switches the cap off (and findings will flag it).
        ceiling_usd: most the run may cost, USD; None switches the ceiling off.
        policy: a plan over the cap is ``reject``-ed (CostCliffError), answered with
            ``replan`` (one more plan, a second breach is rejected), or ``truncate``-d to
            the first ``max_workers`` sub-tasks.
        db: the store runs are recorded in (default $CLIFFWATCH_DB, else
            ``data/cliffwatch.duckdb``); ignored when ``tracing`` is given.
        tracing: a :class:`telemetry.tracing.Tracing` to record through (e.g. the one
            your process already configured); default :func:`tracing_for` ``(db)``.
        worker_model: model a sub-task runs on when it does not name one (prices the
            estimate); None: such sub-tasks add nothing to the estimate.
        worker_input_tokens: prompt tokens per worker call for the estimate (default 0).
        worker_max_output_tokens: output token budget per worker call for the estimate.
        reserve_usd: USD the estimate holds back for calls after the workers (synthesis).
        task_id: your id for the task, recorded as ``cliff.task.id``.
        raise_on_breach: raise CostCliffError / CostCeilingError from
            :meth:`check_plan` (default); False returns a rejecting :class:`PlanCheck`.
        flush_on_close: flush the tracing pipeline when the run closes, so the run, its
            incidents and their alerts are in the store when :meth:`close` returns.

    Raises:
        ConfigError: max_workers below 1, ceiling_usd not > 0, an unknown policy or an
            empty task class.
    """

    def __init__(
        self,
        task_class: str,
        *,
        max_workers: int | None = 8,
        ceiling_usd: float | None = None,
        policy: CapPolicy | str = CapPolicy.REJECT,
        db: str | os.PathLike[str] | None = None,
        tracing: Tracing | None = None,
        worker_model: str | None = None,
        worker_input_tokens: int | None = None,
        worker_max_output_tokens: int | None = None,
        reserve_usd: float = 0.0,
        task_id: str | None = None,
        raise_on_breach: bool = True,
        flush_on_close: bool = True,
    ) -> None:
        if not task_class or not isinstance(task_class, str):
            raise ConfigError("a guard needs a task class (a non-empty string)")
        self.task_class = task_class
        # Limits coerces a policy string itself, raising ConfigError with the choices
        self.limits = Limits(max_workers, ceiling_usd, policy)  # type: ignore[arg-type]
        self._db = db
        self._tracing = tracing
        self.worker_model = worker_model
        self.worker_input_tokens = worker_input_tokens
        self.worker_max_output_tokens = worker_max_output_tokens
        self.reserve_usd = float(reserve_usd)
        self.task_id = task_id
        self.raise_on_breach = raise_on_breach
        self.flush_on_close = flush_on_close
        self._dispatch = DispatchGuard(self.limits)
        self._lock = threading.RLock()
        self._calls: list[_Call] = []
        self._span: trace.Span | None = None
        self._closed = False
        self._plan_attempts = 0
        self._replan_pending = False
        self._rejected: PlanVerdict | None = None
        self._final_breach: Breach | None = None
        self._verdicts: list[PlanVerdict] = []
        self._workers_proposed: int | None = None
        self._workers_dispatched = 0
        self._workers_cancelled: int | None = None
        self._estimate_usd: float | None = None
        self._reserve_usd: float | None = None  # held back by the last plan estimate
        self._last_plan_call: _Call | None = None
        self.run_id: str | None = None
        self.status: RunStatus | None = None

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def tracing(self) -> Tracing:
        """The tracing pipeline this guard records through."""
        if self._tracing is None:
            self._tracing = tracing_for(self._db)
        return self._tracing

    def start(self) -> Guard:
        """Open the run (its root span starts now). Called by ``__enter__``.

        Returns:
            The guard itself.

        Raises:
            RuntimeError: the guard was already started.
        """
        with self._lock:
            if self._span is not None:
                raise RuntimeError("this guard was already started: use one guard per run")
            attrs = sa.run_start_attributes(self.task_class, self.limits, task_id=self.task_id)
            self._span = self.tracing.tracer.start_span(
                f"run {self.task_class}", kind=SpanKind.INTERNAL, attributes=attrs
            )
            self.run_id = format(self._span.get_span_context().trace_id, "032x")
            return self

    def __enter__(self) -> Guard:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)

    # --- the plan ------------------------------------------------------------------------
    def _planned(self, plan: Sequence[Any]) -> list[PlannedSubTask]:
        out: list[PlannedSubTask] = []
        for index, item in enumerate(plan):
            if isinstance(item, PlannedSubTask):
                out.append(item)
                continue
            if isinstance(item, str):
                title, model, tokens_in, tokens_out, difficulty = item, None, None, None, None
            else:
                title = _subtask_value(item, "title")
                model = _subtask_value(item, "model")
                tokens_in = _subtask_value(item, "input_tokens")
                tokens_out = _subtask_value(item, "max_output_tokens")
                difficulty = _subtask_value(item, "difficulty")
                if title is None and not isinstance(item, Mapping | SubTask):
                    title = str(item)
            model = model or self.worker_model
            tokens_in = tokens_in if tokens_in is not None else self.worker_input_tokens
            tokens_out = tokens_out if tokens_out is not None else self.worker_max_output_tokens
            try:
                level = Difficulty(difficulty or Difficulty.ROUTINE.value)
            except ValueError:
                level = Difficulty.ROUTINE
            estimate = None
            if model and tokens_out is not None:
                estimate = estimate_call_usd(model, int(tokens_in or 0), int(tokens_out))
            out.append(
                PlannedSubTask(
                    index=index,
                    title=str(title or ""),
                    difficulty=level,
                    model=str(model or ""),
                    max_output_tokens=int(tokens_out or 0),
                    estimated_cost_usd=estimate,
                )
            )
        return out

    def check_plan(
        self, plan: Sequence[T] | int, *, reserve_usd: float | None = None
    ) -> PlanCheck[T]:
        """Check a plan against the cap and the ceiling before anything is dispatched.

        The decision is :meth:`orchestrator.dispatch.DispatchGuard.check_plan`'s (cap
        first, then the estimate against the ceiling; see :mod:`orchestrator.dispatch`).
        The estimate is USD already spent (calls reported so far, e.g. the planner's)
        + each sub-task's ``input_tokens x input price + max_output_tokens x output
        price`` of its model (:func:`telemetry.pricing.price_for`) + ``reserve_usd``.
        After a ``replan`` answer, the next call is checked as the replanned plan.

        Args:
            plan: the sub-tasks, any objects: :class:`SubTask`, mappings or objects with
                any of ``title`` / ``model`` / ``input_tokens`` / ``max_output_tokens`` /
                ``difficulty``, plain strings (titles), or
                :class:`~orchestrator.dispatch.PlannedSubTask`; or just their count (then
                only the cap is checked).
            reserve_usd: USD to hold back for synthesis; default the guard's.

        Returns:
            A :class:`PlanCheck`: iterate it for the sub-tasks to dispatch.

        Raises:
            CostCliffError: the plan breached the cap and was rejected (policy
                ``reject``, or ``replan`` whose second plan breached too).
            CostCeilingError: the estimate is over ``ceiling_usd`` (stage ``estimate``).
            RuntimeError: the guard is not started or already closed.
            (Neither breach is raised with ``raise_on_breach=False``.)
        """
        with self._lock:
            self._require_open()
            items: list[T] | None = None
            if isinstance(plan, bool):
                # A bool is an int but never a count (it was always a TypeError, from
                # list(True); now one that says what is wrong).
                raise TypeError("plan must be sub-tasks or their count, not a bool")
            if isinstance(plan, int):
                checked: Sequence[PlannedSubTask] | int = plan
                proposed = plan
            else:
                items = list(plan)
                checked = self._planned(items)
                proposed = len(items)
            self._plan_attempts += 1
            reserve = self.reserve_usd if reserve_usd is None else float(reserve_usd)
            verdict = self._dispatch.check_plan(
                checked,
                spent_usd=self._dispatch.spent_usd,
                replanned=self._replan_pending,
                reserve_usd=reserve,
            )
            self._verdicts.append(verdict)
            self._workers_proposed = max(self._workers_proposed or 0, proposed)
            if verdict.estimate_usd is not None:
                self._estimate_usd = verdict.estimate_usd
            if isinstance(checked, list):
                self._reserve_usd = reserve
                self._attach_plan(checked)
            self._replan_pending = verdict.action is Action.REPLAN
            approved: tuple[Any, ...] = ()
            if verdict.action is Action.DISPATCH:
                self._workers_dispatched = len(verdict.dispatch)
                # as the runner records it: a cap breach that made the run replan stays
                # the run's breach even when the second plan fits
                self._final_breach = survived_breach(self._verdicts)
                if items is None:
                    approved = tuple(verdict.dispatch)
                else:
                    approved = tuple(items[i] for i in verdict.dispatch)
            elif verdict.action is Action.REJECT:
                self._rejected = verdict
                self._workers_dispatched = 0
                if self.raise_on_breach:
                    raise self._breach_error(verdict)
            return PlanCheck(verdict, approved)

    def _attach_plan(self, planned: list[PlannedSubTask]) -> None:
        call = self._last_plan_call
        if call is None or cv.CLIFF_PLAN_SUBTASKS in call.attributes:
            return
        call.attributes.update(sa.plan_attributes(planned))

    def _breach_error(self, verdict: PlanVerdict) -> OrchestratorError:
        limits = self.limits
        if verdict.breach is Breach.CAP:
            assert limits.max_workers is not None
            return CostCliffError(
                verdict.proposed,
                limits.max_workers,
                policy=limits.policy.value,
                plan_attempts=self._plan_attempts,
            )
        assert limits.ceiling_usd is not None
        return CostCeilingError(
            limits.ceiling_usd, stage="estimate", estimate_usd=verdict.estimate_usd
        )

    # --- calls and spend -----------------------------------------------------------------
    def record_call(
        self,
        model: str,
        input_tokens: int | None,
        output_tokens: int | None,
        *,
        role: Role | str = Role.WORKER,
        cost_usd: float | None = None,
        started_at_ns: int | None = None,
        ended_at_ns: int | None = None,
        subtask_index: int | None = None,
        title: str | None = None,
        error: str | None = None,
        provider: str | None = None,
        cache_read_tokens: int | None = None,
        cache_creation_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> float | None:
        """Report one finished model call: it is priced, added to spend and recorded.

        Args:
            model: the model that answered (a litellm model string, ``gpt-4o-mini``,
                ``anthropic/claude-sonnet-4-5``...).
            input_tokens: prompt tokens the provider reported, cache reads and writes
                included (OpenAI's ``prompt_tokens``; for Anthropic's API
                ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``).
                A count smaller than the cache reads plus writes cannot include them and is
                taken as Anthropic's own ``input_tokens`` (they are added).
            output_tokens: completion tokens the provider reported, reasoning included.
            role: ``plan``, ``worker``, ``synthesis``, ``critic`` or ``call``.
            cost_usd: the call's cost in USD if your provider reports it (recorded as
                source ``provider``, with litellm's computation beside it); default
                litellm's cost of the tokens (:func:`telemetry.pricing.price_call`: cache
                reads and writes and reasoning at their own rates, tiered prices above a
                prompt size). A model with no price is recorded *unpriced*: counted,
                never $0.
            cache_read_tokens: prompt tokens served from the provider's cache (OpenAI
                ``prompt_tokens_details.cached_tokens``, Anthropic
                ``cache_read_input_tokens``). Without a cache split on a model that prices
                cache reads apart, the cost is an upper bound and is flagged so.
            cache_creation_tokens: prompt tokens written to the cache (Anthropic
                ``cache_creation_input_tokens``).
            reasoning_tokens: output tokens spent reasoning (OpenAI
                ``completion_tokens_details.reasoning_tokens``).
            started_at_ns: when the call started, ns since the Unix epoch (default: its
                end, a zero-length span).
            ended_at_ns: when it ended (default now).
            subtask_index: the plan index of the sub-task (worker calls).
            title: the sub-task's title.
            error: why the call failed (its span gets status error), None if it did not.
            provider: ``gen_ai.provider.name``; default the model's ``provider/`` prefix.

        Returns:
            The call's cost in USD, or None when unpriced.

        Raises:
            ValueError: an unknown role.
            RuntimeError: the guard is not started or already closed.
        """
        try:
            call_role = Role(role)
        except ValueError:
            raise ValueError(
                f"role {role!r} is not one of {', '.join(sorted(r.value for r in CALL_ROLES))}"
            ) from None
        if call_role not in CALL_ROLES:
            raise ValueError(f"role {role!r} is not an LLM-call role")
        tokens = normalised_tokens(
            input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens
        )
        cost = price_call(
            model, tokens, reported_usd=None if cost_usd is None else float(cost_usd)
        )
        ended = time.time_ns() if ended_at_ns is None else int(ended_at_ns)
        started = ended if started_at_ns is None else min(int(started_at_ns), ended)
        call = _Call(
            role=call_role,
            model=model,
            usage=tokens,
            cost=cost,
            started_at_ns=started,
            ended_at_ns=ended,
            provider=_provider_of(model, provider),
            subtask_index=subtask_index,
            title=title,
            error=error,
        )
        with self._lock:
            self._require_open()
            self._calls.append(call)
            if call_role is Role.PLAN:
                self._last_plan_call = call
            self._dispatch.record_spend(cost.cost_usd)
        return cost.cost_usd

    def record_cancelled(self, count: int = 1) -> None:
        """Report dispatched sub-tasks you cancelled (default: the guard counts dispatched
        sub-tasks with no worker call reported once spend crossed the ceiling)."""
        with self._lock:
            self._workers_cancelled = (self._workers_cancelled or 0) + int(count)

    @property
    def spent_usd(self) -> float:
        """USD spent by the calls reported so far (unpriced calls add nothing)."""
        with self._lock:
            return self._dispatch.spent_usd

    @property
    def should_cancel(self) -> bool:
        """True once spend has crossed ``ceiling_usd``: cancel pending work, dispatch no
        more (it stays True)."""
        with self._lock:
            return self._dispatch.ceiling_crossed

    def check_spend(self) -> float:
        """Raise if spend has crossed the ceiling, else return USD spent so far.

        Raises:
            CostCeilingError: stage ``spend``, when :attr:`should_cancel` is True.
        """
        with self._lock:
            if self._dispatch.ceiling_crossed:
                assert self.limits.ceiling_usd is not None
                raise CostCeilingError(
                    self.limits.ceiling_usd, stage="spend", spent_usd=self._dispatch.spent_usd
                )
            return self._dispatch.spent_usd

    # --- closing -------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._span is None:
            raise RuntimeError("the guard is not started: use `with cliffwatch_guard(...)`")
        if self._closed:
            raise RuntimeError("the guard is closed: use one guard per run")

    def _worker_counts(self) -> tuple[int, int]:
        """(failed, cancelled) dispatched sub-tasks, from the worker calls reported."""
        groups: dict[Any, list[_Call]] = {}
        for n, call in enumerate(c for c in self._calls if c.role is Role.WORKER):
            key = call.subtask_index if call.subtask_index is not None else ("call", n)
            groups.setdefault(key, []).append(call)
        failed = sum(1 for calls in groups.values() if all(c.error for c in calls))
        if self._workers_cancelled is not None:
            cancelled = self._workers_cancelled
        elif self._dispatch.ceiling_crossed:
            cancelled = max(0, self._workers_dispatched - len(groups))
        else:
            cancelled = 0
        return failed, cancelled

    def close(self, error: BaseException | None = None) -> RunStatus:
        """End the run: emit its spans, then flush them into the store.

        Args:
            error: the exception leaving the run, if any (a breach error keeps the
                breach's status; anything else makes the run ``failed``).

        Returns:
            The run's status (also in :attr:`status`). Closing twice returns it again.
        """
        with self._lock:
            if self._closed:
                assert self.status is not None
                return self.status
            if self._span is None:
                self.start()
            span = self._span
            assert span is not None
            self._closed = True
            breach: Breach | None = self._final_breach
            message: str | None = None
            if self._rejected is not None:
                status, breach = RunStatus.REJECTED, self._rejected.breach
                message = self._rejected.reason
            elif self._dispatch.ceiling_crossed:
                status, breach = RunStatus.CANCELLED, Breach.CEILING
                message = f"spend {usd(self._dispatch.spent_usd)} crossed the ceiling"
            elif error is not None and not isinstance(error, CostCliffError | CostCeilingError):
                status = RunStatus.FAILED
                message = f"{type(error).__name__}: {error}"
            else:
                status = RunStatus.OK
            self.status = status
            context = trace.set_span_in_context(span)
            tracer = self.tracing.tracer
            for call in self._calls:
                self._emit_call(tracer, context, call)
            failed, cancelled = self._worker_counts()
            span.set_attributes(
                sa.run_end_attributes(
                    status=status,
                    breach=breach,
                    workers_proposed=self._workers_proposed,
                    workers_dispatched=self._workers_dispatched,
                    workers_failed=failed,
                    workers_cancelled=cancelled,
                    plan_attempts=self._plan_attempts,
                    estimate_usd=self._estimate_usd,
                    reserve_usd=self._reserve_usd,
                    reserve_usd_per_subtask=None if self._reserve_usd is None else 0.0,
                )
            )
            span.set_status(sa.run_span_status(status, message))
            last_end = max((c.ended_at_ns for c in self._calls), default=0)
            span.end(end_time=max(time.time_ns(), last_end))
        if self.flush_on_close:
            self.tracing.flush()
        return status

    def _emit_call(self, tracer: trace.Tracer, context: Any, call: _Call) -> None:
        attrs = {
            **sa.call_request_attributes(
                role=call.role,
                task_class=self.task_class,
                model=call.model,
                provider=call.provider,
            ),
            **sa.call_usage_attributes(
                response_model=call.model, usage=call.usage
            ),
            **sa.call_cost_attributes(call.cost),
            **sa.subtask_attributes(call.subtask_index, call.title),
        }
        if call.error:
            attrs[cv.ERROR_TYPE] = "error"
        attrs.update(call.attributes)
        name = call.role.value
        if call.role is Role.WORKER and call.subtask_index is not None:
            name = f"worker {call.subtask_index}"
        span = tracer.start_span(
            name,
            context=context,
            kind=SpanKind.CLIENT,
            start_time=call.started_at_ns,
            attributes=attrs,
        )
        if call.error:
            span.set_status(Status(StatusCode.ERROR, call.error))
        span.end(end_time=call.ended_at_ns)


@contextmanager
def cliffwatch_guard(
    task_class: str,
    *,
    max_workers: int | None = 8,
    ceiling_usd: float | None = None,
    policy: CapPolicy | str = CapPolicy.REJECT,
    db: str | os.PathLike[str] | Path | None = None,
    **options: Any,
) -> Iterator[Guard]:
    """A started :class:`Guard` for one run; the run is recorded when the block ends.

    A breach raised inside the block (CostCliffError, CostCeilingError) is recorded as
    the run's status and breach, then propagates; so does any other exception (the run
    is recorded ``failed``).

    Args:
        task_class: the run's task class.
        max_workers: the cap (default 8; None: no cap).
        ceiling_usd: the per-task ceiling in USD (None: none).
        policy: ``reject`` | ``replan`` | ``truncate``.
        db: the store (default $CLIFFWATCH_DB, else ``data/cliffwatch.duckdb``).
        **options: any other :class:`Guard` keyword (``tracing``, ``worker_model``,
            ``worker_max_output_tokens``, ``reserve_usd``, ``task_id``,
            ``raise_on_breach``, ``flush_on_close``...).

    Yields:
        The guard.

    Raises:
        ConfigError: bad limits (see :class:`Guard`).
    """
    guard = Guard(
        task_class,
        max_workers=max_workers,
        ceiling_usd=ceiling_usd,
        policy=policy,
        db=db,
        **options,
    )
    guard.start()
    try:
        yield guard
    except BaseException as exc:
        guard.close(exc)
        raise
    guard.close()
