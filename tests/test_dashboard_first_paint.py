"""What the Runs, Replay, Compare and Cost truth pages send before and after their first
paint (dashboard/paint_gate.py), in-process (streamlit.testing AppTest) on real stores.

A new browser session's first run of such a page draws its first table and the gate, and
leaves the rest (the widgets above the table when no link sets them, the charts, what
lies below, the download buttons) to the run the gate asks for once the
browser has drawn the table. The table must be the same in both runs, and a page that ends
before its table still draws its widgets.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from apptest_pages import open_page
from cache_store import build_cache_store
from dashboard_store import StoreFixture, build_store
from streamlit.testing.v1 import AppTest
from test_dashboard_apptest import APP, TIMEOUT_S, _texts

from cliffwatch.dashboard import paint_gate
from cliffwatch.telemetry.testing import make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans

DAY_S = 86_400


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> StoreFixture:
    return build_store(tmp_path_factory.mktemp("first_paint") / "cliffwatch.duckdb")


def _app(db: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    return AppTest.from_file(APP, default_timeout=TIMEOUT_S)


def _kinds(app: AppTest) -> list[str]:
    return [node.type for node in app.main]


def _widgets(app: AppTest) -> set[str]:
    kinds = ("selectbox", "multiselect", "number_input", "text_input")
    return {w.key for kind in kinds for w in app.main.get(kind)}


def _frames(app: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in app.dataframe]


def _same(left: list[pd.DataFrame], right: list[pd.DataFrame]) -> bool:
    return len(left) == len(right) and all(a.equals(b) for a, b in zip(left, right, strict=True))


def _first_run_then_gate_run(app: AppTest, page: str, name: str,
                             **params: str) -> tuple[list[str], list[pd.DataFrame], str]:
    """Open ``page`` as a new session's first visit of it; check it holds the table and the
    gate (after the first table); then do the gate's rerun. Returns the
    first run's element kinds, tables and subheaders (the app is left after the rerun)."""
    open_page(app, page, painted=False, **params)
    kinds = _kinds(app)
    gates = [i for i, kind in enumerate(kinds) if kind == "bidi_component"]
    tables = [i for i, kind in enumerate(kinds) if kind == "dataframe"]
    assert len(gates) == 1 and tables and tables[0] < gates[0], kinds
    assert "download_button" not in kinds and "plotly_chart" not in kinds, kinds
    first = (kinds, _frames(app), _texts(app.subheader))
    app.session_state[paint_gate.state_key(name)] = True  # what the gate's call does
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert "bidi_component" not in _kinds(app)
    assert [w.key for w in app.sidebar.selectbox] == ["since"]
    return first


def test_runs_page_draws_its_table_before_its_widgets(store: StoreFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(store.path, monkeypatch)
    _, tables, _ = _first_run_then_gate_run(app, "views/runs.py", "runs")
    assert _widgets(app) == {"status", "breach", "min_cost_usd", "max_cost_usd", "sort",
                             "order", "per_page", "page"}
    # the widgets read what the first run assumed: the same table, page 1 of 50 newest
    assert _same(_frames(app), tables) and len(tables[0]) == 50
    assert (app.selectbox(key="sort").value, app.selectbox(key="per_page").value) == (
        "start time", 50)
    assert "download_button" in _kinds(app)


def test_runs_page_with_a_widget_in_the_link_draws_it_with_the_table(
        store: StoreFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(store.path, monkeypatch)
    open_page(app, "views/runs.py", painted=False, sort="cost", order="ascending")
    assert app.selectbox(key="sort").value == "cost"
    assert "bidi_component" in _kinds(app)  # the download button still waits
    costs = app.dataframe[0].value["cost_usd"].tolist()
    assert costs == sorted(costs)


def test_runs_page_ending_before_its_table_still_draws_its_widgets(
        store: StoreFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(store.path, monkeypatch)
    open_page(app, "views/runs.py", painted=False, until="2020-01-02")
    assert "No runs match these filters" in _texts(app.info)
    assert "bidi_component" not in _kinds(app)
    assert "sort" in _widgets(app) and "page" in _widgets(app)


def test_replay_sends_its_first_table_then_the_rest(store: StoreFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(store.path, monkeypatch)
    kinds, tables, headings = _first_run_then_gate_run(app, "views/replay.py", "replay",
                                                       run_id=store.ceiling_run_id)
    assert kinds.count("dataframe") == 1 and "button" not in kinds, kinds
    assert "Timeline as recorded" not in headings
    after = _kinds(app)
    assert after.count("dataframe") >= 3 and after.count("plotly_chart") == 2, after
    assert "Timeline as recorded" in _texts(app.subheader)
    assert _widgets(app) == {"max_workers", "ceiling_usd", "policy"}
    assert _same(_frames(app)[:1], tables)  # the comparison, as first drawn


def test_replay_with_limits_in_the_link_draws_them_with_the_table(
        store: StoreFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(store.path, monkeypatch)
    open_page(app, "views/replay.py", painted=False, run_id=store.ceiling_run_id,
              max_workers="2")
    assert app.number_input(key="max_workers").value == 2
    assert "replaying under cap 2, ceiling as recorded" in _texts(app.caption)


def test_replay_of_an_unknown_run_still_draws_its_limits(
        store: StoreFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(store.path, monkeypatch)
    open_page(app, "views/replay.py", painted=False, run_id="0123456789ab")
    assert app.error and _widgets(app) == {"max_workers", "ceiling_usd", "policy"}


def test_compare_draws_its_table_before_its_window_inputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "cliffwatch.duckdb"  # runs in both default windows (14d-7d, 7d-now)
    for n, days_ago in enumerate((10, 3)):
        start = int((time.time() - days_ago * DAY_S) * 1e9)
        write_spans(db, make_runs_costing([0.01, 0.02, 0.04], started_at_ns=start, seed=n))
    app = _app(db, monkeypatch)
    _, tables, _ = _first_run_then_gate_run(app, "views/compare.py", "compare")
    assert [(w.key, w.value) for w in app.main.text_input] == [
        ("before_since", "14d"), ("before_until", "7d"), ("after_since", "7d"),
        ("after_until", "")]
    assert _same(_frames(app), tables)
    assert "download_button" in _kinds(app)


def test_compare_with_empty_default_windows_still_draws_its_inputs(
        store: StoreFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(store.path, monkeypatch)  # its runs are in November 2026
    open_page(app, "views/compare.py", painted=False)
    if "Neither window has a run" not in _texts(app.info):
        pytest.skip("the clock reads November 2026: the default windows hold runs")
    assert [w.key for w in app.main.text_input] == ["before_since", "before_until",
                                                    "after_since", "after_until"]


def test_cost_truth_sends_its_audit_then_its_chart_and_cache(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(build_cache_store(tmp_path_factory.mktemp("truth_first")), monkeypatch)
    kinds, tables, headings = _first_run_then_gate_run(app, "views/cost_truth.py",
                                                       "cost_truth")
    assert kinds.count("dataframe") == 1 and "Prompt cache" not in headings, kinds
    after = _kinds(app)
    assert after.count("plotly_chart") >= 2 and after.count("dataframe") >= 3, after
    assert "Prompt cache" in _texts(app.subheader)
    assert _same(_frames(app)[:1], tables)  # the audit, as first drawn
