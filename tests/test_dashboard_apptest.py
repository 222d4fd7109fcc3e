"""The dashboard in-process (streamlit.testing AppTest) against real DuckDB stores.

Each test runs the real entry point (``dashboard/app.py``: st.navigation + sidebar) and
switches to a page, as a user would; the store is built through the real write path
(tests/dashboard_store.py). Figures are checked against numpy over the raw run costs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from apptest_pages import assert_human_tables, open_page
from dashboard_store import StoreFixture, build_store
from streamlit.testing.v1 import AppTest
from waits import scaled

from cliffwatch.dashboard import paint_gate, tables
from cliffwatch.formatting import usd
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import hold_store_lock, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
TIMEOUT_S = scaled(120)  # the longest one script run may take
PAGES = (None, "views/incidents.py", "views/run.py")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> StoreFixture:
    return build_store(tmp_path_factory.mktemp("dash") / "cliffwatch.duckdb")


@pytest.fixture
def app(store: StoreFixture, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CLIFFWATCH_DB", str(store.path))
    return AppTest.from_file(APP, default_timeout=TIMEOUT_S)


# A table is known by a column only it has (st.dataframe keeps a key only when selectable).
TABLE_COLUMNS = {"percentiles": "P99 / P50", "incidents": "incident_id", "spans": "span_id"}


def _tables(app: AppTest, name: str) -> list:
    shown = [*app.dataframe, *app.table]
    return [d.value for d in shown if TABLE_COLUMNS[name] in d.value.columns]


def _frame(app: AppTest, name: str):
    found = _tables(app, name)
    assert len(found) == 1, f"{len(found)} {name} tables on the page"
    return found[0]


def _metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def _texts(elements) -> str:
    """The elements' markdown as a reader sees it: data in it is backslash-escaped."""
    return re.sub(r"\\(.)", r"\1", " ".join(e.value for e in elements))


def test_overview_percentiles_match_numpy(app: AppTest, store: StoreFixture) -> None:
    open_page(app)
    table = _frame(app, "percentiles").set_index("Task class")
    assert sorted(table.index) == sorted(store.costs_usd)
    for task_class, costs in store.costs_usd.items():
        p50, p95, p99 = np.percentile(costs, [50, 95, 99])
        row = table.loc[task_class]
        assert row["Runs"] == len(costs)
        assert row["P50"] == pytest.approx(p50, rel=1e-9)
        assert row["P95"] == pytest.approx(p95, rel=1e-9)
        assert row["P99"] == pytest.approx(p99, rel=1e-9)
        assert row["P99 / P50"] == pytest.approx(p99 / p50, rel=1e-9)
    # research has the heavy tail (P99/P50 far over 10): flagged; extract is flat.
    assert "Cost Cliff" in table.loc["research", "Cost Cliff"]
    assert table.loc["extract", "Cost Cliff"] == ""

    every_cost = [c for costs in store.costs_usd.values() for c in costs]
    kpis = _metrics(app)
    assert kpis["Runs"] == str(len(every_cost))
    assert kpis["Spend"] == usd(sum(every_cost))
    assert kpis["P95 per run"] == usd(float(np.percentile(every_cost, 95)))
    assert kpis["Open incidents"] == "6"  # 1 cap, 1 ceiling, 4 runaways


def test_cost_cliff_flag_follows_the_findings_threshold(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # research's P99/P50 is about 54: flagged at the default 10, not at 60.
    monkeypatch.setenv("CLIFFWATCH_FINDINGS_CLIFF_RATIO", "60")
    open_page(app)
    assert set(_frame(app, "percentiles")["Cost Cliff"]) == {""}
    assert "above 60x is flagged" in _texts(app.caption)


def test_overview_sends_its_charts_after_the_browser_drew_its_table(app: AppTest) -> None:
    # A new browser session's first run: the table and the gate (dashboard/paint_gate.py),
    # no chart; the rerun the gate asks for once the table is drawn: the charts too.
    open_page(app, painted=False)
    nodes = list(app.main)
    kinds = [node.type for node in nodes]
    gates = [i for i, kind in enumerate(kinds) if kind == "bidi_component"]
    tables = [i for i, kind in enumerate(kinds) if kind == "table"]
    assert "plotly_chart" not in kinds, kinds
    assert len(gates) == 1 and len(tables) == 1 and tables[0] < gates[0], kinds
    assert nodes[gates[0]].proto.component_name == "cliffwatch_paint_gate"
    # the session's first run: the sidebar's widgets wait for the gate's run too
    assert not app.sidebar.selectbox and not app.sidebar.multiselect
    app.session_state[paint_gate.state_key("overview")] = True  # what the gate's call does
    app.run()
    kinds = [node.type for node in app.main]
    assert kinds.count("plotly_chart") == 2 and "bidi_component" not in kinds, kinds
    assert [w.key for w in app.sidebar.selectbox] == ["since"]
    assert [w.key for w in app.sidebar.multiselect] == ["task_class"]
    assert len(_frame(app, "percentiles")) == 2


def test_overview_trend_marks_the_classes_cap_day(app: AppTest) -> None:
    open_page(app)
    assert "No extract run in the store has had a max-workers cap" in _texts(app.caption)
    app.segmented_control(key="trend_class").set_value("research").run()
    # research's runs are capped from 2026-11-06 (tests/dashboard_store.py).
    assert "The max-workers cap came in on 2026-11-06" in _texts(app.caption)


def test_overview_deep_link_filters_class_and_time(app: AppTest, store: StoreFixture) -> None:
    open_page(app, task_class="extract", since="2026-11-03", until="2026-11-05")
    table = _frame(app, "percentiles")
    assert table["Task class"].tolist() == ["extract"]
    # extract runs start 2026-11-01T02:00 every 8 h: runs 6..11 fall on Nov 3 and 4.
    expected = store.costs_usd["extract"][6:12]
    assert table["Runs"].tolist() == [len(expected)]
    assert table["P50"].iloc[0] == pytest.approx(np.percentile(expected, 50), rel=1e-9)
    assert app.selectbox(key="since").value == "2026-11-03"
    assert app.text_input(key="until").value == "2026-11-05"


def test_overview_since_a_duration_link(app: AppTest) -> None:
    open_page(app, since="7d")
    assert app.selectbox(key="since").value == "7d"
    assert "since 7d" in _texts(app.caption)


def test_overview_several_classes_selected_in_sidebar(app: AppTest, store: StoreFixture) -> None:
    open_page(app)
    app.multiselect(key="task_class").select("extract").select("research").run()
    assert sorted(_frame(app, "percentiles")["Task class"]) == ["extract", "research"]
    # Several classes: the headline is over every run of them (not a mix of class rows).
    every_cost = store.costs_usd["extract"] + store.costs_usd["research"]
    for label, q in (("P50", 50), ("P95", 95), ("P99", 99)):
        assert _metrics(app)[f"{label} per run"] == usd(float(np.percentile(every_cost, q)))
    app.multiselect(key="task_class").unselect("research").run()
    assert _frame(app, "percentiles")["Task class"].tolist() == ["extract"]
    assert _metrics(app)["Runs"] == str(len(store.costs_usd["extract"]))


def test_a_link_naming_an_unknown_class_shows_what_the_sidebar_selected(app: AppTest) -> None:
    # The page reads the URL before the sidebar is drawn; the multiselect drops a class
    # the store lacks, and the page is drawn again with what the sidebar shows.
    open_page(app, task_class=["extract", "no-such-class"])
    assert app.multiselect(key="task_class").value == ["extract"]
    assert _frame(app, "percentiles")["Task class"].tolist() == ["extract"]
    assert "extract" in _texts(app.caption) and "no-such-class" not in _texts(app.caption)
    # and says so, as it does of a `since` it cannot read (and as the CLI's error does)
    assert _texts(app.sidebar.error) == ("Task classes: unknown task class 'no-such-class' "
                                         "(known: extract, research). Showing all time; "
                                         "extract.")


def test_a_link_naming_only_an_unknown_class_says_so_until_the_selection_changes(
    app: AppTest,
) -> None:
    open_page(app, task_class="nosuch")
    assert app.multiselect(key="task_class").value == []
    assert len(_frame(app, "percentiles")) == 2  # every class meanwhile
    error = _texts(app.sidebar.error)
    assert "unknown task class 'nosuch' (known: extract, research)" in error
    assert "Showing all time; all classes." in error
    app.multiselect(key="task_class").select("research").run()
    assert not app.sidebar.error


def test_overview_unreadable_since_is_an_error_in_the_sidebar(app: AppTest) -> None:
    open_page(app, since="last tuesday")
    assert "cannot read 'last tuesday'" in _texts(app.sidebar.error)
    assert len(_frame(app, "percentiles")) == 2  # all time meanwhile


def test_an_unreadable_until_says_so_and_keeps_since(app: AppTest, store: StoreFixture) -> None:
    open_page(app, task_class="extract", since="2026-11-03", until="next week")
    error = _texts(app.sidebar.error)
    assert "Until: cannot read 'next week'" in error
    assert "a date (2026-11-01)" in error  # the forms it takes
    assert "Showing since 2026-11-03; extract" in error
    # extract runs start 2026-11-01T02:00 every 8 h: the first 6 are before Nov 3.
    runs = _frame(app, "percentiles")["Runs"].tolist()
    assert runs == [len(store.costs_usd["extract"]) - 6]
    assert "since 2026-11-03; extract" in _texts(app.caption)


def test_incidents_page_lists_incidents(app: AppTest, store: StoreFixture) -> None:
    open_page(app, "views/incidents.py")
    table = _frame(app, "incidents")
    assert sorted(table["kind"]) == ["cap_breach", "cost_ceiling"] + ["runaway"] * 4
    by_kind = dict(zip(table["kind"], table["run_id"], strict=True))
    assert by_kind["cap_breach"] == store.cap_breach_run_id
    assert by_kind["cost_ceiling"] == store.ceiling_run_id
    assert set(table["status"]) == {"open"}
    cap_row = table[table["kind"] == "cap_breach"].iloc[0]
    assert "47" in cap_row["detail"]
    assert cap_row["link"] == f"run?run_id={store.cap_breach_run_id}"
    assert_human_tables(app)  # its links right after the time


def test_incidents_list_the_newest_up_to_the_cap_and_the_triage_offers_those(
    app: AppTest, store: StoreFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(store.path, read_only=True) as con:
        newest = [row[0] for row in con.execute(
            "SELECT incident_id FROM incidents ORDER BY detected_at DESC, incident_id"
        ).fetchall()]
    assert len(newest) == 6
    monkeypatch.setattr(tables, "MAX_SHOWN_ROWS", 2)
    open_page(app, "views/incidents.py")
    assert _frame(app, "incidents")["incident_id"].tolist() == newest[:2]
    assert "6 of 6 incidents" in _texts(app.caption)
    assert "the newest 2 listed (the CSV has all 6)" in _texts(app.caption)
    offered = app.selectbox(key="triage_incident").options  # "<kind> · <class> · ..."
    assert [label.split(" · ")[0] for label in offered] == [
        incident_id.split("-")[0] for incident_id in newest[:2]]


def test_incidents_filter_by_kind(app: AppTest) -> None:
    open_page(app, "views/incidents.py", kind="cap_breach")
    assert _frame(app, "incidents")["kind"].tolist() == ["cap_breach"]
    app.selectbox(key="kind").set_value("runaway").run()
    assert _frame(app, "incidents")["kind"].tolist() == ["runaway"] * 4


def test_incident_row_opens_its_run(app: AppTest, store: StoreFixture) -> None:
    open_page(app, "views/incidents.py", kind="cap_breach")
    app.session_state["incidents"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    assert not app.exception
    assert app.query_params["run_id"] == store.cap_breach_run_id
    assert _metrics(app)["Proposed → dispatched"] == "47 → 0"


def test_run_page_shows_the_runs_spans(app: AppTest, store: StoreFixture) -> None:
    open_page(app, "views/run.py", run_id=store.ceiling_run_id)
    spans = _frame(app, "spans")
    # plan + 2 workers under the root; no synthesis (spend crossed the ceiling).
    assert spans["name"].tolist() == ["run research", "plan", "worker 0", "worker 1"]
    assert spans["cost_usd"].iloc[1:].tolist() == pytest.approx([0.004, 0.05, 0.05])
    facts = _metrics(app)
    assert facts["Cost"] == "$0.104"
    assert facts["Proposed → dispatched"] == "5 → 5"
    assert facts["Max workers"] == "cap 8"
    assert facts["Ceiling"] == "$0.10"
    assert facts["Estimate at dispatch"] == "$0.09"
    assert "ceiling breach" in _texts(app.markdown)
    assert not app.error


def test_run_page_accepts_an_id_prefix(app: AppTest, store: StoreFixture) -> None:
    open_page(app, "views/run.py", run_id=store.cap_breach_run_id[:10])
    assert store.cap_breach_run_id in _texts(app.subheader)


def test_run_page_unknown_run_is_an_error(app: AppTest) -> None:
    open_page(app, "views/run.py", run_id="0" * 32)
    assert "no run" in _texts(app.error)
    assert not _tables(app, "spans")


def test_new_runs_show_without_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "growing.duckdb"
    write_spans(db, make_runs_costing([0.01, 0.02], task_class="live", seed=5))
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    app = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT_S))
    assert _metrics(app)["Runs"] == "2"
    write_spans(db, make_runs_costing([0.03], task_class="live", seed=6,
                                      started_at_ns=ns_at("2026-11-02T00:00:00")))
    app.run()
    assert _metrics(app)["Runs"] == "3"


@pytest.mark.parametrize("page", PAGES)
def test_missing_store_says_run_the_demo(
    page: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_DB", str(tmp_path / "nothing-here.duckdb"))
    app = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT_S), page)
    assert "cliffwatch demo" in _texts(app.info)
    assert "nothing-here.duckdb" in _texts(app.info)
    assert not app.error
    assert [w.key for w in app.sidebar.text_input] == ["until"]  # drawn after the stop


@pytest.mark.parametrize("page", PAGES)
def test_empty_store_says_run_the_demo(
    page: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "empty.duckdb"
    with open_store(db, read_only=False):
        pass
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    app = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT_S), page)
    assert "has no runs yet" in _texts(app.info)
    assert "cliffwatch demo" in _texts(app.info)
    assert not app.error


def test_a_file_that_is_not_a_store_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "notes.duckdb"
    db.write_text("not a database\n" * 100)
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    app = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT_S))
    assert "not a cliffwatch store" in _texts(app.error)


@pytest.mark.slow
def test_store_locked_by_another_process_is_reported(
    store: StoreFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "locked.duckdb"
    db.write_bytes(store.path.read_bytes())
    with hold_store_lock(db):  # another process has it open read-write
        monkeypatch.setenv("CLIFFWATCH_DB", str(db))
        monkeypatch.setenv("CLIFFWATCH_LOCK_TIMEOUT_S", "0.2")
        app = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT_S))
        assert "is busy" in _texts(app.error)
        assert not _tables(app, "percentiles")
    app.run()  # the writer is gone: the next rerun shows the data
    assert not app.error
    assert len(_frame(app, "percentiles")) == 2


def test_run_page_waterfall_keeps_its_place_above_the_spans_table(
        app: AppTest, store: StoreFixture) -> None:
    # Sent after the table (ui.chart_slot), drawn where the slot stands: above it.
    open_page(app, "views/run.py", run_id=store.ceiling_run_id)
    kinds = [node.type for node in app.main]
    charts = [i for i, node in enumerate(app.main) if node.type == "plotly_chart"]
    tables = [i for i, node in enumerate(app.main) if node.type == "dataframe"]
    assert len(charts) == 1 and tables, kinds
    assert charts[0] < tables[0], kinds


def test_run_page_sends_its_waterfall_after_the_browser_drew_the_spans_table(
        app: AppTest, store: StoreFixture) -> None:
    # dashboard/paint_gate.py: the first run holds the chart's place and puts the gate after
    # the table; the run the gate asks for draws the chart in that place.
    open_page(app, "views/run.py", painted=False, run_id=store.ceiling_run_id)
    kinds = [node.type for node in app.main]
    gates = [i for i, kind in enumerate(kinds) if kind == "bidi_component"]
    tables = [i for i, kind in enumerate(kinds) if kind == "dataframe"]
    assert "plotly_chart" not in kinds and len(gates) == 1, kinds
    assert tables and tables[0] < gates[0], kinds
    app.session_state[paint_gate.state_key("run")] = True
    app.run()
    kinds = [node.type for node in app.main]
    charts = [i for i, kind in enumerate(kinds) if kind == "plotly_chart"]
    tables = [i for i, kind in enumerate(kinds) if kind == "dataframe"]
    assert len(charts) == 1 and "bidi_component" not in kinds, kinds
    assert charts[0] < tables[0], kinds


def test_a_session_keeps_its_filters_on_a_page_still_waiting_for_its_first_paint(
        app: AppTest, store: StoreFixture) -> None:
    # Once drawn, the sidebar's widgets are drawn in every run (app.py), so a selection
    # survives a first visit to another gated page (dashboard/paint_gate.py).
    open_page(app)
    app.multiselect(key="task_class").select("extract").run()
    app.session_state[paint_gate.state_key("run")] = False
    app.query_params["run_id"] = store.ceiling_run_id
    app.switch_page("views/run.py").run()
    assert "bidi_component" in [node.type for node in app.main]  # the run page's gate
    assert app.multiselect(key="task_class").value == ["extract"]
    app.switch_page("views/overview.py").run()
    assert _frame(app, "percentiles")["Task class"].tolist() == ["extract"]
