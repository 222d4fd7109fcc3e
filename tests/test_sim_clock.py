"""Simulated span times come from the simulation's latency model, never from host load.

Runs go through the real runner and the real ``sim`` provider; spans are read from an
in-memory exporter. A run's span times are compared across two runs of one seed, against
the provider's own latency for the call, and under artificial CPU load."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from test_runner import LONG_TASK, QUIET, TASK, TIME_SCALE, WORKERS_TIME_OUT, MemoryTracing

from cliffwatch.orchestrator import prompts
from cliffwatch.orchestrator.clock import VirtualClock, simulate
from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.errors import CostCeilingError
from cliffwatch.orchestrator.runner import orchestrate
from cliffwatch.orchestrator.sim_provider import real_model_of, register_sim_provider
from cliffwatch.telemetry import conventions as cv

STARTED_NS = 1_793_520_000 * 10**9

BUSY = {
    **QUIET,
    "runaway_rate": 1.0,  # 20-50 workers: more than `concurrency`, so they queue
    "failure_rate": 0.15,  # retries with backoff, rate limits and stalls to a timeout
    "critic_pass_rate": 0.3,  # synthesis revisions
}


@pytest.fixture(scope="module", autouse=True)
def sim() -> None:
    register_sim_provider(seed=0, time_scale=TIME_SCALE)


def config(**changes: Any) -> TaskClassConfig:
    params = {**QUIET, **changes.pop("provider_params", {})}
    return TaskClassConfig("content_update", provider_params=params, **changes)


def busy_config() -> TaskClassConfig:
    return config(
        max_workers=None,
        concurrency=4,
        max_retries=2,
        critic_model="sim/gpt-4.1-mini",
        provider_params=BUSY,
    )


def timeline(cfg: TaskClassConfig, seed: int) -> list[tuple[Any, ...]]:
    """Every span of one run: (name, sub-task, attempt, start, end), in start order."""
    tracing = MemoryTracing()
    orchestrate(
        TASK, cfg, tracing=tracing, seed=seed, time_scale=TIME_SCALE, started_at_ns=STARTED_NS
    )
    spans = [
        (
            s.name,
            s.attributes.get(cv.CLIFF_SUBTASK_INDEX, -1),
            s.attributes.get(cv.CLIFF_ATTEMPT, 0),
            s.start_time,
            s.end_time,
        )
        for s in tracing.spans()
    ]
    return sorted(spans, key=lambda s: (s[3], s[0], s[1], s[2]))


def test_a_call_lasts_exactly_its_simulated_latency() -> None:
    handler = register_sim_provider(seed=0, time_scale=TIME_SCALE)
    cfg = config()
    tracing = MemoryTracing()
    orchestrate(TASK, cfg, tracing=tracing, seed=4, time_scale=TIME_SCALE)
    (plan,) = tracing.spans("plan")
    messages = prompts.planner_messages(
        TASK.input_text,
        task_class=cfg.name,
        max_workers=cfg.limits.max_workers,
        guidance=cfg.planner_guidance,
    )
    answer = handler.answer(
        real_model_of(cfg.planner_model),
        messages,
        role="plan",
        seed=4,
        max_tokens=cfg.planner_max_output_tokens,
        profile=handler.profile(cfg.provider_params),
    )
    assert answer.latency_s > 1.0  # hundreds of tokens at 80 tokens/s
    assert plan.end_time - plan.start_time == round(answer.latency_s * 1e9)
    assert plan.start_time == tracing.run_span().start_time  # nothing before the plan


def test_the_same_seed_gives_the_same_span_times() -> None:
    first = timeline(busy_config(), seed=8)
    assert len(first) > 25
    names = {name.split()[0] for name, *_ in first}
    assert {"plan", "worker", "synthesis", "critic", "run"} <= names
    assert first == timeline(busy_config(), seed=8)
    assert first != timeline(busy_config(), seed=9)


def test_workers_queue_in_concurrency_lanes() -> None:
    cfg = config(max_workers=None, concurrency=3, provider_params={"runaway_rate": 1.0})
    tracing = MemoryTracing()
    orchestrate(TASK, cfg, tracing=tracing, seed=2, time_scale=TIME_SCALE)
    (plan,) = tracing.spans("plan")
    workers = sorted(tracing.spans("worker"), key=lambda s: s.attributes[cv.CLIFF_SUBTASK_INDEX])
    assert len(workers) >= 20
    for k, worker in enumerate(workers):
        if k < 3:
            assert worker.start_time == plan.end_time
        else:  # starts the moment the sub-task ahead in its lane ends
            assert worker.start_time == workers[k - 3].end_time
    (synthesis,) = tracing.spans("synthesis")
    assert synthesis.start_time == max(w.end_time for w in workers)


def test_workers_cancelled_in_flight_end_when_the_ceiling_was_crossed() -> None:
    # Which workers are in flight when spend crosses the ceiling follows the real order in
    # which calls finish (under load, fewer runs cancel any), so look over seeds until two
    # runs have cancelled some in flight; every such run is checked. A seed whose run does
    # not overrun the ceiling at all (3 of the 40: 28, 33, 37) is passed over.
    cfg = config(
        concurrency=4,
        max_retries=3,
        worker_max_output_tokens=100,
        provider_params=WORKERS_TIME_OUT,
    )
    seen = 0
    for seed in range(1, 41):
        if seen == 2:
            break
        dry = orchestrate(LONG_TASK, cfg, tracing=MemoryTracing(), seed=seed, time_scale=TIME_SCALE)
        assert dry.estimate_usd is not None
        ceiling = dry.estimate_usd * 1.01  # retried timeouts on a long prompt overrun it ...
        if dry.cost_usd <= ceiling:
            continue  # ... unless this seed's failures are mostly rate limits, which bill nothing
        tracing = MemoryTracing()
        with pytest.raises(CostCeilingError):
            orchestrate(
                LONG_TASK,
                cfg.replace(ceiling_usd=ceiling),
                tracing=tracing,
                seed=seed,
                time_scale=TIME_SCALE,
            )
        workers = tracing.spans("worker")
        cancelled = [s for s in workers if s.attributes[cv.ERROR_TYPE] == "cancelled"]
        if not cancelled:
            continue
        seen += 1
        # they end when the call whose cost crossed the ceiling ended (or, queued behind
        # a later one, when they started)
        ends = {s.end_time for s in workers if s not in cancelled}
        assert any(
            all(c.end_time == max(c.start_time, crossed_at) for c in cancelled)
            for crossed_at in ends
        )
    assert seen, "some run had workers in flight when spend crossed its ceiling"


@pytest.mark.slow
def test_span_times_do_not_depend_on_cpu_load() -> None:
    quiet = timeline(busy_config(), seed=8)
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(max(2, os.cpu_count() or 2))
    ]
    try:
        time.sleep(0.5)  # let them take the CPUs
        loaded = timeline(busy_config(), seed=8)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert loaded == quiet


def test_the_clock_moves_by_simulated_time_or_else_real_time() -> None:
    clock = VirtualClock(started_at_ns=0, time_scale=0.5)

    async def simulated_call() -> None:
        await clock.timed(simulate(3.0, 0.001))  # 3 simulated seconds, 1 ms of real time

    with clock.using():
        asyncio.run(simulated_call())
        assert clock.now_ns() == 3 * 10**9
        with clock.call():  # a call no simulation times: real elapsed / time_scale
            time.sleep(0.05)
        assert clock.now_ns() >= 3 * 10**9 + 0.1 * 10**9
    lane = clock.fork()
    lane.advance(10.0)
    clock.join([lane])
    assert clock.now_ns() >= 13 * 10**9
