"""orchestrator.tasks.run_task: the one task set-up behind ``cliffwatch run``,
``replay --live`` and the dashboard's re-run (simulated provider, real DuckDB store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cliffwatch.analytics.runs import list_runs
from cliffwatch.analytics.store_access import read_store
from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.orchestrator.tasks import class_config, run_task, sim_models
from cliffwatch.orchestrator.workload import Task, load_workload
from cliffwatch.telemetry.pricing import import_litellm

TIME_SCALE = 1e-4
TASK = "Compare the three main approaches to carbon capture and their costs."


def _runs(path: Path) -> list[dict]:
    with read_store(path) as con:
        return list_runs(con).to_dicts()


def test_a_config_routes_to_planner_workers_synthesis_and_critic() -> None:
    config = TaskClassConfig("x", planner_model="sim/gpt-4.1", routine_model="sim/gpt-4o-mini",
                             hard_model="sim/gpt-4.1", synthesis_model="gpt-4.1-mini",
                             critic_model="sim/claude-haiku-4-5")
    assert config.models() == ("sim/gpt-4.1", "sim/gpt-4o-mini", "gpt-4.1-mini",
                               "sim/claude-haiku-4-5")
    # the simulated provider gets its own models; a real one is left to its provider
    assert sim_models(config) == ["sim/gpt-4.1", "sim/gpt-4o-mini", "sim/claude-haiku-4-5"]
    assert TaskClassConfig("y").models() == ("sim/claude-sonnet-4-5", "sim/gpt-4o-mini",
                                             "sim/gpt-4.1-mini")  # no critic
    workload = load_workload()
    assert workload.models() == {m for c in workload.classes for m in c.config.models()}


def test_run_task_registers_every_sim_model_the_config_can_route_to(tmp_path: Path) -> None:
    litellm = import_litellm()
    hard, critic = "sim/gpt-4.1-nano", "sim/o3-mini"  # used by no workload class
    assert hard not in litellm.model_cost and critic not in litellm.model_cost
    config = class_config("extract_format").replace(hard_model=hard, critic_model=critic)
    path = tmp_path / "run.duckdb"
    done = run_task(path, Task("t-1", "extract_format", TASK), config, seed=3,
                    time_scale=TIME_SCALE)
    for model in (hard, critic):
        real = model.removeprefix("sim/")
        assert litellm.model_cost[model]["input_cost_per_token"] == (
            litellm.model_cost[real]["input_cost_per_token"])
    assert (done.seed, done.time_scale, done.flushed) == (3, TIME_SCALE, True)
    [row] = _runs(path)
    assert (row["run_id"], row["status"]) == (done.result.run_id, "ok")


def test_run_task_leaves_a_real_model_to_its_provider(tmp_path: Path) -> None:
    # An unpriced real critic is not registered with the simulated provider (the old
    # replay --live set-up registered every model and refused this class); a ceiling
    # breach at dispatch ends the run before any real model is called.
    config = class_config("research").replace(critic_model="acme/in-house-llm")
    path = tmp_path / "mixed.duckdb"
    done = run_task(path, Task("t-2", "research", TASK), config,
                    limits=Limits(None, 1e-6, config.policy),
                    time_scale=TIME_SCALE)
    assert "sim/acme/in-house-llm" not in import_litellm().model_cost
    assert (done.result.status, done.result.breach) == ("rejected", "ceiling")
    assert (done.config.max_workers, done.config.ceiling_usd) == (None, 1e-6)
    [row] = _runs(path)
    assert (row["status"], row["ceiling_usd"]) == ("rejected", pytest.approx(1e-6))


def test_run_task_refuses_an_unpriced_sim_model_before_running(tmp_path: Path) -> None:
    config = class_config("research").replace(routine_model="sim/no-such-model")
    path = tmp_path / "never.duckdb"
    with pytest.raises(ConfigError, match="no-such-model"):
        run_task(path, Task("t-3", "research", TASK), config, time_scale=TIME_SCALE)
    assert not path.exists()


def test_class_config_names_the_known_classes() -> None:
    assert class_config("research") == load_workload()["research"].config
    with pytest.raises(ConfigError, match=r"unknown task class 'nope' \(known: .*research"):
        class_config("nope")
