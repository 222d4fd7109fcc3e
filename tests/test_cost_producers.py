"""Acceptance (issue 9): real producers' traces are priced to the truth, run by run.

Each scenario of ``tests/cost_producer_app.py`` runs in its own process: real SDKs and
instrumentation packages from the registry (the ``test`` extra pins them) call the
loopback stub of the Anthropic and OpenAI APIs (``tests/stub_llm.py``), which reports
prompt caching and reasoning usage and keeps a ledger of what it answered. The spans are
written as OTLP/JSON lines and go through ``cliffwatch``'s real OTLP path
(:func:`telemetry.ingest.ingest_files`: decode, map, price, write, materialise) into a
real DuckDB store. Then, for every run:

- the truth is the ledger priced *by hand* from ``litellm.model_cost`` (uncached input,
  cache reads, cache writes, output and reasoning each at the map's own rate), never
  through cliffwatch's pricing;
- the run's ``cost_usd`` equals it to 1e-9 relative, and so does the sum of the computed
  costs kept beside reported ones (Pydantic AI reports its own, from genai-prices);
- the run has the right task class, and the store holds exactly one run per run made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cost_producer_app import RUNS_PER_SCENARIO, SCENARIOS

from cliffwatch.telemetry.ingest import ingest_files
from cliffwatch.telemetry.pricing import import_litellm
from cliffwatch.telemetry.store import open_store

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


def truth_usd(entry: dict[str, Any]) -> float:
    """One answered call priced by hand from litellm's bundled map (its answered model's
    entry; the model asked for has the same prices, checked here too)."""
    model_cost = import_litellm().model_cost
    e = model_cost[entry["response_model"]]
    asked = model_cost[entry["model"]]
    for key in ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost"):
        assert e.get(key) == asked.get(key), (entry["model"], key)
    input_rate, output_rate = e["input_cost_per_token"], e["output_cost_per_token"]
    reasoning_rate = e.get("output_cost_per_reasoning_token", output_rate)
    return (
        entry["uncached_input_tokens"] * input_rate
        + entry["cache_read_tokens"] * e.get("cache_read_input_token_cost", input_rate)
        + entry["cache_creation_tokens"] * e.get("cache_creation_input_token_cost", input_rate)
        + (entry["output_tokens"] - entry["reasoning_tokens"]) * output_rate
        + entry["reasoning_tokens"] * reasoning_rate
    )


def produce(scenario: str, work: Path) -> tuple[dict[str, Any], Path]:
    """Run one scenario's process; returns (its report, the store its spans went into)."""
    jsonl = work / f"{scenario}.jsonl"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_OPEN_TELEMETRY"):
        env.pop(key, None)
    result = subprocess.run(
        [sys.executable, str(TESTS / "cost_producer_app.py"), scenario, "--jsonl", str(jsonl)],
        capture_output=True, text=True, env=env, cwd=work, timeout=600,
    )
    assert result.returncode == 0, f"{scenario}: {result.stderr[-4000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    db = work / f"{scenario}.duckdb"
    summary = ingest_files([jsonl], db)
    assert summary.spans_written == report["spans"], summary
    return report, db


def stored_runs(db: Path) -> dict[str, dict[str, Any]]:
    with open_store(db, read_only=True) as con:
        cur = con.execute("SELECT * FROM runs")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {row["task_class"]: row for row in rows}


def computed_sum(db: Path, run_id: str) -> float:
    with open_store(db, read_only=True) as con:
        return con.execute(
            "SELECT sum(computed_cost_usd) FROM spans WHERE trace_id = ? AND is_leaf_call",
            [run_id],
        ).fetchall()[0][0]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_run_of_a_real_producer_costs_the_truth(
    scenario: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    report, db = produce(scenario, tmp_path_factory.mktemp(scenario))
    runs = stored_runs(db)
    assert len(report["runs"]) == RUNS_PER_SCENARIO
    assert sorted(runs) == sorted(r["task_class"] for r in report["runs"]), runs.keys()
    for made in report["runs"]:
        ledger = made["ledger"]
        assert ledger, made
        truth = sum(truth_usd(entry) for entry in ledger)
        run = runs[made["task_class"]]
        print(f"{scenario}: {made['task_class']}: truth ${truth:.9f}, "
              f"cliffwatch ${run['cost_usd']:.9f}, calls {run['llm_calls']}, "
              f"duplicates {run['duplicate_calls']}")
        assert run["llm_calls"] == len(ledger)
        assert run["unpriced_calls"] == 0 and run["cache_detail_missing_calls"] == 0
        assert computed_sum(db, run["run_id"]) == pytest.approx(truth, rel=1e-9)
        assert run["cost_usd"] == pytest.approx(truth, rel=1e-9)
        assert run["input_tokens"] == sum(
            e["uncached_input_tokens"] + e["cache_read_tokens"] + e["cache_creation_tokens"]
            for e in ledger
        )
        assert run["output_tokens"] == sum(e["output_tokens"] for e in ledger)
    # every scenario exercised what it is here for
    entries = [e for made in report["runs"] for e in made["ledger"]]
    if scenario.startswith("anthropic"):
        assert any(e["cache_read_tokens"] for e in entries)
        assert any(e["cache_creation_tokens"] for e in entries)
    if scenario.startswith("openai-o") or scenario == "openai-both":
        assert any(e["cache_read_tokens"] for e in entries)
        assert any(e["reasoning_tokens"] for e in entries)
    if scenario.startswith(("openai-agents", "pydantic-ai")):
        assert any(e["tool_call"] for e in entries)  # several calls under nested agent spans
    with open_store(db, read_only=True) as con:
        sources = dict(con.execute(
            "SELECT cost_source, count(*) FROM spans WHERE is_leaf_call GROUP BY ALL"
        ).fetchall())
    # Pydantic AI reports each call's cost (operation.cost, from genai-prices): it wins, and
    # agrees with litellm's computation kept beside it (checked above)
    want = "provider" if scenario.startswith("pydantic-ai") else "computed"
    assert set(sources) == {want}, sources
