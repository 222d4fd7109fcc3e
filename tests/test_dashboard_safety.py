"""Span data and URL parameters are shown as text on the dashboard, never as markdown:
a task class or model named ``![x](http://...)`` or ``<img src=x>`` must not become an
image or an element (every viewer's browser would fetch it). Also the optional access token.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from apptest_pages import open_page
from streamlit.testing.v1 import AppTest
from waits import scaled

from cliffwatch.dashboard.ui import WORD_JOINER as WJ
from cliffwatch.dashboard.ui import md_text
from cliffwatch.telemetry.testing import make_run_records, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
TIMEOUT_S = scaled(120)

IMAGE = "![x](http://127.0.0.1:9/x.png)"
HTML = "<img src=x>"
LINK = "![b](http://127.0.0.1:9/b.png)"
RUN_ID = "d" * 32

# Markup that would take effect (not preceded by the backslash that makes it literal): an
# image, an HTML tag, a link off the dashboard (its own run links are relative), a URL
# that GitHub-flavoured markdown would make a link of its own (no word joiner after http).
LIVE_MARKUP = re.compile(r"(?<!\\)!\[|(?<!\\)<img|(?<!\\)\]\(<?[a-z]+:|(?i:https?|www)\\?[:.]")


@pytest.fixture(scope="module")
def markup_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("markup") / "store.duckdb"
    records = make_run_records(
        run_id=RUN_ID, task_class=IMAGE, planner_model=HTML, worker_model=IMAGE,
        synthesis_model=HTML, started_at_ns=ns_at("2026-11-01T00:00:00"),
    )
    records += make_run_records(  # a cap breach: an incident of the markup class
        run_id="e" * 32, task_class=IMAGE, planner_model=HTML, worker_cost_usds=[],
        proposed=47, max_workers=8, status="rejected", breach="cap",
        started_at_ns=ns_at("2026-11-02T00:00:00"),
    )
    write_spans(path, records)
    return path


def _app(db: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    for name, value in params.items():
        app.query_params[name] = value
    return app


def _markdown_texts(app: AppTest) -> list[str]:
    """Every string the page renders as markdown: text elements, expander labels and
    st.table cells."""
    elements = [*app.markdown, *app.caption, *app.title, *app.header, *app.subheader,
                *app.error, *app.warning, *app.info, *app.success]
    texts = [str(e.value) for e in elements] + [str(e.label) for e in app.expander]
    for table in app.table:
        texts += [str(cell) for cell in table.value.to_numpy().ravel()]
    return texts


def _assert_no_live_markup(app: AppTest, *escaped: str) -> None:
    texts = _markdown_texts(app)
    live = [t for t in texts if LIVE_MARKUP.search(t)]
    assert not live, live
    joined = "\n".join(texts)
    for literal in escaped:  # the data is still shown, as escaped text
        assert literal in joined, (literal, texts)


@pytest.mark.parametrize("page", [None, "views/incidents.py", "views/findings.py",
                                  "views/whatif.py", "views/report.py"])
def test_pages_show_a_markup_task_class_as_text(
    page: str | None, markup_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(_app(markup_store, monkeypatch, max_workers="4"), page)
    _assert_no_live_markup(app, rf"\!\[x\]\(http{WJ}\:" if page is None else "")


def test_run_page_shows_markup_class_and_models_as_text(
    markup_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(_app(markup_store, monkeypatch, run_id=RUN_ID), "views/run.py")
    _assert_no_live_markup(app, rf"\!\[x\]\(http{WJ}\:", r"\<img src=x\>")


def test_a_markup_run_id_parameter_is_echoed_as_text(
    markup_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(_app(markup_store, monkeypatch, run_id=LINK), "views/run.py")
    assert app.error, "an unknown run id is an error"
    _assert_no_live_markup(app, rf"\!\[b\]\(http{WJ}\:")


def test_replay_page_shows_markup_as_text(
    markup_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(_app(markup_store, monkeypatch, run_id=RUN_ID), "views/replay.py")
    _assert_no_live_markup(app, rf"\!\[x\]\(http{WJ}\:")


def test_without_the_token_the_page_stops(
    markup_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_DASHBOARD_TOKEN", "s3cret")
    app = open_page(_app(markup_store, monkeypatch, token="wrong"))
    assert [e.value for e in app.error] == [
        "This dashboard needs its access token: open it with ?token=... in the URL."
    ]
    assert not app.table and not app.metric


def test_the_token_opens_the_session_once(
    markup_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_DASHBOARD_TOKEN", "s3cret")
    app = open_page(_app(markup_store, monkeypatch, token="s3cret"))
    assert not app.error and app.metric
    assert "token" not in app.query_params  # not left in the address bar to be shared
    app.switch_page("views/incidents.py").run()  # later pages need it no more
    assert not app.error, [e.value for e in app.error]


@pytest.mark.parametrize(("data", "shown"), [
    ("see http://127.0.0.1:9/x", f"see http{WJ}\\://127\\.0\\.0\\.1\\:9/x"),
    ("HTTPS://h", f"HTTPS{WJ}\\://h"),
    ("www.example.com", f"www{WJ}\\.example\\.com"),
    ("ops@example.com", f"ops{WJ}@example\\.com"),
    ("research", "research"),
])
def test_md_text_stops_markdown_autolinks(data: str, shown: str) -> None:
    # GitHub-flavoured markdown links bare URLs and e-mail addresses found in the text
    # after unescaping it: an invisible word joiner breaks each pattern.
    assert md_text(data) == shown
    assert md_text(data).replace(WJ, "").replace("\\", "") == data
