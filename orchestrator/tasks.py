"""Run one task through the orchestrator and record its spans: the set-up shared by
``cliffwatch run``, ``cliffwatch replay --live`` (:mod:`orchestrator.rerun`) and the
dashboard's live re-run (which runs ``cliffwatch replay --live``).

:func:`run_task` does every step once: the task class's settings under the limits asked
for, the simulated provider with every ``sim/`` model those settings can route to,
tracing into the store, the run, and the flush. :func:`class_config` looks a task class
up in the workload.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.demo import DEMO_TIME_SCALE
from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.orchestrator.runner import RunResult, orchestrate
from cliffwatch.orchestrator.sim_provider import is_sim_model, register_sim_provider
from cliffwatch.orchestrator.workload import Task, Workload, load_workload
from cliffwatch.telemetry.tracing import configure_tracing


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One task run by :func:`run_task`.

    Attributes:
        result: the run (``result.run_id`` is its id in the store).
        config: the task class settings it ran under (models and limits).
        seed: the seed of its calls.
        time_scale: real seconds slept per simulated second.
        flushed: every span reached the store (False: some are spilled and are loaded
            by the next write).
    """

    result: RunResult
    config: TaskClassConfig
    seed: int
    time_scale: float
    flushed: bool


def class_config(task_class: str, workload: Workload | None = None) -> TaskClassConfig:
    """The settings of ``task_class`` in ``workload`` (default: the bundled workload).

    Raises:
        ConfigError: the workload has no such class (the message lists the known ones),
            or the workload files are bad.
    """
    workload = workload if workload is not None else load_workload()
    if task_class not in workload.names:
        known = ", ".join(sorted(workload.names)) or "none yet"
        raise ConfigError(f"unknown task class {task_class!r} (known: {known})")
    return workload[task_class].config


def sim_models(config: TaskClassConfig) -> list[str]:
    """The models ``config`` can route to (:meth:`TaskClassConfig.models`) that the
    simulated provider serves (``sim/...``), in that order; real models are left to
    their providers."""
    return [m for m in config.models() if is_sim_model(m)]


def run_task(
    db_path: str | os.PathLike[str],
    task: Task,
    config: TaskClassConfig,
    *,
    limits: Limits | None = None,
    seed: int = 0,
    time_scale: float | None = None,
    replay_of: str | None = None,
) -> TaskRun:
    """Orchestrate ``task`` under ``config`` and record its spans in the store at ``db_path``.

    Every ``sim/`` model the settings can route to (planner, routine and hard workers,
    synthesis, critic) is registered with the simulated provider first, so an unpriced
    one is refused before anything runs.

    Args:
        db_path: the DuckDB store (created when missing; the run is added to it).
        task: the task.
        config: its task class's settings.
        limits: the cap, ceiling and policy to run under (default: ``config``'s).
        seed: the seed of every call (the simulated provider answers the same prompts
            the same way for a seed).
        time_scale: real seconds per simulated second (default: the demo's,
            :data:`~cliffwatch.orchestrator.demo.DEMO_TIME_SCALE`, when every model is
            simulated, else 1.0).
        replay_of: the run this one re-runs, recorded as ``cliff.replay_of``.

    Returns:
        The :class:`TaskRun`; breaches and provider failures come back as its result's
        status (rejected, cancelled, failed), not as exceptions.

    Raises:
        ConfigError: bad limits, a bad time scale, or a ``sim/`` model that is not
            priced in litellm's map.
    """
    if limits is not None:
        config = config.replace(max_workers=limits.max_workers,
                                ceiling_usd=limits.ceiling_usd, policy=limits.policy)
    simulated = sim_models(config)
    if time_scale is None:
        time_scale = DEMO_TIME_SCALE if len(simulated) == len(config.models()) else 1.0
    if simulated:
        register_sim_provider(seed, time_scale, models=simulated)
    tracing = configure_tracing(db_path)
    try:
        result = orchestrate(task, config, tracing=tracing, seed=seed, time_scale=time_scale,
                             replay_of=replay_of, raise_on_breach=False)
    finally:
        flushed = tracing.flush()
        tracing.shutdown()
    return TaskRun(result, config, seed, time_scale, flushed)
