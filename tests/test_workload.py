"""The workload files: task classes, their settings and inputs, and what the sim plans for them."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from cliffwatch.orchestrator import prompts
from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.orchestrator.sim_provider import SimProfile, register_sim_provider
from cliffwatch.orchestrator.workload import configured_limits, load_tasks, load_workload
from cliffwatch.telemetry.conventions import CapPolicy
from cliffwatch.telemetry.pricing import import_litellm, price_for

CLASSES = ("content_update", "research", "build_pipeline", "extract_format")


@pytest.fixture(scope="module")
def workload():
    return load_workload()


def test_the_four_classes_from_practice_with_real_inputs(workload) -> None:
    assert set(CLASSES) <= set(workload.names)
    for task_class in workload.classes:
        assert len(task_class.tasks) >= 12, task_class.name
        texts = [t.input_text for t in task_class.tasks]
        assert len(set(texts)) == len(texts)  # varied, no duplicates
        assert all(len(t.split()) >= 15 for t in texts)
        assert all(t.task_class == task_class.name for t in task_class.tasks)
        assert task_class.weight > 0
    ids = [t.task_id for c in workload.classes for t in c.tasks]
    assert len(ids) == len(set(ids))


def test_every_model_is_priced_and_synthesis_is_cheaper_than_planning(workload) -> None:
    for model in workload.models():
        assert price_for(model) is not None, model
    for task_class in workload.classes:
        cfg = task_class.config
        planner, synthesis = price_for(cfg.planner_model), price_for(cfg.synthesis_model)
        assert synthesis.output_usd_per_token < planner.output_usd_per_token
        routine, hard = price_for(cfg.routine_model), price_for(cfg.hard_model)
        assert routine.output_usd_per_token < hard.output_usd_per_token
        assert cfg.max_workers is not None and cfg.ceiling_usd is not None
        SimProfile.from_mapping(cfg.provider_params)  # valid sim profile


def test_classes_use_more_than_one_cap_policy(workload) -> None:
    policies = {c.config.policy for c in workload.classes}
    assert {CapPolicy.REJECT, CapPolicy.REPLAN} <= policies


def _median_plan(cfg: TaskClassConfig, texts: list[str], seeds: int = 3) -> float:
    """Median plan size the sim's planner proposes for ``texts`` with no cap stated."""
    litellm = import_litellm()
    params = {**cfg.provider_params, "failure_rate": 0.0, "malformed_plan_rate": 0.0}
    sizes = []
    for seed in range(seeds):
        for text in texts:
            messages = prompts.planner_messages(
                text, task_class=cfg.name, max_workers=None, guidance=cfg.planner_guidance
            )
            response = litellm.completion(
                model=cfg.planner_model,
                messages=messages,
                max_tokens=cfg.planner_max_output_tokens,
                metadata={
                    "cliffwatch": {
                        "role": "plan",
                        "seed": seed,
                        "time_scale": 1e-5,
                        "provider_params": params,
                    }
                },
            )
            sizes.append(len(prompts.parse_plan(response.choices[0].message.content)))
    return statistics.median(sizes)


def test_extract_format_should_not_be_orchestrated_and_fan_out_classes_should(workload) -> None:
    register_sim_provider(time_scale=1e-4)
    medians = {
        c.name: _median_plan(c.config, [t.input_text for t in c.tasks]) for c in workload.classes
    }
    assert medians["extract_format"] < 3  # the handbook: below ~3 workers, chain prompts
    for name in ("content_update", "research", "build_pipeline"):
        assert medians[name] >= 3, medians


def write_workload(
    root: Path, table: str, lines: str = '{"id": "a-1", "input": "x y z"}\n'
) -> Path:
    (root / "inputs").mkdir(parents=True, exist_ok=True)
    (root / "workload.toml").write_text(f"[defaults]\n\n[classes.alpha]\n{table}\n")
    (root / "inputs" / "alpha.jsonl").write_text(lines)
    return root


def test_max_workers_none_switches_the_cap_off(tmp_path: Path) -> None:
    workload = load_workload(write_workload(tmp_path, 'max_workers = "none"\nceiling_usd = 0.5'))
    cfg = workload["alpha"].config
    assert cfg.max_workers is None and cfg.ceiling_usd == 0.5
    assert cfg.limits.max_workers is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("max_wrokers = 4", "unknown setting"),
        ("max_workers = 0", "max_workers"),
        ('policy = "ignore"', "policy"),
        ('max_workers = "lots"', "max_workers"),
        ("concurrency = -1", "concurrency"),
        ("weight = -2", "weight"),
    ],
)
def test_bad_settings_name_the_class_and_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_workload(write_workload(tmp_path, table))
    assert "alpha" in str(caught.value)


def test_bad_input_lines_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "alpha.jsonl"
    path.write_text('{"id": "a-1", "input": "fine"}\n\n{"id": "a-2"}\n')
    with pytest.raises(ConfigError, match=r"alpha\.jsonl:3"):
        load_tasks(path, "alpha")
    path.write_text('{"id": "a-1", "input": "fine"}\n{"id": "a-1", "input": "again"}\n')
    with pytest.raises(ConfigError, match="repeats"):
        load_tasks(path, "alpha")
    path.write_text("not json\n")
    with pytest.raises(ConfigError, match="not JSON"):
        load_tasks(path, "alpha")


def test_missing_workload_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no workload file"):
        load_workload(tmp_path)


def test_unknown_class_lookup_lists_the_known_ones(workload) -> None:
    with pytest.raises(KeyError, match="content_update"):
        workload["nope"]


def test_configured_limits_are_each_class_s_limits_or_none(workload, tmp_path: Path) -> None:
    limits = configured_limits()
    assert limits == {c.name: c.config.limits for c in workload.classes}
    assert set(CLASSES) <= set(limits)
    assert configured_limits(tmp_path) is None  # no workload.toml: reports use recorded caps
