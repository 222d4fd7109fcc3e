"""The analytics behind the Runs, Compare and Alerts pages and the per-run percentiles,
on the dashboard's fixture store (tests/dashboard_store.py, written through the real write
path). Every figure is checked against an independent computation: Python filtering and
sorting of the raw ``runs`` rows, numpy.percentile (linear, its default) over them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest
from dashboard_store import StoreFixture, build_store

from cliffwatch.analytics.alert_view import alert_deliveries, alert_rules, delivery_counts
from cliffwatch.analytics.errors import UnknownTaskClassError
from cliffwatch.analytics.run_measures import run_measure_percentiles
from cliffwatch.analytics.run_table import (
    RunQuery,
    RunQueryError,
    count_runs,
    run_statuses,
    runs_page,
)
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.analytics.window_compare import compare_windows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> StoreFixture:
    return build_store(tmp_path_factory.mktemp("pages") / "cliffwatch.duckdb")


@pytest.fixture
def con(store: StoreFixture) -> Iterator[duckdb.DuckDBPyConnection]:
    with read_store(store.path) as connection:
        yield connection


def _raw_runs(path: Path) -> list[dict]:
    with duckdb.connect(str(path), read_only=True) as raw:
        cur = raw.execute("SELECT * FROM runs")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_paging_covers_every_run_once_in_order(con, store: StoreFixture) -> None:
    raw = _raw_runs(store.path)
    query = RunQuery(sort_by="cost_usd", descending=True)
    assert count_runs(con, query) == len(raw) == 67
    seen = []
    for offset in range(0, 80, 10):
        seen += runs_page(con, query, offset=offset, limit=10)["run_id"].to_list()
    expected = [r["run_id"] for r in sorted(raw, key=lambda r: (r["cost_usd"], r["run_id"]),
                                            reverse=True)]
    assert seen == expected
    assert runs_page(con, query, offset=67, limit=10).is_empty()


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        (RunQuery(breach="any"), lambda r: r["breach"] is not None),
        (RunQuery(breach="none"), lambda r: r["breach"] is None),
        (RunQuery(breach="ceiling"), lambda r: r["breach"] == "ceiling"),
        (RunQuery(statuses=("rejected", "cancelled")),
         lambda r: r["status"] in ("rejected", "cancelled")),
        (RunQuery(min_cost_usd=0.01, max_cost_usd=0.5),
         lambda r: 0.01 <= r["cost_usd"] <= 0.5),
        (RunQuery(task_classes=("extract",),
                  window=Window(datetime(2026, 11, 3), datetime(2026, 11, 5))),
         lambda r: r["task_class"] == "extract"
         and datetime(2026, 11, 3) <= r["started_at"] < datetime(2026, 11, 5)),
    ],
)
def test_filters_match_python(con, store: StoreFixture, query: RunQuery, keep) -> None:
    raw = [r for r in _raw_runs(store.path) if keep(r)]
    assert raw, "the fixture must have runs this filter keeps"
    assert count_runs(con, query) == len(raw)
    page = runs_page(con, query, limit=1_000)
    expected = sorted(raw, key=lambda r: (r["started_at"], r["run_id"]), reverse=True)
    assert page["run_id"].to_list() == [r["run_id"] for r in expected]


def test_ascending_sort_by_duration_and_statuses(con, store: StoreFixture) -> None:
    raw = _raw_runs(store.path)
    page = runs_page(con, RunQuery(sort_by="duration_ms", descending=False), limit=5)
    expected = sorted(raw, key=lambda r: (r["duration_ms"], r["run_id"]))[:5]
    assert page["run_id"].to_list() == [r["run_id"] for r in expected]
    assert run_statuses(con) == sorted({r["status"] for r in raw})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (RunQuery(sort_by="cost_usd; DROP TABLE runs"), "cannot sort by"),
        (RunQuery(breach="sometimes"), "unknown breach filter"),
        (RunQuery(min_cost_usd=2, max_cost_usd=1), "empty cost range"),
    ],
)
def test_bad_queries_are_one_line_errors(con, query: RunQuery, message: str) -> None:
    with pytest.raises(RunQueryError, match=message):
        runs_page(con, query)


def test_unknown_class_is_named(con) -> None:
    with pytest.raises(UnknownTaskClassError):
        count_runs(con, RunQuery(task_classes=("nope",)))


def test_run_measures_match_numpy(con, store: StoreFixture) -> None:
    raw = _raw_runs(store.path)
    stats = run_measure_percentiles(con)
    assert stats["task_class"].to_list() == ["extract", "research", None]
    values = {
        "cost_usd": lambda r: r["cost_usd"],
        "duration_ms": lambda r: r["duration_ms"],
        "tokens": lambda r: r["input_tokens"] + r["output_tokens"],
        "llm_calls": lambda r: r["llm_calls"],
    }
    for row in stats.iter_rows(named=True):
        runs = [r for r in raw if row["task_class"] in (None, r["task_class"])]
        assert row["runs"] == len(runs)
        for measure, pick in values.items():
            expected = np.percentile([pick(r) for r in runs], [50, 95, 99])
            got = [row[f"{measure}_p{q}"] for q in (50, 95, 99)]
            assert got == pytest.approx(expected, rel=1e-9), measure
    # The research tail shows in tokens too: P99 far above P50.
    research = stats.row(1, named=True)
    assert research["tokens_p99"] > 10 * research["tokens_p50"]


def test_run_measures_of_a_selection_and_of_nothing(con, store: StoreFixture) -> None:
    stats = run_measure_percentiles(con, task_classes=["extract"])
    assert stats["task_class"].to_list() == ["extract", None]
    assert stats["cost_usd_p50"][0] == stats["cost_usd_p50"][1] == pytest.approx(
        np.percentile(store.costs_usd["extract"], 50), rel=1e-9)
    assert run_measure_percentiles(con, Window(since=datetime(2030, 1, 1))).is_empty()


def test_compare_windows_matches_numpy(con, store: StoreFixture) -> None:
    raw = _raw_runs(store.path)
    before = Window(datetime(2026, 11, 1), datetime(2026, 11, 6))
    after = Window(since=datetime(2026, 11, 6))
    table = compare_windows(con, before, after)
    got = {(r["task_class"], r["measure"]): r for r in table.iter_rows(named=True)}
    assert len(got) == table.height == 3 * 6
    for task_class in ("extract", "research", None):
        sides = {}
        for name, window in (("before", before), ("after", after)):
            costs = [r["cost_usd"] for r in raw
                     if task_class in (None, r["task_class"])
                     and window.since <= r["started_at"]
                     and (window.until is None or r["started_at"] < window.until)]
            p50, p95, p99 = np.percentile(costs, [50, 95, 99])
            sides[name] = {"runs": len(costs), "spend_usd": sum(costs), "p50_usd": p50,
                           "p95_usd": p95, "p99_usd": p99, "cliff_ratio": p99 / p50}
        for measure, b in sides["before"].items():
            row = got[(task_class, measure)]
            a = sides["after"][measure]
            assert row["before"] == pytest.approx(b, rel=1e-9)
            assert row["after"] == pytest.approx(a, rel=1e-9)
            assert row["change"] == pytest.approx(a - b, rel=1e-9, abs=1e-12)
            assert row["change_pct"] == pytest.approx(100 * (a - b) / b, rel=1e-9)
    # The cap came in on the 6th: research's cliff ratio falls after it.
    assert got[("research", "cliff_ratio")]["change"] < -10


def test_compare_a_class_missing_from_one_window(con) -> None:
    # research runs every 4 h from 00:30, extract every 8 h from 02:00: Nov 7 12:00-13:00
    # holds one research run (12:30) and no extract run.
    before = Window(datetime(2026, 11, 1), datetime(2026, 11, 2))
    after = Window(datetime(2026, 11, 7, 12), datetime(2026, 11, 7, 13))
    table = compare_windows(con, before, after)
    extract = table.filter(table["task_class"] == "extract")
    assert extract["after"].is_null().all() and extract["change"].is_null().all()
    assert extract.filter(extract["measure"] == "runs")["before"].item() > 0
    research_runs = table.filter((table["task_class"] == "research")
                                 & (table["measure"] == "runs"))
    assert research_runs["after"].item() == 1


def test_alerts_read_through_analytics(con, monkeypatch: pytest.MonkeyPatch) -> None:
    found = alert_deliveries(con)
    assert sorted(found["kind"]) == ["cap_breach", "cost_ceiling"] + ["runaway"] * 4
    assert delivery_counts(con) == {"no_webhook": 6}
    monkeypatch.setenv("CLIFFWATCH_WEBHOOK_URLS", "https://hooks.example.com/T000/secret-path")
    monkeypatch.setenv("CLIFFWATCH_ALERT_DAILY_SPEND_USD", "12.5")
    monkeypatch.setenv("CLIFFWATCH_ALERT_BREACHES_PER_HOUR", "many")
    rules = dict(zip(alert_rules()["setting"], alert_rules()["value"], strict=True))
    assert rules["CLIFFWATCH_WEBHOOK_URLS"] == "https://hooks.example.com/…"
    assert "secret" not in " ".join(rules.values())
    assert rules["CLIFFWATCH_ALERT_DAILY_SPEND_USD"] == "above $12.50"
    assert rules["CLIFFWATCH_ALERT_BREACHES_PER_HOUR"].startswith("cannot be read")
