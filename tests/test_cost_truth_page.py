"""The dashboard's Cost truth page and the Overview's upper-bound label, in-process
(streamlit.testing AppTest) on a real store with cache tokens (tests/cache_store.py).

The page must show exactly what ``cliffwatch audit`` computes
(:func:`analytics.audit.audit_costs` on the same store and filters) and the cache savings
priced by hand from ``litellm.model_cost``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from apptest_pages import assert_human_tables, open_page
from cache_store import build_cache_store, truth
from streamlit.testing.v1 import AppTest
from test_dashboard_safety import HTML, IMAGE, LIVE_MARKUP, _markdown_texts
from waits import scaled

from cliffwatch.analytics.audit import audit_costs, verdict
from cliffwatch.analytics.store_access import read_store
from cliffwatch.dashboard import ui
from cliffwatch.formatting import usd
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
PAGE = "views/cost_truth.py"
TIMEOUT_S = scaled(120)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cache_store(tmp_path_factory.mktemp("truth_page"))


def _open(db: Path, monkeypatch: pytest.MonkeyPatch, page: str | None = PAGE,
          **params: str) -> AppTest:
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    return open_page(AppTest.from_file(APP, default_timeout=TIMEOUT_S), page, **params)


def _plain(elements) -> str:
    """The elements' markdown as a reader sees it (escapes removed)."""
    return re.sub(r"\\(.)", r"\1", " ".join(e.value for e in elements))


def _audit(db: Path, classes: tuple[str, ...] = ()) -> dict[str, dict]:
    with read_store(db) as con:
        audit = audit_costs(con, current_map=False, task_classes=classes)
    rows = {r["check"]: r for r in audit.summary.iter_rows(named=True)}
    rows["_"] = {"calls": audit.calls, "not_recomputing": audit.not_recomputing,
                 "verdict": verdict(audit.not_recomputing, audit.calls)}
    return rows


def _shown_figures_equal_audit(app: AppTest, want: dict[str, dict]) -> None:
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Calls audited"] == f"{want['_']['calls']:,}"
    assert metrics["Spend"] == usd(want["calls audited"]["amount_usd"])
    assert metrics["Drift calls"] == str(want["reported vs computed drift"]["calls"])
    assert metrics["Drift"] == usd(want["reported vs computed drift"]["amount_usd"],
                                   signed=True)
    assert metrics["Unpriced calls"] == str(want["spend unpriced"]["calls"])
    assert metrics["Duplicates dropped"] == str(want["duplicates dropped"]["calls"])
    assert want["_"]["verdict"] in _plain(app.success)
    (summary,) = [d.value for d in app.dataframe if "check" in d.value.columns]
    shown = {r["check"]: r for r in summary.to_dict("records")}
    assert set(shown) == {k for k in want if k != "_"}
    for check, row in shown.items():
        assert row["calls"] == want[check]["calls"], check
        for column in ("amount_usd", "share"):
            if want[check][column] is None:
                assert row[column] != row[column] or row[column] is None, (check, column)
            else:
                assert row[column] == pytest.approx(want[check][column], rel=1e-12)


def test_page_shows_what_audit_computes(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _open(store, monkeypatch)
    want = _audit(store)
    # the store holds one of each problem, so every figure below is non-trivial
    assert want["reported vs computed drift"]["calls"] == 1
    assert want["duplicates dropped"]["calls"] == 1
    assert want["spend unpriced"]["calls"] == 1
    _shown_figures_equal_audit(app, want)
    assert_human_tables(app)  # audit, problem calls and cache tables
    assert ("Spend is an upper bound: 1 call on caching models reported no cache detail"
            in _plain(app.warning))
    charts = [c for c in app.get("plotly_chart")]
    assert len(charts) >= 2  # spend by source, and cache savings


def test_page_follows_the_sidebar_class_filter(store: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    app = _open(store, monkeypatch, task_class="moons")
    want = _audit(store, ("moons",))
    assert want["_"]["calls"] == 3  # gpt-4o, gpt-5 and the unpriced call of moons
    _shown_figures_equal_audit(app, want)
    assert not app.warning  # moons has no call without cache detail


def test_page_cache_savings_equal_the_by_hand_figures(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _open(store, monkeypatch)
    for key in ("model", "task_class"):
        (table,) = [d.value for d in app.dataframe if key in d.value.columns
                    and "hit_ratio" in d.value.columns]
        shown = table.set_index(key)
        for group, want in truth(key).items():
            row = shown.loc[group]
            assert row["calls"] == want["calls"]
            if want["net"] is None:
                assert row["net_saving_usd"] != row["net_saving_usd"]  # NaN: unknown
            else:
                assert row["net_saving_usd"] == pytest.approx(want["net"], rel=1e-9)
            assert row["hit_ratio"] == pytest.approx(want["hit_ratio"], rel=1e-9)
    total = truth("all")[None]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Net cache saving"] == usd(total["net"], signed=True)
    assert metrics["Cache hit ratio"] == f"{total['hit_ratio']:.1%}"


def test_overview_labels_an_upper_bound(store: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    app = _open(store, monkeypatch, page=None)
    assert ("Spend and P50/P95/P99 are an upper bound: 1 call on caching models reported "
            "no cache detail") in _plain(app.warning)
    exact = tmp_path / "exact.duckdb"
    write_spans(exact, make_runs_costing([0.01, 0.02]))
    app = _open(exact, monkeypatch, page=None)
    assert "upper bound" not in _plain(app.warning)
    app = _open(exact, monkeypatch)  # no cache data at all: the page still draws
    # telemetry.testing derives illustrative token counts from the exact costs it is
    # given, so those costs do not recompute from the tokens: the page says so, as the
    # CLI does, in red.
    want = _audit(exact)["_"]
    assert want["not_recomputing"] == 10
    assert want["verdict"] in _plain(app.error)
    assert {m.label: m.value for m in app.metric}["Cache hit ratio"] == "-"


def test_page_shows_a_markup_class_and_model_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "markup.duckdb"
    write_spans(db, make_run_records(run_id="d" * 32, task_class=IMAGE, planner_model=HTML,
                                     worker_model=IMAGE, synthesis_model=HTML))
    app = _open(db, monkeypatch, task_class=IMAGE)
    texts = _markdown_texts(app)
    assert not [t for t in texts if LIVE_MARKUP.search(t)], texts
    # the class, shown escaped in the caption (md_text puts a word joiner after "http" so
    # no autolink forms either)
    assert r"\!\[x\]\(http" + ui.WORD_JOINER + r"\:" in "\n".join(texts)
    models = [d.value for d in app.dataframe if "model" in d.value.columns]
    assert {HTML, IMAGE} <= set(models[0]["model"])  # a grid cell: text, never markup


def test_current_map_toggle_adds_audits_price_check(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _open(store, monkeypatch)
    assert "price changed in current map" not in _audit(store)
    app.toggle(key="current_map").set_value(True).run()
    assert not app.exception, [e.message for e in app.exception]
    with read_store(store) as con:
        audit = audit_costs(con, current_map=True)
    want = {r["check"]: r["calls"] for r in audit.summary.iter_rows(named=True)}
    (summary,) = [d.value for d in app.dataframe if "check" in d.value.columns]
    shown = {r["check"]: r["calls"] for r in summary.to_dict("records")}
    assert shown == want
    assert shown["price changed in current map"] == 0  # stored today with today's map


def test_a_long_problem_list_is_cut_and_says_so(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlit as st

    from cliffwatch.dashboard import cost_truth_queries

    monkeypatch.setattr(cost_truth_queries, "PROBLEM_ROWS_SHOWN", 2)
    st.cache_data.clear()  # the limit is not part of the cache key
    try:
        app = _open(store, monkeypatch)
    finally:
        st.cache_data.clear()
    with read_store(store) as con:
        full = audit_costs(con, current_map=False).problems
    assert full.height > 2
    (shown,) = [d.value for d in app.dataframe if "problem" in d.value.columns]
    assert list(shown["span_id"]) == full["span_id"].head(2).to_list()
    assert f"The first 2 of {full.height:,} problem rows" in _plain(app.caption)


def test_the_savings_count_of_calls_without_a_cache_split_is_not_labelled_as_the_audit_s(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two counts of "no cache detail" on one page: the audit's (calls whose computed cost
    is an upper bound) and the savings' (every call without a stored cache count, left out
    of the hit ratio; 32 against 0 on the demo store): different headings, each saying
    what it counts."""
    import json

    app = _open(store, monkeypatch)
    assert "cache detail missing" in _audit(store)  # the audit's row keeps its label
    tables_ = [t for t in app.dataframe if "calls_not_in_hit_ratio" in t.value.columns]
    assert len(tables_) == 2  # per model, per task class
    for table in tables_:
        column = json.loads(table.proto.columns)["calls_not_in_hit_ratio"]
        assert column["label"] == "Not in hit ratio"  # the data's name, in snake case:
        assert "calls_" + column["label"].lower().replace(" ", "_") in table.value.columns
        assert "cache detail missing" in column["help"] and "upper bound" in column["help"]
    assert "Not in hit ratio" in _plain(app.caption)
