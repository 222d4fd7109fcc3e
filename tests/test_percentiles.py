"""Cost percentiles against numpy over the raw run costs; windows; by model and by role."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import polars.testing
import pytest

from cliffwatch.analytics import percentiles
from cliffwatch.analytics.errors import UnknownTaskClassError
from cliffwatch.analytics.percentiles import (
    PERCENTILE_COLUMNS,
    cap_start_date,
    cap_start_dates,
    cost_percentiles,
    daily_percentiles,
    model_and_role_percentiles,
    overall_percentiles,
)
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window, WindowError, parse_when
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.testing import llm_call_record, make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

START = datetime(2026, 11, 1, 0, 0)
INTERVAL_H = 3
RESEARCH = np.random.default_rng(11).lognormal(mean=-4.0, sigma=1.1, size=80).tolist()
EXTRACT = np.random.default_rng(12).lognormal(mean=-6.0, sigma=0.6, size=40).tolist()
BREACH_COSTS = [0.004, 0.006]  # two rejected research runs (cap breach): planner spend only
BREACH_AT = [datetime(2026, 11, 2, 1, 30), datetime(2026, 11, 9, 1, 30)]


def _ns(dt: datetime) -> int:
    return ns_at(dt.isoformat())


def _starts(n: int) -> list[datetime]:
    return [START + timedelta(hours=INTERVAL_H * i) for i in range(n)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """research: 80 runs every 3 h from 2026-11-01 (uncapped until the 4th, then cap 8)
    plus 2 cap-breach runs; extract: 40 runs every 3 h, always capped."""
    path = tmp_path_factory.mktemp("pct") / "store.duckdb"
    cap_from = START + timedelta(days=3)
    records: list[SpanRecord] = []
    for i, (cost, at) in enumerate(zip(RESEARCH, _starts(len(RESEARCH)), strict=True)):
        records += make_runs_costing(
            [cost], task_class="research", started_at_ns=_ns(at), seed=1000 + i,
            max_workers=None if at < cap_from else 8,
        )
    records += make_runs_costing(
        EXTRACT, task_class="extract", started_at_ns=_ns(START), interval_s=INTERVAL_H * 3600,
        seed=2,
    )
    for i, (cost, at) in enumerate(zip(BREACH_COSTS, BREACH_AT, strict=True)):
        records += make_run_records(
            task_class="research", worker_cost_usds=[], plan_cost_usd=cost, proposed=47,
            max_workers=8, status="rejected", breach="cap", started_at_ns=_ns(at), seed=90 + i,
        )
    write_spans(path, records)
    return path


def _row(df: pl.DataFrame, key: str, value: str) -> dict:
    rows = df.filter(pl.col(key) == value).to_dicts()
    assert len(rows) == 1, df
    return rows[0]


def _check_against_numpy(row: dict, costs: list[float], breaches: int) -> None:
    p50, p95, p99 = np.percentile(costs, [50, 95, 99])  # numpy default: 'linear'
    assert row["runs"] == len(costs)
    assert row["total_usd"] == pytest.approx(sum(costs), rel=1e-9)
    assert row["mean_usd"] == pytest.approx(np.mean(costs), rel=1e-9)
    assert row["p50_usd"] == pytest.approx(p50, rel=1e-9)
    assert row["p95_usd"] == pytest.approx(p95, rel=1e-9)
    assert row["p99_usd"] == pytest.approx(p99, rel=1e-9)
    assert row["max_usd"] == pytest.approx(max(costs), rel=1e-9)
    assert row["cliff_ratio"] == pytest.approx(p99 / p50, rel=1e-9)
    assert row["breaches"] == breaches


def test_by_task_class_matches_numpy_over_every_run(store) -> None:
    with read_store(store) as con:
        df = cost_percentiles(con)
    assert df.columns == ["task_class", *PERCENTILE_COLUMNS]
    assert df["task_class"].to_list() == ["extract", "research"]
    # Rejected runs count too: the planner call they made is real spend.
    _check_against_numpy(_row(df, "task_class", "research"), RESEARCH + BREACH_COSTS, 2)
    _check_against_numpy(_row(df, "task_class", "extract"), EXTRACT, 0)


def test_task_class_filter_and_unknown_class(store) -> None:
    with read_store(store) as con:
        df = cost_percentiles(con, task_class="extract")
        assert df["task_class"].to_list() == ["extract"]
        with pytest.raises(UnknownTaskClassError, match="known: extract, research"):
            cost_percentiles(con, task_class="nope")


def test_window_is_since_inclusive_until_exclusive(store) -> None:
    # Runs start exactly on the hour every 3 h, so both ends fall on a run's start.
    since, until = START + timedelta(hours=24), START + timedelta(hours=120)
    starts = _starts(len(RESEARCH))
    inside = [c for c, at in zip(RESEARCH, starts, strict=True) if since <= at < until]
    inside += [c for c, at in zip(BREACH_COSTS, BREACH_AT, strict=True) if since <= at < until]
    assert since in starts and until in starts  # the boundaries are tested, not skipped
    with read_store(store) as con:
        df = cost_percentiles(con, Window(since, until), task_class="research")
    _check_against_numpy(_row(df, "task_class", "research"), inside, 1)


def test_window_parsed_from_strings_and_empty_window(store) -> None:
    with read_store(store) as con:
        df = cost_percentiles(con, Window.parse("2026-11-02", "2026-11-03"), task_class="extract")
        day2 = [
            c for c, at in zip(EXTRACT, _starts(len(EXTRACT)), strict=True)
            if at.date() == date(2026, 11, 2)
        ]
        _check_against_numpy(_row(df, "task_class", "extract"), day2, 0)
        empty = cost_percentiles(con, Window.parse("2030-01-01"))
    assert empty.is_empty()
    assert empty.columns == ["task_class", *PERCENTILE_COLUMNS]


def test_overall_row_is_over_every_run_of_the_selection(store) -> None:
    # Percentiles do not add up across classes: the overall row is over the raw runs.
    every = RESEARCH + BREACH_COSTS + EXTRACT
    with read_store(store) as con:
        overall = overall_percentiles(con)
        both = overall_percentiles(con, task_classes=["extract", "research"])
        one = overall_percentiles(con, task_classes=["extract"])
        by_class = cost_percentiles(con, task_class="extract")
    assert overall.columns == list(PERCENTILE_COLUMNS)
    assert overall.height == 1
    _check_against_numpy(overall.row(0, named=True), every, 2)
    assert both.equals(overall)
    _check_against_numpy(one.row(0, named=True), EXTRACT, 0)
    assert one.equals(by_class.drop("task_class"))  # one class: its row, figure for figure


def test_overall_row_window_unknown_class_and_empty(store) -> None:
    since, until = START + timedelta(hours=24), START + timedelta(hours=120)
    inside = [
        c
        for costs, starts in ((RESEARCH, _starts(len(RESEARCH))),
                              (BREACH_COSTS, BREACH_AT), (EXTRACT, _starts(len(EXTRACT))))
        for c, at in zip(costs, starts, strict=True) if since <= at < until
    ]
    with read_store(store) as con:
        windowed = overall_percentiles(con, Window(since, until))
        with pytest.raises(UnknownTaskClassError, match="'nope'"):
            overall_percentiles(con, task_classes=["extract", "nope"])
        empty = overall_percentiles(con, Window.parse("2030-01-01"))
    _check_against_numpy(windowed.row(0, named=True), inside, 1)
    assert empty.is_empty()
    assert empty.columns == list(PERCENTILE_COLUMNS)


def test_by_model_and_role_are_per_run_sums(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each run: plan on gpt-4o, 2 workers on gpt-4o-mini, synthesis on gpt-4o-mini.
    rng = np.random.default_rng(5)
    runs = [(float(rng.uniform(0.001, 0.01)), rng.uniform(0.001, 0.05, 2).tolist(),
             float(rng.uniform(0.0001, 0.001))) for _ in range(30)]
    records: list[SpanRecord] = []
    for i, (plan, workers, synth) in enumerate(runs):
        records += make_run_records(
            task_class="research", plan_cost_usd=plan, worker_cost_usds=workers,
            synthesis_cost_usd=synth, planner_model="sim/gpt-4o",
            worker_model="sim/gpt-4o-mini", synthesis_model="sim/gpt-4o-mini",
            started_at_ns=ns_at("2026-11-01T00:00:00") + i * 60 * 10**9, seed=i,
            breach="cap" if i < 3 else None,
        )
    path = tmp_path / "m.duckdb"
    write_spans(path, records)
    with read_store(path) as con:
        # each read on its own, and both from one read (the report's)
        pairs = [(cost_percentiles(con, by="model"), cost_percentiles(con, by="role")),
                 model_and_role_percentiles(con)]
        windowed = model_and_role_percentiles(
            con, Window(since=parse_when("2026-11-01T00:10:00")))
        # the units grouped by run-id chunks of 7 runs (5 chunks): the same figures
        monkeypatch.setattr(percentiles, "UNIT_CHUNK_RUNS", 7)
        pairs.append(model_and_role_percentiles(con))
    for by_model, by_role in pairs:
        assert by_model.columns == ["model", *PERCENTILE_COLUMNS]
        assert by_role.columns == ["role", *PERCENTILE_COLUMNS]
        _check_against_numpy(_row(by_model, "model", "sim/gpt-4o"), [p for p, _, _ in runs], 3)
        _check_against_numpy(
            _row(by_model, "model", "sim/gpt-4o-mini"), [sum(w) + s for _, w, s in runs], 3
        )
        assert by_model["model"].to_list() == ["sim/gpt-4o", "sim/gpt-4o-mini"]
        assert by_role["role"].to_list() == ["plan", "synthesis", "worker"]
        _check_against_numpy(_row(by_role, "role", "worker"), [sum(w) for _, w, _ in runs], 3)
        _check_against_numpy(_row(by_role, "role", "synthesis"), [s for _, _, s in runs], 3)
    # the window's runs only (one a minute from 00:00: the first 10 are before it)
    _check_against_numpy(_row(windowed[1], "role", "plan"), [p for p, _, _ in runs[10:]], 0)


def test_by_model_counts_leaf_calls_only_and_unpriced_calls(tmp_path) -> None:
    # A worker "agent" call (LLM call) wraps two chat calls that repeat its usage: only
    # the two leaves count, as in runs.cost_usd. One more call is unpriced.
    base = make_run_records(
        task_class="research", plan_cost_usd=0.01, worker_cost_usds=[0.02],
        synthesis_cost_usd=None, seed=1,
    )
    worker = next(r for r in base if r.role == "worker")
    leaves = [
        llm_call_record(
            run_id=worker.trace_id, span_id=f"{k:016x}", parent_span_id=worker.span_id,
            role="call", name=f"chat {k}", model="sim/claude-haiku-4-5", cost_usd=cost,
            start_ns=worker.start_time_unix_nano, duration_ms=10, task_class="research",
        )
        for k, cost in ((1, 0.005), (2, 0.007))
    ]
    path = tmp_path / "leaf.duckdb"
    write_spans(path, base + leaves)
    with read_store(path) as con:
        by_model = cost_percentiles(con, by="model")
        by_class = cost_percentiles(con)
        # one read for both: the same units (leaf calls only, the unpriced one counted)
        both_model, _ = model_and_role_percentiles(con)
    pl.testing.assert_frame_equal(both_model, by_model, check_exact=False, rel_tol=1e-12)
    costs = dict(zip(by_model["model"], by_model["total_usd"], strict=True))
    assert costs == pytest.approx(
        {"sim/gpt-4o": 0.01, "sim/claude-haiku-4-5": 0.012, "sim/gpt-4o-mini": 0.0}
    )
    assert "sim/gpt-4o-mini" in costs  # the unpriced synthesis: counted, $0 added
    assert _row(by_model, "model", "sim/gpt-4o-mini")["unpriced_calls"] == 1
    # The unit sums add up to the run's materialised cost: one rule for both.
    assert sum(costs.values()) == pytest.approx(by_class["total_usd"][0], rel=1e-12)
    assert by_class["unpriced_calls"][0] == 1


def test_bad_group_by(store) -> None:
    with read_store(store) as con, pytest.raises(ValueError, match="cannot group by"):
        cost_percentiles(con, by="colour")  # type: ignore[arg-type]


def test_daily_percentiles_match_numpy_per_day(store) -> None:
    with read_store(store) as con:
        daily = daily_percentiles(con, task_class="extract")
        both = daily_percentiles(con, Window.parse("2026-11-03", "2026-11-04"))
    days: dict[date, list[float]] = {}
    for cost, at in zip(EXTRACT, _starts(len(EXTRACT)), strict=True):
        days.setdefault(at.date(), []).append(cost)
    assert daily["day"].to_list() == sorted(days)
    for row in daily.iter_rows(named=True):
        p50, p95, p99 = np.percentile(days[row["day"]], [50, 95, 99])
        assert row["runs"] == len(days[row["day"]])
        assert (row["p50_usd"], row["p95_usd"], row["p99_usd"]) == pytest.approx(
            (p50, p95, p99), rel=1e-9
        )
    assert both["task_class"].to_list() == ["extract", "research"]
    assert both["day"].to_list() == [date(2026, 11, 3)] * 2


def test_cap_start_date_is_first_day_with_a_cap(store) -> None:
    with read_store(store) as con:
        assert cap_start_date(con, "research") == date(2026, 11, 2)  # the breach run, capped
        assert cap_start_date(con, "extract") == date(2026, 11, 1)
        assert cap_start_date(con) == date(2026, 11, 1)
        with pytest.raises(UnknownTaskClassError):
            cap_start_date(con, "nope")


def test_cap_start_date_none_without_caps(tmp_path) -> None:
    path = tmp_path / "nocap.duckdb"
    write_spans(path, make_runs_costing([0.01, 0.02], max_workers=None))
    with read_store(path) as con:
        assert cap_start_date(con) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", datetime(2026, 11, 1)),
        ("2026-11-01T12:30", datetime(2026, 11, 1, 12, 30)),
        ("2026-11-01 12:30:15", datetime(2026, 11, 1, 12, 30, 15)),
        ("2026-11-01T12:30+02:00", datetime(2026, 11, 1, 10, 30)),
        ("2026-11-01T12:30Z", datetime(2026, 11, 1, 12, 30)),
        ("7d", datetime(2026, 11, 3, 6)),
        ("24h", datetime(2026, 11, 9, 6)),
        ("90m", datetime(2026, 11, 10, 4, 30)),
        ("2w", datetime(2026, 10, 27, 6)),
        ("today", datetime(2026, 11, 10)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, now=datetime(2026, 11, 10, 6)) == expected


@pytest.mark.parametrize("text", ["yesterday", "7x", "2026-13-01", "", "-3d"])
def test_parse_when_rejects_garbage(text: str) -> None:
    with pytest.raises(WindowError, match="cannot read"):
        parse_when(text)


def test_window_rejects_empty_range() -> None:
    with pytest.raises(WindowError, match="empty window"):
        Window.parse("2026-11-05", "2026-11-01")
    assert Window(date(2026, 11, 1)).since == datetime(2026, 11, 1)


def test_an_empty_window_names_its_ends_to_the_second() -> None:
    """Relative ends (``30m``) carry microseconds, which the message left in."""
    with pytest.raises(WindowError) as caught:
        Window(datetime(2026, 11, 5, 10, 30, 0, 123456), datetime(2026, 11, 5, 10, 20, 5, 9))
    assert str(caught.value) == ("empty window: since 2026-11-05 10:30:00 UTC is not before "
                                 "until 2026-11-05 10:20:05 UTC")


def test_cap_start_dates_are_each_class_cap_start_date(store) -> None:
    with read_store(store) as con:
        found = con.execute("SELECT DISTINCT task_class FROM runs").fetchall()
        classes = sorted(r[0] for r in found)
        assert cap_start_dates(con, classes) == {c: cap_start_date(con, c) for c in classes}
        assert cap_start_dates(con, []) == {}
        with pytest.raises(UnknownTaskClassError):
            cap_start_dates(con, ["research", "nope"])


def test_cap_start_dates_none_without_caps(tmp_path) -> None:
    path = tmp_path / "nocap.duckdb"
    write_spans(path, make_runs_costing([0.01, 0.02], max_workers=None))
    with read_store(path) as con:
        classes = [r[0] for r in con.execute("SELECT DISTINCT task_class FROM runs").fetchall()]
        assert cap_start_dates(con, classes) == dict.fromkeys(classes)
