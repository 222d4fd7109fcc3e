"""Markup in span data and in URL parameters never leaves the page, in a real browser.

Every string field of the store this test writes (task class, planner / worker /
synthesis models, span names, sub-task titles, status messages, the agent name, an
incident's note) and the URL parameters of every page hold markdown and HTML that would
fetch a "beacon": a loopback HTTP server that records each hit. Chromium then opens every
page as served by ``cliffwatch dashboard``'s Streamlit flags and the test checks:

- the beacon got no request, and the browser sent none off the dashboard's own origin
  (no image, link prefetch, font or usage statistics from elsewhere);
- no element the data could have made exists: no ``src`` / ``href`` / ``style`` pointing
  at the beacon or running ``javascript:``, no bold, strong or link element holding the
  markup's marker words (so ``<b>``, ``**`` and ``<a>`` stayed text);
- the data is still on the page, as text;
- Streamlit's Deploy button is not shown.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from browser import RENDER_TIMEOUT_MS, BrowserUnavailable, chromium, ensure_chromium
from browser import streamlit_server as serve_dashboard

from cliffwatch.analytics.incidents import list_incidents
from cliffwatch.analytics.store_access import read_store
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.testing import make_run_records, ns_at
from cliffwatch.telemetry.triage import set_incident_status
from cliffwatch.telemetry.write_pipeline import write_spans

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1440, "height": 1000}
RUN_ID = "c" * 32
BREACH_RUN_ID = "d" * 32
REPLAY_RUN_ID = "e" * 32
MARKERS = ("cwA", "cwL", "cwB", "cwS")
"""Words inside the link, markdown link, ``<b>`` and ``**`` of every payload: an ``a``,
``b`` or ``strong`` element holding one of them was made from data."""


class Beacon:
    """A loopback HTTP server that records the path of every request it gets."""

    def __init__(self) -> None:
        hits = self.hits = []  # type: list[str]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def payload(self, field: str) -> str:
        """Markup for ``field``: a markdown image and link, an HTML image, link and bold
        text, markdown bold and a ``javascript:`` link, each naming ``field``."""
        url = f"http://{self.base}/{field}"
        return (f"{field} ![i]({url}/md-img.png) <img src={url}/html-img> "
                f"<a href={url}/a>cwA</a> [cwL](javascript:fetch('{url}/js')) "
                f"<b>cwB</b> **cwS** <span style=\"background:url({url}/css)\">s</span>")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _mark_up(record: SpanRecord, beacon: Beacon) -> SpanRecord:
    """``record`` with markup in its name, status message, sub-task titles and agent name."""
    attributes = json.loads(record.attributes)
    if cv.CLIFF_SUBTASK_TITLE in attributes:
        attributes[cv.CLIFF_SUBTASK_TITLE] = beacon.payload("title")
    if cv.CLIFF_PLAN_SUBTASKS in attributes:
        plan = json.loads(attributes[cv.CLIFF_PLAN_SUBTASKS])
        for item in plan:
            item["title"] = beacon.payload("plan-title")
        attributes[cv.CLIFF_PLAN_SUBTASKS] = json.dumps(plan)
    attributes["gen_ai.agent.name"] = beacon.payload("agent")
    return dataclasses.replace(
        record, name=f"{record.name} {beacon.payload('span')}",
        status_message=beacon.payload("status"), attributes=json.dumps(attributes),
    )


@pytest.fixture(scope="module")
def beacon() -> Iterator[Beacon]:
    started = Beacon()
    yield started
    started.close()


@pytest.fixture(scope="module")
def store(beacon: Beacon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        ensure_chromium()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    path = tmp_path_factory.mktemp("markup_browser") / "cliffwatch.duckdb"
    models = {"planner_model": beacon.payload("planner"),
              "worker_model": beacon.payload("worker"),
              "synthesis_model": beacon.payload("synthesis")}
    task_class = beacon.payload("class")
    records = []
    for day in range(12):  # a tail (a runaway incident, a Cost Cliff finding) and a trend
        records += make_run_records(
            run_id=RUN_ID if day == 0 else None, seed=day, task_class=task_class,
            worker_cost_usds=[0.002 * (40 if day == 5 else 1)] * 3, max_workers=None,
            started_at_ns=ns_at(f"2026-11-{day + 1:02d}T00:00:00"), **models,
        )
    records += make_run_records(  # a cap breach: its incident and replay
        run_id=BREACH_RUN_ID, task_class=task_class, worker_cost_usds=[], proposed=47,
        max_workers=8, status="rejected", breach="cap",
        started_at_ns=ns_at("2026-11-13T00:00:00"), **models,
    )
    records += make_run_records(  # a replay whose "replay of" (12 characters shown) is markup
        run_id=REPLAY_RUN_ID, task_class=task_class, replay_of="**cwS** [cwL](x)",
        started_at_ns=ns_at("2026-11-14T00:00:00"), **models,
    )
    write_spans(path, [_mark_up(r, beacon) for r in records])
    with read_store(path) as con:
        incident_id = list_incidents(con)["incident_id"][0]
    set_incident_status(path, incident_id, "acknowledged", beacon.payload("note"))
    return path


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("markup_server") / "streamlit.log"
    with serve_dashboard(store, log) as url:
        yield url


@pytest.fixture(scope="module")
def browser(store: Path) -> Iterator[Any]:
    with chromium() as started:
        yield started


def _pages(beacon: Beacon) -> list[tuple[str, str]]:
    """(path and query, text the page must show) of every page, with markup parameters;
    where the data is in the page's text (not only in a table's canvas), the text is the
    data itself, shown as it is."""
    bad = quote(beacon.payload("param"))
    data_class, data_param = "class ![i](", "param ![i]("
    return [
        ("/", data_class),
        (f"/?since={bad}&until={bad}&task_class={bad}", data_param),
        ("/incidents", "Incidents"),
        (f"/incidents?kind={bad}&status={bad}", "Incidents"),
        ("/findings", "Findings"),
        (f"/findings?kind={bad}", "Findings"),
        (f"/run?run_id={RUN_ID}", data_class),
        (f"/run?run_id={bad}", data_param),
        (f"/replay?run_id={BREACH_RUN_ID}&max_workers=4", "Timeline as recorded"),
        (f"/run?run_id={REPLAY_RUN_ID}", "replay of"),
        (f"/replay?run_id={REPLAY_RUN_ID}&max_workers=1", "Replay of"),
        (f"/replay?run_id={bad}", data_param),
        (f"/replay?run_id={RUN_ID}&max_workers={bad}&ceiling_usd={bad}&policy={bad}",
         "Replay"),
        ("/whatif?max_workers=2", "Runs the limits change"),
        (f"/whatif?max_workers={bad}&ceiling_usd={bad}", "What-if"),
        ("/report", "Build the report"),
    ]


# Elements the data could have made: a URL-bearing attribute that points at the beacon or
# runs javascript:, or a bold / strong / link element around one of the markers.
_FIND_MADE = """([beacon, markers]) => {
  const made = [];
  const where = (el) => {  // the nearest Streamlit element, to say where it was made
    for (let p = el; p; p = p.parentElement) {
      const id = p.getAttribute && p.getAttribute('data-testid');
      if (id) return id;
    }
    return '?';
  };
  const urlAttrs = ['src', 'href', 'xlink:href', 'srcset', 'style', 'action', 'formaction',
                    'poster', 'background', 'data'];
  for (const el of document.querySelectorAll('*')) {
    for (const name of urlAttrs) {
      const value = el.getAttribute(name) || '';
      if (value.includes(beacon) || /^\\s*javascript:/i.test(value)) {
        made.push(`${where(el)} ${el.tagName} ${name}=${value.slice(0, 120)}`);
      }
    }
    const tag = el.tagName.toLowerCase();
    const bold = tag === 'tspan' && /bold/.test(el.getAttribute('style') || '');
    if (['a', 'b', 'strong', 'em', 'i'].includes(tag) || bold) {
      if (markers.includes(el.textContent.trim())) made.push(`${tag}: ${el.textContent}`);
    }
  }
  return made;
}"""


def _settle(page: Any, text: str) -> None:
    page.wait_for_selector("[data-testid='stApp']")
    page.get_by_text(text).first.wait_for()
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=RENDER_TIMEOUT_MS,
    )
    page.locator("[data-testid='stSidebar']").wait_for()


def test_markup_in_data_and_links_stays_text(
    server: str, browser: Any, beacon: Beacon
) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    origin = urlsplit(server).netloc
    off_site: list[str] = []
    context.on("request", lambda request: off_site.append(request.url)
               if urlsplit(request.url).scheme in ("http", "https", "ws", "wss")
               and urlsplit(request.url).netloc != origin else None)
    page = context.new_page()
    page.set_default_timeout(RENDER_TIMEOUT_MS)
    made: dict[str, list[str]] = {}
    try:
        for path, expected in _pages(beacon):
            page.goto(server + path)
            _settle(page, expected)
            if path.startswith("/run?run_id=c"):  # the recent-runs picker lists the class
                page.get_by_role("combobox").first.click()
                page.get_by_role("option").first.wait_for()
            found = page.evaluate(_FIND_MADE, [beacon.base, list(MARKERS)])
            if found:
                made[path] = found
            assert not page.get_by_text("Deploy", exact=True).count()
            page.keyboard.press("Escape")
    finally:
        context.close()
    assert not made, made
    assert not beacon.hits, beacon.hits
    assert not off_site, sorted(set(off_site))
