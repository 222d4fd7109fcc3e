"""Opening a dashboard page in Streamlit's AppTest, as a new session with deep-link
parameters: shared by the AppTest dashboard tests."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def open_page(app: AppTest, page: str | None = None, **params: str | list[str]) -> AppTest:
    """Open ``page`` (None: the overview) with deep-link query parameters, as a new session;
    fails the test when the page raised.

    AppTest needs one run of the entry point before it can switch to a page
    (docs/sources.md#streamlit-testing-and-rendering).
    """
    for name, value in params.items():
        app.query_params[name] = value
    app.run()
    if page is not None:
        app.switch_page(page).run()
    assert not app.exception, [e.message for e in app.exception]
    return app
