"""Opening a dashboard page in Streamlit's AppTest, as a new session with deep-link
parameters: shared by the AppTest dashboard tests."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from cliffwatch.dashboard import paint_gate


def open_page(app: AppTest, page: str | None = None, *, painted: bool = True,
              **params: str | list[str]) -> AppTest:
    """Open ``page`` (None: the overview) with deep-link query parameters, as a new session;
    fails the test when the page raised.

    ``painted``: the session's browser has already drawn the page's table
    (:mod:`dashboard.paint_gate`: AppTest runs no JavaScript), so its charts come in the
    first run; False: the first run of a new browser session, without its charts.

    AppTest needs one run of the entry point before it can switch to a page
    (docs/sources.md#streamlit-testing-and-rendering).
    """
    for name, value in params.items():
        app.query_params[name] = value
    if painted:
        for gated in paint_gate.PAGES:
            app.session_state[paint_gate.state_key(gated)] = True
    app.run()
    if page is not None:
        app.switch_page(page).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def assert_human_tables(app: AppTest) -> None:
    """Every table of the page went through ``dashboard.tables.show``: human headings
    (no ``snake_case``), missing cells as "-" (never a literal None), and its links (open
    run, replay) right after the first column, never right of the fold beside wide text."""
    assert app.dataframe
    for table in app.dataframe:
        config = json.loads(table.proto.columns)
        order = list(table.proto.column_order) or list(table.value.columns)
        for column in order:
            heading = config[column]["label"]
            assert "_" not in heading and heading[:1] == heading[:1].upper(), (column, heading)
        assert table.proto.placeholder == "-"
        linked = [i for i, column in enumerate(order)
                  if config[column].get("type_config", {}).get("type") == "link"]
        assert linked == list(range(1, len(linked) + 1)), (order, linked)
