"""Run a recorded task again, live, through the orchestrator, under new limits.

Replay's counterfactual (``analytics.counterfactual``) answers "what would these limits
have done" from the record alone; :func:`rerun_live` answers it by running the same task
again: same task class, same models as recorded, same seed (so the simulated provider
gives the same answers to the same prompts), with the cap, ceiling and policy given. The
new run is recorded in the same store with ``cliff.replay_of`` = the original's id.

The task must be recoverable from the record: its input text is on the run span as
``cliff.task.input`` when content capture was on ($CLIFFWATCH_CAPTURE_CONTENT), else it
is looked up by ``cliff.task.id`` in the workload (``data/inputs/<class>.jsonl``). A run
with neither (ingested from another producer, or a task that is no longer in the
workload) cannot be re-run: :class:`RerunError` says why, in one line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.orchestrator.errors import ConfigError, OrchestratorError
from cliffwatch.orchestrator.runner import RunResult
from cliffwatch.orchestrator.tasks import run_task
from cliffwatch.orchestrator.workload import Task, Workload, load_workload


class RerunError(OrchestratorError):
    """A recorded run cannot be run again live (its task is not recoverable)."""


class RecordedTask(Protocol):
    """What a live re-run needs from a recorded run (``analytics.recorded.RecordedRun``
    has all of it)."""

    @property
    def run_id(self) -> str: ...  # noqa: D102
    @property
    def task_class(self) -> str: ...  # noqa: D102
    @property
    def task_id(self) -> str | None: ...  # noqa: D102
    @property
    def task_input(self) -> str | None: ...  # noqa: D102
    @property
    def seed(self) -> int | None: ...  # noqa: D102
    @property
    def planner_model(self) -> str | None: ...  # noqa: D102
    @property
    def synthesis_model(self) -> str | None: ...  # noqa: D102

    def worker_models(self) -> Mapping[str, str]: ...  # noqa: D102

    def critic_model(self) -> str | None: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class LiveRerun:
    """A live re-run and what it was made from.

    Attributes:
        original_run_id: the recorded run.
        result: the new run (``result.run_id`` is its id in the store).
        task: the task run again.
        task_source: where the task input came from (``"captured input"`` or
            ``"workload task <id>"``).
        config: the task class settings it ran under (recorded models, new limits).
        seed: the seed it ran with.
        flushed: every span reached the store (False: some are spilled and will be
            loaded by the next write).
    """

    original_run_id: str
    result: RunResult
    task: Task
    task_source: str
    config: TaskClassConfig
    seed: int
    flushed: bool


def _workload(data_dir: str | os.PathLike[str] | None) -> Workload | None:
    try:
        return load_workload(data_dir)
    except ConfigError:
        return None


def recover_task(run: RecordedTask, workload: Workload | None) -> tuple[Task, str]:
    """The task ``run`` ran, and where its input came from.

    Raises:
        RerunError: neither the captured input nor the workload has it.
    """
    if run.task_input:
        return Task(run.task_id or run.run_id[:12], run.task_class, run.task_input), (
            "captured input"
        )
    why = "its task input was not recorded (CLIFFWATCH_CAPTURE_CONTENT was off)"
    if not run.task_id:
        raise RerunError(
            f"run {run.run_id} cannot be re-run live: {why} and it has no cliff.task.id"
        )
    if workload is None or run.task_class not in workload.names:
        raise RerunError(
            f"run {run.run_id} cannot be re-run live: {why} and task class "
            f"{run.task_class!r} is not in the workload"
        )
    for task in workload[run.task_class].tasks:
        if task.task_id == run.task_id:
            return task, f"workload task {task.task_id}"
    raise RerunError(
        f"run {run.run_id} cannot be re-run live: {why} and task {run.task_id!r} is no "
        f"longer in the workload's {run.task_class} inputs"
    )


def rerun_config(run: RecordedTask, limits: Limits, workload: Workload | None) -> TaskClassConfig:
    """The class settings for a re-run: the workload's (or defaults), the models the run
    recorded, and ``limits``."""
    if workload is not None and run.task_class in workload.names:
        config = workload[run.task_class].config
    else:
        config = TaskClassConfig(name=run.task_class)
    models = run.worker_models()
    return config.replace(
        planner_model=run.planner_model or config.planner_model,
        synthesis_model=run.synthesis_model or config.synthesis_model,
        routine_model=models.get("routine", config.routine_model),
        hard_model=models.get("hard", config.hard_model),
        critic_model=run.critic_model() or config.critic_model,
        max_workers=limits.max_workers,
        ceiling_usd=limits.ceiling_usd,
        policy=limits.policy,
    )


def rerun_live(
    db_path: str | os.PathLike[str],
    run: RecordedTask,
    limits: Limits,
    *,
    seed: int | None = None,
    time_scale: float | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> LiveRerun:
    """Run ``run``'s task again through the orchestrator under ``limits``
    (:func:`~cliffwatch.orchestrator.tasks.run_task` does the run).

    Args:
        db_path: the store the original is in; the new run is recorded there.
        run: the recorded run (``analytics.recorded.RecordedRun``).
        limits: the cap, ceiling and policy to run under.
        seed: the seed (default the recorded one, else 0).
        time_scale: real seconds per simulated second (default: the demo's for runs on
            the simulated provider, 1.0 otherwise).
        data_dir: the workload directory (default the repository's ``data/``).

    Returns:
        The :class:`LiveRerun`; breaches come back as its result's status (rejected,
        cancelled), not as exceptions.

    Raises:
        RerunError: the task cannot be recovered (see :func:`recover_task`).
        ConfigError: the class settings are invalid.
    """
    workload = _workload(data_dir)
    task, source = recover_task(run, workload)
    chosen_seed = run.seed if seed is None else seed
    done = run_task(db_path, task, rerun_config(run, limits, workload),
                    seed=0 if chosen_seed is None else int(chosen_seed), time_scale=time_scale,
                    replay_of=run.run_id)
    return LiveRerun(run.run_id, done.result, task, source, done.config, done.seed,
                     done.flushed)
