"""The simulated provider through litellm: registration, real token counts, real prices,
determinism, plan sizes around the cap, injected failures."""

from __future__ import annotations

import asyncio
import json
import statistics
from typing import Any

import pytest

from cliffwatch.orchestrator import prompts
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.orchestrator.sim_provider import (
    PROVIDER,
    SimProfile,
    real_model_of,
    register_sim_model,
    register_sim_provider,
)
from cliffwatch.telemetry.pricing import cost_of, import_litellm

TIME_SCALE = 1e-4
TASK_TEXT = (
    "Compare how AWS RDS, Google Cloud SQL and Neon handle point-in-time recovery, read "
    "replicas and connection pooling for a 200 GB Postgres database, from each vendor's docs."
)


@pytest.fixture(scope="module")
def litellm() -> Any:
    register_sim_provider(seed=0, time_scale=TIME_SCALE)
    return import_litellm()


def complete(litellm: Any, model: str, messages: list, **meta: Any) -> Any:
    max_tokens = meta.pop("max_tokens", 2000)
    meta.setdefault("time_scale", TIME_SCALE)
    # the synchronous path (the runner tests exercise acompletion)
    return litellm.completion(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        timeout=0.01,
        metadata={"cliffwatch": meta},
    )


def planner(max_workers: int | None) -> list[dict[str, str]]:
    return prompts.planner_messages(TASK_TEXT, task_class="research", max_workers=max_workers)


def plan_size(litellm: Any, max_workers: int | None, seed: int, **profile: Any) -> int:
    params = {"failure_rate": 0.0, "malformed_plan_rate": 0.0, **profile}
    response = complete(
        litellm,
        "sim/gpt-4.1",
        planner(max_workers),
        role="plan",
        seed=seed,
        provider_params=params,
        max_tokens=8000,
    )
    return len(prompts.parse_plan(response.choices[0].message.content))


def test_registration_is_idempotent_and_prices_sim_models_as_the_real_ones(litellm: Any) -> None:
    first = register_sim_provider(seed=3, time_scale=0.5)
    again = register_sim_provider(seed=0, time_scale=TIME_SCALE)
    assert first is again and again.default_seed == 0
    entries = [p for p in litellm.custom_provider_map if p["provider"] == PROVIDER]
    assert len(entries) == 1 and entries[0]["custom_handler"] is again
    for real in ("gpt-4o-mini", "claude-sonnet-4-5", "gpt-4.1", "gpt-4.1-mini"):
        sim = litellm.model_cost[f"sim/{real}"]
        assert sim["input_cost_per_token"] == litellm.model_cost[real]["input_cost_per_token"]
        assert sim["output_cost_per_token"] == litellm.model_cost[real]["output_cost_per_token"]
    with pytest.raises(ConfigError, match="not a priced model"):
        register_sim_model("no-such-model-anywhere")


def test_token_counts_are_litellms_counts_of_the_real_text(litellm: Any) -> None:
    messages = planner(6)
    for model in ("sim/gpt-4o-mini", "sim/claude-sonnet-4-5"):
        response = complete(
            litellm, model, messages, role="plan", seed=1, provider_params={"failure_rate": 0.0}
        )
        real = real_model_of(model)
        assert response.usage.prompt_tokens == litellm.token_counter(model=real, messages=messages)
        text = response.choices[0].message.content
        assert response.usage.completion_tokens == litellm.token_counter(
            model=real, text=text, count_response_tokens=True
        )
        assert response.model == model


def test_a_response_costs_real_tokens_at_the_real_models_price(litellm: Any) -> None:
    messages = [{"role": "user", "content": TASK_TEXT}]
    response = complete(
        litellm,
        "sim/claude-sonnet-4-5",
        messages,
        role="worker",
        seed=2,
        provider_params={"failure_rate": 0.0},
    )
    entry = litellm.model_cost["claude-sonnet-4-5"]
    by_hand = (
        response.usage.prompt_tokens * entry["input_cost_per_token"]
        + response.usage.completion_tokens * entry["output_cost_per_token"]
    )
    assert litellm.completion_cost(completion_response=response) == pytest.approx(by_hand)
    ours = cost_of(response.model, response.usage.prompt_tokens, response.usage.completion_tokens)
    assert ours.cost_usd == pytest.approx(by_hand)


def test_worker_text_is_built_from_the_prompts_own_words(litellm: Any) -> None:
    messages = [{"role": "user", "content": TASK_TEXT}]
    response = complete(
        litellm,
        "sim/gpt-4o-mini",
        messages,
        role="worker",
        seed=4,
        provider_params={"failure_rate": 0.0, "worker_output_tokens": 300},
    )
    text = response.choices[0].message.content
    words = {w.strip(".,").lower() for w in text.split()}
    source = {w.strip(".,'()").lower() for w in TASK_TEXT.split()}
    assert len(words & source) >= 10
    assert 100 <= response.usage.completion_tokens <= 900


def test_answers_respect_max_tokens(litellm: Any) -> None:
    messages = [{"role": "user", "content": TASK_TEXT}]
    response = complete(
        litellm,
        "sim/gpt-4o-mini",
        messages,
        role="worker",
        seed=4,
        max_tokens=40,
        provider_params={"failure_rate": 0.0, "worker_output_tokens": 400},
    )
    assert response.usage.completion_tokens <= 40
    assert response.choices[0].finish_reason == "length"


def test_same_seed_same_answer_different_seed_different_answer(litellm: Any) -> None:
    def answer(seed: int, attempt: int = 1) -> tuple:
        r = complete(
            litellm,
            "sim/gpt-4.1",
            planner(8),
            role="plan",
            seed=seed,
            attempt=attempt,
            provider_params={"failure_rate": 0.0},
        )
        return r.choices[0].message.content, r.usage.prompt_tokens, r.usage.completion_tokens

    assert answer(5) == answer(5)
    assert answer(5) != answer(6)
    assert answer(5) != answer(5, attempt=2)  # a retry draws afresh


def test_with_a_cap_in_the_prompt_normal_plans_keep_to_it(litellm: Any) -> None:
    sizes = [
        plan_size(litellm, 4, seed, typical_subtasks=6, runaway_rate=0.0) for seed in range(30)
    ]
    assert max(sizes) == 4  # wants more, but is told 4
    assert min(sizes) >= 1


def test_without_a_cap_the_heavy_tail_shows(litellm: Any) -> None:
    sizes = [
        plan_size(litellm, None, seed, typical_subtasks=4, runaway_rate=0.0) for seed in range(60)
    ]
    assert 3 <= statistics.median(sizes) <= 5
    assert max(sizes) > 8  # no cap stated: the lognormal tail passes the handbook's 8


def test_surprising_inputs_ignore_the_cap(litellm: Any) -> None:
    sizes = [plan_size(litellm, 8, seed, runaway_rate=1.0) for seed in range(5)]
    assert all(20 <= n <= 50 for n in sizes)


def test_replan_request_is_honoured_or_not_by_profile(litellm: Any) -> None:
    first = planner(8)
    runaway = complete(
        litellm,
        "sim/gpt-4.1",
        first,
        role="plan",
        seed=1,
        max_tokens=8000,
        provider_params={"failure_rate": 0.0, "runaway_rate": 1.0},
    )
    answer = runaway.choices[0].message.content
    again = prompts.replan_messages(first, answer, proposed=30, max_workers=8)
    for comply, check in ((1.0, lambda n: n <= 8), (0.0, lambda n: n > 8)):
        response = complete(
            litellm,
            "sim/gpt-4.1",
            again,
            role="plan",
            seed=1,
            max_tokens=8000,
            provider_params={"failure_rate": 0.0, "replan_comply_rate": comply},
        )
        assert check(len(prompts.parse_plan(response.choices[0].message.content)))


def test_injected_failures_raise_litellm_errors(litellm: Any) -> None:
    messages = [{"role": "user", "content": TASK_TEXT}]
    kinds = set()
    for seed in range(12):
        with pytest.raises((litellm.RateLimitError, litellm.Timeout)) as caught:
            complete(
                litellm,
                "sim/gpt-4o-mini",
                messages,
                role="worker",
                seed=seed,
                provider_params={"failure_rate": 1.0},
            )
        kinds.add(type(caught.value))
    assert kinds == {litellm.RateLimitError, litellm.Timeout}
    # a role outside failure_roles never fails
    ok = complete(
        litellm,
        "sim/gpt-4o-mini",
        messages,
        role="synthesis",
        seed=0,
        provider_params={"failure_rate": 1.0, "failure_roles": ["worker"]},
    )
    assert ok.usage.completion_tokens > 0


def _outcome(call: Any) -> tuple[str, ...]:
    """What one call came to: the error's type, or the answer and its token counts."""
    try:
        response = call()
    except Exception as exc:  # noqa: BLE001 - the outcome under test is the error type
        return (type(exc).__name__,)
    usage = response.usage
    content = response.choices[0].message.content
    return (content, str(usage.prompt_tokens), str(usage.completion_tokens))


def test_sync_and_async_entry_points_come_to_the_same_outcome(litellm: Any) -> None:
    # completion and acompletion share one decision (what to wait, what to answer or
    # raise): for the same seed they answer alike or fail alike
    request = {
        "model": "sim/gpt-4o-mini",
        "messages": [{"role": "user", "content": TASK_TEXT}],
        "max_tokens": 300,
        "timeout": 0.01,
    }
    seen = set()
    for seed in range(10):
        meta = {"role": "worker", "seed": seed, "time_scale": TIME_SCALE}
        meta["provider_params"] = {"failure_rate": 0.5}
        metadata = {"cliffwatch": meta}

        def sync_call(metadata: dict = metadata) -> Any:
            return litellm.completion(**request, metadata=metadata)

        def async_call(metadata: dict = metadata) -> Any:
            return asyncio.run(litellm.acompletion(**request, metadata=metadata))

        outcome = _outcome(sync_call)
        assert _outcome(async_call) == outcome, f"seed {seed}"
        seen.add(outcome[0] if len(outcome) == 1 else "answer")
    assert seen == {"RateLimitError", "Timeout", "answer"}


def test_critic_answers_a_json_verdict(litellm: Any) -> None:
    messages = prompts.critic_messages(TASK_TEXT, "An answer.", task_class="research")
    passed = complete(
        litellm,
        "sim/gpt-4.1-mini",
        messages,
        role="critic",
        seed=1,
        provider_params={"failure_rate": 0.0, "critic_pass_rate": 1.0},
    )
    revise = complete(
        litellm,
        "sim/gpt-4.1-mini",
        messages,
        role="critic",
        seed=1,
        provider_params={"failure_rate": 0.0, "critic_pass_rate": 0.0},
    )
    assert json.loads(passed.choices[0].message.content)["verdict"] == "pass"
    verdict = prompts.parse_critic(revise.choices[0].message.content)
    assert not verdict.passed and verdict.feedback


def test_latency_follows_output_tokens(litellm: Any) -> None:
    handler = register_sim_provider(seed=0, time_scale=TIME_SCALE)
    messages = [{"role": "user", "content": TASK_TEXT}]
    profile = SimProfile(failure_rate=0.0, base_latency_s=0.4, tokens_per_s=80.0)
    short = handler.answer(
        "gpt-4o-mini", messages, role="worker", seed=1, max_tokens=50, profile=profile
    )
    long = handler.answer(
        "gpt-4o-mini", messages, role="worker", seed=1, max_tokens=2000, profile=profile
    )
    for answer in (short, long):
        nominal = 0.4 + answer.completion_tokens / 80.0
        assert 0.4 * nominal < answer.latency_s < 2.5 * nominal
    assert long.latency_s > short.latency_s


@pytest.mark.parametrize(
    "params",
    [
        {"runaway_rate": 1.5},
        {"typical_subtasks": 0},
        {"runaway_min": 9, "runaway_max": 3},
        {"no_such_knob": 1},
    ],
)
def test_bad_profiles_are_config_errors(params: dict) -> None:
    with pytest.raises(ConfigError):
        SimProfile.from_mapping(params)
