"""The runner end to end on the simulated provider, spans read from an in-memory exporter.

Why one file: the tests share the runner fixtures (tracing, sim profiles, configs)
and read as one walk through a run: plan, dispatch, workers, synthesis, costs.

Every run here goes through litellm.acompletion to the real ``sim`` provider (no mocks);
spans are collected with the OTel SDK's InMemorySpanExporter so each test can look at
exactly the spans one run made.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cliffwatch import settings
from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.errors import CostCeilingError, CostCliffError, PlanError
from cliffwatch.orchestrator.runner import orchestrate
from cliffwatch.orchestrator.sim_provider import real_model_of, register_sim_provider
from cliffwatch.orchestrator.workload import Task
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Breach, CapPolicy, RunStatus
from cliffwatch.telemetry.pricing import import_litellm

TIME_SCALE = 1e-4
"""Real seconds per simulated second: a minute of simulated run takes 6 ms."""

TASK = Task(
    "cu-test",
    "content_update",
    "Our 14 bakery franchise sites show Sunday hours as 08:00-14:00. From 1 December Sunday "
    "hours are 09:00-13:00 (ops memo). Update the opening-hours page, the footer and the "
    "schema.org data on every site, and any FAQ answer that mentions Sunday.",
)

QUIET = {"failure_rate": 0.0, "malformed_plan_rate": 0.0, "runaway_rate": 0.0}
"""A sim profile with no injected failures and no runaway plans (tests add what they test)."""


class MemoryTracing:
    """A stand-in for telemetry.tracing.Tracing that keeps finished spans in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def spans(self, role: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if role is None or s.attributes.get(cv.CLIFF_ROLE) == role]

    def run_span(self) -> ReadableSpan:
        (run,) = self.spans("run")
        return run


@pytest.fixture(scope="module", autouse=True)
def sim() -> None:
    register_sim_provider(seed=0, time_scale=TIME_SCALE)


@pytest.fixture
def tracing() -> MemoryTracing:
    return MemoryTracing()


def config(**changes: Any) -> TaskClassConfig:
    params = {**QUIET, **changes.pop("provider_params", {})}
    return TaskClassConfig("content_update", provider_params=params, **changes)


def run(cfg: TaskClassConfig, tracing: MemoryTracing, seed: int = 1, **kwargs: Any):
    return orchestrate(TASK, cfg, tracing=tracing, seed=seed, time_scale=TIME_SCALE, **kwargs)


def hand_cost(span: ReadableSpan) -> float:
    """tokens x the real model's per-token prices from litellm.model_cost, by hand."""
    attrs = span.attributes
    entry = import_litellm().model_cost[real_model_of(attrs[cv.GEN_AI_REQUEST_MODEL])]
    return (
        attrs[cv.GEN_AI_USAGE_INPUT_TOKENS] * entry["input_cost_per_token"]
        + attrs[cv.GEN_AI_USAGE_OUTPUT_TOKENS] * entry["output_cost_per_token"]
    )


def test_a_run_is_one_trace_with_plan_workers_and_synthesis(tracing: MemoryTracing) -> None:
    result = run(config(), tracing)
    assert result.status is RunStatus.OK and result.breach is None
    assert result.answer
    spans = tracing.spans()
    assert {format(s.context.trace_id, "032x") for s in spans} == {result.run_id}
    root = tracing.run_span()
    assert root.parent is None
    assert all(s.parent.span_id == root.context.span_id for s in spans if s is not root)
    roles = Counter(s.attributes[cv.CLIFF_ROLE] for s in spans)
    assert roles["plan"] == 1 and roles["synthesis"] == 1
    assert roles["worker"] == result.workers_dispatched == result.workers_proposed >= 1
    attrs = root.attributes
    assert attrs[cv.CLIFF_STATUS] == "ok"
    assert attrs[cv.CLIFF_MAX_WORKERS] == 8
    assert attrs[cv.CLIFF_POLICY] == "reject"
    assert attrs[cv.CLIFF_WORKERS_DISPATCHED] == result.workers_dispatched
    assert attrs[cv.CLIFF_WORKERS_FAILED] == 0
    assert attrs[cv.CLIFF_TASK_ID] == "cu-test" and attrs[cv.CLIFF_SEED] == 1
    assert attrs[cv.CLIFF_ESTIMATE_USD] == pytest.approx(result.estimate_usd)
    assert cv.CLIFF_BREACH not in attrs and cv.CLIFF_CEILING_USD not in attrs
    assert root.status.status_code is StatusCode.OK


def test_every_call_costs_its_tokens_at_the_real_models_prices(tracing: MemoryTracing) -> None:
    result = run(config(), tracing)
    calls = [s for s in tracing.spans() if s.attributes[cv.CLIFF_ROLE] != "run"]
    for span in calls:
        attrs = span.attributes
        entry = import_litellm().model_cost[real_model_of(attrs[cv.GEN_AI_REQUEST_MODEL])]
        assert attrs[cv.CLIFF_COST_SOURCE] == "computed"
        assert attrs[cv.CLIFF_PRICE_INPUT] == entry["input_cost_per_token"]
        assert attrs[cv.CLIFF_PRICE_OUTPUT] == entry["output_cost_per_token"]
        assert attrs[cv.CLIFF_COST_USD] == pytest.approx(hand_cost(span), rel=1e-12)
        assert attrs[cv.GEN_AI_RESPONSE_MODEL] == attrs[cv.GEN_AI_REQUEST_MODEL]
        assert attrs[cv.GEN_AI_PROVIDER_NAME] == "sim"
    assert result.cost_usd == pytest.approx(sum(hand_cost(s) for s in calls), rel=1e-12)
    assert result.unpriced_calls == 0


def test_routing_sends_hard_subtasks_to_the_frontier_model(tracing: MemoryTracing) -> None:
    cfg = config(provider_params={"hard_share": 0.5, "typical_subtasks": 6})
    run(cfg, tracing, seed=3)
    plan_items = json.loads(tracing.spans("plan")[0].attributes[cv.CLIFF_PLAN_SUBTASKS])
    assert {p["difficulty"] for p in plan_items} == {"routine", "hard"}
    for worker in tracing.spans("worker"):
        attrs = worker.attributes
        item = plan_items[attrs[cv.CLIFF_SUBTASK_INDEX]]
        want = cfg.hard_model if item["difficulty"] == "hard" else cfg.routine_model
        assert attrs[cv.GEN_AI_REQUEST_MODEL] == item["model"] == want
        assert attrs[cv.CLIFF_SUBTASK_DIFFICULTY] == item["difficulty"]
        assert attrs.get(cv.CLIFF_SUBTASK_TITLE) == item.get("title")  # both with capture
    synthesis = tracing.spans("synthesis")[0].attributes
    assert synthesis[cv.GEN_AI_REQUEST_MODEL] == cfg.synthesis_model


def test_plan_span_holds_the_plan_for_replay(tracing: MemoryTracing) -> None:
    result = run(config(worker_max_output_tokens=640), tracing)
    items = json.loads(tracing.spans("plan")[0].attributes[cv.CLIFF_PLAN_SUBTASKS])
    assert [p["index"] for p in items] == list(range(result.workers_proposed))
    for item in items:
        assert set(item) >= {"index", "difficulty", "model", "max_output_tokens"}
        assert item["max_output_tokens"] == 640
        assert item["estimated_cost_usd"] > 0


def test_the_cap_holds_at_dispatch_when_the_planner_ignores_it(tracing: MemoryTracing) -> None:
    cfg = config(max_workers=8, provider_params={"runaway_rate": 1.0})
    with pytest.raises(CostCliffError) as caught:
        run(cfg, tracing)
    assert caught.value.max_workers == 8 and caught.value.proposed >= 20
    # the prompt did state the cap: the planner ignored it
    plan = tracing.spans("plan")[0]
    assert tracing.spans("worker") == [] and tracing.spans("synthesis") == []
    assert len(json.loads(plan.attributes[cv.CLIFF_PLAN_SUBTASKS])) == caught.value.proposed
    attrs = tracing.run_span().attributes
    assert attrs[cv.CLIFF_STATUS] == "rejected" and attrs[cv.CLIFF_BREACH] == "cap"
    assert attrs[cv.CLIFF_WORKERS_PROPOSED] == caught.value.proposed
    assert attrs[cv.CLIFF_WORKERS_DISPATCHED] == 0
    assert tracing.run_span().status.status_code is StatusCode.ERROR


def test_the_planning_prompt_states_the_cap(
    tracing: MemoryTracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_CAPTURE_CONTENT, "true")
    run(config(max_workers=5), tracing)
    messages = tracing.spans("plan")[0].attributes[cv.GEN_AI_INPUT_MESSAGES]
    assert "You may propose at most 5 sub-tasks." in messages


def test_breach_can_be_returned_instead_of_raised(tracing: MemoryTracing) -> None:
    cfg = config(provider_params={"runaway_rate": 1.0})
    result = run(cfg, tracing, raise_on_breach=False)
    assert result.status is RunStatus.REJECTED and result.breach is Breach.CAP
    assert result.workers_dispatched == 0 and result.answer is None
    assert result.cost_usd > 0  # the planner call was paid for
    assert "rejected at dispatch" in result.error


def test_replan_passes_when_the_second_plan_is_within_the_cap(
    tracing: MemoryTracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_CAPTURE_CONTENT, "true")
    cfg = config(
        policy=CapPolicy.REPLAN,
        provider_params={"runaway_rate": 1.0, "replan_comply_rate": 1.0},
    )
    result = run(cfg, tracing)
    assert result.status is RunStatus.OK and result.plan_attempts == 2
    plans = sorted(tracing.spans("plan"), key=lambda s: s.start_time)
    first, second = (json.loads(p.attributes[cv.CLIFF_PLAN_SUBTASKS]) for p in plans)
    assert len(first) > 8 >= len(second) == result.workers_dispatched
    # the second request carries the first answer and restates the cap
    messages = json.loads(plans[1].attributes[cv.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in messages[-2:]] == ["assistant", "user"]
    assert f"Your plan has {len(first)} sub-tasks" in messages[-1]["content"]
    assert "You may propose at most 8 sub-tasks." in messages[-1]["content"]
    assert result.breach is Breach.CAP  # the planner did breach it once
    assert len(tracing.spans("worker")) == len(second)


def test_replan_still_over_the_cap_is_rejected(tracing: MemoryTracing) -> None:
    cfg = config(
        policy=CapPolicy.REPLAN,
        provider_params={"runaway_rate": 1.0, "replan_comply_rate": 0.0},
    )
    with pytest.raises(CostCliffError) as caught:
        run(cfg, tracing)
    assert caught.value.plan_attempts == 2 and caught.value.policy == "replan"
    assert len(tracing.spans("plan")) == 2 and tracing.spans("worker") == []
    assert tracing.run_span().attributes[cv.CLIFF_PLAN_ATTEMPTS] == 2


def test_truncate_dispatches_exactly_max_workers(tracing: MemoryTracing) -> None:
    cfg = config(policy=CapPolicy.TRUNCATE, max_workers=5, provider_params={"runaway_rate": 1.0})
    result = run(cfg, tracing)
    assert result.status is RunStatus.OK and result.breach is Breach.CAP
    assert result.workers_proposed >= 20 and result.workers_dispatched == 5
    indices = sorted(s.attributes[cv.CLIFF_SUBTASK_INDEX] for s in tracing.spans("worker"))
    assert indices == [0, 1, 2, 3, 4]


def test_no_cap_runs_a_runaway_plan_and_records_no_cap(tracing: MemoryTracing) -> None:
    cfg = config(max_workers=None, concurrency=16, provider_params={"runaway_rate": 1.0})
    result = run(cfg, tracing)
    assert result.status is RunStatus.OK and result.workers_dispatched >= 20
    assert len(tracing.spans("worker")) == result.workers_dispatched
    assert cv.CLIFF_MAX_WORKERS not in tracing.run_span().attributes
    planner = tracing.spans("plan")[0].attributes
    assert planner[cv.CLIFF_WORKERS_PROPOSED] == result.workers_proposed


def test_ceiling_breached_by_the_estimate_dispatches_nothing(tracing: MemoryTracing) -> None:
    cfg = config(ceiling_usd=0.002)
    with pytest.raises(CostCeilingError) as caught:
        run(cfg, tracing)
    error = caught.value
    assert error.stage == "estimate" and error.estimate_usd > error.ceiling_usd == 0.002
    assert tracing.spans("worker") == []
    attrs = tracing.run_span().attributes
    assert attrs[cv.CLIFF_BREACH] == "ceiling" and attrs[cv.CLIFF_STATUS] == "rejected"
    assert attrs[cv.CLIFF_ESTIMATE_USD] == pytest.approx(error.estimate_usd)
    assert attrs[cv.CLIFF_CEILING_USD] == 0.002


def test_estimate_counts_planner_spend_workers_and_synthesis(tracing: MemoryTracing) -> None:
    result = run(config(), tracing)
    plan = tracing.spans("plan")[0]
    items = json.loads(plan.attributes[cv.CLIFF_PLAN_SUBTASKS])
    workers = sum(i["estimated_cost_usd"] for i in items)
    planner = plan.attributes[cv.CLIFF_COST_USD]
    # the rest is the synthesis reserve, which is positive and below the workers' own
    assert planner + workers < result.estimate_usd < planner + 2 * workers + 0.01


LONG_TASK = Task("cu-long", "content_update", TASK.input_text + " Site notes: " + "lorem " * 2500)
"""A task with a long input, so that every timed-out worker attempt bills many tokens."""


WORKERS_TIME_OUT = {
    "failure_rate": 1.0,
    "failure_roles": ["worker"],
    "typical_subtasks": 6,
    "hard_share": 1.0,
}
"""A sim profile whose every worker attempt fails (rate limits, and timeouts that bill)."""


def test_spend_crossing_the_ceiling_cancels_pending_workers(tracing: MemoryTracing) -> None:
    params = WORKERS_TIME_OUT
    cfg = config(concurrency=1, max_retries=3, worker_max_output_tokens=100, provider_params=params)
    dry = orchestrate(LONG_TASK, cfg, tracing=MemoryTracing(), seed=3, time_scale=TIME_SCALE)
    assert dry.status is RunStatus.FAILED and dry.workers_dispatched >= 3
    # a ceiling the estimate passes, but retried timeouts on a long prompt overrun
    ceiling = dry.estimate_usd * 1.01
    assert dry.cost_usd > ceiling
    with pytest.raises(CostCeilingError) as caught:
        orchestrate(
            LONG_TASK,
            cfg.replace(ceiling_usd=ceiling),
            tracing=tracing,
            seed=3,
            time_scale=TIME_SCALE,
        )
    error = caught.value
    assert error.stage == "spend" and error.spent_usd > ceiling
    attrs = tracing.run_span().attributes
    assert attrs[cv.CLIFF_STATUS] == "cancelled" and attrs[cv.CLIFF_BREACH] == "ceiling"
    assert attrs[cv.CLIFF_WORKERS_DISPATCHED] == dry.workers_dispatched
    assert attrs[cv.CLIFF_WORKERS_CANCELLED] >= 1
    worked = {s.attributes[cv.CLIFF_SUBTASK_INDEX] for s in tracing.spans("worker")}
    assert len(worked) < dry.workers_dispatched  # pending workers never started
    assert tracing.spans("synthesis") == []
    spans_cost = sum(s.attributes[cv.CLIFF_COST_USD] for s in tracing.spans() if s.parent)
    assert error.spent_usd == pytest.approx(spans_cost)


def test_failed_attempts_are_retried_and_their_cost_counted(tracing: MemoryTracing) -> None:
    params = {"failure_rate": 0.5, "failure_roles": ["worker"], "typical_subtasks": 6}
    cfg = config(max_retries=3, backoff_base_s=10.0, provider_params=params)
    result = run(cfg, tracing, seed=11)
    workers = sorted(
        tracing.spans("worker"),
        key=lambda s: (s.attributes[cv.CLIFF_SUBTASK_INDEX], s.attributes[cv.CLIFF_ATTEMPT]),
    )
    failed = [s for s in workers if s.status.status_code is StatusCode.ERROR]
    assert failed, "seed 11 gives this plan failed attempts"
    kinds = {s.attributes[cv.ERROR_TYPE] for s in failed}
    assert kinds <= {"timeout", "rate_limit"}
    for span in failed:
        attrs = span.attributes
        if attrs[cv.ERROR_TYPE] == "rate_limit":
            assert attrs[cv.CLIFF_COST_USD] == 0.0  # refused: billed nothing
        else:  # timed out after starting: its prompt tokens are billed
            assert attrs[cv.GEN_AI_USAGE_INPUT_TOKENS] > 0
            assert attrs[cv.CLIFF_COST_USD] == pytest.approx(hand_cost(span))
            assert attrs[cv.CLIFF_COST_USD] > 0
    by_index: dict[int, list[ReadableSpan]] = {}
    for span in workers:
        by_index.setdefault(span.attributes[cv.CLIFF_SUBTASK_INDEX], []).append(span)
    unrecovered = 0
    for attempts in by_index.values():
        assert [a.attributes[cv.CLIFF_ATTEMPT] for a in attempts] == list(
            range(1, len(attempts) + 1)
        )
        assert len(attempts) <= cfg.max_retries + 1
        for k, (before, after) in enumerate(zip(attempts, attempts[1:], strict=False), 1):
            assert before.status.status_code is StatusCode.ERROR
            # exponential backoff in simulated time: 10 s, 20 s, 40 s
            assert after.start_time - before.end_time >= 10e9 * 2 ** (k - 1)
        if attempts[-1].status.status_code is StatusCode.ERROR:
            unrecovered += 1
    assert result.workers_failed == unrecovered
    assert tracing.run_span().attributes[cv.CLIFF_WORKERS_FAILED] == unrecovered
    calls = [s for s in tracing.spans() if s.parent]
    assert result.cost_usd == pytest.approx(sum(s.attributes[cv.CLIFF_COST_USD] for s in calls))


def test_workers_that_exhaust_their_retries_are_recorded_as_failed(
    tracing: MemoryTracing,
) -> None:
    params = {"failure_rate": 1.0, "failure_roles": ["worker"]}
    result = run(config(max_retries=1, provider_params=params), tracing)
    assert result.status is RunStatus.FAILED
    assert result.workers_failed == result.workers_dispatched >= 1
    assert len(tracing.spans("worker")) == 2 * result.workers_dispatched
    attrs = tracing.run_span().attributes
    assert attrs[cv.CLIFF_WORKERS_FAILED] == result.workers_dispatched
    assert attrs[cv.CLIFF_STATUS] == "failed"


def test_an_unusable_plan_is_asked_for_once_more(tracing: MemoryTracing) -> None:
    result = run(config(provider_params={"malformed_plan_rate": 1.0}), tracing)
    # the re-ask carries the bad answer, so the planner sees a follow-up and answers JSON
    assert result.status is RunStatus.OK and result.plan_attempts == 2
    bad, good = sorted(tracing.spans("plan"), key=lambda s: s.start_time)
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.attributes[cv.ERROR_TYPE] == "PlanError"
    assert cv.CLIFF_PLAN_SUBTASKS in good.attributes


def test_a_plan_unusable_twice_is_a_plan_error(tracing: MemoryTracing) -> None:
    # a 12-token budget cuts every plan's JSON short: unusable, and unusable again
    cfg = config(planner_max_output_tokens=12)
    with pytest.raises(PlanError, match="after one retry"):
        run(cfg, tracing)
    assert len(tracing.spans("plan")) == 2 and tracing.spans("worker") == []
    attrs = tracing.run_span().attributes
    assert attrs[cv.CLIFF_STATUS] == "failed" and attrs[cv.CLIFF_PLAN_ATTEMPTS] == 2
    assert cv.CLIFF_WORKERS_PROPOSED not in attrs
    result = run(cfg, MemoryTracing(), raise_on_breach=False)
    assert result.status is RunStatus.FAILED and result.workers_proposed is None


def test_critic_loop_is_bounded(tracing: MemoryTracing) -> None:
    cfg = config(
        critic_model="sim/gpt-4.1-mini",
        critic_max_rounds=3,
        provider_params={"critic_pass_rate": 0.0},
    )
    result = run(cfg, tracing)
    assert result.status is RunStatus.OK and result.answer
    assert len(tracing.spans("critic")) == 3
    assert len(tracing.spans("synthesis")) == 3


def test_same_seed_same_run_different_seed_different_run() -> None:
    def costs(seed: int) -> tuple:
        tracing = MemoryTracing()
        result = run(config(), tracing, seed=seed)
        calls = sorted(
            (
                s.name,
                s.attributes[cv.GEN_AI_USAGE_INPUT_TOKENS],
                s.attributes[cv.GEN_AI_USAGE_OUTPUT_TOKENS],
            )
            for s in tracing.spans()
            if s.parent
        )
        return result.cost_usd, result.workers_proposed, calls

    assert costs(21) == costs(21)
    assert costs(21) != costs(22)


def test_timestamps_are_simulated_time_from_the_start_given(tracing: MemoryTracing) -> None:
    started = 1_793_520_000 * 10**9
    result = run(config(), tracing, started_at_ns=started)
    root = tracing.run_span()
    assert root.start_time == started == result.started_at_ns
    assert root.end_time == result.ended_at_ns
    plan = tracing.spans("plan")[0]
    # a planner answer of hundreds of tokens at 80 tokens/s takes seconds of simulated
    # time, although the whole run took milliseconds of real time
    assert plan.end_time - plan.start_time > 1e9
    for span in tracing.spans():
        assert started <= span.start_time <= span.end_time <= root.end_time


def test_content_is_recorded_only_when_capture_is_on(
    tracing: MemoryTracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.CLIFFWATCH_CAPTURE_CONTENT, raising=False)
    run(config(), tracing)
    for span in tracing.spans():
        assert cv.GEN_AI_INPUT_MESSAGES not in span.attributes
        assert cv.GEN_AI_OUTPUT_MESSAGES not in span.attributes
        assert cv.CLIFF_TASK_INPUT not in span.attributes
        assert cv.CLIFF_SUBTASK_TITLE not in span.attributes  # model-written text
    # the plan keeps what replay needs (index, difficulty, model, budget), not the titles
    plan = json.loads(tracing.spans("plan")[0].attributes[cv.CLIFF_PLAN_SUBTASKS])
    assert plan and all("title" not in item and "model" in item for item in plan)


def test_sub_task_titles_are_recorded_with_capture_on(
    tracing: MemoryTracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_CAPTURE_CONTENT, "true")
    run(config(), tracing)
    plan = json.loads(tracing.spans("plan")[0].attributes[cv.CLIFF_PLAN_SUBTASKS])
    for worker in tracing.spans("worker"):
        index = worker.attributes[cv.CLIFF_SUBTASK_INDEX]
        assert worker.attributes[cv.CLIFF_SUBTASK_TITLE] == plan[index]["title"] != ""


def test_sim_prompt_tokens_equal_litellm_token_counter_of_the_real_prompt(
    tracing: MemoryTracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_CAPTURE_CONTENT, "true")
    run(config(), tracing)
    litellm = import_litellm()
    for span in tracing.spans():
        if not span.parent:
            assert span.attributes[cv.CLIFF_TASK_INPUT] == TASK.input_text
            continue
        attrs = span.attributes
        model = real_model_of(attrs[cv.GEN_AI_REQUEST_MODEL])
        messages = json.loads(attrs[cv.GEN_AI_INPUT_MESSAGES])
        assert attrs[cv.GEN_AI_USAGE_INPUT_TOKENS] == litellm.token_counter(
            model=model, messages=messages
        )
        (output,) = json.loads(attrs[cv.GEN_AI_OUTPUT_MESSAGES])
        assert attrs[cv.GEN_AI_USAGE_OUTPUT_TOKENS] == litellm.token_counter(
            model=model, text=output["content"], count_response_tokens=True
        )


def test_an_unpriced_model_has_no_cost_never_zero(tracing: MemoryTracing) -> None:
    # a model litellm has no price for: the call still runs, its cost is unknown
    import cliffwatch.orchestrator.sim_provider as sp

    handler = sp.register_sim_provider(seed=0, time_scale=TIME_SCALE)
    assert handler is sp.register_sim_provider(seed=0, time_scale=TIME_SCALE)
    cfg = config(synthesis_model="sim/cliffwatch-house-model")
    result = run(cfg, tracing)
    (synthesis,) = tracing.spans("synthesis")
    assert synthesis.attributes[cv.CLIFF_COST_SOURCE] == "unpriced"
    assert cv.CLIFF_COST_USD not in synthesis.attributes
    assert result.unpriced_calls == 1


def test_a_provider_response_with_cache_reasoning_and_its_own_cost_is_priced_from_it(
    tracing: MemoryTracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A provider whose responses carry the whole usage: a cache split, reasoning tokens and,
    # on worker calls, the cost it billed (as gateways such as OpenRouter do).
    from litellm.types.utils import CompletionTokensDetailsWrapper

    from cliffwatch.orchestrator.sim_provider import SimLLM

    original = SimLLM._respond

    def respond(self: SimLLM, model: str, answer: Any, model_response: Any) -> Any:
        out = original(self, model, answer, model_response)
        usage = out.usage
        usage.prompt_tokens_details.cached_tokens = usage.prompt_tokens // 2
        usage.completion_tokens_details = CompletionTokensDetailsWrapper(
            reasoning_tokens=usage.completion_tokens // 4
        )
        if "mini" in model:
            usage.cost = 0.001
        return out

    monkeypatch.setattr(SimLLM, "_respond", respond)
    result = run(config(), tracing)
    calls = [s for s in tracing.spans() if s.attributes[cv.CLIFF_ROLE] != "run"]
    total = 0.0
    for span in calls:
        attrs = span.attributes
        entry = import_litellm().model_cost[real_model_of(attrs[cv.GEN_AI_REQUEST_MODEL])]
        tin, tout = attrs[cv.GEN_AI_USAGE_INPUT_TOKENS], attrs[cv.GEN_AI_USAGE_OUTPUT_TOKENS]
        cached = attrs[cv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS]
        assert cached == tin // 2
        assert attrs[cv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == tout // 4
        computed = ((tin - cached) * entry["input_cost_per_token"]
                    + cached * entry["cache_read_input_token_cost"]
                    + tout * entry["output_cost_per_token"])
        assert attrs[cv.CLIFF_COST_COMPUTED_USD] == pytest.approx(computed, rel=1e-12)
        if "mini" in attrs[cv.GEN_AI_REQUEST_MODEL]:
            assert attrs[cv.CLIFF_COST_SOURCE] == "provider"
            assert attrs[cv.GEN_AI_USAGE_COST_SOURCE] == "provider"
            assert attrs[cv.CLIFF_COST_USD] == 0.001
        else:
            assert attrs[cv.CLIFF_COST_SOURCE] == "computed"
            assert attrs[cv.CLIFF_COST_USD] == pytest.approx(computed, rel=1e-12)
        assert attrs[cv.GEN_AI_USAGE_COST_AMOUNT] == attrs[cv.CLIFF_COST_USD]
        assert cv.CLIFF_COST_CACHE_DETAIL_MISSING not in attrs
        total += attrs[cv.CLIFF_COST_USD]
    assert any("mini" in s.attributes[cv.GEN_AI_REQUEST_MODEL] for s in calls)
    assert result.cost_usd == pytest.approx(total, rel=1e-12)
