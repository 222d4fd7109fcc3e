"""Triage controls: acknowledge, resolve or reopen an incident with a note (a store write).

The write goes through :func:`analytics.triage.set_incident_status` (the write side's one
function, re-exported by analytics): one short read-write connection, retried while
another process holds the store. The page then reruns, so its cached reads (keyed on the
store's version) show the new status, and the overview's open count follows.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from cliffwatch.analytics.store_access import StoreError
from cliffwatch.analytics.triage import INCIDENT_STATUSES, set_incident_status
from cliffwatch.dashboard.queries import store_path
from cliffwatch.dashboard.ui import md_text

MAX_NOTE_CHARS = 2000
"""Longest note the form takes (the store refuses longer ones)."""

_FLASH_KEY = "cliffwatch_triage_done"


def render_triage(incidents: pl.DataFrame, *, key: str = "triage") -> None:
    """A form to set one incident's status and note, below a table of ``incidents``.

    Args:
        incidents: rows of :func:`analytics.incidents.list_incidents` (uses
            ``incident_id``, ``kind``, ``task_class``, ``status``, ``detail``).
        key: prefix of the form's widget keys.
    """
    done = st.session_state.pop(_FLASH_KEY, None)
    if done:
        st.success(md_text(done), icon=":material/check:")
    if incidents.is_empty():
        return
    labels = {
        row["incident_id"]: f"{row['kind']} · {row['task_class']} · {row['status']} · "
        f"{row['detail'][:80]}"
        for row in incidents.iter_rows(named=True)
    }
    with st.form(key, border=True):
        st.markdown("**Triage an incident**")
        incident_id = st.selectbox("Incident", list(labels), format_func=labels.__getitem__,
                                   key=f"{key}_incident")
        status = st.radio("Status", INCIDENT_STATUSES, index=1, horizontal=True,
                          key=f"{key}_status")
        note = st.text_input("Note", max_chars=MAX_NOTE_CHARS, key=f"{key}_note",
                             placeholder="Kept with the incident (empty: keep its note)")
        submitted = st.form_submit_button("Save", icon=":material/save:")
    if not submitted or incident_id is None:
        return
    try:
        result = set_incident_status(store_path(), incident_id, status, note.strip() or None)
    except StoreError as exc:
        st.error(md_text(exc))
        return
    st.session_state[_FLASH_KEY] = (
        f"{result.incident_id}: {result.previous_status} → {result.status}"
        + (f" · note: {result.note}" if result.note else "")
    )
    st.rerun()
