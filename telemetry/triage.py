"""Incident triage: acknowledge, resolve or reopen an incident, with a note (a write).

Incidents are recorded by :mod:`telemetry.incident_rules` with status ``open``; people
move them through ``open -> acknowledged -> resolved`` (or back to ``open``), each change
stamped in ``updated_at`` (naive UTC). The rules never overwrite these columns (their
inserts are ``ON CONFLICT DO NOTHING``), so triage survives every later write.

On a ClickHouse store (issue 10) a change is a new row version of the incident
(telemetry/clickhouse/triage.py). Otherwise one short read-write connection per change,
through :func:`telemetry.store.open_store` (lock retry with backoff, like every writer): a
dashboard or CLI never holds the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cliffwatch import settings
from cliffwatch.telemetry.ids import INCIDENT_ID_FAMILIES, resolve_id
from cliffwatch.telemetry.schema import INCIDENT_STATUSES
from cliffwatch.telemetry.store import StoreError, StoreNotFoundError, open_store

MAX_NOTE_CHARS = 2000
"""Longest triage note kept; a longer one is refused (a note is a line or two, not a log)."""


class TriageError(StoreError):
    """A triage change that cannot be made; the message is one line."""


class IncidentNotFoundError(TriageError, LookupError):
    """No incident has this id."""


class TriageStatusError(TriageError, ValueError):
    """A status that is not one of ``open``, ``acknowledged``, ``resolved``, or a note that
    is too long."""


@dataclass(frozen=True, slots=True)
class Triage:
    """An incident's triage state after a change.

    Attributes:
        incident_id: the incident.
        status: ``open``, ``acknowledged`` or ``resolved``.
        note: the triage note, or None.
        updated_at: when it changed (naive UTC).
        previous_status: the status before the change.
    """

    incident_id: str
    status: str
    note: str | None
    updated_at: datetime
    previous_status: str


def set_incident_status(
    path: str | os.PathLike[str],
    incident_id: str,
    status: str,
    note: str | None = None,
    *,
    now: datetime | None = None,
    timeout_s: float | None = None,
) -> Triage:
    """Set an incident's triage status (and note) in the store at ``path``.

    Args:
        path: the store.
        incident_id: the incident's id (as ``cliffwatch incidents`` lists it), or a unique
            prefix of at least 6 characters.
        status: ``open``, ``acknowledged`` or ``resolved``.
        note: the note to keep with it; None keeps the note it has, ``""`` clears it.
        now: the time stamped in ``updated_at`` (naive UTC; default the clock).
        timeout_s: lock retry bound (default ``settings.lock_timeout_s()``).

    Returns:
        The :class:`Triage` as stored.

    Raises:
        TriageStatusError: ``status`` is not a triage status, or ``note`` is longer than
            :data:`MAX_NOTE_CHARS`.
        IncidentNotFoundError: no incident has that id, the prefix matches several, or it
            is too short.
        StoreNotFoundError: the store does not exist (it is never created here).
        StoreBusyError, StoreError: as :func:`telemetry.store.open_store`.
    """
    wanted = status.strip().lower()
    if wanted not in INCIDENT_STATUSES:
        raise TriageStatusError(
            f"unknown incident status {status!r} (use {', '.join(INCIDENT_STATUSES)})"
        )
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise TriageStatusError(
            f"note is {len(note)} characters; the most kept is {MAX_NOTE_CHARS}"
        )
    stamp = now or datetime.now(UTC).replace(tzinfo=None)
    if settings.is_engine_store(path):  # ClickHouse: a new row version of the incident
        from cliffwatch.telemetry.clickhouse.triage import set_status

        full_id, previous, kept = set_status(
            os.fspath(path), incident_id, wanted, note, stamp, IncidentNotFoundError)
        return Triage(full_id, wanted, kept, stamp, previous)
    store = Path(path)
    if not store.exists():
        raise StoreNotFoundError(f"store {store} does not exist")
    with open_store(store, read_only=False, timeout_s=timeout_s) as con:
        incident_id = resolve_id(con, incident_id, table="incidents", column="incident_id",
                                 noun="incident", not_found=IncidentNotFoundError,
                                 families=INCIDENT_ID_FAMILIES)
        found = con.execute(
            "SELECT status, note FROM incidents WHERE incident_id = ?", [incident_id]
        ).fetchall()
        previous, old_note = found[0]
        kept = old_note if note is None else (note.strip() or None)
        con.execute(
            "UPDATE incidents SET status = ?, note = ?, updated_at = ? WHERE incident_id = ?",
            [wanted, kept, stamp, incident_id],
        )
    return Triage(incident_id, wanted, kept, stamp, previous)


def acknowledge(
    path: str | os.PathLike[str], incident_id: str, note: str | None = None
) -> Triage:
    """Mark an incident ``acknowledged`` (someone is on it); see :func:`set_incident_status`."""
    return set_incident_status(path, incident_id, "acknowledged", note)


def resolve(path: str | os.PathLike[str], incident_id: str, note: str | None = None) -> Triage:
    """Mark an incident ``resolved``; see :func:`set_incident_status`."""
    return set_incident_status(path, incident_id, "resolved", note)
