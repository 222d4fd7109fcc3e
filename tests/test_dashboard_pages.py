"""The Runs, Compare and Alerts pages and the Overview's per-run percentiles, in-process
(streamlit.testing AppTest) on real DuckDB stores written through the real write path.

What each page shows is checked against an independent computation over the raw ``runs``
rows (Python sorting and filtering, numpy.percentile), formatted by the one money rule
(:func:`cliffwatch.formatting.usd`).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import duckdb
import numpy as np
import pytest
from apptest_pages import assert_human_tables, open_page
from dashboard_store import StoreFixture, build_store
from streamlit.testing.v1 import AppTest
from test_dashboard_apptest import APP, TIMEOUT_S, _texts

from cliffwatch import settings
from cliffwatch.formatting import usd
from cliffwatch.telemetry import write_pipeline
from cliffwatch.telemetry.alerts import deliver_now
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans

NEW_PAGES = ("views/runs.py", "views/compare.py", "views/alerts.py")
MARKUP = "![x](http://evil.example/i.png) <img src=x> :red[boom] $x$"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> StoreFixture:
    return build_store(tmp_path_factory.mktemp("pages") / "cliffwatch.duckdb")


def _open(db: Path, monkeypatch: pytest.MonkeyPatch, view: str | None = None,
          **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    for name, value in params.items():  # set here: the Runs page has a `page` parameter
        app.query_params[name] = value
    return open_page(app, view)


def _frame(app: AppTest, column: str):
    found = [d.value for d in app.dataframe if column in d.value.columns]
    assert len(found) == 1, f"{len(found)} tables with a {column!r} column"
    return found[0]


def _raw_runs(path: Path) -> list[dict]:
    with duckdb.connect(str(path), read_only=True) as raw:
        cur = raw.execute("SELECT * FROM runs")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _no_none(frame) -> None:
    shown = frame.astype(str).to_numpy().ravel().tolist()
    assert not [c for c in shown if c in ("None", "nan", "NaN", "<NA>", "null")]


def test_runs_page_pages_every_run_newest_first(store: StoreFixture, monkeypatch) -> None:
    raw = sorted(_raw_runs(store.path), key=lambda r: (r["started_at"], r["run_id"]),
                 reverse=True)
    app = _open(store.path, monkeypatch, "views/runs.py", per_page="25", page="2")
    table = _frame(app, "run_link")
    expected = raw[25:50]
    assert table["run_id"].tolist() == [r["run_id"] for r in expected]
    assert table["cost"].tolist() == [usd(r["cost_usd"]) for r in expected]
    assert table["started"].tolist() == [f"{r['started_at']:%Y-%m-%d %H:%M:%S}" for r in expected]
    assert table["run_link"].tolist() == [f"run?run_id={r['run_id']}" for r in expected]
    assert table["replay_link"].tolist() == [f"replay?run_id={r['run_id']}" for r in expected]
    assert "Runs 26 to 50 of 67 · page 2 of 3" in _texts(app.caption)
    _no_none(table[["started", "task_class", "status", "breach", "cost", "duration", "calls",
                    "tokens", "workers", "cap"]])
    assert_human_tables(app)


def test_runs_page_filters_and_sorts_from_a_link(store: StoreFixture, monkeypatch) -> None:
    raw = [r for r in _raw_runs(store.path)
           if r["task_class"] == "research" and 0.015 <= r["cost_usd"] <= 0.7
           and r["breach"] is None and r["status"] == "ok"]
    expected = sorted(raw, key=lambda r: (r["cost_usd"], r["run_id"]))
    app = _open(store.path, monkeypatch, "views/runs.py", task_class="research",
                min_cost_usd="0.015", max_cost_usd="0.7", breach="no breach", status="ok",
                sort="cost", order="ascending")
    table = _frame(app, "run_link")
    assert table["run_id"].tolist() == [r["run_id"] for r in expected]
    assert f"of {len(expected):,} · page 1 of 1" in _texts(app.caption)
    assert app.selectbox(key="sort").value == "cost"


def test_runs_page_breach_filter_and_tokens(store: StoreFixture, monkeypatch) -> None:
    app = _open(store.path, monkeypatch, "views/runs.py", breach="any breach")
    table = _frame(app, "run_link").set_index("run_id")
    assert sorted(table.index) == sorted([store.cap_breach_run_id, store.ceiling_run_id])
    cap = table.loc[store.cap_breach_run_id]
    assert (cap["breach"], cap["workers"], cap["status"]) == ("cap", "47 → 0", "rejected")
    [raw] = [r for r in _raw_runs(store.path) if r["run_id"] == store.ceiling_run_id]
    assert table.loc[store.ceiling_run_id, "tokens"] == (
        f"{raw['input_tokens'] + raw['output_tokens']:,}")


def test_runs_page_row_opens_its_run(store: StoreFixture, monkeypatch) -> None:
    app = _open(store.path, monkeypatch, "views/runs.py", breach="cap breach")
    app.session_state["runs"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    assert not app.exception
    assert app.query_params["run_id"] == store.cap_breach_run_id
    assert store.cap_breach_run_id in _texts(app.subheader)


def test_runs_page_past_the_last_page_and_a_bad_range(store: StoreFixture, monkeypatch) -> None:
    app = _open(store.path, monkeypatch, "views/runs.py", page="99")
    assert "page 2 of 2 (the last page)" in _texts(app.caption)
    app = _open(store.path, monkeypatch, "views/runs.py", min_cost_usd="2", max_cost_usd="1")
    assert "empty cost range" in _texts(app.error)
    assert not app.exception


def test_run_and_replay_pages_without_a_run_link_to_runs(store: StoreFixture,
                                                         monkeypatch) -> None:
    for page in ("views/run.py", "views/replay.py"):
        app = _open(store.path, monkeypatch, page)
        assert "pick one on the Runs page" in _texts(app.info)
        assert not app.main.selectbox  # no picker of recent runs any more


def test_overview_per_run_measures_match_numpy(store: StoreFixture, monkeypatch) -> None:
    raw = _raw_runs(store.path)
    app = _open(store.path, monkeypatch)
    table = _frame(app, "Measure").set_index(["Task class", "Measure"])
    for task_class in ("extract", "research", "All selected classes"):
        runs = [r for r in raw if task_class in ("All selected classes", r["task_class"])]
        cost = np.percentile([r["cost_usd"] for r in runs], [50, 95, 99])
        assert table.loc[(task_class, "Cost"), ["P50", "P95", "P99"]].tolist() == [
            usd(float(v)) for v in cost]
        tokens = np.percentile([r["input_tokens"] + r["output_tokens"] for r in runs],
                               [50, 95, 99])
        shown = table.loc[(task_class, "Tokens (in + out)"), ["P50", "P95", "P99"]].tolist()
        assert [float(t.replace(",", "")) for t in shown] == pytest.approx(tokens, abs=0.05)
        assert table.loc[(task_class, "Cost"), "Runs"] == f"{len(runs):,}"
    # Every fixture run's root lasts a whole number of seconds: 1.0 s to 3.0 s.
    latency = np.percentile([r["duration_ms"] for r in raw], 99)
    assert table.loc[("All selected classes", "Latency"), "P99"] == f"{latency / 1000:,.1f} s"
    assert_human_tables(app)


def test_compare_page_deep_link_matches_numpy(store: StoreFixture, monkeypatch) -> None:
    raw = _raw_runs(store.path)
    app = _open(store.path, monkeypatch, "views/compare.py", task_class="research",
                before_since="2026-11-01", before_until="2026-11-06",
                after_since="2026-11-06", after_until="")
    from datetime import datetime
    split = datetime(2026, 11, 6)
    before = [r["cost_usd"] for r in raw if r["task_class"] == "research"
              and r["started_at"] < split]
    after = [r["cost_usd"] for r in raw if r["task_class"] == "research"
             and r["started_at"] >= split]
    table = _frame(app, "Change %")
    research = table[table["Task class"] == "research"].set_index("Measure")
    b99, a99 = np.percentile(before, 99), np.percentile(after, 99)
    assert research.loc["P99 per run", "Before"] == usd(float(b99))
    assert research.loc["P99 per run", "After"] == usd(float(a99))
    assert research.loc["P99 per run", "Change"] == usd(float(a99 - b99), signed=True)
    assert research.loc["P99 per run", "Change %"] == f"{100 * (a99 - b99) / b99:+,.1f}%"
    assert research.loc["Spend", "Before"] == usd(sum(before))
    assert research.loc["Runs", "After"] == str(len(after))
    ratio = np.percentile(before, 99) / np.percentile(before, 50)
    assert research.loc["P99 / P50", "Before"] == f"{ratio:,.1f}x"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["P99 per run"] == usd(float(a99))
    assert set(table["Task class"]) == {"research", "All selected classes"}
    _no_none(table)
    assert_human_tables(app)


def test_compare_page_names_the_bad_window(store: StoreFixture, monkeypatch) -> None:
    app = _open(store.path, monkeypatch, "views/compare.py", after_since="last tuesday")
    assert "After: cannot read 'last tuesday'" in _texts(app.error)
    assert not [d for d in app.dataframe if "Change %" in d.value.columns]


def _before_spend(raw: list[dict], start: str, end: str) -> str:
    from datetime import datetime

    since, until = datetime.fromisoformat(start), datetime.fromisoformat(end)
    return usd(sum(r["cost_usd"] for r in raw if since <= r["started_at"] < until))


def test_compare_link_without_before_until_ends_before_where_after_starts(
    store: StoreFixture, monkeypatch
) -> None:
    """``before_until`` left out of a link: the before window ends at ``after_since``
    (it used to keep its default, 7 days back, and an after window in the past made the
    before window empty: an error)."""
    app = _open(store.path, monkeypatch, "views/compare.py",
                before_since="2026-11-01", after_since="2026-11-06", after_until="2026-11-11")
    assert not app.error
    overall = _frame(app, "Change %").set_index(["Task class", "Measure"])
    spend = overall.loc[("All selected classes", "Spend"), "Before"]
    assert spend == _before_spend(_raw_runs(store.path), "2026-11-01", "2026-11-06")
    assert not [w for w in app.warning if "differ in length" in w.value]  # 5 days each


def test_compare_warns_when_the_windows_differ_in_length(store: StoreFixture,
                                                         monkeypatch) -> None:
    app = _open(store.path, monkeypatch, "views/compare.py", before_since="2026-11-01",
                before_until="2026-11-03", after_since="2026-11-03", after_until="2026-11-11")
    [warning] = [w.value for w in app.warning if "differ in length" in w.value]
    assert "before 2.0 days, after 8.0 days" in warning


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/secret-token"


def test_alerts_page_shows_rules_and_a_failed_delivery(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "alerts.duckdb"
    monkeypatch.setattr(write_pipeline, "deliver_soon", lambda path, pending: None)
    monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_URLS, _refused_url())
    monkeypatch.setenv(settings.CLIFFWATCH_ALERT_MAX_ATTEMPTS, "1")
    write_spans(db, make_run_records(seed=5, worker_cost_usds=[], proposed=47, max_workers=8,
                                     dispatched=0, status="rejected", breach="cap"))
    assert deliver_now(db).failed == 1
    app = _open(db, monkeypatch, "views/alerts.py")
    rules = _frame(app, "setting").set_index("setting")
    assert rules.loc[settings.CLIFFWATCH_WEBHOOK_URLS, "value"].endswith("/…")
    assert "secret" not in " ".join(rules["value"])
    assert rules.loc[settings.CLIFFWATCH_ALERT_MAX_ATTEMPTS, "value"] == "1"
    metrics = {m.label: m.value for m in app.metric}
    assert (metrics["Failed"], metrics["Delivered"]) == ("1", "0")
    [row] = _frame(app, "last_error").to_dict("records")
    assert (row["kind"], row["attempts"], row["status"]) == ("cap_breach", "1", "Failed (gave up)")
    assert "refused" in row["last_error"].lower() or "connect" in row["last_error"].lower()
    assert row["delivered_at"] == "-" and row["next_attempt_at"] == "-"
    assert_human_tables(app)
    app.selectbox(key="delivery").set_value("delivered").run()
    assert "No delivery is delivered" in _texts(app.info)
    for status, rows in (("failed", 1), ("no webhook", 0)):  # deep links
        app = _open(db, monkeypatch, "views/alerts.py", delivery=status)
        assert len([d for d in app.dataframe if "last_error" in d.value.columns]) == rows


def test_markup_in_span_data_stays_text(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "markup.duckdb"
    write_spans(db, make_runs_costing([0.01, 0.02, 0.5], task_class=MARKUP, seed=9))
    write_spans(db, make_run_records(seed=6, task_class=MARKUP, worker_cost_usds=[],
                                     proposed=47, max_workers=8, dispatched=0,
                                     status="rejected", breach="cap"))  # an alert too
    for page, params in ((None, {}), ("views/runs.py", {}),
                         ("views/compare.py", {"before_since": "2020-01-01",
                                               "before_until": "",
                                               "after_since": "2020-01-01"}),
                         ("views/alerts.py", {})):
        app = _open(db, monkeypatch, page, task_class=MARKUP, **params)
        markdown = " ".join(e.value for e in (*app.markdown, *app.caption, *app.title,
                                              *app.subheader, *app.info, *app.error))
        unescaped = re.sub(r"\\.", "", markdown)  # what markdown would still read as syntax
        if page != "views/alerts.py":  # the class is named (escaped) ...
            assert "x](" in markdown.replace("\\", "")
        for syntax in ("![", "<img", ":red[", "$x$"):
            assert syntax not in unescaped, (page, syntax)  # ... never as markup
        cells = " ".join(str(v) for d in app.dataframe for v in d.value.to_numpy().ravel())
        assert MARKUP in cells  # shown whole, as text, in a table


@pytest.mark.parametrize("page", NEW_PAGES)
def test_new_pages_on_missing_and_empty_stores(page: str, tmp_path: Path,
                                               monkeypatch) -> None:
    app = _open(tmp_path / "nothing-here.duckdb", monkeypatch, page)
    assert "cliffwatch demo" in _texts(app.info)
    empty = tmp_path / "empty.duckdb"
    with open_store(empty, read_only=False):
        pass
    app = _open(empty, monkeypatch, page)
    assert "has no runs yet" in _texts(app.info)
    assert not app.error
