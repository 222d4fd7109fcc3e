"""The LangGraph example (examples/langgraph_orchestrator.py) on langchain_core's fake chat
models: a normal run completes and is priced exactly; a runaway plan is rejected at the
fan-out (nothing dispatched) and recorded as a cap_breach in a real DuckDB store.

Needs langgraph and langchain-core (the test extras); not skipped without them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cliffwatch.orchestrator.errors import CostCeilingError, CostCliffError
from cliffwatch.telemetry.pricing import import_litellm
from cliffwatch.telemetry.store import open_store

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "langgraph_orchestrator.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_orchestrator", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def usd(model: str, tokens_in: int, tokens_out: int) -> float:
    entry = import_litellm().model_cost[model]
    return tokens_in * entry["input_cost_per_token"] + tokens_out * entry["output_cost_per_token"]


def query(db: Path, sql: str) -> list[tuple]:
    with open_store(db, read_only=True) as con:
        return con.sql(sql).fetchall()


def test_a_plan_within_the_cap_runs_and_is_priced(example: ModuleType, tmp_path: Path) -> None:
    db = tmp_path / "lg.duckdb"
    graph = example.build_graph(example.fake_models([3]))
    state, guard = example.run_task(graph, "update the pricing pages", task_class="content",
                                    db=db, ceiling_usd=0.25)
    assert guard.status == "ok"
    assert state["answer"] == "All sources agree."
    assert sorted(i for i, _ in state["results"]) == [0, 1, 2]
    # planner 600 in / 120 out on gpt-4.1, 3 workers 450/220 on gpt-4o-mini, synthesis
    # 900/160 on gpt-4.1-mini: the fake replies' usage_metadata, priced by hand.
    expected = (usd("gpt-4.1", 600, 120) + 3 * usd("gpt-4o-mini", 450, 220)
                + usd("gpt-4.1-mini", 900, 160))
    [(status, cost, proposed, dispatched, planner, synth)] = query(
        db, "SELECT status, cost_usd, workers_proposed, workers_dispatched, planner_model, "
            "synthesis_model FROM runs")
    assert (status, proposed, dispatched) == ("ok", 3, 3)
    assert cost == pytest.approx(expected, rel=1e-12)
    assert (planner, synth) == ("gpt-4.1", "gpt-4.1-mini")
    workers = query(db, "SELECT count(*) FROM spans WHERE role = 'worker'")
    assert workers == [(3,)]


def test_a_runaway_plan_is_rejected_at_fan_out_and_recorded(
    example: ModuleType, tmp_path: Path
) -> None:
    db = tmp_path / "lg.duckdb"
    graph = example.build_graph(example.fake_models([47]))
    with pytest.raises(CostCliffError) as raised:
        example.run_task(graph, "update every page", task_class="content", db=db,
                         max_workers=8)
    assert (raised.value.proposed, raised.value.max_workers) == (47, 8)
    [(status, breach, dispatched, cost)] = query(
        db, "SELECT status, breach, workers_dispatched, cost_usd FROM runs")
    assert (status, breach, dispatched) == ("rejected", "cap", 0)
    assert cost == pytest.approx(usd("gpt-4.1", 600, 40 * 47), rel=1e-12)
    assert query(db, "SELECT count(*) FROM spans WHERE role IN ('worker', 'synthesis')") == [
        (0,)]
    [(kind, detail, data)] = query(db, "SELECT kind, detail, data::VARCHAR FROM incidents")
    assert kind == "cap_breach"
    assert detail == "plan proposed 47 workers, cap 8: rejected at dispatch"
    assert json.loads(data)["proposed"] == 47


def test_a_ceiling_too_low_for_the_plan_stops_the_fan_out(
    example: ModuleType, tmp_path: Path
) -> None:
    db = tmp_path / "lg.duckdb"
    graph = example.build_graph(example.fake_models([5]))
    with pytest.raises(CostCeilingError) as raised:
        example.run_task(graph, "t", task_class="content", db=db, ceiling_usd=0.003)
    assert raised.value.stage == "estimate"
    assert query(db, "SELECT kind FROM incidents") == [("cost_ceiling",)]
