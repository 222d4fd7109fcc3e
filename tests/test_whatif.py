"""What-if over a window: per-class figures against a hand computation (numpy percentiles)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from replay_store import MINI, Call, Sub, hand_run

from cliffwatch.analytics import whatif_rows
from cliffwatch.analytics.errors import UnknownTaskClassError
from cliffwatch.analytics.estimates import load_estimates
from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.whatif import (
    CLASS_COLUMNS,
    COUNTS_NOTE,
    RUN_COLUMNS,
    what_if,
    what_ifs,
    window_days,
)
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.testing import ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

# research: sub-tasks per run and the plan's cost; worker i of a run costs 0.001 * (i + 1)
RESEARCH = [(2, 0.010), (3, 0.011), (5, 0.012), (4, 0.009), (12, 0.020), (7, 0.015),
            (1, 0.008), (20, 0.030), (3, 0.010), (6, 0.013)]
EXTRACT = [(1, 0.002), (2, 0.003), (1, 0.002)]
SYNTH_USD = 0.002
CAP = 4
SINCE, UNTIL = "2026-11-01", "2026-11-11"


def _cost(subtasks: int, plan_usd: float) -> float:
    return plan_usd + sum(0.001 * (i + 1) for i in range(subtasks)) + SYNTH_USD


def _runs(task_class: str, rows: list[tuple[int, float]], day0: int, prefix: str) -> list:
    records = []
    for n, (subtasks, plan_usd) in enumerate(rows):
        records += hand_run(
            f"{prefix}{n:02x}".ljust(32, "0"), task_class=task_class,
            plan=[Sub(f"s{i}", MINI) for i in range(subtasks)],
            calls=[Call(i, 0.001 * (i + 1)) for i in range(subtasks)],
            plan_cost_usd=plan_usd, synthesis=[(SYNTH_USD, 500)],
            started_ns=ns_at(f"2026-11-{day0 + n // 2:02d}T{8 + n % 2:02d}:00:00"),
        )
    return records


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("whatif") / "w.duckdb"
    records = _runs("research", RESEARCH, 1, "a1")
    records += _runs("extract", EXTRACT, 2, "e1")
    # outside the window: must not count
    records += hand_run("f" * 32, plan=[Sub("x", MINI)] * 30,
                        calls=[Call(i, 0.5) for i in range(30)],
                        started_ns=ns_at("2026-12-01T00:00:00"))
    # recorded rejected under cap 2: under cap 8 its sub-tasks would run (estimated)
    records += hand_run("9" * 32, plan=[Sub(f"r{i}", MINI) for i in range(5)], synthesis=(),
                        status="rejected", breach="cap", max_workers=2, dispatched=0,
                        plan_cost_usd=0.01, started_ns=ns_at("2026-11-09T00:00:00"))
    write_spans(path, records)
    return path


def _what(path: Path, override: LimitsOverride, **kwargs):  # noqa: ANN003, ANN202
    with read_store(path) as con:
        return what_if(con, override, Window.parse(SINCE, UNTIL), **kwargs)


def _redo(cap: int) -> float:
    """The mean cost of the research runs that completed within ``cap`` workers."""
    return float(np.mean([_cost(n, p) for n, p in RESEARCH if n <= cap]))


def test_per_class_figures_match_a_hand_computation(store: Path) -> None:
    what = _what(store, LimitsOverride.parse(CAP), task_class="research")
    before = [_cost(n, p) for n, p in RESEARCH] + [0.01]  # + the recorded rejected run
    # a run rejected at cap 4 costs its plan, and its task redone within the cap
    after = [_cost(n, p) if n <= CAP else p + _redo(CAP) for n, p in RESEARCH]
    # the rejected run (5 sub-tasks) stays rejected at cap 4: it costs its plan, and its
    # task was left undone as recorded too (no redo on either side)
    after.append(0.01)
    over = sum(1 for n, _ in RESEARCH if n > CAP)
    row = what.by_class.row(0, named=True)
    assert what.by_class.columns == list(CLASS_COLUMNS)
    assert row["task_class"] == "research" and row["runs"] == len(before)
    assert row["runs_affected"] == over
    # of the affected runs only: the run rejected as recorded, and again, is not counted
    assert row["runs_rejected"] == row["tasks_not_completed"] == over
    assert row["runs_truncated"] == 0 and row["runs_estimated"] == over
    assert row["redo_usd"] == pytest.approx(over * _redo(CAP))
    assert row["estimated_usd"] == pytest.approx(over * _redo(CAP))
    assert row["tasks_redo_unknown"] == 0
    assert row["spend_before_usd"] == pytest.approx(sum(before))
    assert row["spend_after_usd"] == pytest.approx(sum(after))
    for q, name in ((50, "p50"), (95, "p95"), (99, "p99")):
        assert row[f"{name}_before_usd"] == pytest.approx(np.percentile(before, q))
        assert row[f"{name}_after_usd"] == pytest.approx(np.percentile(after, q))
    saving = sum(before) - sum(after)
    assert row["saving_usd"] == pytest.approx(saving)
    assert row["saving_pct"] == pytest.approx(100 * saving / sum(before))
    assert what.window_days == pytest.approx(10.0)
    assert row["annual_saving_usd"] == pytest.approx(saving * 365 / 10)
    assert row["limits"] == "cap 4, ceiling as recorded, policy as recorded"


def test_every_run_of_the_window_is_replayed_once(store: Path) -> None:
    what = _what(store, LimitsOverride.parse(CAP))
    assert what.runs.columns == list(RUN_COLUMNS)
    assert what.runs.height == len(RESEARCH) + len(EXTRACT) + 1
    assert "f" * 32 not in what.runs["run_id"].to_list()
    extract = what.by_class.filter(pl.col("task_class") == "extract").row(0, named=True)
    assert extract["runs_affected"] == 0 and extract["saving_usd"] == 0.0
    totals = what.totals()
    assert totals["runs"] == what.runs.height
    assert totals["saving_usd"] == pytest.approx(what.by_class["saving_usd"].sum())
    assert what.elapsed_s >= what.load_s > 0


def test_truncate_counts_truncated_runs(store: Path) -> None:
    what = _what(store, LimitsOverride.parse(CAP, policy="truncate"), task_class="research")
    row = what.by_class.row(0, named=True)
    # every run over the cap, and the recorded rejected one (5 sub-tasks), is truncated
    assert row["runs_truncated"] == sum(1 for n, _ in RESEARCH if n > CAP) + 1
    assert row["runs_rejected"] == 0
    twelve = what.runs.filter(pl.col("run_id") == "a104".ljust(32, "0")).row(0, named=True)
    assert (twelve["dispatched_before"], twelve["dispatched_after"]) == (12, CAP)
    assert twelve["status_after"] == "ok"


def test_raising_a_cap_runs_what_was_rejected_and_says_it_is_estimated(store: Path) -> None:
    what = _what(store, LimitsOverride.parse(8), task_class="research")
    row = what.by_class.row(0, named=True)
    # the recorded rejected run, and the two runs over 8 redone within the cap
    assert row["runs_estimated"] == 3 and row["tasks_not_completed"] == 2
    rejected = what.runs.filter(pl.col("run_id") == "9" * 32).row(0, named=True)
    assert (rejected["status_before"], rejected["status_after"]) == ("rejected", "ok")
    assert rejected["estimated_usd"] > 0 and rejected["redo_usd"] == 0.0
    assert rejected["cost_after_usd"] > rejected["cost_before_usd"]
    assert row["estimated_usd"] == pytest.approx(rejected["estimated_usd"] + 2 * _redo(8))


@pytest.mark.parametrize("given_estimates", [True, False])
def test_a_summary_has_the_figures_of_the_full_rows_and_no_rows(
    store: Path, given_estimates: bool
) -> None:
    # a report's what-if: only its per-class figures, its rows never kept (issue 11)
    variants = [LimitsOverride.parse(CAP), LimitsOverride.parse(CAP)]
    with read_store(store) as con:
        estimates = load_estimates(con) if given_estimates else None
        full, brief = what_ifs(con, variants, Window.parse(SINCE, UNTIL),
                               estimates=estimates, summaries=[False, True])
    assert full.runs.height == len(RESEARCH) + len(EXTRACT) + 1
    assert brief.runs.is_empty() and brief.runs.columns == list(RUN_COLUMNS)
    assert brief.window_days == full.window_days
    assert brief.by_class.columns == full.by_class.columns
    for a, b in zip(full.by_class.iter_rows(), brief.by_class.iter_rows(), strict=True):
        assert a == pytest.approx(b)  # floats summed in another order: the last bits


def test_the_python_counterfactual_reads_its_runs_in_batches(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = _what(store, LimitsOverride.parse(CAP), pushdown=False)
    monkeypatch.setattr(whatif_rows, "PY_READ_RUNS", 5)  # the spans read five runs at a time
    monkeypatch.setattr(whatif_rows, "PY_CHUNK_RUNS", 2)  # replayed two at a time
    batched = _what(store, LimitsOverride.parse(CAP), pushdown=False)
    assert whole.runs.height > 2 * 5
    assert batched.runs.equals(whole.runs) and batched.by_class.equals(whole.by_class)


def test_per_class_overrides_leave_other_classes_as_recorded(store: Path) -> None:
    what = _what(store, {"research": LimitsOverride.parse(CAP)})
    by = {r["task_class"]: r for r in what.by_class.iter_rows(named=True)}
    assert by["research"]["runs_affected"] > 0 and by["extract"]["runs_affected"] == 0
    assert by["extract"]["limits"] == "cap as recorded, ceiling as recorded, policy as recorded"
    assert what.to_dict()["limits"].startswith("research: cap 4")


def test_an_unknown_class_is_refused(store: Path) -> None:
    with pytest.raises(UnknownTaskClassError):
        _what(store, LimitsOverride.parse(CAP), task_class="nosuch")


def test_window_days_follow_the_window_then_the_runs(store: Path) -> None:
    first, last = datetime(2026, 11, 1, 8), datetime(2026, 12, 1)  # of every class
    with read_store(store) as con:
        assert window_days(con, Window()) == pytest.approx((last - first).days
                                                           + (last - first).seconds / 86_400)
        assert window_days(con, Window.parse(SINCE), now=datetime(2026, 11, 21)) == 20.0
        assert window_days(con, Window.parse(until="2026-11-05")) == pytest.approx(3 + 16 / 24)
        assert window_days(con, Window.parse(until="2026-10-01")) is None  # no run in it


@pytest.mark.parametrize("until", [None, "2026-11-20"])
def test_a_class_s_yearly_saving_is_the_same_with_and_without_the_class_filter(
    store: Path, until: str | None
) -> None:
    """The year projection is over one window for every class (the runs of every class in
    it), never over the filtered class's own runs."""
    window = Window.parse(until=until)
    with read_store(store) as con:
        cap_1 = LimitsOverride.parse(1, policy="truncate")
        every = what_if(con, cap_1, window)
        extract = what_if(con, cap_1, window, task_class="extract")
        unfiltered = every.by_class.filter(pl.col("task_class") == "extract").row(0, named=True)
    only = extract.by_class.row(0, named=True)
    assert only["saving_usd"] == pytest.approx(unfiltered["saving_usd"]) and only["saving_usd"] > 0
    assert extract.window_days == every.window_days
    assert only["annual_saving_usd"] == pytest.approx(unfiltered["annual_saving_usd"], rel=1e-12)
    assert extract.totals()["annual_saving_usd"] == pytest.approx(only["annual_saving_usd"])


def test_cli_whatif_json_table_and_csv(store: Path) -> None:
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from cliffwatch.cli import app

    runner = CliRunner()
    base = ["whatif", "--max-workers", str(CAP), "--since", SINCE, "--until", UNTIL,
            "--db", str(store)]
    result = runner.invoke(app, [*base, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = _what(store, LimitsOverride.parse(CAP))
    assert data["totals"]["saving_usd"] == pytest.approx(expected.totals()["saving_usd"])
    assert [r["task_class"] for r in data["by_class"]] == ["extract", "research"]
    assert data["window_days"] == pytest.approx(10.0) and data["elapsed_s"] > 0

    table = runner.invoke(app, base)
    assert table.exit_code == 0, table.output
    assert "What-if: cap 4, ceiling as recorded, policy as recorded" in table.stdout
    assert "a year at this window's rate (10.0 days)" in table.stdout
    assert "not completed" in table.stdout
    over = sum(1 for n, _ in RESEARCH if n > CAP)
    flowing = " ".join(table.stdout.split())  # info lines wrap at spaces on a narrow terminal
    assert f"{over} tasks not completed (their redo within the limits" in flowing
    assert f"{COUNTS_NOTE}." in flowing  # as the What-if page and the report say it
    assert "replayed 14 runs in" in table.stdout

    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, [*base, "--format", "csv"]).stdout)))
    assert [r["task_class"] for r in rows] == ["extract", "research"]
    assert list(rows[0]) == list(CLASS_COLUMNS)


def test_a_saving_nothing_can_estimate_is_unknown_and_says_so(store: Path) -> None:
    # Every run costs more than $0.004: each is rejected or cancelled at the ceiling, no run
    # of either class completed within it to estimate the redo from.
    what = _what(store, LimitsOverride.parse(ceiling_usd=0.004))
    recorded_ok = len(RESEARCH) + len(EXTRACT)
    for row in what.by_class.iter_rows(named=True):
        assert row["tasks_redo_unknown"] > 0 and row["saving_usd"] is None
        assert row["spend_after_usd"] is None and row["p50_after_usd"] is None
        assert row["annual_saving_usd"] is None and row["saving_pct"] is None
    totals = what.totals()
    assert totals["tasks_not_completed"] == recorded_ok  # not the run rejected as recorded
    assert totals["tasks_redo_unknown"] == recorded_ok
    assert totals["saving_usd"] is None and totals["spend_after_usd"] is None
    assert "saving unknown" in what.headline()

    from typer.testing import CliRunner

    from cliffwatch.cli import app

    result = CliRunner().invoke(app, ["whatif", "--ceiling-usd", "0.004", "--since", SINCE,
                                      "--until", UNTIL, "--db", str(store)])
    assert result.exit_code == 0, result.output
    assert "-> unknown" in result.stdout
    flowing = " ".join(result.stdout.split())  # info lines wrap at spaces
    assert f"{recorded_ok} tasks left undone have no run of their class" in flowing


def test_cli_whatif_needs_a_limit(store: Path) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app

    result = CliRunner().invoke(app, ["whatif", "--db", str(store)])
    assert result.exit_code == 2
    assert "give at least one of --max-workers, --ceiling-usd, --policy" in result.stderr
