"""Each run's class-estimate sums kept on its ``runs`` row by the write path
(telemetry/estimate_inputs.py): exactly the sums of hand-built runs, the class estimates
read from them equal those read from the spans and a count by hand in Python, an older
store is filled by the schema 7 migration (and read from its spans until then), and a
ClickHouse twin leaves the column out."""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cliffwatch.analytics import estimates
from cliffwatch.analytics.estimates import has_estimate_inputs, load_estimates
from cliffwatch.analytics.recorded import Estimates, WorkerEstimate
from cliffwatch.orchestrator.demo import run_demo
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry import estimate_inputs, store
from cliffwatch.telemetry.clickhouse import tables
from cliffwatch.telemetry.estimate_inputs import COLUMN
from cliffwatch.telemetry.schema import META_TABLE, RUNS_CLASS_TIME_INDEX, SCHEMA_VERSION
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.write_pipeline import write_spans
from tests.estimate_checks import assert_same_estimates, close
from tests.replay_store import (
    MINI,
    SONNET,
    SYNTH_PRICE_IN,
    Call,
    Sub,
    build_orchestrated_store,
    hand_run,
)

PLAN = [Sub("a", MINI), Sub("b", MINI), Sub("c", SONNET), Sub("d", SONNET)]


def _hand_store(path: Path) -> Path:
    records = hand_run(
        "1" * 32, plan=PLAN, synthesis=[(0.002, 1000), (0.003, 500)],
        calls=[Call(0, 0.01, output_tokens=200),
               Call(1, 0.02, output_tokens=0, error_type="RateLimitError"),  # retried:
               Call(1, 0.03, output_tokens=300),                              # one sub-task
               Call(2, 0.5, output_tokens=700),
               Call(3, None, output_tokens=50)])                              # unpriced
    records += hand_run(
        "2" * 32, plan=PLAN, synthesis=(), status="cancelled", breach="ceiling",
        ceiling_usd=0.05, dispatched=3,
        calls=[Call(0, 0.04, output_tokens=100),
               Call(1, 0.01, error_type=cv.ERROR_TYPE_CANCELLED),  # not run to an end
               Call(2, 0.02, error_type=cv.ERROR_TYPE_CANCELLED)])
    write_spans(path, records)
    return path


def _sums(path: Path) -> dict[str, Any]:
    with open_store(path, read_only=True) as con:
        return dict(con.sql(f"SELECT run_id, {COLUMN} FROM runs").fetchall())


def test_a_runs_sums_are_its_sub_tasks(tmp_path: Path) -> None:
    sums = _sums(_hand_store(tmp_path / "hand.duckdb"))
    done = sums["1" * 32]
    assert done["workers"] == [  # by model name
        # sub-task 3 has an unpriced call: counted, its cost left out of the mean
        {"model": SONNET, "cost_usd": pytest.approx(0.5), "priced": 1,
         "output_tokens": 750.0, "answered": 2, "subtasks": 2},
        # sub-tasks 0 and 1 (its failed attempt's cost included), priced and answered
        {"model": MINI, "cost_usd": pytest.approx(0.06), "priced": 2,
         "output_tokens": 500.0, "answered": 2, "subtasks": 2},
    ]
    assert done["stage_usd"] == pytest.approx(0.005)
    assert done["synthesis_price_input"] == pytest.approx(SYNTH_PRICE_IN)
    cancelled = sums["2" * 32]
    # the cancelled sub-tasks (1 and 2) are no sample; no synthesis stage
    assert cancelled["workers"] == [{"model": MINI, "cost_usd": pytest.approx(0.04),
                                     "priced": 1, "output_tokens": 100.0, "answered": 1,
                                     "subtasks": 1}]
    assert cancelled["stage_usd"] is None and cancelled["synthesis_price_input"] is None


def _by_hand(path: Path) -> Estimates:
    """The class means counted in Python from the stored leaf calls' rows and JSON."""
    with open_store(path, read_only=True) as con:
        classes = dict(con.sql("SELECT run_id, task_class FROM runs").fetchall())
        calls = con.sql(
            "SELECT trace_id, role, cost_usd, output_tokens, status_code, "
            "coalesce(request_model, response_model), price_input_usd_per_token, attributes "
            "FROM spans WHERE is_leaf_call AND role IN ('worker', 'synthesis', 'critic')"
        ).fetchall()
    subtasks: dict[tuple[str, Any, str], dict[str, Any]] = {}
    stage: dict[str, list[Any]] = defaultdict(list)
    for trace, role, cost, tokens, status, model, price, attributes in calls:
        if trace not in classes:
            continue
        if role != "worker":
            stage[trace].append((role, cost, price))
            continue
        attrs = json.loads(attributes)
        raw = attrs.get(cv.CLIFF_SUBTASK_INDEX)
        index = int(raw) if raw is not None and str(raw).lstrip("-").isdigit() else None
        sub = subtasks.setdefault((trace, index, model), {
            "costs": [], "cancelled": False, "answers": []})
        sub["costs"].append(cost)
        sub["cancelled"] |= attrs.get(cv.ERROR_TYPE) == cv.ERROR_TYPE_CANCELLED
        if status != "error" and tokens is not None:
            sub["answers"].append(tokens)
    workers: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(
        lambda: {"cost": [], "tokens": [], "n": []})
    for (trace, _, model), sub in subtasks.items():
        if sub["cancelled"] or model is None:
            continue
        acc = workers[(classes[trace], model)]
        acc["n"].append(1)
        if all(c is not None for c in sub["costs"]):
            acc["cost"].append(math.fsum(sub["costs"]))
        if sub["answers"]:
            acc["tokens"].append(max(sub["answers"]))
    synthesis: dict[str, list[float]] = defaultdict(list)
    prices: dict[str, list[float]] = defaultdict(list)
    for trace, rows in stage.items():
        costs = [c for _, c, _ in rows if c is not None]
        if costs:
            synthesis[classes[trace]].append(math.fsum(costs))
        synth = [p for role, _, p in rows if role == "synthesis" and p is not None]
        if synth:
            prices[classes[trace]].append(math.fsum(synth) / len(synth))

    def mean(values: list[float]) -> float | None:
        return math.fsum(values) / len(values) if values else None

    return Estimates(
        {key: WorkerEstimate(mean(acc["cost"]), mean(acc["tokens"]), len(acc["n"]))
         for key, acc in workers.items()},
        {c: m for c, v in synthesis.items() if (m := mean(v)) is not None},
        {c: m for c, v in prices.items() if (m := mean(v)) is not None},
    )


def _from_spans(con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch,
                task_class: str | None = None) -> Estimates:
    with monkeypatch.context() as m:
        m.setattr(estimates, "has_estimate_inputs", lambda con: False)
        return load_estimates(con, task_class)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hand", "demo", "orchestrated"])
def test_the_estimates_from_the_runs_equal_the_spans_and_a_count_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
) -> None:
    path = tmp_path / f"{kind}.duckdb"
    if kind == "hand":
        _hand_store(path)
    elif kind == "demo":
        run_demo(path, runs=80, days=5, seed=11)
    else:
        build_orchestrated_store(path)
    with open_store(path, read_only=True) as con:
        assert has_estimate_inputs(con)
        from_runs = load_estimates(con)
        from_spans = _from_spans(con, monkeypatch)
        one = next(iter(from_runs.synthesis_usd or {"research": 0}))
        of_class, of_class_spans = load_estimates(con, one), _from_spans(con, monkeypatch, one)
    assert from_runs.workers
    assert_same_estimates(from_runs, from_spans)
    assert_same_estimates(from_runs, _by_hand(path), rel_tol=1e-9)
    assert_same_estimates(of_class, of_class_spans)
    assert {c for c, _ in of_class.workers} <= {one}


def _as_schema_6(path: Path) -> None:
    """Make ``path`` look as a store written before schema 7: no column, version 6."""
    con = duckdb.connect(str(path))
    try:
        con.execute("DROP INDEX runs_class_time")  # DuckDB drops no column under an index
        con.execute(f"ALTER TABLE runs DROP COLUMN {COLUMN}")
        con.execute(RUNS_CLASS_TIME_INDEX)
        con.execute(f"UPDATE {META_TABLE} SET value = '6' WHERE key = 'schema_version'")
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.parametrize("chunk_runs", [7, 100_000])
def test_an_older_store_reads_the_spans_until_the_migration_fills_the_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_runs: int,
) -> None:
    monkeypatch.setattr(estimate_inputs, "BACKFILL_CHUNK_RUNS", chunk_runs)
    written = tmp_path / "written.duckdb"
    run_demo(written, runs=40, days=3, seed=5)
    old = tmp_path / "old.duckdb"
    shutil.copy(written, old)
    _as_schema_6(old)
    with open_store(old, read_only=True) as con:
        assert not has_estimate_inputs(con)
        before = load_estimates(con)
    # a migration stopped after the backfill, before the version: still version 6, its
    # readers read the spans; the next read-write open finishes it
    with monkeypatch.context() as m:
        m.setattr(store, "VERSION_BUMP", "SELECT error('stopped')")
        with pytest.raises(Exception, match="stopped"), open_store(old, read_only=False):
            pass
    with open_store(old, read_only=True) as con:
        assert not has_estimate_inputs(con)
        assert con.sql(f"SELECT count({COLUMN}) FROM runs").fetchall()[0][0] > 0
    bound = duckdb.connect()
    bound.execute("SET memory_limit = $limit", {"limit": estimate_inputs.BACKFILL_MEMORY_LIMIT})
    backfill_limit = bound.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    bound.execute("RESET memory_limit")
    default_limit = bound.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    bound.close()
    with open_store(old, read_only=False) as con:  # migrates
        # the backfill's memory bound is not left behind: DuckDB's default, exactly
        limit = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
        assert limit != backfill_limit
        assert limit == default_limit
        version = con.sql(f"SELECT value FROM {META_TABLE} "
                          "WHERE key = 'schema_version'").fetchall()[0][0]
        assert int(version) == SCHEMA_VERSION
        assert has_estimate_inputs(con)
        after = load_estimates(con)
    assert_same_estimates(after, before)
    filled, kept = _sums(old), _sums(written)
    assert set(filled) == set(kept) and any(v is not None for v in kept.values())
    for run_id, want in kept.items():
        got = filled[run_id]
        assert (got is None) == (want is None), run_id
        if want is None:
            continue
        assert [w["model"] for w in got["workers"]] == [w["model"] for w in want["workers"]]
        for g, w in zip(got["workers"], want["workers"], strict=True):
            assert {k: g[k] for k in ("priced", "answered", "subtasks", "output_tokens")} == {
                k: w[k] for k in ("priced", "answered", "subtasks", "output_tokens")}
            assert close(g["cost_usd"], w["cost_usd"], 1e-9)
        assert close(got["stage_usd"], want["stage_usd"], 1e-9)
        assert close(got["synthesis_price_input"], want["synthesis_price_input"], 1e-9)


def test_the_clickhouse_twin_leaves_the_column_out() -> None:
    names = [name for name, _ in tables.columns("runs")]
    assert COLUMN not in names and "cost_usd" in names
    assert not tables.has_twin("runs", COLUMN) and tables.has_twin("spans", COLUMN)
