"""Incident triage on a ClickHouse store: a new row version of the incident.

``cliffwatch_incidents`` is a ReplacingMergeTree keyed by ``incident_id`` (tables.py): the
last row inserted for an id is the incident. A triage change copies the current row with
its new ``status``, ``note`` and ``updated_at`` in one ``INSERT ... SELECT`` run in the
engine, so every other column stays exactly as the rules recorded it.
"""

from __future__ import annotations

from datetime import datetime

from cliffwatch.telemetry.clickhouse.client import connect
from cliffwatch.telemetry.clickhouse.connection import EngineConnection, check_store
from cliffwatch.telemetry.clickhouse.dialect import literal
from cliffwatch.telemetry.clickhouse.tables import TABLES
from cliffwatch.telemetry.clickhouse.url import parse_store_url
from cliffwatch.telemetry.ids import INCIDENT_ID_FAMILIES, resolve_id


def set_status(
    url_text: str,
    incident_id: str,
    status: str,
    note: str | None,
    stamp: datetime,
    not_found: type[Exception],
) -> tuple[str, str, str | None]:
    """Record ``status`` (and ``note``: None keeps the incident's, ``""`` clears it) for
    the incident ``incident_id`` (or a unique prefix) in the ClickHouse store ``url_text``.

    Returns:
        (the full incident id, its previous status, the note kept).

    Raises:
        not_found: no incident has that id (or the prefix is ambiguous or too short).
        StoreError: the URL is bad, the store unreachable or without cliffwatch tables.
    """
    with connect(parse_store_url(url_text)) as client:
        check_store(client)
        con = EngineConnection(client)
        full_id = resolve_id(con, incident_id, table="incidents",  # type: ignore[arg-type]
                             column="incident_id", noun="incident", not_found=not_found,
                             families=INCIDENT_ID_FAMILIES)
        previous, old_note = con.sql(
            "SELECT status, note FROM incidents WHERE incident_id = ?", [full_id]
        ).fetchall()[0]
        kept = old_note if note is None else (note.strip() or None)
        values = {"status": status, "note": kept, "updated_at": stamp}
        replace = ", ".join(
            f"{literal(value).sql(dialect='clickhouse')} AS {name}"
            for name, value in values.items()
        )
        table = TABLES["incidents"]
        client.command(
            f"INSERT INTO {table} SELECT * REPLACE ({replace}) FROM {table} FINAL "
            f"WHERE incident_id = {literal(full_id).sql(dialect='clickhouse')}"
        )
    return full_id, previous, kept
