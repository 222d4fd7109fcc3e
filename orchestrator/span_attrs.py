"""The attributes of cliffwatch's run and LLM-call spans, built in one place.

The runner (:mod:`orchestrator.runner`) and the public guard (:mod:`orchestrator.guard`)
record a run with the same span conventions (:mod:`telemetry.conventions`): a root span of
role ``run`` and one child span per LLM call. These pure functions build the attribute
dicts both of them set, so a run looks the same in the store whichever recorded it; each
returns a new ``{attribute name: value}`` dict and leaves out what is unknown (None), never
recording a placeholder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import Status, StatusCode

from cliffwatch import settings
from cliffwatch.orchestrator.dispatch import Limits, PlannedSubTask
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Breach, CostSource, Role, RunStatus
from cliffwatch.telemetry.pricing import CallCost, TokenUsage

Attributes = dict[str, Any]
"""Span attributes: ``{attribute name: str | int | float | bool value}``."""


# --- the run span ------------------------------------------------------------------------
def run_start_attributes(
    task_class: str, limits: Limits, *, task_id: str | None = None
) -> Attributes:
    """What a run span carries from its start: role, task class, task id and limits.

    Args:
        task_class: the run's task class (``cliff.task_class``).
        limits: the cap, ceiling and policy it runs under; a cap or ceiling that is off
            (None) is left out.
        task_id: ``cliff.task.id``, left out when None.

    Returns:
        ``cliff.role`` = ``run``, ``gen_ai.operation.name`` = ``invoke_agent``,
        ``cliff.task_class``, ``cliff.task.id``, ``cliff.policy``, ``cliff.max_workers``
        and ``cliff.ceiling_usd`` (USD).
    """
    attrs: Attributes = {
        cv.CLIFF_ROLE: Role.RUN.value,
        cv.GEN_AI_OPERATION_NAME: cv.OPERATION_INVOKE_AGENT,
        cv.CLIFF_TASK_CLASS: task_class,
    }
    if task_id is not None:
        attrs[cv.CLIFF_TASK_ID] = task_id
    attrs[cv.CLIFF_POLICY] = limits.policy.value
    if limits.max_workers is not None:
        attrs[cv.CLIFF_MAX_WORKERS] = limits.max_workers
    if limits.ceiling_usd is not None:
        attrs[cv.CLIFF_CEILING_USD] = limits.ceiling_usd
    return attrs


def run_end_attributes(
    *,
    status: RunStatus,
    breach: Breach | None,
    workers_proposed: int | None,
    workers_dispatched: int,
    workers_failed: int,
    workers_cancelled: int,
    plan_attempts: int,
    estimate_usd: float | None,
    reserve_usd: float | None = None,
    reserve_usd_per_subtask: float | None = None,
) -> Attributes:
    """The ``cliff.*`` outcome attributes a run span is closed with.

    Args:
        status: how the run ended (``cliff.status``).
        breach: ``cap`` or ``ceiling`` when one was breached (``cliff.breach``), else None.
        workers_proposed: sub-tasks in the largest usable plan; None when no plan was
            usable.
        workers_dispatched: sub-tasks dispatched (0 when rejected).
        workers_failed: dispatched sub-tasks whose every attempt failed.
        workers_cancelled: dispatched sub-tasks cancelled once spend crossed the ceiling.
        plan_attempts: planning requests made.
        estimate_usd: the last pre-dispatch estimate in USD, None when none was made.
        reserve_usd: USD the estimate holds back for the calls after the workers
            (``cliff.reserve_usd``), None when no plan was checked.
        reserve_usd_per_subtask: USD it holds back per dispatched sub-task
            (``cliff.reserve_usd_per_subtask``), None when no plan was checked.

    Returns:
        The attributes; ``cliff.breach``, ``cliff.workers_proposed``,
        ``cliff.estimate_usd`` and the two reserves only when known.
    """
    attrs: Attributes = {
        cv.CLIFF_STATUS: status.value,
        cv.CLIFF_WORKERS_DISPATCHED: workers_dispatched,
        cv.CLIFF_WORKERS_FAILED: workers_failed,
        cv.CLIFF_WORKERS_CANCELLED: workers_cancelled,
        cv.CLIFF_PLAN_ATTEMPTS: plan_attempts,
    }
    if breach is not None:
        attrs[cv.CLIFF_BREACH] = breach.value
    if workers_proposed is not None:
        attrs[cv.CLIFF_WORKERS_PROPOSED] = workers_proposed
    if estimate_usd is not None:
        attrs[cv.CLIFF_ESTIMATE_USD] = estimate_usd
    if reserve_usd is not None:
        attrs[cv.CLIFF_RESERVE_USD] = reserve_usd
    if reserve_usd_per_subtask is not None:
        attrs[cv.CLIFF_RESERVE_USD_PER_SUBTASK] = reserve_usd_per_subtask
    return attrs


def run_span_status(status: RunStatus, message: str | None) -> Status:
    """The OTel status of a run span: OK for an ``ok`` run, else ERROR with ``message``
    (the run's one-line error; the status's name when there is none)."""
    if status is RunStatus.OK:
        return Status(StatusCode.OK)
    return Status(StatusCode.ERROR, message or status.value)


# --- LLM call spans ----------------------------------------------------------------------
def call_request_attributes(
    *,
    role: Role,
    task_class: str,
    model: str,
    provider: str | None,
    max_tokens: int | None = None,
    seed: int | None = None,
    attempt: int | None = None,
) -> Attributes:
    """What an LLM call span carries from its request (known before the provider answers).

    Args:
        role: the call's role (``plan``, ``worker``, ``synthesis``, ``critic``, ``call``).
        task_class: the run's task class.
        model: the model asked for (a litellm model string).
        provider: ``gen_ai.provider.name``; left out when None.
        max_tokens: the output token budget asked for; left out when None.
        seed: the seed passed to the provider; left out when None.
        attempt: ``cliff.attempt`` (1 for a first attempt); left out when None.

    Returns:
        ``gen_ai.operation.name`` = ``chat``, ``gen_ai.provider.name``,
        ``gen_ai.request.model``, ``gen_ai.request.max_tokens``, ``gen_ai.request.seed``,
        ``cliff.role``, ``cliff.task_class`` and ``cliff.attempt``.
    """
    attrs: Attributes = {cv.GEN_AI_OPERATION_NAME: cv.OPERATION_CHAT}
    if provider:
        attrs[cv.GEN_AI_PROVIDER_NAME] = provider
    attrs[cv.GEN_AI_REQUEST_MODEL] = model
    if max_tokens is not None:
        attrs[cv.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    if seed is not None:
        attrs[cv.GEN_AI_REQUEST_SEED] = seed
    attrs[cv.CLIFF_ROLE] = role.value
    attrs[cv.CLIFF_TASK_CLASS] = task_class
    if attempt is not None:
        attrs[cv.CLIFF_ATTEMPT] = attempt
    return attrs


def call_usage_attributes(
    *, response_model: str | None, usage: TokenUsage | None = None,
    input_tokens: int | None = None, output_tokens: int | None = None,
) -> Attributes:
    """The model that answered and the tokens the provider reported (None: left out).

    Args:
        response_model: ``gen_ai.response.model``.
        usage: the call's tokens in the GenAI convention (input including cache reads and
            writes, output including reasoning); or give ``input_tokens`` and
            ``output_tokens`` alone for a call with no cache or reasoning split.

    Returns:
        ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
        ``gen_ai.usage.output_tokens``, ``gen_ai.usage.cache_read.input_tokens``,
        ``gen_ai.usage.cache_creation.input_tokens`` and
        ``gen_ai.usage.reasoning.output_tokens`` (token counts as ints).
    """
    tokens = usage or TokenUsage(input_tokens, output_tokens)
    attrs: Attributes = {}
    if response_model is not None:
        attrs[cv.GEN_AI_RESPONSE_MODEL] = response_model
    for key, value in (
        (cv.GEN_AI_USAGE_INPUT_TOKENS, tokens.input_tokens),
        (cv.GEN_AI_USAGE_OUTPUT_TOKENS, tokens.output_tokens),
        (cv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, tokens.cache_read_tokens),
        (cv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, tokens.cache_creation_tokens),
        (cv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, tokens.reasoning_tokens),
    ):
        if value is not None:
            attrs[key] = int(value)
    return attrs


def call_cost_attributes(cost: CallCost) -> Attributes:
    """A call's cost as recorded: source, the rates used and the USD figures.

    An unpriced call has no ``cliff.cost_usd`` (never $0). A cost the provider reported is
    ``cliff.cost_usd`` with litellm's computation beside it (``cliff.cost.computed_usd``).

    Args:
        cost: the call's :class:`telemetry.pricing.CallCost`.

    Returns:
        ``cliff.cost_source``; when priced, the rates (``cliff.price.*``, USD per token) and
        ``cliff.price.model_key``; ``cliff.cost_usd`` and the proposed GenAI
        ``gen_ai.usage.cost.amount`` / ``.currency`` (``USD``) / ``.source`` (``provider``
        when the provider reported it, else ``local``) when known;
        ``cliff.cost.computed_usd`` when litellm priced the tokens;
        ``cliff.cost.cache_detail_missing`` when the figure is an upper bound.
    """
    attrs: Attributes = {cv.CLIFF_COST_SOURCE: cost.source.value}
    price = cost.price
    if price is not None:
        for key, rate in (
            (cv.CLIFF_PRICE_INPUT, price.input_usd_per_token),
            (cv.CLIFF_PRICE_OUTPUT, price.output_usd_per_token),
            (cv.CLIFF_PRICE_CACHE_READ, price.cache_read_usd_per_token),
            (cv.CLIFF_PRICE_CACHE_CREATION, price.cache_creation_usd_per_token),
            (cv.CLIFF_PRICE_REASONING, price.reasoning_usd_per_token),
        ):
            if rate is not None:
                attrs[key] = rate
        attrs[cv.CLIFF_PRICE_MODEL_KEY] = price.model_key
    if cost.cost_usd is not None:
        attrs[cv.CLIFF_COST_USD] = cost.cost_usd
        attrs[cv.GEN_AI_USAGE_COST_AMOUNT] = cost.cost_usd
        attrs[cv.GEN_AI_USAGE_COST_CURRENCY] = "USD"
        attrs[cv.GEN_AI_USAGE_COST_SOURCE] = (
            "provider" if cost.source is CostSource.PROVIDER else "local"
        )
    if cost.computed_usd is not None:
        attrs[cv.CLIFF_COST_COMPUTED_USD] = cost.computed_usd
    if cost.cache_detail_missing:
        attrs[cv.CLIFF_COST_CACHE_DETAIL_MISSING] = True
    return attrs


def plan_attributes(
    subtasks: Sequence[PlannedSubTask], *, capture: bool | None = None
) -> Attributes:
    """What a planner call span carries about the plan it proposed.

    Args:
        subtasks: the routed, priced plan (:class:`orchestrator.dispatch.PlannedSubTask`).
        capture: whether content is recorded; None reads
            :func:`cliffwatch.settings.capture_content`. Titles are model-written text:
            with capture off they are left out (replay reads ``sub-task i`` instead).

    Returns:
        ``cliff.plan.subtasks`` (a JSON array of ``{index, title, difficulty, model,
        max_output_tokens, estimated_cost_usd}``, what replay reads back with
        :func:`analytics.recorded.parse_plan`) and ``cliff.workers_proposed``.
    """
    with_titles = settings.capture_content() if capture is None else capture
    plan = [
        {
            "index": s.index,
            **({"title": s.title} if with_titles else {}),
            "difficulty": s.difficulty.value,
            "model": s.model,
            "max_output_tokens": s.max_output_tokens,
            "estimated_cost_usd": s.estimated_cost_usd,
        }
        for s in subtasks
    ]
    return {cv.CLIFF_PLAN_SUBTASKS: json.dumps(plan), cv.CLIFF_WORKERS_PROPOSED: len(plan)}


def subtask_attributes(
    index: int | None,
    title: str | None,
    difficulty: str | None = None,
    *,
    capture: bool | None = None,
) -> Attributes:
    """A worker call's sub-task: ``cliff.subtask.index``, ``.title`` and ``.difficulty``
    (``routine`` | ``hard``), each left out when None; the title also with content capture
    off (``capture`` None reads :func:`cliffwatch.settings.capture_content`)."""
    attrs: Attributes = {}
    if index is not None:
        attrs[cv.CLIFF_SUBTASK_INDEX] = int(index)
    if title is not None and (settings.capture_content() if capture is None else capture):
        attrs[cv.CLIFF_SUBTASK_TITLE] = title
    if difficulty is not None:
        attrs[cv.CLIFF_SUBTASK_DIFFICULTY] = difficulty
    return attrs
