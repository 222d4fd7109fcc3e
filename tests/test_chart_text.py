"""Data in a chart is text: plotly draws a subset of HTML in trace names, category and
tick labels and hover text (``<a href>``, ``<b>``, ``<span style>``, ``<br>``), so every
data string goes through :func:`analytics.charts.chart_text`. Also the waterfall's time
unit, chosen by the run's length."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from cliffwatch.analytics.charts import (
    chart_text,
    cost_distribution,
    daily_trend,
    run_waterfall,
    time_unit,
)
from cliffwatch.analytics.percentiles import cost_percentiles, daily_percentiles
from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.replay_charts import whatif_distribution, whatif_spend
from cliffwatch.analytics.runs import list_runs, run_spans
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.whatif import what_if
from cliffwatch.telemetry.testing import make_run_records, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

TASK_CLASS = '<a href="http://127.0.0.1:9/x">c</a><img src=x>'
MODEL = "<b>m</b> & <span style='color:red'>n</span>"
WORKER_MODEL = "<br>w\x1b[31m"
RUN_ID = "a" * 32
CALL_MS = 400_000.0  # a 20-minute run: the waterfall reads in minutes


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, go.Figure]:
    path = tmp_path_factory.mktemp("chart_text") / "store.duckdb"
    records = []
    for day in range(3):
        records += make_run_records(
            run_id=RUN_ID if day == 0 else None, seed=day, task_class=TASK_CLASS,
            planner_model=MODEL, worker_model=WORKER_MODEL, synthesis_model=MODEL,
            proposed=6, max_workers=None, call_duration_ms=CALL_MS,
            worker_cost_usds=[0.01 * (day + 1)] * 6,
            started_at_ns=ns_at(f"2026-11-0{day + 1}T00:00:00"),
        )
    # a second class: the trend then names each class's lines
    records += make_run_records(task_class="extract", started_at_ns=ns_at("2026-11-01T06:00:00"))
    write_spans(path, records)
    with read_store(path) as con:
        runs, pct = list_runs(con), cost_percentiles(con)
        what = what_if(con, LimitsOverride(max_workers=2))
        return {
            "distribution": cost_distribution(runs, pct),
            "trend": daily_trend(daily_percentiles(con)),
            "waterfall": run_waterfall(run_spans(con, RUN_ID)),
            "whatif_spend": whatif_spend(what.by_class),
            "whatif_distribution": whatif_distribution(what.runs),
        }


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every (key, string) in a figure's JSON."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list | tuple | np.ndarray):  # cost_distribution's are arrays
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str):
        yield key, node


@pytest.mark.parametrize("name", ["distribution", "trend", "waterfall", "whatif_spend",
                                  "whatif_distribution"])
def test_no_markup_from_data_reaches_a_figure(figures: dict[str, go.Figure], name: str) -> None:
    strings = list(_strings(figures[name].to_plotly_json()))
    raw = [(k, s) for k, s in strings
           if any(tag in s for tag in ("<a ", "<img", "<b>", "<span", "\x1b"))]
    assert not raw, raw
    # hovertemplates are ours: no data in them (a %{...} in data would be read as a field)
    for key, text in strings:
        if key == "hovertemplate":
            assert "href" not in text and "&lt;" not in text, text
    shown = " ".join(s for _, s in strings)
    if name != "waterfall":  # the class is still shown, as text
        assert chart_text(TASK_CLASS) in shown
    if name == "distribution":  # the run ids in customdata (numpy arrays) were walked too
        assert chart_text(RUN_ID) in shown


def test_waterfall_shows_models_and_names_as_text(figures: dict[str, go.Figure]) -> None:
    fig = figures["waterfall"]
    models = {c[2] for bar in fig.data for c in bar.customdata}
    assert chart_text(MODEL) in models
    assert "&lt;br&gt;w\\x1b[31m" in models  # a control character is shown escaped
    assert all("<" not in t for t in fig.layout.yaxis.ticktext)


def test_chart_text_escapes_what_plotly_parses() -> None:
    assert chart_text("<a href='x'>&</a>") == "&lt;a href='x'&gt;&amp;&lt;/a&gt;"
    assert chart_text("line\nbreak") == "line\\nbreak"
    assert chart_text(None) == "-"
    assert chart_text("research") == "research"


def test_waterfall_axis_unit_follows_the_runs_length(figures: dict[str, go.Figure]) -> None:
    fig = figures["waterfall"]
    assert fig.layout.xaxis.title.text == "minutes since the run started"
    assert fig.layout.xaxis.ticksuffix == " min"
    ends = [b + x for bar in fig.data for b, x in zip(bar.base, bar.x, strict=True)]
    assert max(ends) == pytest.approx(3 * CALL_MS / 60_000)  # plan, workers, synthesis
    assert all(" min" in bar.hovertemplate for bar in fig.data)


@pytest.mark.parametrize(("longest_ms", "unit"), [
    (0.0, "ms"), (900.0, "ms"), (5_000.0, "s"), (800_000.0, "min"), (10_000_000.0, "h"),
])
def test_time_unit_by_magnitude(longest_ms: float, unit: str) -> None:
    assert time_unit(longest_ms)[0] == unit
