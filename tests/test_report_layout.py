"""The HTML report reads: the daily chart has one panel per task class (a dozen classes
stay apart), and the header says the window in words, both ends included."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cliffwatch.analytics.charts import CAP_LABEL, daily_trend_by_class
from cliffwatch.analytics.percentiles import daily_percentiles
from cliffwatch.analytics.report import build_report
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.cli import app
from cliffwatch.telemetry.testing import make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

CLASSES = [f"class_{i:02d}" for i in range(11)] + ['<a href="http://evil.example/">x</a>']


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("layout") / "store.duckdb"
    records = []
    for i, task_class in enumerate(CLASSES):
        costs = [0.001 * (i + 1) * (1 + k % 5) for k in range(12)]
        records += make_runs_costing(costs, task_class=task_class, seed=i + 1,
                                     started_at_ns=ns_at("2026-11-01T03:00:00"),
                                     interval_s=12 * 3600)
    write_spans(path, records)
    return path


def test_daily_chart_has_one_panel_per_class(db) -> None:
    with read_store(db) as con:
        daily = daily_percentiles(con)
    fig = daily_trend_by_class(daily, datetime(2026, 11, 4).date())
    titles = [a.text for a in fig.layout.annotations]
    assert len(titles) == len(CLASSES)
    assert "&lt;a href=\"http://evil.example/\"&gt;x&lt;/a&gt;" in titles  # text, not a link
    assert not any("<a" in t for t in titles)
    data = [t for t in fig.data if t.name != CAP_LABEL]
    assert len(data) == 3 * len(CLASSES)
    assert len({t.yaxis for t in data}) == len(CLASSES)  # each class on its own panel
    assert len({t.line.color for t in data}) == 3  # colour = percentile, not class
    assert [t.name for t in fig.data if t.showlegend is not False] == [
        "P50", "P95", "P99", CAP_LABEL]
    assert fig.layout.xaxis2.domain[0] > 0.5  # two columns of panels for twelve classes
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == len(CLASSES)  # the cap marked in every panel
    # each panel's P99 line is that class's daily P99 (panels in class order)
    first = next(t for t in data if t.name == "P99" and t.yaxis == "y")
    expected = daily.filter(daily["task_class"] == sorted(CLASSES)[0]).sort("day")["p99_usd"]
    assert list(first.y) == expected.to_list()


@pytest.mark.parametrize(
    ("since", "until", "words"),
    [
        ("2026-11-01", "2026-12-01", "2026-11-01 00:00 to 2026-11-30 23:59 UTC"),
        ("2026-11-02T06:30", "2026-11-04T12:00", "2026-11-02 06:30 to 2026-11-04 11:59 UTC"),
        (None, None, "2026-11-01 03:00 to 2026-11-06 15:00 UTC"),  # the runs' own span
        ("2026-11-03", None, "2026-11-03 00:00 to 2026-11-06 15:00 UTC"),
    ],
)
def test_report_window_in_words(db, since, until, words) -> None:
    with read_store(db) as con:
        report = build_report(con, Window.parse(since, until), now=datetime(2026, 12, 1))
    assert report.describe_window() == words


def test_html_header_says_the_window(db, tmp_path) -> None:
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", "--format", "html", "-o", str(out),
                                      "--since", "2026-11-01", "--until", "2026-12-01",
                                      "--db", str(db)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "Runs started 2026-11-01 00:00 to 2026-11-30 23:59 UTC" in page
    assert "one panel per task class" in page
