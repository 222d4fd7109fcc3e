"""The dashboard in a real browser: ``streamlit run`` on a fixture store, driven by Chromium.

What only a browser shows: the page actually renders (tables, plotly charts), deep links
resolve to the right page on a fresh server, the sidebar filters end up in the URL, and a
click on an incident row navigates to its run. Screenshots go to the test's tmp dir
(printed at the end; look at them when the layout changes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import (
    RENDER_TIMEOUT_MS,
    BrowserUnavailable,
    chromium,
    ensure_chromium,
    streamlit_server,
)
from dashboard_store import StoreFixture, build_store
from playwright.sync_api import expect

from cliffwatch.dashboard import ui

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1440, "height": 1000}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    print(f"\nscreenshots: {folder}")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> StoreFixture:
    try:
        ensure_chromium()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    return build_store(tmp_path_factory.mktemp("browser") / "cliffwatch.duckdb")


@pytest.fixture(scope="module")
def server(store: StoreFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    with streamlit_server(store.path, log) as url:
        yield url


@pytest.fixture(scope="module")
def browser(store: StoreFixture) -> Iterator[Any]:
    with chromium() as started:
        yield started


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    opened.set_default_timeout(RENDER_TIMEOUT_MS)
    yield opened
    context.close()


def _settle(page: Any) -> None:
    """Wait until Streamlit has finished the script run (no "running" indicator)."""
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=RENDER_TIMEOUT_MS,
    )


def test_run_deep_link_on_a_fresh_server(
    store: StoreFixture, page: Any, shots: Path, tmp_path: Path
) -> None:
    # Its own server: the very first page a fresh server serves must be the real app
    # (entry point with navigation and filters), not a bare page file.
    with streamlit_server(store.path, tmp_path / "streamlit.log") as url:
        page.goto(f"{url}/run?run_id={store.cap_breach_run_id}")
        page.locator(".js-plotly-plot").first.wait_for()
        _settle(page)
        page.screenshot(path=str(shots / "run_cap_breach.png"))
        body = page.inner_text("body")
    assert "47 → 0" in body  # proposed -> dispatched
    assert "cap 8" in body
    assert "cap breach" in body
    assert "Filters" in page.inner_text("[data-testid='stSidebar']")
    nav = page.inner_text("[data-testid='stSidebarNav']")
    assert "Overview" in nav and "app" not in nav.split()


def test_overview_shows_the_percentile_table(
    server: str, store: StoreFixture, page: Any, shots: Path
) -> None:
    page.goto(f"{server}/")
    table = page.locator("[data-testid='stTable']").first
    table.wait_for()
    page.locator(".js-plotly-plot").nth(1).wait_for()  # distribution and daily trend
    _settle(page)
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    text = table.inner_text()
    for task_class, costs in store.costs_usd.items():
        assert task_class in text
        assert ui.usd(float(np.percentile(costs, 95))) in text
    assert "Cost Cliff" in text
    page.locator("[data-testid='stButtonGroup']").get_by_text("research").click()
    expect(page.get_by_text("The max-workers cap came in on 2026-11-06")).to_be_visible()
    page.locator(".js-plotly-plot").nth(1).scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "overview_trend.png"))


TABLE_DRAWN_AT = """(() => {
  performance.setResourceTimingBufferSize(5000);  // Streamlit loads a few hundred chunks
  window.cliffwatchTableAt = null;
  new MutationObserver(() => {
    const table = "[data-testid='stTable'], [data-testid='stDataFrame']";
    if (window.cliffwatchTableAt === null && document.querySelector(table))
      window.cliffwatchTableAt = performance.now();
  }).observe(document, {childList: true, subtree: true});
})();"""
"""Records when the page's first table entered the DOM (ms, the page's clock)."""


@pytest.mark.parametrize("path", ["", "run?run_id={run_id}"])
def test_table_is_drawn_before_plotly_is_loaded(
    server: str, store: StoreFixture, page: Any, path: str
) -> None:
    # dashboard/paint_gate.py: plotly.js (Streamlit's PlotlyChart chunk) is requested only
    # after the page's first table is in the page, so its download and evaluation do not
    # delay the first paint; the charts still come.
    page.add_init_script(TABLE_DRAWN_AT)
    page.goto(f"{server}/{path.format(run_id=store.ceiling_run_id)}")
    charts = 2 if path == "" else 1
    page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot').length >= {charts}")
    _settle(page)
    table_at = page.evaluate("window.cliffwatchTableAt")
    plotly_at = page.evaluate(
        "performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/PlotlyChart.')).map(e => e.startTime)"
    )
    assert table_at is not None and len(plotly_at) == 1, (table_at, plotly_at)
    assert table_at < plotly_at[0], (table_at, plotly_at)
    assert page.locator(".js-plotly-plot").count() == charts


def test_clicking_a_run_in_the_distribution_opens_it(
    server: str, store: StoreFixture, page: Any
) -> None:
    page.goto(f"{server}/?task_class=research")
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for()
    _settle(page)
    chart.scroll_into_view_if_needed()  # the mouse clicks where the viewport shows it
    points = chart.locator(".boxlayer path.point")
    boxes = [points.nth(i).bounding_box() for i in range(points.count())]
    assert len(boxes) == len(store.costs_usd["research"])
    dearest = max(boxes, key=lambda b: b["x"])  # cost axis runs left to right
    page.mouse.click(dearest["x"] + dearest["width"] / 2, dearest["y"] + dearest["height"] / 2)
    page.wait_for_function("() => location.pathname.endsWith('/run')")
    expect(page.get_by_text(ui.usd(max(store.costs_usd["research"])), exact=True)).to_be_visible()


def test_sidebar_filters_go_into_the_url(server: str, store: StoreFixture, page: Any) -> None:
    page.goto(f"{server}/?task_class=extract")
    table = page.locator("[data-testid='stTable']").first
    table.wait_for()
    _settle(page)
    assert "extract" in table.inner_text() and "research" not in table.inner_text()
    since = page.get_by_role("combobox", name="Since")
    since.click()
    page.get_by_role("option", name="30d", exact=True).click()
    # A bound widget rewrites the URL in place (history API, no navigation event).
    page.wait_for_function("() => location.search.includes('since=30d')")
    assert "task_class=extract" in page.url
    # A typed date is taken as --since is on the CLI.
    since.fill("2026-11-03")
    since.press("Enter")
    page.wait_for_function("() => location.search.includes('since=2026-11-03')")
    runs_since_nov_3 = len(store.costs_usd["extract"]) - 6  # 3 a day from Nov 1
    expect(table.locator("td").nth(1)).to_have_text(str(runs_since_nov_3))


def test_incident_row_opens_its_run(
    server: str, store: StoreFixture, page: Any, shots: Path
) -> None:
    page.goto(f"{server}/incidents?kind=cap_breach")
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for()
    _settle(page)
    page.screenshot(path=str(shots / "incidents.png"))
    # The grid is drawn on a canvas: click the selection box of its only row (the header
    # and each row are about 35 px high).
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + 35 + 17)
    page.wait_for_function("() => location.pathname.endsWith('/run')")
    assert page.url.endswith(f"/run?run_id={store.cap_breach_run_id}")
    expect(page.get_by_text("47 → 0")).to_be_visible()


def test_run_page_draws_the_waterfall(
    server: str, store: StoreFixture, page: Any, shots: Path
) -> None:
    page.goto(f"{server}/run?run_id={store.some_run_id}")
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for()
    _settle(page)
    page.screenshot(path=str(shots / "run.png"), full_page=True)
    assert chart.locator(".bars path").count() >= 6  # run, plan, 3 workers, synthesis
    assert store.some_run_id in page.inner_text("body")


def test_unknown_run_is_an_error_not_a_traceback(server: str, page: Any) -> None:
    page.goto(f"{server}/run?run_id={'f' * 32}")
    alert = page.locator("[data-testid='stAlertContentError']").first
    alert.wait_for()
    assert "no run" in alert.inner_text()
    assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.parametrize("path", [
    "/incidents", "/findings", "/run?run_id={some}", "/replay?run_id={some}&max_workers=2",
    "/whatif?max_workers=2",
])
def test_tables_fit_a_1440_px_window_whole(
    server: str, store: StoreFixture, page: Any, path: str
) -> None:
    # Every column, its heading whole, without scrolling sideways (the CSV has the rest).
    page.goto(server + path.format(some=store.some_run_id))
    page.locator("[data-testid='stDataFrame'] .dvn-scroller").first.wait_for()
    _settle(page)
    widths = page.evaluate("""() => [...document.querySelectorAll(
        "[data-testid='stDataFrame'] .dvn-scroller")].map(e => [e.scrollWidth, e.clientWidth])""")
    assert widths and all(scroll <= client for scroll, client in widths), widths
