"""The pushed-down what-if (DuckDB) against the Python counterfactual, run by run.

``what_if(..., pushdown=False)`` replays every run through the orchestrator's dispatch
layer (the one source of truth for decisions); the default computes most runs in SQL
(analytics/whatif_sql.py). Every figure of every run must agree, on the orchestrated
store (every branch of the runner), on a demo store, and on seeded random plans; and the
SQL must decide most runs itself (else this test would only compare Python to Python).
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from replay_store import MINI, SONNET, Call, Sub, build_orchestrated_store, hand_run

from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.whatif import WhatIf, what_if, what_ifs
from cliffwatch.analytics.whatif_rows import RUN_COLUMNS
from cliffwatch.analytics.whatif_sql import CHUNK_RUNS
from cliffwatch.analytics.window import Window
from cliffwatch.orchestrator.demo import run_demo
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import CapPolicy
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

NOW = datetime(2026, 11, 2)

OVERRIDES = [
    LimitsOverride(max_workers=8),
    LimitsOverride(max_workers=3, policy=CapPolicy.TRUNCATE),
    LimitsOverride(max_workers=2, policy=CapPolicy.REJECT),
    LimitsOverride(max_workers=4, policy=CapPolicy.REPLAN),
    LimitsOverride(ceiling_usd=0.03),
    LimitsOverride(max_workers=5, ceiling_usd=0.02, policy=CapPolicy.TRUNCATE),
    LimitsOverride(max_workers=None, ceiling_usd=None),
    LimitsOverride(),
]


def _differences(sql: pl.DataFrame, py: pl.DataFrame) -> list[str]:
    assert sql["run_id"].to_list() == py["run_id"].to_list()
    out = []
    for column in RUN_COLUMNS:
        a, b = sql[column], py[column]
        if a.dtype == pl.Float64:
            differ = ((a - b).abs() > 1e-9).fill_null(False) | (a.is_null() != b.is_null())
        else:
            differ = (a != b).fill_null(False) | (a.is_null() != b.is_null())
        for run_id in sql.filter(differ)["run_id"].head(3):
            out.append(f"{column} of {run_id}: sql {a.filter(sql['run_id'] == run_id)[0]!r}, "
                       f"python {b.filter(py['run_id'] == run_id)[0]!r}")
    return out


def _compare(path: Path, overrides: list[LimitsOverride]) -> tuple[int, int]:
    """Every override: the same rows both ways; returns (runs, runs left to Python)."""
    runs = to_python = 0
    with open_store(path, read_only=True) as con:
        together = what_ifs(con, overrides)  # one pass for every variant
        for override, joint in zip(overrides, together, strict=True):
            sql: WhatIf = what_if(con, override)
            assert _differences(joint.runs, sql.runs) == [], override.describe()
            py: WhatIf = what_if(con, override, pushdown=False)
            assert _differences(sql.runs, py.runs) == [], override.describe()
            assert sql.by_class.equals(py.by_class) or _close(sql.by_class, py.by_class)
            runs += sql.runs.height
            to_python += sql.python_runs
    return runs, to_python


def _close(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    for column in a.columns:
        x, y = a[column], b[column]
        if x.dtype == pl.Float64:
            if ((x - y).abs() > 1e-9).any() or (x.is_null() != y.is_null()).any():
                return False
        elif x.to_list() != y.to_list():
            return False
    return True


def test_sql_and_python_agree_on_every_orchestrated_run(tmp_path: Path) -> None:
    store = build_orchestrated_store(tmp_path / "orch.duckdb")
    runs, to_python = _compare(store.path, OVERRIDES)
    assert to_python < runs / 2


def test_sql_and_python_agree_on_a_demo_store(tmp_path: Path) -> None:
    path = tmp_path / "demo.duckdb"
    run_demo(path, runs=120, days=10, seed=11)
    runs, to_python = _compare(path, OVERRIDES)
    assert to_python < runs / 4


def _with_reserve(records: list, fixed: float, per: float) -> list:
    root = records[0]
    attrs = json.loads(root.attributes)
    attrs[cv.CLIFF_RESERVE_USD] = fixed
    attrs[cv.CLIFF_RESERVE_USD_PER_SUBTASK] = per
    return [dataclasses.replace(root, attributes=json.dumps(attrs)), *records[1:]]


def _random_run(rng: random.Random, n: int) -> list:
    subtasks = rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 12])
    plan = [Sub(f"s{i}", rng.choice([MINI, SONNET]),
                estimate_usd=rng.choice([0.0005, 0.001, 0.004, 0.01]))
            for i in range(subtasks)]
    calls = []
    for i in range(subtasks):
        for attempt in range(rng.choice([0, 1, 1, 1, 2])):
            error = rng.choice([None, None, None, "rate_limit", "cancelled"])
            calls.append(Call(i, rng.choice([None, 0.0008, 0.002, 0.006]) if attempt == 0
                              else 0.001, output_tokens=rng.randint(50, 600),
                              start_ms=1000 + 500 * attempt, end_ms=1400 + 500 * attempt,
                              error_type=error))
    synthesis = [(rng.choice([0.001, 0.003]), rng.choice([0, 200, 1500]))
                 for _ in range(rng.choice([0, 1, 1, 2]))]
    max_workers = rng.choice([None, 2, 4, 6, 8])
    policy = rng.choice(["reject", "truncate", "replan"])
    records = hand_run(
        f"{n:08x}".ljust(32, "a"), task_class=rng.choice(["research", "extract"]),
        plan=plan, calls=calls, plan_cost_usd=rng.choice([0.002, 0.01]),
        synthesis=synthesis, status=rng.choice(["ok", "ok", "ok", "failed", "rejected"]),
        max_workers=max_workers, ceiling_usd=rng.choice([None, 0.02, 0.05, 0.1]),
        policy=policy, started_ns=ns_at("2026-11-01T00:00:00") + n * 60_000_000_000,
    )
    records = _with_reserve(records, rng.choice([0.0, 0.002]), rng.choice([0.0, 0.0001]))
    if rng.random() < 0.15:
        records = _odd_plan(records, rng)
    return records


# Plan answers the SQL must read as parse_plan does, or leave to Python: not JSON, not an
# array, an element not an object, an estimate as text, a model that is not a string, an
# empty plan, fields missing. (A sub-task index off its position is left out: the Python
# counterfactual itself fails on it, KeyError in _Replayer._workers.)
ODD_PLANS = [
    "not json", '{"index": 0}', "[1, 2]",
    '[{"index": 0, "estimated_cost_usd": "0.001"}]', '[{"index": 0, "model": 7}]', "[]",
    '[{"title": "no index"}, {"difficulty": "weird"}]', "null",
    '[{"index": 0, "model": "sim/gpt-4o-mini", "estimated_cost_usd": 1e-3}]',
]


def _odd_plan(records: list, rng: random.Random) -> list:
    out = []
    for record in records:
        if record.role == "plan":
            attrs = json.loads(record.attributes)
            attrs[cv.CLIFF_PLAN_SUBTASKS] = rng.choice(ODD_PLANS)
            record = dataclasses.replace(record, attributes=json.dumps(attrs))
        out.append(record)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_sql_and_python_agree_on_random_plans(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "random.duckdb"
    write_spans(path, [r for n in range(150) for r in _random_run(rng, n)])
    runs, to_python = _compare(path, OVERRIDES)
    assert to_python < runs / 10


def test_a_window_larger_than_a_chunk_is_read_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(3)
    path = tmp_path / "chunks.duckdb"
    write_spans(path, [r for n in range(60) for r in _random_run(rng, n)])
    whole, _ = _compare(path, OVERRIDES[:2])
    monkeypatch.setattr("cliffwatch.analytics.whatif_sql.CHUNK_RUNS", 7)
    assert CHUNK_RUNS > 7
    chunked, _ = _compare(path, OVERRIDES[:2])
    assert chunked == whole == 120


def test_a_memory_bound_too_small_falls_back_to_the_connections_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(4)
    path = tmp_path / "small.duckdb"
    write_spans(path, [r for n in range(40) for r in _random_run(rng, n)])
    with open_store(path, read_only=True) as con:
        before = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
        expected = what_if(con, OVERRIDES[0]).runs
        monkeypatch.setattr("cliffwatch.analytics.bulk_read.MEMORY_LIMIT", "1KB")
        monkeypatch.setattr("cliffwatch.analytics.bulk_read.WHATIF_MEMORY_LIMIT", "1KB")
        again = what_if(con, OVERRIDES[0]).runs
        assert _differences(again, expected) == []
        given = what_if(con, OVERRIDES[0], estimates=load_estimates(con)).runs
        assert _differences(given, expected) == []
        assert con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0] == before


@pytest.mark.parametrize("chunk_runs", [None, 7])
def test_a_window_and_a_class_read_the_estimates_of_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_runs: int | None
) -> None:
    # the staged what-if reads the class estimates from every run of the class, and its
    # rows from the window's runs only: the same figures as the Python counterfactual;
    # in chunks of 7 runs, staged two chunks at a time (odd chunks, an odd count: each
    # chunk's rows read from its runs' part of the staged files)
    if chunk_runs is not None:
        monkeypatch.setattr("cliffwatch.analytics.whatif_sql.CHUNK_RUNS", chunk_runs)
    rng = random.Random(5)
    path = tmp_path / "window.duckdb"
    write_spans(path, [r for n in range(80) for r in _random_run(rng, n)])
    window = Window.parse("2026-11-01T00:40:00", None)
    with open_store(path, read_only=True) as con:
        for task_class in (None, "research"):
            for override in OVERRIDES[:5]:
                sql = what_if(con, override, window, task_class, now=NOW)
                py = what_if(con, override, window, task_class, now=NOW, pushdown=False)
                assert 0 < sql.runs.height < 80
                assert _differences(sql.runs, py.runs) == [], override.describe()
