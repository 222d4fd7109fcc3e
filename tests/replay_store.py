"""Stores for replay tests: real orchestrator runs covering every path, and hand-built
traces with exactly known figures.

:func:`build_orchestrated_store` runs workload tasks through
:func:`orchestrator.runner.aorchestrate` on the offline simulated provider, under limits
chosen to reach each branch of the runner: cap breaches rejected, replanned (a second
planner call) and truncated; ceilings breached at the estimate and crossed while running
(each such run is first made without a ceiling, then again, same seed, with a ceiling
just above its own pre-dispatch estimate, so the estimate passes and the spend crosses);
failed calls and retries (a high failure rate); critic rounds. Deterministic for its
arguments (the simulated provider draws from each call's seed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.runner import RunResult, aorchestrate
from cliffwatch.orchestrator.sim_provider import register_sim_provider
from cliffwatch.orchestrator.workload import load_workload
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.testing import llm_call_record, ns_at

TIME_SCALE = 1e-4
STARTED = "2026-11-01T00:00:00"


def _variants() -> list[TaskClassConfig]:
    workload = load_workload()
    out: list[TaskClassConfig] = []
    for name in ("content_update", "research"):
        config = workload[name].config
        params = {**config.provider_params, "runaway_rate": 0.3, "failure_rate": 0.1}
        base = config.replace(provider_params=params)
        out += [
            base.replace(max_workers=4, policy="reject", ceiling_usd=None),
            base.replace(max_workers=4, policy="replan", ceiling_usd=None),
            base.replace(max_workers=3, policy="truncate", ceiling_usd=None),
            base.replace(max_workers=None, ceiling_usd=0.02),
            base.uncapped(),
        ]
    return out


def _tight(config: TaskClassConfig) -> TaskClassConfig:
    """A class whose actual spend runs close to its estimate (answers cut at the output
    budget, no critic pass, many retried failures): a ceiling just above the estimate is
    crossed while the run goes on."""
    params = {**config.provider_params, "failure_rate": 0.5, "critic_pass_rate": 0.0}
    return config.replace(provider_params=params, max_workers=None, ceiling_usd=None,
                          worker_max_output_tokens=150, synthesis_max_output_tokens=150)


@dataclasses.dataclass(frozen=True)
class OrchestratedStore:
    """What :func:`build_orchestrated_store` made.

    Attributes:
        path: the store.
        results: every run.
        as_configured: runs made under the workload's own class config (a live re-run
            with the recorded limits and seed repeats them exactly).
    """

    path: Path
    results: list[RunResult]
    as_configured: list[RunResult]


async def _run_all(path: Path, runs: int) -> OrchestratedStore:
    from cliffwatch.telemetry.tracing import configure_tracing

    workload = load_workload()
    register_sim_provider(0, TIME_SCALE, models=sorted(workload.models()))
    tracing = configure_tracing(path)
    variants = _variants()
    tight = _tight(workload["research"].config)
    start = ns_at(STARTED)
    limit = asyncio.Semaphore(16)

    async def one(i: int, config: TaskClassConfig) -> RunResult:
        tasks = workload[config.name].tasks
        async with limit:
            return await aorchestrate(
                tasks[i % len(tasks)], config, tracing=tracing, seed=1000 + i,
                started_at_ns=start + i * 60_000_000_000, time_scale=TIME_SCALE,
                raise_on_breach=False,
            )

    try:
        results = list(await asyncio.gather(
            *(one(i, variants[i % len(variants)]) for i in range(runs))
        ))
        free = await asyncio.gather(*(one(runs + i, tight) for i in range(10)))
        results += free
        results += await asyncio.gather(*(
            one(runs + i, tight.replace(ceiling_usd=r.estimate_usd * 1.0001))
            for i, r in enumerate(free) if r.estimate_usd
        ))
        configured = list(await asyncio.gather(
            *(one(runs + 20 + i, workload["content_update"].config) for i in range(3))
        ))
    finally:
        tracing.flush()
        tracing.shutdown()
    return OrchestratedStore(path, results + configured, configured)


def build_orchestrated_store(path: Path, runs: int = 30) -> OrchestratedStore:
    """Fill ``path`` with ``runs`` varied runs, up to 20 ceiling runs and 3 runs as the
    workload configures them."""
    return asyncio.run(_run_all(path, runs))


# --- hand-built traces with exactly known figures ------------------------------------------

MINI = "sim/gpt-4o-mini"
SONNET = "sim/claude-sonnet-4-5"
SYNTH = "sim/gpt-4.1-mini"
PLANNER = "sim/gpt-4.1"
SYNTH_PRICE_IN = 0.4e-6
"""USD per input token recorded on hand-built synthesis calls."""
MS = 1_000_000


@dataclasses.dataclass(frozen=True)
class Sub:
    """A planned sub-task: title, model, dispatch estimate (USD), output budget (tokens)."""

    title: str
    model: str = MINI
    estimate_usd: float = 0.001
    max_output_tokens: int = 0
    difficulty: str = "routine"


@dataclasses.dataclass(frozen=True)
class Call:
    """A worker attempt: sub-task index, cost, answer tokens, times (ms from the run
    start), error type (``cancelled`` for a call cancelled in flight)."""

    index: int
    cost_usd: float | None
    output_tokens: int = 100
    start_ms: float = 1000.0
    end_ms: float = 2000.0
    error_type: str | None = None


def hand_run(
    run_id: str,
    *,
    task_class: str = "research",
    plan: Sequence[Sub],
    calls: Sequence[Call] = (),
    plan_cost_usd: float = 0.01,
    synthesis: Sequence[tuple[float, int]] = ((0.002, 1000),),
    status: str = "ok",
    breach: str | None = None,
    max_workers: int | None = None,
    ceiling_usd: float | None = None,
    policy: str = "reject",
    dispatched: int | None = None,
    estimate_usd: float | None = None,
    started_ns: int | None = None,
    task_id: str | None = None,
) -> list[SpanRecord]:
    """One orchestrator-shaped trace: root, plan (with ``cliff.plan.subtasks``), the
    worker ``calls`` and the ``synthesis`` calls given as (cost, input tokens), after the
    workers. ``estimate_usd`` defaults to plan cost + the dispatched sub-tasks' estimates
    (no reserve)."""
    start = started_ns if started_ns is not None else ns_at(STARTED)
    root_id = f"{run_id[:12]}0000"
    n_dispatched = len({c.index for c in calls}) if dispatched is None else dispatched
    if estimate_usd is None:
        estimate_usd = plan_cost_usd + sum(s.estimate_usd for s in plan[:n_dispatched])
    subtasks = [
        {"index": i, "title": s.title, "difficulty": s.difficulty, "model": s.model,
         "max_output_tokens": s.max_output_tokens, "estimated_cost_usd": s.estimate_usd}
        for i, s in enumerate(plan)
    ]
    out = [llm_call_record(
        run_id=run_id, span_id=f"{run_id[:12]}0001", parent_span_id=root_id, role="plan",
        name="plan", model=PLANNER, cost_usd=plan_cost_usd, start_ns=start,
        duration_ms=900, task_class=task_class,
        extra_attributes={cv.CLIFF_PLAN_SUBTASKS: json.dumps(subtasks),
                          cv.CLIFF_ATTEMPT: 1},
    )]
    end_ms = 900.0
    for n, call in enumerate(calls):
        attrs: dict[str, Any] = {cv.CLIFF_SUBTASK_INDEX: call.index,
                                 cv.CLIFF_SUBTASK_TITLE: plan[call.index].title,
                                 cv.CLIFF_ATTEMPT: 1}
        if call.error_type:
            attrs[cv.ERROR_TYPE] = call.error_type
        out.append(llm_call_record(
            run_id=run_id, span_id=f"{run_id[:12]}{0x100 + n:04x}", parent_span_id=root_id,
            role="worker", name=f"worker {call.index}", model=plan[call.index].model,
            cost_usd=call.cost_usd, start_ns=start + int(call.start_ms * MS),
            duration_ms=call.end_ms - call.start_ms, task_class=task_class,
            status_code="error" if call.error_type else "ok",
            output_tokens=0 if call.error_type else call.output_tokens,
            extra_attributes=attrs,
        ))
        end_ms = max(end_ms, call.end_ms)
    for n, (cost, input_tokens) in enumerate(synthesis):
        record = llm_call_record(
            run_id=run_id, span_id=f"{run_id[:12]}{0x200 + n:04x}", parent_span_id=root_id,
            role="synthesis", name="synthesis", model=SYNTH, cost_usd=cost,
            start_ns=start + int((end_ms + 10) * MS), duration_ms=500, task_class=task_class,
            input_tokens=input_tokens, output_tokens=300,
        )
        out.append(dataclasses.replace(record, price_input_usd_per_token=SYNTH_PRICE_IN))
        end_ms += 510
    root_attrs: dict[str, Any] = {
        cv.CLIFF_ROLE: "run", cv.CLIFF_TASK_CLASS: task_class, cv.CLIFF_STATUS: status,
        cv.CLIFF_POLICY: policy, cv.CLIFF_WORKERS_PROPOSED: len(plan),
        cv.CLIFF_WORKERS_DISPATCHED: n_dispatched, cv.CLIFF_PLAN_ATTEMPTS: 1,
        cv.CLIFF_ESTIMATE_USD: estimate_usd, cv.CLIFF_SEED: 5,
    }
    for key, value in ((cv.CLIFF_MAX_WORKERS, max_workers), (cv.CLIFF_CEILING_USD, ceiling_usd),
                       (cv.CLIFF_BREACH, breach), (cv.CLIFF_TASK_ID, task_id)):
        if value is not None:
            root_attrs[key] = value
    root = SpanRecord(
        trace_id=run_id, span_id=root_id, parent_span_id=None, name=f"run {task_class}",
        start_time_unix_nano=start, end_time_unix_nano=start + int((end_ms + 20) * MS),
        status_code="ok", status_message=None, role="run", task_class=task_class,
        is_llm_call=False, operation="invoke_agent", provider=None, request_model=None,
        response_model=None, input_tokens=None, output_tokens=None, cost_usd=None,
        cost_source=None, price_input_usd_per_token=None, price_output_usd_per_token=None,
        service_name="cliffwatch", source="cliffwatch", attributes=json.dumps(root_attrs),
    )
    return [root, *out]
