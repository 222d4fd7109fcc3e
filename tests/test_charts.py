"""analytics.charts: figures drawn from what the analytics functions return."""

from __future__ import annotations

from datetime import date

import plotly.graph_objects as go
import polars as pl
import pytest

from cliffwatch.analytics.charts import cost_distribution, daily_trend, run_waterfall, usd_axis
from cliffwatch.analytics.percentiles import cap_start_date, cost_percentiles, daily_percentiles
from cliffwatch.analytics.runs import list_runs, run_spans
from cliffwatch.analytics.store_access import read_store
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

FAILED_RUN = "f" * 32


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("charts") / "store.duckdb"
    costs = [0.01 * (1 + i % 7) for i in range(40)]
    records = make_runs_costing(costs[:20], task_class="research", seed=1, max_workers=None,
                                started_at_ns=ns_at("2026-11-01T00:00:00"), interval_s=7200)
    records += make_runs_costing(costs[20:], task_class="research", seed=2,
                                 started_at_ns=ns_at("2026-11-03T00:00:00"), interval_s=7200)
    records += make_runs_costing([0.002, 0.003, 0.004], task_class="extract", seed=3,
                                 started_at_ns=ns_at("2026-11-03T00:00:00"))
    records += make_run_records(run_id=FAILED_RUN, worker_cost_usds=[0.01, 0.02],
                                workers_failed=1, started_at_ns=ns_at("2026-11-04T00:00:00"))
    write_spans(path, records)
    with read_store(path) as con:
        return {
            "runs": list_runs(con),
            "pct": cost_percentiles(con),
            "daily": daily_percentiles(con),
            "cap": cap_start_date(con, "research"),
            "spans": run_spans(con, FAILED_RUN),
        }


def test_cost_distribution_marks_percentiles(frames) -> None:
    fig = cost_distribution(frames["runs"], frames["pct"])
    assert isinstance(fig, go.Figure)
    assert fig.layout.xaxis.type == "log"
    boxes = [t for t in fig.data if t.type == "box"]
    assert sorted(b.name for b in boxes) == ["extract", "research"]
    research = next(b for b in boxes if b.name == "research")
    assert len(research.x) == frames["runs"].filter(pl.col("task_class") == "research").height
    assert {c[0] for c in research.customdata} <= set(frames["runs"]["run_id"])
    marks = {t.name: t for t in fig.data if t.type == "scatter"}
    assert set(marks) == {"P50", "P95", "P99"}
    pct = frames["pct"]
    for label, column in (("P50", "p50_usd"), ("P95", "p95_usd"), ("P99", "p99_usd")):
        got = dict(zip(marks[label].y, marks[label].x, strict=True))
        assert got == dict(zip(pct["task_class"], pct[column], strict=True))
    assert cost_distribution(frames["runs"], frames["pct"], log_x=False).layout.xaxis.type == (
        "linear"
    )


def test_daily_trend_lines_and_cap_marker(frames) -> None:
    assert frames["cap"] == date(2026, 11, 3)
    fig = daily_trend(frames["daily"], frames["cap"])
    names = {t.name for t in fig.data}
    assert names == {f"{c} {p}" for c in ("extract", "research") for p in ("P50", "P95", "P99")}
    p99 = next(t for t in fig.data if t.name == "research P99")
    research = frames["daily"].filter(pl.col("task_class") == "research")
    assert list(p99.y) == research["p99_usd"].to_list()
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 1 and lines[0].x0 == "2026-11-03" == lines[0].x1
    assert [a.text for a in fig.layout.annotations] == ["max-workers cap"]
    one_class = daily_trend(research, None)
    assert {t.name for t in one_class.data} == {"P50", "P95", "P99"}
    assert not one_class.layout.shapes


def test_run_waterfall_bars(frames) -> None:
    spans = frames["spans"]
    fig = run_waterfall(spans)
    bars = {t.name: t for t in fig.data}
    assert set(bars) == {"run", "plan", "worker", "synthesis"}
    workers = bars["worker"]
    # a 3-second run: the axis is in seconds
    assert fig.layout.xaxis.title.text == "seconds since the run started"
    assert fig.layout.xaxis.ticksuffix == " s"
    offsets_ms = spans.filter(pl.col("role") == "worker")["offset_ms"].to_list()
    assert list(workers.base) == pytest.approx([ms / 1000 for ms in offsets_ms])
    assert list(workers.x) == [1.0, 1.0]
    # hover carries model, tokens, cost and status; the failed worker is outlined red
    assert workers.customdata[0][2] == "sim/gpt-4o-mini"
    assert workers.customdata[0][5] == "$0.01"
    assert [c[6] for c in workers.customdata] == ["ok", "error"]
    assert list(workers.marker.line.color) == ["white", "#d62728"]
    assert "model" in workers.hovertemplate and "tokens" in workers.hovertemplate
    assert fig.layout.yaxis.autorange == "reversed"
    assert len(fig.layout.yaxis.ticktext) == spans.height


def test_charts_reject_frames_without_needed_columns(frames) -> None:
    with pytest.raises(ValueError, match="cost_usd"):
        cost_distribution(frames["runs"].drop("cost_usd"), frames["pct"])
    with pytest.raises(ValueError, match="day"):
        daily_trend(frames["daily"].drop("day"))
    with pytest.raises(ValueError, match="offset_ms"):
        run_waterfall(frames["spans"].drop("offset_ms"))


def test_cost_axes_are_labelled_in_dollars() -> None:
    # 1-2-5 steps over the decades the costs span, as money (not plotly's bare "2 3 4").
    axis = usd_axis([0.0031, None, 0.0, 0.042], "cost")
    assert axis["type"] == "log"
    assert axis["ticktext"] == ["$0.001", "$0.002", "$0.005", "$0.01", "$0.02", "$0.05",
                                "$0.10", "$0.20", "$0.50"]  # cliffwatch.formatting.usd
    assert axis["tickvals"] == pytest.approx([0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                              0.1, 0.2, 0.5])
    wide = usd_axis([0.00002, 3.0], "cost")  # five decades: powers of ten only
    assert wide["ticktext"] == ["$0.00001", "$0.0001", "$0.001", "$0.01", "$0.10", "$1.00",
                                "$10.00"]
    assert "tickvals" not in usd_axis([0.0, None], "cost")
    assert usd_axis([0.5], "cost", log=False) == {"title": "cost", "type": "linear",
                                                  "tickprefix": "$"}


def test_percentile_charts_use_the_dollar_axis(frames) -> None:
    fig = cost_distribution(frames["runs"], frames["pct"])
    assert "$0.01" in fig.layout.xaxis.ticktext
    trend = daily_trend(frames["daily"], None)
    assert trend.layout.yaxis.type == "log" and "$0.01" in trend.layout.yaxis.ticktext
