"""The demo into a real DuckDB store: both eras, the cap holding at dispatch, determinism."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cliffwatch.orchestrator.demo import DemoSummary, build_schedule, run_demo
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.orchestrator.workload import load_workload
from cliffwatch.telemetry.store import open_store

UNTIL = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RUNS = 60


def demo(path: Path, seed: int = 7) -> DemoSummary:
    return run_demo(
        path, runs=RUNS, days=30, seed=seed, until=UNTIL, time_scale=2e-4, concurrency=32
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary]:
    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    calls: list[tuple[int, int]] = []
    summary = run_demo(
        path,
        runs=RUNS,
        days=30,
        seed=7,
        until=UNTIL,
        time_scale=2e-4,
        concurrency=32,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (RUNS, RUNS) and len(calls) == RUNS
    return path, summary


def rows(path: Path, query: str) -> list[tuple]:
    with open_store(path, read_only=True) as con:
        return con.sql(query).fetchall()


def test_every_run_lands_in_the_store(store: tuple[Path, DemoSummary]) -> None:
    path, summary = store
    assert summary.runs == RUNS == sum(summary.by_status.values())
    assert rows(path, "SELECT count(*) FROM runs") == [(RUNS,)]
    (total,) = rows(path, "SELECT sum(cost_usd) FROM runs")[0]
    assert total == pytest.approx(summary.total_cost_usd, abs=1e-5)
    assert set(summary.by_class) <= set(load_workload().names)
    assert summary.db_path == path


def test_no_run_dispatched_more_than_its_cap(store: tuple[Path, DemoSummary]) -> None:
    path, _ = store
    over = rows(
        path,
        "SELECT count(*) FROM runs WHERE max_workers IS NOT NULL "
        "AND workers_dispatched > max_workers",
    )
    assert over == [(0,)]
    # and the worker spans agree with the run rows
    spans_over = rows(
        path,
        """
        SELECT count(*) FROM (
            SELECT r.run_id FROM runs r JOIN spans s ON s.trace_id = r.run_id
            WHERE s.role = 'worker' AND r.max_workers IS NOT NULL
            GROUP BY r.run_id, r.max_workers
            HAVING count(DISTINCT json_extract(s.attributes, '$."cliff.subtask.index"'))
                > r.max_workers
        )
        """,
    )
    assert spans_over == [(0,)]


def test_both_eras_are_there_split_at_the_cap_date(store: tuple[Path, DemoSummary]) -> None:
    path, summary = store
    cap = summary.cap_date.replace(tzinfo=None)
    assert summary.cap_date == UNTIL - timedelta(days=15)
    before = rows(path, f"SELECT max_workers, ceiling_usd FROM runs WHERE started_at < '{cap}'")
    after = rows(path, f"SELECT max_workers, ceiling_usd FROM runs WHERE started_at >= '{cap}'")
    assert len(before) == summary.runs_before_cap > 0 and len(after) > 0
    assert all(mw is None and ceiling is None for mw, ceiling in before)
    assert all(mw is not None and ceiling is not None for mw, ceiling in after)
    (first, last) = rows(path, "SELECT min(started_at), max(started_at) FROM runs")[0]
    assert first >= (UNTIL - timedelta(days=30)).replace(tzinfo=None)
    assert last < UNTIL.replace(tzinfo=None)


def test_run_costs_are_the_sum_of_their_calls(store: tuple[Path, DemoSummary]) -> None:
    path, _ = store
    pairs = rows(
        path,
        """
        SELECT r.cost_usd, sum(s.cost_usd) FROM runs r JOIN spans s ON s.trace_id = r.run_id
        WHERE s.is_llm_call GROUP BY r.run_id, r.cost_usd
        """,
    )
    run_costs, span_costs = np.array(pairs).T
    assert np.allclose(run_costs, span_costs)
    assert 0.0005 < np.median(run_costs) < 0.05  # cents, as the handbook's pipeline


def test_same_seed_same_store_contents(tmp_path: Path, store: tuple[Path, DemoSummary]) -> None:
    first, _ = store
    second = tmp_path / "again.duckdb"
    demo(second)
    query = (
        "SELECT task_class, started_at, status, round(cost_usd, 12), workers_proposed FROM runs "
        "ORDER BY started_at"
    )
    assert rows(first, query) == rows(second, query)


def test_schedule_is_deterministic_and_checked() -> None:
    workload = load_workload()
    one, cap_one = build_schedule(
        workload, runs=40, days=10, seed=3, cap_from_fraction=0.25, until=UNTIL
    )
    two, cap_two = build_schedule(
        workload, runs=40, days=10, seed=3, cap_from_fraction=0.25, until=UNTIL
    )
    other, _ = build_schedule(
        workload, runs=40, days=10, seed=4, cap_from_fraction=0.25, until=UNTIL
    )
    assert one == two and cap_one == cap_two == UNTIL - timedelta(days=7.5)
    assert one != other
    assert [s.started_at for s in one] == sorted(s.started_at for s in one)
    assert all(s.capped == (s.started_at >= cap_one) for s in one)
    with pytest.raises(ConfigError):
        build_schedule(workload, runs=0, days=10, seed=3, cap_from_fraction=0.5, until=UNTIL)
    with pytest.raises(ConfigError):
        build_schedule(workload, runs=5, days=10, seed=3, cap_from_fraction=1.5, until=UNTIL)
