"""The per-class, per-day roll-ups (telemetry/rollups.py): kept equal to ``runs`` by the
write path, the schema migration and prune; the reads that use them (analytics/
rollup_read.py) give the same figures as reading ``runs``; the dashboard's cache version."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from cliffwatch.analytics import percentiles, rollup_read, runs
from cliffwatch.analytics.run_table import RunQuery, runs_page
from cliffwatch.analytics.store_access import frame, read_store, where
from cliffwatch.analytics.window import Window
from cliffwatch.dashboard import queries
from cliffwatch.dashboard.filters import Filters
from cliffwatch.telemetry import rollups
from cliffwatch.telemetry.prune import prune_store
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

CLASSES = ("research", "extract", "summarise")
DAY0 = datetime(2026, 11, 1)


def _write_runs(path: Path, n: int, seed: int) -> None:
    """``n`` runs over 6 days (some crossing midnight), 3 classes, random costs, caps on
    some; written in batches of several runs, as the exporter does."""
    rng = random.Random(seed)
    batch = []
    for i in range(n):
        start = DAY0 + timedelta(hours=rng.uniform(0, 6 * 24))
        batch += make_run_records(
            task_class=rng.choice(CLASSES),
            worker_cost_usds=[rng.lognormvariate(-5, 1) for _ in range(rng.randint(1, 4))],
            max_workers=rng.choice([None, 4, 8]),
            breach=rng.choice([None, None, None, "cap"]),
            started_at_ns=ns_at(start.isoformat()),
            call_duration_ms=rng.choice([1000.0, 3_600_000.0]),
            seed=seed * 10_000 + i,
        )
        if i % 7 == 6:
            write_spans(path, batch)
            batch = []
    write_spans(path, batch)


def _expected(path: Path) -> pl.DataFrame:
    with read_store(path) as con:
        sql = rollups._AGGREGATE.format(where="").replace("$updated_at", "NULL::TIMESTAMP")
        return frame(con, f"{sql} ORDER BY task_class, day").drop("updated_at")


def _rolled(path: Path) -> pl.DataFrame:
    with read_store(path) as con:
        return frame(con, "SELECT * FROM run_rollups ORDER BY task_class, day").drop(
            "updated_at")


def _assert_rollups_exact(path: Path) -> None:
    want, got = _expected(path), _rolled(path)
    assert got.height > 0
    assert got.columns == want.columns
    assert got["runs"].sum() == want["runs"].sum()
    for column in got.columns:
        if got[column].dtype == pl.Float64:
            assert (got[column] - want[column]).abs().max() < 1e-12, column
        else:
            assert got[column].to_list() == want[column].to_list(), column


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rollups") / "store.duckdb"
    _write_runs(path, 120, seed=3)
    return path


def test_the_write_path_keeps_the_rollups_equal_to_runs(store: Path) -> None:
    _assert_rollups_exact(store)
    with read_store(store) as con:
        assert rollup_read.rollups_current(con)
        days = frame(con, "SELECT DISTINCT day FROM run_rollups")["day"].to_list()
    assert len(days) >= 6


def test_a_rewritten_run_moves_out_of_its_old_class_and_day(tmp_path: Path) -> None:
    path = tmp_path / "moved.duckdb"
    _write_runs(path, 20, seed=5)
    # The same trace again, another class and two days later: the run row is replaced
    # (INSERT OR REPLACE), and its old day must not keep counting it.
    with read_store(path) as con:
        run_id = frame(con, "SELECT run_id FROM runs ORDER BY started_at LIMIT 1")["run_id"][0]
    again = make_run_records(task_class="other", run_id=run_id,
                             started_at_ns=ns_at((DAY0 + timedelta(days=2)).isoformat()))
    with open_store(path, read_only=False) as con:  # the old row goes, as a re-send would
        con.execute("DELETE FROM spans WHERE trace_id = ?", [run_id])
    write_spans(path, again)
    _assert_rollups_exact(path)


def test_an_older_store_gets_its_rollups_on_its_next_write(tmp_path: Path) -> None:
    path = tmp_path / "v3.duckdb"
    _write_runs(path, 30, seed=7)
    with open_store(path, read_only=False) as con:  # as a version-3 store left it
        con.execute("DROP TABLE run_rollups")
        con.execute("UPDATE cliffwatch_meta SET value = '3' WHERE key = 'schema_version'")
    with read_store(path) as con:
        assert not rollup_read.rollups_current(con)
        assert rollup_read.write_version(con) is None
        direct = percentiles.daily_percentiles(con, Window())
    with open_store(path, read_only=False):
        pass  # the migration rebuilds them
    _assert_rollups_exact(path)
    with read_store(path) as con:
        assert percentiles.daily_percentiles(con, Window()).equals(direct)


def test_prune_drops_and_recomputes_the_days_it_cuts(tmp_path: Path) -> None:
    path = tmp_path / "pruned.duckdb"
    _write_runs(path, 60, seed=11)
    prune_store(path, DAY0 + timedelta(days=2, hours=13))
    _assert_rollups_exact(path)


def test_rebuild_rollups_repairs_runs_written_around_the_write_path(tmp_path: Path) -> None:
    path = tmp_path / "around.duckdb"
    _write_runs(path, 20, seed=13)
    with open_store(path, read_only=False) as con:
        con.execute("UPDATE runs SET cost_usd = cost_usd * 2")
        con.execute("DELETE FROM runs WHERE task_class = 'extract'")
    with read_store(path) as con:
        assert not rollup_read.rollups_current(con)  # fewer runs than rolled up
    with open_store(path, read_only=False) as con:
        rollups.rebuild_rollups(con)
    _assert_rollups_exact(path)


WINDOWS = (
    Window(),
    Window(since=DAY0 + timedelta(days=2)),
    Window(since=DAY0 + timedelta(days=1, hours=7, minutes=5)),
    Window(until=DAY0 + timedelta(days=4, hours=19)),
    Window(DAY0 + timedelta(days=1, hours=3), DAY0 + timedelta(days=1, hours=20)),
    Window(DAY0 + timedelta(days=1, hours=3), DAY0 + timedelta(days=5)),
    Window(DAY0 - timedelta(days=30), DAY0 - timedelta(days=20)),
)


@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("task_class", [None, "research"])
def test_daily_percentiles_from_rollups_equal_those_from_runs(
    store: Path, window: Window, task_class: str | None
) -> None:
    with read_store(store) as con:
        got = percentiles.daily_percentiles(con, window, task_class)
        conds, params = runs.scope_filter(con, window, "started_at", task_class)
        want = frame(con, percentiles._DAILY_SQL.format(where=where(conds)), params)
    assert got.select("task_class", "day", "runs").equals(want.select("task_class", "day",
                                                                       "runs"))
    for column in ("p50_usd", "p95_usd", "p99_usd"):
        assert ((got[column] - want[column]).abs() < 1e-12).all()


@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("task_class", [None, "summarise"])
@pytest.mark.parametrize("limit", [1, 9, 40, 500])
def test_the_newest_runs_read_through_the_rollups_are_the_newest_runs(
    store: Path, window: Window, task_class: str | None, limit: int
) -> None:
    with read_store(store) as con:
        got = runs.list_runs(con, window, task_class, limit=limit)
        everything = runs.list_runs(con, window, task_class)  # no limit: no floor
    assert got.equals(everything.head(limit))


def test_cap_start_date_from_rollups_equals_the_runs(store: Path) -> None:
    with read_store(store) as con:
        got = [percentiles.cap_start_date(con, c) for c in (None, *CLASSES)]
        want = [frame(con, "SELECT min(started_at)::DATE AS d FROM runs WHERE max_workers "
                      f"IS NOT NULL {'' if c is None else 'AND task_class = $c'}",
                      {} if c is None else {"c": c})["d"][0] for c in (None, *CLASSES)]
    assert got == want
    assert all(day is not None for day in got)
    with read_store(store) as con:
        assert percentiles.cap_start_dates(con, CLASSES) == dict(zip(CLASSES, got[1:], strict=True))


def test_cap_start_dates_without_current_rollups_read_the_runs(tmp_path: Path) -> None:
    path = tmp_path / "around.duckdb"
    _write_runs(path, 20, seed=13)
    with open_store(path, read_only=False) as con:
        con.execute("DELETE FROM runs WHERE task_class = 'extract'")
    with read_store(path) as con:
        assert not rollup_read.rollups_current(con)
        classes = [c for c in CLASSES if c != "extract"]
        want = {c: frame(con, "SELECT min(started_at)::DATE AS d FROM runs WHERE max_workers "
                            "IS NOT NULL AND task_class = $c", {"c": c})["d"][0] for c in classes}
        assert percentiles.cap_start_dates(con, classes) == want
        assert {c: percentiles.cap_start_date(con, c) for c in classes} == want
        assert any(day is not None for day in want.values())


def test_the_cache_version_moves_with_a_write_and_not_with_a_read(tmp_path: Path) -> None:
    path = tmp_path / "version.duckdb"
    _write_runs(path, 5, seed=17)
    first = queries.store_version(path)
    assert first[0] == 1  # read from the store, not the file
    with read_store(path) as con:
        con.execute("SELECT count(*) FROM runs").fetchall()
    assert queries.store_version(path) == first
    with open_store(path, read_only=False) as con:
        con.execute("CHECKPOINT")  # the file changes, what the pages show does not
    assert queries.store_version(path) == first
    _write_runs(path, 1, seed=19)
    assert queries.store_version(path) != first


def test_only_windows_read_back_from_now_add_the_clock_to_the_key() -> None:
    assert not Filters().moves_with_clock()
    assert not Filters(since="2026-11-01", until="2026-11-08").moves_with_clock()
    assert Filters(since="7d").moves_with_clock()
    assert Filters(since="2026-11-01", until="today").moves_with_clock()
    assert not Filters(since="not a date").moves_with_clock()
    assert queries.clock_part((Filters(),), now_s=1e9) == ()
    moving = (Filters(since="24h"),)
    assert queries.clock_part(moving, now_s=1e9) != queries.clock_part(
        moving, now_s=1e9 + queries.RELATIVE_WINDOW_S)


@pytest.mark.parametrize("window", WINDOWS[:4], ids=str)
@pytest.mark.parametrize("classes", [(), ("research", "extract")])
@pytest.mark.parametrize(("offset", "limit"), [(0, 5), (0, 50), (10, 20), (95, 50)])
def test_a_runs_page_read_through_the_rollups_is_the_same_page(
    store: Path, window: Window, classes: tuple[str, ...], offset: int, limit: int
) -> None:
    query = RunQuery(window=window, task_classes=classes)
    with read_store(store) as con:
        got = runs_page(con, query, offset=offset, limit=limit)
        everything = runs_page(con, query, offset=0, limit=10_000)  # older than any floor
    assert got.equals(everything.slice(offset, limit))
