"""Routing (which model runs each sub-task) and the token budgets dispatch prices.

The structural advantage of orchestrator-worker is choosing the model per worker: the cheap
model for routine sub-tasks, the frontier model only for those the plan marks hard
(docs/sources.md#handbook-when-to-use-it). Estimates are what one attempt of a call can cost at
most: ``prompt tokens x input price + max_output_tokens x output price``, the prompt
counted from the real messages with ``litellm.token_counter``
(:func:`orchestrator.tokens.count_prompt_tokens`, re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cliffwatch.orchestrator import prompts
from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.dispatch import Difficulty, PlannedSubTask
from cliffwatch.orchestrator.tokens import count_prompt_tokens as count_prompt_tokens
from cliffwatch.telemetry.pricing import price_for

SYNTHESIS_FRAMING_TOKENS = 32
"""Tokens a result's heading (``### 3. <title>``) adds to the synthesis prompt, budgeted
per sub-task: titles are a handful of words, so 32 leaves room to spare."""


def model_for(difficulty: Difficulty, config: TaskClassConfig) -> str:
    """The model a sub-task of ``difficulty`` runs on: hard -> frontier, else routine."""
    return config.hard_model if difficulty is Difficulty.HARD else config.routine_model


def estimate_call_usd(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """``input_tokens x input price + output_tokens x output price``; None when unpriced."""
    price = price_for(model)
    if price is None:
        return None
    return input_tokens * price.input_usd_per_token + output_tokens * price.output_usd_per_token


@dataclass(frozen=True, slots=True)
class RoutedPlan:
    """A parsed plan, routed and priced, with each worker's real prompt.

    Attributes:
        subtasks: what dispatch checks.
        items: the planner's sub-tasks, same order.
        worker_messages: each sub-task's worker prompt, same order.
        prompt_tokens: each worker prompt's token count, same order.
    """

    subtasks: tuple[PlannedSubTask, ...]
    items: tuple[prompts.PlanItem, ...]
    worker_messages: tuple[list[prompts.Message], ...]
    prompt_tokens: tuple[int, ...]


def route_plan(
    items: Sequence[prompts.PlanItem], config: TaskClassConfig, task_input: str
) -> RoutedPlan:
    """Route every sub-task and price one attempt of it from its real prompt."""
    total = len(items)
    subtasks, messages, tokens = [], [], []
    for index, item in enumerate(items):
        model = model_for(item.difficulty, config)
        msgs = prompts.worker_messages(
            task_input, item, position=index, total=total, task_class=config.name
        )
        n_tokens = count_prompt_tokens(model, msgs)
        subtasks.append(
            PlannedSubTask(
                index=index,
                title=item.title,
                difficulty=item.difficulty,
                model=model,
                max_output_tokens=config.worker_max_output_tokens,
                estimated_cost_usd=estimate_call_usd(
                    model, n_tokens, config.worker_max_output_tokens
                ),
            )
        )
        messages.append(msgs)
        tokens.append(n_tokens)
    return RoutedPlan(tuple(subtasks), tuple(items), tuple(messages), tuple(tokens))


@dataclass(frozen=True, slots=True)
class Reserve:
    """USD held back for the calls after the workers, as dispatch's ``reserve_*`` args.

    Attributes:
        fixed_usd: synthesis prompt without results + its output budget, plus one critic
            review (task + an answer of the synthesis budget + the critic's output budget)
            when the class has a critic.
        per_subtask_usd: the synthesis input one result adds (worker output budget +
            :data:`SYNTHESIS_FRAMING_TOKENS`).
    """

    fixed_usd: float
    per_subtask_usd: float


def post_worker_reserve(config: TaskClassConfig, task_input: str) -> Reserve:
    """What synthesis (and one critic round) may cost, priced from the real prompts.

    Unpriced models reserve nothing (their cost cannot be known).
    """
    synth_msgs = prompts.synthesis_messages(task_input, [], task_class=config.name)
    synth_in = count_prompt_tokens(config.synthesis_model, synth_msgs)
    fixed = (
        estimate_call_usd(config.synthesis_model, synth_in, config.synthesis_max_output_tokens)
        or 0.0
    )
    per_result = config.worker_max_output_tokens + SYNTHESIS_FRAMING_TOKENS
    per_subtask = estimate_call_usd(config.synthesis_model, per_result, 0) or 0.0
    if config.critic_model is not None:
        critic_msgs = prompts.critic_messages(task_input, "", task_class=config.name)
        critic_in = count_prompt_tokens(config.critic_model, critic_msgs)
        fixed += (
            estimate_call_usd(
                config.critic_model,
                critic_in + config.synthesis_max_output_tokens,
                config.critic_max_output_tokens,
            )
            or 0.0
        )
    return Reserve(fixed, per_subtask)
