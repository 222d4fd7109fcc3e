"""The dashboard's optional access token, for when it is served beyond loopback.

With ``$CLIFFWATCH_DASHBOARD_TOKEN`` set (``cliffwatch dashboard --token`` sets it for the
Streamlit child), a browser session must open the app once with ``?token=<token>``; the
session then remembers it (``st.session_state``) and the parameter is taken out of the
address bar. Without the setting there is no token and every session is let in.
"""

from __future__ import annotations

import hmac

import streamlit as st

from cliffwatch import settings

TOKEN_PARAM = "token"
"""The URL query parameter that carries the token."""

_SESSION_KEY = "_cliffwatch_token_ok"

TOKEN_MISSING_MESSAGE = (
    "This dashboard needs its access token: open it with ?token=... in the URL."
)


def require_token() -> None:
    """Let the session in, or show ``st.error`` and stop the page (``st.stop``).

    A session is in when no token is configured, when it has shown the token before, or
    when the URL's ``?token=`` equals it (compared in constant time); the parameter is then
    removed from the URL.
    """
    expected = settings.dashboard_token()
    if expected is None or st.session_state.get(_SESSION_KEY):
        return
    given = st.query_params.get(TOKEN_PARAM, "")
    if hmac.compare_digest(given.encode(), expected.encode()):
        st.session_state[_SESSION_KEY] = True
        del st.query_params[TOKEN_PARAM]
        return
    st.error(TOKEN_MISSING_MESSAGE)
    st.stop()
