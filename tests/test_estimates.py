"""The class estimates read by chunks (analytics/estimates.py: one scan of the spans written
by chunk, or run-id ranges on ClickHouse) equal one read of
the whole store, and the chunk helpers split and filter as they say."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cliffwatch.analytics import estimates
from cliffwatch.analytics.chunks import chunk_bounds, range_filters
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.recorded import Estimates
from cliffwatch.orchestrator.demo import run_demo
from cliffwatch.telemetry.store import open_store


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("est") / "demo.duckdb"
    run_demo(path, runs=60, days=5, seed=11)
    return path


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15))


def _same(chunked: Estimates, whole: Estimates) -> None:
    assert set(chunked.workers) == set(whole.workers)
    for key, w in whole.workers.items():
        c = chunked.workers[key]
        assert c.samples == w.samples and w.samples > 0
        assert _close(c.cost_usd, w.cost_usd) and _close(c.output_tokens, w.output_tokens)
    for mine, theirs in ((chunked.synthesis_usd, whole.synthesis_usd),
                         (chunked.synthesis_price_input, whole.synthesis_price_input)):
        assert set(mine) == set(theirs)
        assert all(_close(mine[k], theirs[k]) for k in theirs)


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
    _same(chunked, whole)
    assert set(of_class.synthesis_usd) == {one_class}
    assert _close(of_class.synthesis_usd[one_class], whole.synthesis_usd[one_class])


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
