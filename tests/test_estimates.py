"""The class estimates read from the spans by run-id range chunks (analytics/estimates.py:
ClickHouse's way) equal one read of the whole store, and the chunk helpers split and
filter as they say."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cliffwatch.analytics import estimates
from cliffwatch.analytics.chunks import chunk_bounds, range_filters
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.orchestrator.demo import run_demo
from cliffwatch.telemetry.store import open_store
from tests.estimate_checks import assert_same_estimates, close


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("est") / "demo.duckdb"
    run_demo(path, runs=60, days=5, seed=11)
    return path


def test_chunked_estimates_equal_one_read(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ClickHouse's way (run-id range chunks, sums added up), run here on DuckDB
    with open_store(demo, read_only=True) as con:
        whole = load_estimates(con)
        monkeypatch.setattr(estimates, "CHUNK_RUNS", 7)
        chunked = estimates.fold_estimates(estimates.chunked_sums(con, [], {}),
                                           whole.completed)
        one_class = next(iter(whole.synthesis_usd))
        of_class = load_estimates(con, one_class)
    assert whole.workers and whole.synthesis_usd and whole.synthesis_price_input
    assert_same_estimates(chunked, whole)
    assert set(of_class.synthesis_usd) == {one_class}
    assert close(of_class.synthesis_usd[one_class], whole.synthesis_usd[one_class])


def test_chunk_bounds_cover_every_run_once(demo: Path) -> None:
    with open_store(demo, read_only=True) as con:
        ids = sorted(r[0] for r in con.sql("SELECT run_id FROM runs").fetchall())
        assert chunk_bounds(con, "SELECT run_id FROM runs", {}, len(ids), len(ids)) == [
            (None, None)]
        bounds = chunk_bounds(con, "SELECT run_id FROM runs", {}, len(ids), 7)
        counts = []
        for b in bounds:
            params: dict[str, object] = {}
            conds, spans = range_filters(b, "run_id", "trace_id", params)
            sql = "SELECT count(*) FROM runs" + (" WHERE " + " AND ".join(conds) if conds else "")
            counts.append(con.sql(sql, params=params or None).fetchall()[0][0])
    assert len(bounds) == math.ceil(len(ids) / 7)
    assert bounds[0][0] is None and bounds[-1][1] is None
    assert sum(counts) == len(ids) and max(counts) <= 8


def test_range_filters_name_both_columns() -> None:
    params: dict[str, object] = {}
    conds, spans = range_filters(("a", None), "r.run_id", "sp.trace_id", params)
    assert conds == ["r.run_id >= $chunk_low"]
    assert spans == " AND sp.trace_id >= $chunk_low"
    assert params == {"chunk_low": "a"}
    assert range_filters((None, None), "x", "y", {}) == ([], "")
