"""Reports: the tables computed once from analytics, every format written and read back,
and data holding markup escaped in HTML and Markdown."""

from __future__ import annotations

import json
import zipfile
from datetime import date, datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cliffwatch.analytics.percentiles import cost_percentiles
from cliffwatch.analytics.plain import plain_rows, plain_value
from cliffwatch.analytics.report import REPORT_TABLES, Report, build_report
from cliffwatch.analytics.report_render import (
    LONG_TEXT_CHARS,
    ReportWriteError,
    md_escape,
    render_html,
    render_markdown,
    report_bytes,
    write_report,
)
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.whatif import COUNTS_NOTE
from cliffwatch.analytics.window import Window
from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

MARKUP = "<script>alert(1)</script>"
RESEARCH = np.random.default_rng(5).lognormal(-4.0, 0.8, 30).round(6).tolist()
SMALL = [0.002, 0.003, 0.0025, 0.004, 0.0022]
BREACH = "b" * 32
UNPRICED_MODEL = "custom/llm-x"
NOW = datetime(2026, 11, 20, 12, 0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "r.duckdb"
    records = make_runs_costing(RESEARCH, task_class="research", seed=1, max_workers=None,
                                started_at_ns=ns_at("2026-11-01T00:00:00"), interval_s=7200)
    records += make_runs_costing(SMALL, task_class=MARKUP, seed=2, max_workers=3,
                                 started_at_ns=ns_at("2026-11-02T00:00:00"))
    records += make_run_records(
        run_id=BREACH, task_class="research", worker_cost_usds=[], plan_cost_usd=0.01,
        proposed=47, max_workers=8, status="rejected", breach="cap",
        started_at_ns=ns_at("2026-11-03T00:30:00"),
    )
    records += make_run_records(
        run_id="e" * 32, task_class=MARKUP, worker_cost_usds=[None, 0.001],
        worker_model=UNPRICED_MODEL, max_workers=3,
        started_at_ns=ns_at("2026-11-04T00:00:00"),
    )
    write_spans(path, records)
    return path


@pytest.fixture(scope="module")
def report(store: Path) -> Report:
    with read_store(store) as con:
        return build_report(con, Window.parse("2026-11-01", "2026-11-10"),
                            class_limits={"research": Limits(max_workers=2)}, now=NOW)


def test_tables_come_from_the_analytics_functions(store: Path, report: Report) -> None:
    assert list(report.tables) == list(REPORT_TABLES)
    with read_store(store) as con:
        expected = cost_percentiles(con, Window.parse("2026-11-01", "2026-11-10"))
    assert_frame_equal(report.tables["percentiles"], expected)
    research = report.tables["percentiles"].filter(pl.col("task_class") == "research")
    costs = [*RESEARCH, 0.01]
    assert research["p99_usd"].item() == pytest.approx(np.percentile(costs, 99))
    assert research["cliff_ratio"].item() == pytest.approx(
        np.percentile(costs, 99) / np.percentile(costs, 50))
    summary = report.tables["summary"].row(0, named=True)
    assert summary["runs"] == len(RESEARCH) + len(SMALL) + 2
    assert summary["spend_usd"] == pytest.approx(report.tables["percentiles"]["total_usd"].sum())
    assert summary["unpriced_calls"] == 1 and summary["open_incidents"] == summary["incidents"]


def test_incidents_carry_their_runs(report: Report) -> None:
    incidents = report.tables["incidents"]
    row = incidents.filter(pl.col("run_id") == BREACH).row(0, named=True)
    assert (row["kind"], row["run_status"], row["workers_proposed"], row["max_workers"]) == (
        "cap_breach", "rejected", 47, 8)
    assert row["run_cost_usd"] == pytest.approx(0.01)


def test_whatif_uses_the_workload_cap_else_the_recorded_one(report: Report) -> None:
    whatif = {r["task_class"]: r for r in report.tables["whatif"].iter_rows(named=True)}
    assert whatif["research"]["cap_source"] == "workload"
    assert whatif["research"]["limits"] == "cap 2, ceiling as recorded, policy reject"
    # make_runs_costing gives every run 3 workers: cap 2 rejects each of them (the run
    # rejected as recorded, rejected again, is not changed: not counted)
    assert whatif["research"]["runs_rejected"] == len(RESEARCH)
    assert whatif[MARKUP]["cap_source"] == "recorded"
    assert whatif[MARKUP]["runs_affected"] == 0  # its own cap of 3 changes nothing
    # no research run completed within 2 workers: the redo of the tasks cap 2 leaves
    # undone, and so the saving, is unknown (the recorded rejected run was undone anyway)
    assert whatif["research"]["tasks_not_completed"] == len(RESEARCH)
    assert f"change. {COUNTS_NOTE}. Year" in report.notes["whatif"]  # as the CLI says it
    assert whatif["research"]["tasks_redo_unknown"] == len(RESEARCH)
    assert whatif["research"]["saving_usd"] is None
    assert whatif["research"]["spend_after_usd"] is None
    assert whatif[MARKUP]["saving_usd"] == 0.0


def test_spend_by_model_and_role_and_unpriced_calls(report: Report) -> None:
    by_model = report.tables["spend_by_model"]
    assert UNPRICED_MODEL in by_model["model"].to_list()
    assert report.tables["unpriced"].rows() == [(UNPRICED_MODEL, 1, 1)]
    roles = set(report.tables["spend_by_role"]["role"])
    assert {"plan", "worker", "synthesis"} <= roles
    assert by_model["total_usd"].sum() == pytest.approx(
        report.tables["percentiles"]["total_usd"].sum())


def test_html_is_self_contained_with_the_data_escaped(report: Report) -> None:
    page = render_html(report)
    assert MARKUP not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("plotly.js v") == 1  # the bundle, once, inline
    assert page.count('class="plotly-graph-div"') == 3
    assert "<script src=" not in page  # nothing loaded from the network
    assert page.count("<table>") == len(REPORT_TABLES)


def test_html_tables_keep_sentences_readable_and_times_whole(report: Report) -> None:
    # A detail sentence beside a wide table folded into a tall strip; times wrapped at "-".
    page = render_html(report)
    detail = report.tables["incidents"].filter(pl.col("run_id") == BREACH)["detail"].item()
    assert len(detail) > LONG_TEXT_CHARS
    assert f"<td class=long>{detail}</td>" in page
    assert "<td class=time>2026-11-" in page
    assert "<td class=long>cap_breach" not in page  # short text: no minimum width


def test_markdown_escapes_markup_and_table_syntax(report: Report) -> None:
    text = render_markdown(report)
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert md_escape("a|b *c* _d_ [e](f) `g` $1") == (
        r"a\|b \*c\* \_d\_ \[e\](f) \`g\` \$1")
    assert md_escape("two\nlines") == "two lines"
    header = next(line for line in text.splitlines() if line.startswith("| task class |"))
    assert header.count("|") == len(report.tables["percentiles"].columns) + 1


def test_every_format_is_written_and_reads_back(report: Report, tmp_path: Path) -> None:
    html_file, = write_report(report, "html", tmp_path / "r.html")
    assert html_file.read_text().startswith("<!doctype html>")
    md_file, = write_report(report, "md", tmp_path / "r.md")
    assert md_file.read_text().startswith("# cliffwatch cost report")

    json_file, = write_report(report, "json", tmp_path / "r.json")
    data = json.loads(json_file.read_text())
    assert list(data["tables"]) == list(REPORT_TABLES)
    assert data["meta"]["since"] == "2026-11-01T00:00:00Z"
    for name, df in report.tables.items():
        assert len(data["tables"][name]) == df.height

    written = write_report(report, "csv", tmp_path / "csv")
    assert sorted(p.name for p in written) == sorted(f"{n}.csv" for n in REPORT_TABLES)
    back = pl.read_csv(tmp_path / "csv" / "percentiles.csv")
    assert back["task_class"].to_list() == report.tables["percentiles"]["task_class"].to_list()
    assert back["p95_usd"].to_list() == pytest.approx(
        report.tables["percentiles"]["p95_usd"].to_list())

    parquet_dir = write_report(report, "parquet", tmp_path / "pq")
    assert len(parquet_dir) == len(REPORT_TABLES)
    zipped, = write_report(report, "parquet", tmp_path / "tables.zip")
    with zipfile.ZipFile(zipped) as archive:
        assert sorted(archive.namelist()) == sorted(f"{n}.parquet" for n in REPORT_TABLES)
        for name, df in report.tables.items():
            assert_frame_equal(pl.read_parquet(BytesIO(archive.read(f"{name}.parquet"))), df)
    for name, df in report.tables.items():
        assert_frame_equal(pl.read_parquet(tmp_path / "pq" / f"{name}.parquet"), df)


def test_report_bytes_are_the_file_write_report_writes(report: Report, tmp_path: Path) -> None:
    # What the dashboard's download button gets (in memory) is the CLI's file.
    for fmt, name in (("html", "r.html"), ("md", "r.md"), ("json", "r.json")):
        written, = write_report(report, fmt, tmp_path / name)
        assert report_bytes(report, fmt) == written.read_bytes()
    with zipfile.ZipFile(BytesIO(report_bytes(report, "csv"))) as archive:
        assert sorted(archive.namelist()) == sorted(f"{n}.csv" for n in REPORT_TABLES)
        back = pl.read_csv(BytesIO(archive.read("percentiles.csv")))
    assert back["task_class"].to_list() == report.tables["percentiles"]["task_class"].to_list()
    with pytest.raises(ValueError):
        report_bytes(report, "pdf")


def test_a_path_of_the_wrong_kind_is_one_line(report: Report, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(ReportWriteError, match="is a folder"):
        write_report(report, "html", tmp_path / "folder")
    (tmp_path / "file.csv").write_text("x")
    with pytest.raises(ReportWriteError, match="is a file"):
        write_report(report, "csv", tmp_path / "file.csv")


def test_an_empty_window_still_makes_a_report(store: Path, tmp_path: Path) -> None:
    with read_store(store) as con:
        empty = build_report(con, Window.parse("2027-01-01", "2027-01-02"), now=NOW)
    assert empty.tables["summary"]["runs"].item() == 0 and not empty.figures
    page = render_html(empty)
    assert "none" in page and "plotly.js v" not in page
    write_report(empty, "parquet", tmp_path / "e.zip")


@pytest.mark.parametrize(("fmt", "name"), [("html", "r.html"), ("md", "r.md"),
                                           ("json", "r.json"), ("csv", "tables.zip"),
                                           ("parquet", "pq")])
def test_cli_report_writes_each_format(store: Path, tmp_path: Path, fmt: str, name: str) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app

    out = tmp_path / name
    result = CliRunner().invoke(app, ["report", "--format", fmt, "-o", str(out), "--since",
                                      "2026-11-01", "--db", str(store)])
    assert result.exit_code == 0, result.output
    assert f"wrote {fmt} report to {out}" in result.stdout
    assert out.exists()


def test_cli_report_needs_format_and_output(store: Path) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app

    result = CliRunner().invoke(app, ["report", "--format", "pdf", "-o", "x", "--db", str(store)])
    assert result.exit_code == 2 and "--format" in result.stderr


def test_plain_rows_are_what_json_and_csv_output_write() -> None:
    # The CLI's --format json|csv and the report's JSON both write cells through these.
    df = pl.DataFrame({
        "at": [datetime(2026, 11, 1, 12, 30), None],
        "day": [date(2026, 11, 1), date(2026, 11, 2)],
        "cost_usd": [float("nan"), float("inf")],
        "n": [1, None],
    })
    assert plain_rows(df) == [
        {"at": "2026-11-01T12:30:00Z", "day": "2026-11-01", "cost_usd": None, "n": 1},
        {"at": None, "day": "2026-11-02", "cost_usd": None, "n": None},
    ]
    assert json.dumps({"at": datetime(2026, 11, 1)}, default=plain_value) == (
        '{"at": "2026-11-01T00:00:00Z"}')
