"""The demo: the workload run through the real orchestrator, offline, before and after a cap.

:func:`run_demo` spreads ``runs`` runs over the last ``days`` days and runs each through
:func:`orchestrator.runner.aorchestrate` on the simulated provider, recording spans into a
DuckDB store through :func:`telemetry.tracing.configure_tracing`. Two eras:

- before the cap date (the first ``cap_from_fraction`` of the period): no cap and no
  ceiling, as pipelines ran before the handbook's fix; runaway plans really run;
- from the cap date on: each class's configured ``max_workers``, ceiling and policy;
  breaches are rejected at dispatch and recorded (``raise_on_breach=False``).

Deterministic for ``seed`` (and ``until``), span times included: the schedule, classes,
inputs and per-run seeds come from one ``random.Random(seed)``, the simulated provider
draws from each call's own seed, and span times are simulated time
(:mod:`orchestrator.clock`), not the host's. (Which in-flight workers a crossed ceiling
cancels still follows the real order in which calls finish, which the pacing keeps close
to their simulated order.)
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cliffwatch import settings
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.orchestrator.runner import RunResult, aorchestrate, drain_provider_logging
from cliffwatch.orchestrator.sim_provider import register_sim_provider
from cliffwatch.orchestrator.workload import Task, TaskClass, Workload, load_workload

DEMO_TIME_SCALE = 0.02
"""Real seconds per simulated second in the demo: a 40 s simulated run sleeps 0.8 s.

It only paces the runs (concurrent calls finish in about the order of their simulated
latencies); span times are simulated time (:mod:`orchestrator.clock`), the same on an idle
host and a loaded one. 500 runs take 15-35 s on 2 shared cores (measured)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

DEMO_CONCURRENCY = 32
"""Runs in flight at once (each runs its own workers concurrently too)."""


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """One run of the demo's schedule.

    Attributes:
        started_at: when the run starts (UTC).
        task: the task.
        capped: True from the cap date on (the class's limits apply).
        seed: the run's seed.
    """

    started_at: datetime
    task: Task
    capped: bool
    seed: int


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What :func:`run_demo` did.

    Attributes:
        runs: runs made.
        by_status: runs per status (ok, rejected, cancelled, failed).
        cap_date: when the cap took effect (UTC); runs before it had no cap.
        runs_before_cap: runs before the cap date.
        elapsed_s: wall-clock seconds the demo took.
        db_path: the store written.
        total_cost_usd: USD spent by every run (simulated, at real models' prices).
        by_class: runs per task class.
    """

    runs: int
    by_status: dict[str, int]
    cap_date: datetime
    runs_before_cap: int
    elapsed_s: float
    db_path: Path | str
    total_cost_usd: float
    by_class: dict[str, int] = field(default_factory=dict)


def build_schedule(
    workload: Workload,
    *,
    runs: int,
    days: float,
    seed: int,
    cap_from_fraction: float,
    until: datetime,
) -> tuple[list[ScheduledRun], datetime]:
    """The demo's runs in start order, and the cap date; deterministic for its arguments.

    Start times are uniform over ``[until - days, until)``; the class of each run follows
    the classes' ``weight``; its input is drawn uniformly from the class's tasks.

    Raises:
        ConfigError: ``runs`` < 1, ``days`` <= 0, ``cap_from_fraction`` outside [0, 1],
            or no class with a positive weight.
    """
    if runs < 1:
        raise ConfigError(f"runs must be >= 1, got {runs}")
    if not days > 0:
        raise ConfigError(f"days must be > 0, got {days}")
    if not 0.0 <= cap_from_fraction <= 1.0:
        raise ConfigError(f"cap_from_fraction must be within [0, 1], got {cap_from_fraction}")
    classes: list[TaskClass] = [c for c in workload.classes if c.weight > 0]
    if not classes:
        raise ConfigError(f"{workload.source}: no task class has a positive weight")
    rng = random.Random(seed)
    period_s = days * 86_400.0
    start = until - timedelta(seconds=period_s)
    cap_date = start + timedelta(seconds=period_s * cap_from_fraction)
    offsets = sorted(rng.uniform(0.0, period_s) for _ in range(runs))
    picked = rng.choices(classes, weights=[c.weight for c in classes], k=runs)
    schedule = []
    for offset, task_class in zip(offsets, picked, strict=True):
        started_at = start + timedelta(seconds=offset)
        schedule.append(
            ScheduledRun(
                started_at=started_at,
                task=rng.choice(task_class.tasks),
                capped=started_at >= cap_date,
                seed=rng.randrange(2**31),
            )
        )
    return schedule, cap_date


def run_demo(
    db_path: str | os.PathLike[str],
    *,
    runs: int = 500,
    days: int = 30,
    seed: int = 7,
    cap_from_fraction: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    until: datetime | None = None,
    time_scale: float = DEMO_TIME_SCALE,
    concurrency: int = DEMO_CONCURRENCY,
    data_dir: str | os.PathLike[str] | None = None,
) -> DemoSummary:
    """Fill the store at ``db_path`` with ``runs`` simulated runs over the last ``days`` days.

    Args:
        db_path: the DuckDB store (created when missing; runs are added to it).
        runs: how many runs.
        days: the period the start times spread over, ending at ``until``.
        seed: seed of the schedule and of every run (same seed, same runs and costs).
        cap_from_fraction: where in the period the cap starts (0: capped throughout,
            1: never capped).
        progress: called as ``progress(done, total)`` after each run.
        until: end of the period (UTC; default now, to the minute).
        time_scale: real seconds per simulated second.
        concurrency: runs in flight at once.
        data_dir: the workload directory (default the repository's ``data/``).

    Returns:
        A :class:`DemoSummary`.

    Raises:
        ConfigError: a bad argument or workload file.
    """
    from cliffwatch.telemetry.tracing import configure_tracing  # duckdb: only when a demo runs

    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    workload = load_workload(data_dir)
    end = until or datetime.now(UTC).replace(second=0, microsecond=0)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    schedule, cap_date = build_schedule(
        workload, runs=runs, days=days, seed=seed, cap_from_fraction=cap_from_fraction, until=end
    )
    register_sim_provider(seed, time_scale, models=sorted(workload.models()))
    text = os.fspath(db_path)
    path: Path | str = text if settings.is_engine_store(text) else Path(db_path)
    tracing = configure_tracing(db_path)  # a path, or a ClickHouse store URL
    began = time.perf_counter()
    try:
        results = asyncio.run(
            _run_all(workload, schedule, tracing, time_scale, concurrency, progress)
        )
    finally:
        tracing.flush()
        tracing.shutdown()
    return DemoSummary(
        runs=len(results),
        by_status=dict(sorted(Counter(r.status.value for r in results).items())),
        cap_date=cap_date,
        runs_before_cap=sum(1 for s in schedule if not s.capped),
        elapsed_s=round(time.perf_counter() - began, 2),
        db_path=path,
        total_cost_usd=round(sum(r.cost_usd for r in results), 6),
        by_class=dict(sorted(Counter(r.task_class for r in results).items())),
    )


async def _run_all(
    workload: Workload,
    schedule: list[ScheduledRun],
    tracing: object,
    time_scale: float,
    concurrency: int,
    progress: Callable[[int, int], None] | None,
) -> list[RunResult]:
    limit = asyncio.Semaphore(concurrency)
    done = 0
    total = len(schedule)

    async def one(item: ScheduledRun) -> RunResult:
        nonlocal done
        config = workload[item.task.task_class].config
        if not item.capped:
            config = config.uncapped()
        async with limit:
            result = await aorchestrate(
                item.task,
                config,
                tracing=tracing,
                seed=item.seed,
                started_at_ns=(item.started_at - _EPOCH) // _MICROSECOND * 1000,
                time_scale=time_scale,
                raise_on_breach=False,
            )
        done += 1
        if progress is not None:
            progress(done, total)
        return result

    try:
        return list(await asyncio.gather(*(one(item) for item in schedule)))
    finally:
        await drain_provider_logging()
