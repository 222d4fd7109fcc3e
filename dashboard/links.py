"""Deep links to the Replay, What-if and Runs pages (relative to the app's pages)."""

from __future__ import annotations

from urllib.parse import urlencode

from cliffwatch.analytics.replay import LimitsOverride

REPLAY_PAGE = "views/replay.py"
"""The Replay page's source, relative to app.py (what ``st.page_link`` takes)."""

RUNS_PAGE = "views/runs.py"
"""The Runs page's source (every run, paged): where a run is picked."""

REPLAY_URL_PATH = "replay"
"""The Replay page's URL path under ``st.navigation``."""


def limit_params(override: LimitsOverride) -> dict[str, str]:
    """The query parameters that ask the Replay / What-if page for ``override``."""
    args = override.cli_args()
    return {flag.removeprefix("--").replace("-", "_"): value
            for flag, value in zip(args[::2], args[1::2], strict=True)}


def replay_link(run_id: str, override: LimitsOverride | None = None) -> str:
    """``replay?run_id=...`` (with the limits of ``override``, if given)."""
    params = {"run_id": run_id, **(limit_params(override) if override else {})}
    return f"{REPLAY_URL_PATH}?{urlencode(params)}"
