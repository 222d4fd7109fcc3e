"""The HTML report in a real Chromium with the network cut: the charts draw from the inline
plotly.js bundle, the tables render, and a task class holding a script stays text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from browser import RENDER_TIMEOUT_MS, BrowserUnavailable, chromium, ensure_chromium

from cliffwatch.analytics.report import build_report
from cliffwatch.analytics.report_render import write_report
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

pytestmark = [pytest.mark.browser]

MARKUP = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report_browser")
    store = folder / "r.duckdb"
    records = make_runs_costing([0.01 * (1 + i % 7) ** 1.5 for i in range(40)],
                                task_class="research", seed=1, max_workers=None,
                                started_at_ns=ns_at("2026-11-01T00:00:00"), interval_s=7200)
    records += make_runs_costing([0.002, 0.003, 0.004], task_class=MARKUP, seed=2,
                                 started_at_ns=ns_at("2026-11-02T00:00:00"))
    records += make_run_records(
        run_id="b" * 32, task_class=MARKUP, worker_cost_usds=[], plan_cost_usd=0.01,
        proposed=47, max_workers=8, status="rejected", breach="cap",
        started_at_ns=ns_at("2026-11-03T00:30:00"),
    )
    write_spans(store, records)
    with read_store(store) as con:
        report = build_report(con, Window.parse("2026-11-01", "2026-11-10"),
                              now=datetime(2026, 11, 20))
    path, = write_report(report, "html", folder / "report.html")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        ensure_chromium()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    with chromium() as started:
        yield started


def test_the_report_draws_offline_and_keeps_markup_as_text(
    report_file: Path, browser: Any, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    requests: list[str] = []
    dialogs: list[str] = []
    page = context.new_page()
    page.set_default_timeout(RENDER_TIMEOUT_MS)
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(report_file.as_uri())
        page.wait_for_function("() => window.Plotly !== undefined")
        page.wait_for_function(
            "() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3"
        )
        assert page.locator(".js-plotly-plot").count() == 3
        # bars and box points were drawn, not just empty axes
        assert page.locator("#figure-whatif .bars path").count() >= 2
        assert page.locator("#figure-distribution .points path").count() >= 40
        assert page.locator("h2").all_inner_texts()[:3] == [
            "Summary", "Cost per run by task class", "Incidents"]
        percentiles = page.locator("#percentiles table").inner_text()
        assert MARKUP in percentiles and "research" in percentiles
        # an injected task class would have become a script element of its own
        injected = "() => [...document.scripts].filter(s => s.text.trim() === 'alert(1)')"
        assert page.evaluate(f"{injected}.length") == 0
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        print(f"\nscreenshot: {tmp_path / 'report.png'}")
    finally:
        context.close()
    assert dialogs == []
    assert all(url.startswith("file://") for url in requests), requests
