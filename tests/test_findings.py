"""Findings: each anti-pattern found in a real store built with exactly known costs.

Percentiles are checked against numpy over the raw run costs, re-pricing against
litellm's bundled map by hand, savings against the what-if (analytics.whatif, the one
counterfactual) and against what the fix removes at least.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import polars.testing
import pytest

from cliffwatch import settings
from cliffwatch.analytics.errors import UnknownTaskClassError
from cliffwatch.analytics.findings import (
    EXAMPLE_RUNS,
    FINDING_COLUMNS,
    FINDING_KINDS,
    Thresholds,
    _bare,
    _bare_expr,
    _examples,
    find_findings,
    findings_and_what_if,
    findings_records,
)
from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.whatif import what_if
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import CapPolicy
from cliffwatch.telemetry.pricing import import_litellm
from cliffwatch.telemetry.testing import make_run_records, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

DAY_NS = 86_400 * 10**9
WINDOW = Window(datetime(2026, 11, 1), datetime(2026, 11, 11))  # 10 days
YEAR_FACTOR = 365.0 / 10.0


def at(day: int, hour: int = 9) -> int:
    return ns_at(f"2026-11-{day:02d}T{hour:02d}:00:00")


def write(db: Path, *runs: list) -> None:
    write_spans(db, [span for run in runs for span in run])


def findings(db: Path, **kwargs: Any) -> pl.DataFrame:
    with read_store(db) as con:
        return find_findings(con, kwargs.pop("window", WINDOW), **kwargs)


def one(df: pl.DataFrame, kind: str, task_class: str) -> dict[str, Any]:
    rows = df.filter((pl.col("kind") == kind) & (pl.col("task_class") == task_class))
    assert rows.height == 1, df.select("kind", "task_class")
    row = rows.row(0, named=True)
    row["evidence"] = json.loads(row["evidence"])
    return row


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "findings.duckdb"


def test_implicit_max_workers_compares_the_tail_and_prices_the_cap(db: Path) -> None:
    uncapped = [make_run_records(seed=i, max_workers=None, started_at_ns=at(2, i % 20),
                                 worker_cost_usds=[0.01] * 3) for i in range(10)]
    runaway = [make_run_records(seed=100 + i, max_workers=None, started_at_ns=at(3, i),
                                worker_cost_usds=[0.01] * 12) for i in range(2)]
    capped = [make_run_records(seed=200 + i, max_workers=8, started_at_ns=at(6, i % 20),
                               worker_cost_usds=[0.01] * 4) for i in range(10)]
    write(db, *uncapped, *runaway, *capped)
    found = one(findings(db), "implicit_max_workers", "research")
    costs = [0.001 + 0.03 + 0.0005] * 10 + [0.001 + 0.12 + 0.0005] * 2
    p50, p95, p99 = np.percentile(costs, [50, 95, 99])
    tail = found["evidence"]["uncapped"]
    assert (tail["runs"], tail["max_proposed"], tail["runs_over_cap"]) == (12, 12, 2)
    assert (tail["p50_usd"], tail["p95_usd"], tail["p99_usd"]) == pytest.approx(
        (p50, p95, p99), rel=1e-12)
    assert tail["cliff_ratio"] == pytest.approx(p99 / p50, rel=1e-12)
    assert found["evidence"]["capped_same_class"]["runs"] == 10
    assert found["runs"] == 12 and found["cost_usd"] == pytest.approx(sum(costs), rel=1e-12)
    assert found["still_present"] is False  # the newest runs are capped
    # the saving is the what-if's (cap 8, truncate) over these runs, and at least the
    # four dropped workers of each runaway
    with read_store(db) as con:
        replayed = what_if(con, LimitsOverride(max_workers=8, policy=CapPolicy.TRUNCATE),
                           WINDOW).runs
    ids = [r[0].trace_id for r in uncapped + runaway]
    expected = replayed.filter(pl.col("run_id").is_in(ids))["saving_usd"].sum()
    assert found["saving_usd"] == pytest.approx(expected, rel=1e-12)
    assert found["saving_usd"] >= 2 * 4 * 0.01 - 1e-12
    assert found["yearly_saving_usd"] == pytest.approx(found["saving_usd"] * YEAR_FACTOR)
    assert found["evidence"]["what_if"]["runs_with_fewer_workers"] == 2
    assert runaway[0][0].trace_id in found["evidence"]["run_ids"][:2]


def test_a_class_capped_above_eight(db: Path) -> None:
    runs = [make_run_records(seed=i, task_class="wide", max_workers=12,
                             started_at_ns=at(2, i), worker_cost_usds=[0.01] * 11)
            for i in range(3)]
    write(db, *runs)
    found = one(findings(db, kinds=["cap_above_safe_maximum"]), "cap_above_safe_maximum", "wide")
    assert found["evidence"]["caps"] == [12]
    assert found["still_present"] is True
    assert found["saving_usd"] >= 3 * 3 * 0.01 - 1e-12  # three workers past 8, three runs


def test_no_cost_ceiling_names_the_what_if_ceiling(db: Path) -> None:
    costs = [0.01] * 9 + [0.5]
    runs = [make_run_records(seed=i, task_class="open", started_at_ns=at(4, i),
                             worker_cost_usds=[c - 0.0015], ceiling_usd=None)
            for i, c in enumerate(costs)]
    write(db, *runs)
    found = one(findings(db), "no_cost_ceiling", "open")
    p50 = float(np.percentile(costs, 50))
    assert found["evidence"]["class_p50_usd"] == pytest.approx(p50, rel=1e-12)
    assert found["evidence"]["what_if"]["ceiling_usd"] == pytest.approx(10 * p50, rel=1e-12)
    assert found["evidence"]["runs_over_ceiling"] == 1
    with read_store(db) as con:
        replayed = what_if(con, {"open": LimitsOverride(ceiling_usd=10 * p50)}, WINDOW).runs
    assert found["saving_usd"] == pytest.approx(replayed["saving_usd"].sum(), rel=1e-12)
    # The runaway's one worker is paid before spend crosses the ceiling; the run is then
    # cancelled before synthesis, its task undone: it costs its plan and worker, plus the
    # task redone within the ceiling (the mean of the class's runs that completed under
    # it, the nine $0.01 runs). The ceiling saves synthesis and loses a redo.
    spent = 0.001 + (0.5 - 0.0015)
    assert found["saving_usd"] == pytest.approx(0.5 - (spent + 0.01), rel=1e-9)
    assert found["tasks_not_completed"] == found["evidence"]["what_if"]["tasks_not_completed"] == 1
    assert found["evidence"]["what_if"]["redo_usd"] == pytest.approx(0.01, rel=1e-9)
    assert "redone within them" in found["basis"]


def test_the_cost_cliff_needs_enough_runs_and_a_ratio_over_ten(db: Path) -> None:
    cliff = [0.01] * 27 + [0.2, 0.5, 1.0]
    write(db, *[make_run_records(seed=i, task_class="cliff", started_at_ns=at(5, 0) + i * 10**12,
                                 worker_cost_usds=[c - 0.0015], ceiling_usd=5.0)
                for i, c in enumerate(cliff)])
    write(db, *[make_run_records(seed=100 + i, task_class="few", started_at_ns=at(5, i),
                                 worker_cost_usds=[c]) for i, c in enumerate([0.01] * 9 + [1])])
    df = findings(db, kinds=["cost_cliff"])
    assert df["task_class"].to_list() == ["cliff"]
    found = one(df, "cost_cliff", "cliff")
    p50, p99 = np.percentile(cliff, [50, 99])
    assert found["evidence"]["cliff_ratio"] == pytest.approx(p99 / p50, rel=1e-9)
    # the 5 USD ceiling is looser than 10 x P50: the three runs over it are cancelled
    # after their one worker (synthesis saved, $0.0005 each) and redone within it (the
    # mean of the 27 runs at $0.01)
    assert found["tasks_not_completed"] == 3
    assert found["saving_usd"] == pytest.approx(3 * (0.0005 - 0.01), rel=1e-9)


def test_synthesis_on_the_planner_model_is_repriced_on_the_worker_model(db: Path) -> None:
    runs = [make_run_records(seed=i, task_class="fan", started_at_ns=at(2, i),
                             planner_model="sim/gpt-4o", synthesis_model="gpt-4o",
                             worker_model="sim/gpt-4o-mini", worker_cost_usds=[0.002] * 5,
                             synthesis_cost_usd=0.02) for i in range(4)]
    fine = make_run_records(seed=50, task_class="ok", started_at_ns=at(2, 10))
    write(db, *runs, fine)
    df = findings(db, kinds=["synthesis_on_planner_model"])
    assert df["task_class"].to_list() == ["fan"]
    found = one(df, "synthesis_on_planner_model", "fan")
    assert found["evidence"]["cheaper_model"] == "sim/gpt-4o-mini"
    synthesis = [s for run in runs for s in run if s.role == "synthesis"]
    entry = import_litellm().model_cost["gpt-4o-mini"]
    repriced = sum(s.input_tokens * entry["input_cost_per_token"]
                   + s.output_tokens * entry["output_cost_per_token"] for s in synthesis)
    assert found["saving_usd"] == pytest.approx(4 * 0.02 - repriced, rel=1e-9)
    assert found["evidence"]["median_fan_out"] == 5


def test_orchestrating_small_tasks_saves_the_overhead(db: Path) -> None:
    small = [make_run_records(seed=i, task_class="extract", started_at_ns=at(3, i),
                              worker_cost_usds=[0.002], plan_cost_usd=0.004,
                              synthesis_cost_usd=0.001) for i in range(6)]
    big = [make_run_records(seed=20 + i, task_class="research", started_at_ns=at(3, i),
                            worker_cost_usds=[0.01] * 4) for i in range(6)]
    write(db, *small, *big)
    df = findings(db, kinds=["orchestrating_small_tasks"])
    assert df["task_class"].to_list() == ["extract"]
    found = one(df, "orchestrating_small_tasks", "extract")
    assert found["saving_usd"] == pytest.approx(6 * (0.004 + 0.001), rel=1e-12)
    assert found["evidence"]["median_plan_workers"] == 1
    assert found["evidence"]["workers_usd"] == pytest.approx(6 * 0.002, rel=1e-12)
    assert found["evidence"]["plan_usd"] == pytest.approx(6 * 0.004, rel=1e-12)
    assert found["evidence"]["synthesis_usd"] == pytest.approx(6 * 0.001, rel=1e-12)
    assert found["evidence"]["critic_usd"] == 0.0
    assert "chain the prompts" in found["title"]
    # the spend is the window's runs' only (runs an hour apart from 00:00; two before)
    later = one(findings(db, kinds=["orchestrating_small_tasks"],
                         window=Window(since=datetime(2026, 11, 3, 2))),
                "orchestrating_small_tasks", "extract")
    assert later["runs"] == 4
    assert later["saving_usd"] == pytest.approx(4 * (0.004 + 0.001), rel=1e-12)
    assert later["evidence"]["workers_usd"] == pytest.approx(4 * 0.002, rel=1e-12)


def test_the_min_workers_threshold_is_a_setting(db: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    write(db, *[make_run_records(seed=i, task_class="four", started_at_ns=at(3, i),
                                 worker_cost_usds=[0.01] * 4) for i in range(3)])
    assert findings(db, kinds=["orchestrating_small_tasks"]).is_empty()
    monkeypatch.setenv(settings.CLIFFWATCH_FINDINGS_MIN_WORKERS, "5")
    assert findings(db, kinds=["orchestrating_small_tasks"])["task_class"].to_list() == ["four"]
    assert Thresholds.from_settings().min_workers == 5


def test_runs_without_a_plan_size_are_not_judged_as_orchestrator_runs(db: Path) -> None:
    records = make_run_records(seed=1, max_workers=None, started_at_ns=at(2))
    root = records[0]
    attrs = {k: v for k, v in json.loads(root.attributes).items()
             if k in (cv.CLIFF_ROLE, cv.CLIFF_TASK_CLASS)}
    write(db, [dataclasses.replace(root, attributes=json.dumps(attrs)), *records[1:]])
    df = findings(db)
    assert not set(df["kind"].to_list()) & {"implicit_max_workers", "no_cost_ceiling",
                                           "orchestrating_small_tasks"}


def test_rows_are_sorted_by_yearly_saving_and_records_are_json(db: Path) -> None:
    write(db, *[make_run_records(seed=i, task_class=c, max_workers=None, started_at_ns=at(2, i),
                                 worker_cost_usds=[0.01] * n)
                for i, (c, n) in enumerate([("a", 12), ("b", 20), ("a", 2), ("b", 2)])])
    df = findings(db)
    assert tuple(df.columns) == FINDING_COLUMNS
    savings = df["yearly_saving_usd"].drop_nulls().to_list()
    assert savings == sorted(savings, reverse=True)
    records = findings_records(df)
    assert json.loads(json.dumps(records)) == records
    assert isinstance(records[0]["evidence"], dict)


def test_an_open_window_without_length_has_no_yearly_figure(db: Path) -> None:
    write(db, make_run_records(seed=1, max_workers=None, started_at_ns=at(2),
                               worker_cost_usds=[0.01] * 12))
    found = one(findings(db, window=Window()), "implicit_max_workers", "research")
    assert found["saving_usd"] > 0 and found["yearly_saving_usd"] is None


def test_bad_requests(db: Path) -> None:
    write(db, make_run_records(seed=1, started_at_ns=at(2)))
    with pytest.raises(UnknownTaskClassError):
        findings(db, task_class="nope")
    with pytest.raises(ValueError, match="unknown finding kind"):
        findings(db, kinds=["vibes"])
    empty = findings(db, window=Window(datetime(2020, 1, 1), datetime(2020, 1, 2)))
    assert empty.is_empty() and tuple(empty.columns) == FINDING_COLUMNS
    assert set(FINDING_KINDS) == {
        "implicit_max_workers", "cap_above_safe_maximum", "no_cost_ceiling", "cost_cliff",
        "synthesis_on_planner_model", "orchestrating_small_tasks"}


# --- the dashboard page (AppTest, in-process, on a real store) ------------------------------

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


@pytest.fixture()
def page_store(db: Path) -> Path:
    small = [make_run_records(seed=i, task_class="extract", started_at_ns=at(3, i),
                              worker_cost_usds=[0.002], plan_cost_usd=0.004,
                              synthesis_cost_usd=0.001) for i in range(6)]
    runaway = [make_run_records(seed=50 + i, max_workers=None, started_at_ns=at(4, i),
                                worker_cost_usds=[0.01] * 12) for i in range(2)]
    write(db, *small, *runaway)
    return db


def _findings_page(db: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> Any:
    from streamlit.testing.v1 import AppTest
    from waits import scaled

    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    app = AppTest.from_file(APP, default_timeout=scaled(120))
    for name, value in params.items():
        app.query_params[name] = value
    app.run()
    app.switch_page("views/findings.py").run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def test_the_findings_page_shows_what_analytics_found(
    page_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _findings_page(page_store, monkeypatch)
    with read_store(page_store) as con:
        expected = find_findings(con)
    [table] = [d.value for d in app.dataframe if "what" in d.value.columns]
    assert sorted(zip(table["task_class"], table["kind"], strict=True)) == sorted(
        zip(expected["task_class"], expected["kind"], strict=True))
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Findings"] == str(expected.height)
    labels = [e.label for e in app.expander]
    assert any(label.startswith("Orchestrating small tasks · extract") for label in labels)
    links = " ".join(m.value for m in app.markdown)
    runaway_id = expected.filter(pl.col("kind") == "implicit_max_workers")["evidence"][0]
    assert json.loads(runaway_id)["run_ids"][0] in links  # a link to the run page


def test_the_findings_page_offers_its_table_as_csv(page_store: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    app = _findings_page(page_store, monkeypatch)
    assert [b.proto.label for b in app.get("download_button")] == ["Download findings.csv"]


def test_the_findings_page_deep_links_a_kind(page_store: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    app = _findings_page(page_store, monkeypatch, kind="orchestrating_small_tasks")
    [table] = [d.value for d in app.dataframe if "what" in d.value.columns]
    assert set(table["kind"]) == {"orchestrating_small_tasks"}


def test_the_findings_page_on_a_missing_store(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    app = _findings_page(tmp_path / "none.duckdb", monkeypatch)
    assert "cliffwatch demo" in " ".join(i.value for i in app.info)


def test_reports_carry_the_findings(page_store: Path) -> None:
    from cliffwatch.analytics.report import build_report
    from cliffwatch.analytics.report_render import render_markdown

    now = datetime(2026, 11, 11)
    with read_store(page_store) as con:
        report = build_report(con, WINDOW, now=now)
        expected = find_findings(con, WINDOW, now=now)
    table = report.tables["findings"]
    assert table.to_dicts() == expected.select(table.columns).to_dicts()
    assert {"orchestrating_small_tasks", "implicit_max_workers"} <= set(table["kind"])
    text = render_markdown(report)
    assert "## Findings: the handbook's anti-patterns" in text
    assert "chain the prompts instead" in text


def test_the_cli_prints_findings_as_json_csv_and_a_table(page_store: Path) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app

    runner = CliRunner()
    args = ["findings", "--db", str(page_store), "--since", "2026-11-01", "--until",
            "2026-11-11"]
    as_json = runner.invoke(app, [*args, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    with read_store(page_store) as con:
        expected = findings_records(find_findings(con, WINDOW))
    assert rows == expected
    assert isinstance(rows[0]["evidence"]["run_ids"], list)
    as_csv = runner.invoke(app, [*args, "--format", "csv"])
    assert as_csv.stdout.splitlines()[0] == ",".join(FINDING_COLUMNS)
    table = runner.invoke(app, args)
    assert "orchestrating_small_tasks" in table.stdout and "chain the prompts" in table.stdout
    bad = runner.invoke(app, ["findings", "--db", str(page_store), "--since", "someday"])
    assert bad.exit_code == 2


def test_the_findings_page_prints_no_stray_text(page_store: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    app = _findings_page(page_store, monkeypatch)
    assert [m.value for m in app.markdown if "called on the page" in m.value] == []


def test_the_bare_model_name_is_the_same_in_polars_and_python() -> None:
    # the synthesis finding compares bare names over every run in polars
    # (findings._bare_expr); the newest run's still-present check in Python (_bare)
    names = ["sim/gpt-4.1", "gpt-4o", "a/b/c", "", None, "/x", "x/"]
    in_polars = pl.DataFrame({"m": names}, schema={"m": pl.String}).select(_bare_expr("m"))
    assert in_polars["m"].to_list() == [_bare(n) for n in names]
    assert _bare("sim/gpt-4.1") == "gpt-4.1"


def test_the_reports_what_if_is_by_class_with_its_runs_let_go(page_store: Path) -> None:
    # the report's what-if, replayed with the findings' ones, gives what_if's classes; its
    # per-run rows are not kept (1M of them at 1M runs; issue 11)
    override = LimitsOverride(max_workers=2, policy=CapPolicy.TRUNCATE)
    now = datetime(2026, 11, 11)
    with read_store(page_store) as con:
        found, shared = findings_and_what_if(con, override, WINDOW, now=now)
        alone = what_if(con, override, WINDOW, now=now)
        expected = find_findings(con, WINDOW, now=now)
    assert alone.runs.height > 0 and shared.runs.is_empty()
    assert shared.runs.columns == alone.runs.columns
    pl.testing.assert_frame_equal(shared.by_class, alone.by_class, check_exact=False,
                                  rel_tol=1e-12)
    assert shared.window_days == alone.window_days
    assert found.drop("evidence").to_dicts() == expected.drop("evidence").to_dicts()


def test_example_runs_of_equal_cost_come_by_run_id_whatever_the_read_order() -> None:
    """A store of copied runs holds many of equal cost: the evidence names the costliest,
    ties by run id, the same for every order the rows arrive in (two checkouts of one
    store once named different copies)."""
    rng = np.random.default_rng(7)
    ids = [f"{i:032x}" for i in range(40)]
    costs = [1.0 if i % 2 else 2.0 for i in range(40)]
    expected = sorted(i for i, c in zip(ids, costs, strict=True) if c == 2.0)[:EXAMPLE_RUNS]
    for _ in range(5):
        order = rng.permutation(40)
        runs = pl.DataFrame({"run_id": [ids[i] for i in order],
                             "cost_usd": [costs[i] for i in order], "other": list(order)})
        assert _examples(runs) == expected


@pytest.mark.parametrize("chunk_runs", [7, 25_000])
def test_findings_without_estimates_equal_those_given_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_runs: int
) -> None:
    # the findings bring no estimates: they read them once for all their what-ifs (and
    # the report's); given the estimates (load_estimates), none is read: one answer
    from cliffwatch.analytics.estimates import load_estimates
    from cliffwatch.orchestrator.demo import run_demo

    store = tmp_path / "demo.duckdb"
    run_demo(store, runs=60, days=5, seed=11)
    monkeypatch.setattr("cliffwatch.analytics.whatif_sql.CHUNK_RUNS", chunk_runs)
    override = LimitsOverride(max_workers=2, policy=CapPolicy.TRUNCATE)
    reads: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return load_estimates(*args, **kwargs)

    with read_store(store) as con:
        now = datetime(2030, 1, 1)
        estimates = load_estimates(con)
        with monkeypatch.context() as patch:
            for module in ("findings", "whatif"):
                patch.setattr(f"cliffwatch.analytics.{module}.load_estimates", counted)
            own, what = findings_and_what_if(con, override, now=now)
            assert len(reads) == 1  # once for the findings' what-ifs and the report's
            given, what_given = findings_and_what_if(con, override, now=now,
                                                     estimates=estimates)
            assert len(reads) == 1
    savings = own.filter(pl.col("kind").is_in(["implicit_max_workers", "no_cost_ceiling"]))
    assert savings.height and savings["saving_usd"].drop_nulls().sum() > 0
    pl.testing.assert_frame_equal(own.drop("evidence"), given.drop("evidence"),
                                  check_exact=False, rel_tol=1e-9)
    for mine, theirs in zip(own["evidence"], given["evidence"], strict=True):
        _close(json.loads(mine), json.loads(theirs))
    pl.testing.assert_frame_equal(what.by_class, what_given.by_class, check_exact=False,
                                  rel_tol=1e-9)


def _close(mine: Any, theirs: Any) -> None:
    """Equal JSON values, numbers to 1e-9 (relative)."""
    if isinstance(theirs, dict):
        assert mine.keys() == theirs.keys()
        for key in theirs:
            _close(mine[key], theirs[key])
    elif isinstance(theirs, list):
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            _close(a, b)
    elif isinstance(theirs, float):
        assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    else:
        assert mine == theirs
