"""Incident triage: acknowledge, resolve, reopen with a note, kept in the store across writes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from cliffwatch.analytics.errors import UnknownTaskClassError
from cliffwatch.analytics.incidents import list_incidents
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.triage import get_incident, triage_counts
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.store import StoreError, StoreNotFoundError
from cliffwatch.telemetry.testing import hold_store_lock, make_run_records, ns_at
from cliffwatch.telemetry.triage import (
    MAX_NOTE_CHARS,
    IncidentNotFoundError,
    TriageStatusError,
    acknowledge,
    resolve,
    set_incident_status,
)
from cliffwatch.telemetry.write_pipeline import write_spans

BREACH = "b" * 32
CEILING = "c" * 32
CAP_ID = f"cap_breach-{BREACH[:16]}"
CEILING_ID = f"cost_ceiling-{CEILING[:16]}"


def _records() -> list:
    return make_run_records(
        run_id=BREACH, worker_cost_usds=[], plan_cost_usd=0.01, proposed=47, max_workers=8,
        status="rejected", breach="cap", started_at_ns=ns_at("2026-11-03T00:00:00"),
    ) + make_run_records(
        run_id=CEILING, worker_cost_usds=[0.05, 0.05], with_synthesis=False, ceiling_usd=0.08,
        status="cancelled", breach="ceiling", workers_cancelled=1, dispatched=3,
        started_at_ns=ns_at("2026-11-04T00:00:00"),
    )


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    path = tmp_path / "t.duckdb"
    write_spans(path, _records())
    return path


def _incident(path: Path, incident_id: str) -> dict:
    with read_store(path) as con:
        return get_incident(con, incident_id)


def test_acknowledge_then_resolve_keeps_status_note_and_time(store: Path) -> None:
    assert _incident(store, CAP_ID)["status"] == "open"
    first = acknowledge(store, CAP_ID, "looking: planner prompt lost the cap")
    assert (first.status, first.previous_status) == ("acknowledged", "open")
    row = _incident(store, CAP_ID)
    assert (row["status"], row["note"]) == ("acknowledged", "looking: planner prompt lost the cap")
    assert row["updated_at"] == first.updated_at
    done = resolve(store, CAP_ID)  # no note: the note stays
    row = _incident(store, CAP_ID)
    assert (done.previous_status, row["status"]) == ("acknowledged", "resolved")
    assert row["note"] == "looking: planner prompt lost the cap"
    stamp = datetime(2026, 11, 5, 12, 0)
    again = set_incident_status(store, CAP_ID, "open", "", now=stamp)
    row = _incident(store, CAP_ID)
    assert (again.status, row["status"], row["note"], row["updated_at"]) == (
        "open", "open", None, stamp)


def test_triage_survives_later_writes_of_the_same_run(store: Path) -> None:
    resolve(store, CEILING_ID, "ceiling raised to $0.10")
    write_spans(store, _records())  # the rules run again over the same runs
    row = _incident(store, CEILING_ID)
    assert (row["status"], row["note"]) == ("resolved", "ceiling raised to $0.10")


def test_counts_per_kind_and_status_follow_triage(store: Path) -> None:
    acknowledge(store, CAP_ID)
    with read_store(store) as con:
        counts = {r["kind"]: r for r in triage_counts(con).iter_rows(named=True)}
        open_ones = list_incidents(con, status="open")
    assert counts["cap_breach"]["acknowledged"] == 1 and counts["cap_breach"]["open"] == 0
    assert counts["cost_ceiling"]["open"] == 1 and counts["cost_ceiling"]["total"] == 1
    assert open_ones["incident_id"].to_list() == [CEILING_ID]


def test_counts_filter_by_window_and_class_as_the_other_reads(store: Path) -> None:
    task_class = _incident(store, CAP_ID)["task_class"]
    with read_store(store) as con:
        from_4th = triage_counts(con, Window.parse("2026-11-04"))
        of_class = triage_counts(con, task_class=task_class)
        everything = triage_counts(con)
        with pytest.raises(UnknownTaskClassError, match="'nope'"):
            triage_counts(con, task_class="nope")
    assert from_4th["kind"].to_list() == ["cost_ceiling"]
    assert of_class.equals(everything) and everything.height == 2


@pytest.mark.parametrize(
    ("incident_id", "status", "note", "error"),
    [
        ("cap_breach-nosuch", "resolved", None, IncidentNotFoundError),
        (CAP_ID, "closed", None, TriageStatusError),
        (CAP_ID, "resolved", "x" * (MAX_NOTE_CHARS + 1), TriageStatusError),
    ],
)
def test_bad_requests_are_one_line_errors(
    store: Path, incident_id: str, status: str, note: str | None, error: type
) -> None:
    with pytest.raises(error) as caught:
        set_incident_status(store, incident_id, status, note)
    assert isinstance(caught.value, StoreError) and "\n" not in str(caught.value)
    assert _incident(store, CAP_ID)["status"] == "open"


def test_a_missing_store_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        resolve(tmp_path / "none.duckdb", CAP_ID)
    assert not (tmp_path / "none.duckdb").exists()


@pytest.mark.slow
def test_a_busy_store_is_retried_until_the_holder_lets_go(store: Path) -> None:
    with hold_store_lock(store, seconds=0.5):
        triage = resolve(store, CAP_ID, "fixed")  # waits for the reader to go
    assert triage.status == "resolved"


def test_cli_incidents_ack_and_resolve(store: Path) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["incidents", "ack", CAP_ID, "--note", "on it", "--db", str(store)])
    assert result.exit_code == 0, result.output
    assert f"{CAP_ID}: open -> acknowledged (note: on it)" in result.stdout
    result = runner.invoke(app, ["incidents", "resolve", CAP_ID, "--db", str(store)])
    assert result.exit_code == 0 and "acknowledged -> resolved" in result.stdout
    listed = runner.invoke(app, ["incidents", "--status", "resolved", "--format", "json",
                                 "--db", str(store)])
    assert listed.exit_code == 0 and CAP_ID in listed.stdout and CEILING_ID not in listed.stdout
    missing = runner.invoke(app, ["incidents", "reopen", "nosuch", "--db", str(store)])
    assert missing.exit_code == 2 and "no incident 'nosuch'" in missing.stderr


def test_an_incident_prefix_may_leave_its_kind_out(store: Path) -> None:
    """Every incident id starts with its kind, so ``cap_br`` names every cap breach; the
    part after the kind (the run's) is what tells incidents apart."""
    done = acknowledge(store, BREACH[:8])
    assert done.incident_id == CAP_ID
    assert _incident(store, CAP_ID)["status"] == "acknowledged"
    assert resolve(store, f"  {CEILING[:6].upper()} ").incident_id == CEILING_ID


def test_an_ambiguous_prefix_names_the_incidents_it_matches(tmp_path: Path) -> None:
    path = tmp_path / "two.duckdb"
    twins = ["d" * 8 + "0" * 24, "d" * 8 + "1" * 24]
    write_spans(path, [record for run_id in twins for record in make_run_records(
        run_id=run_id, worker_cost_usds=[], plan_cost_usd=0.01, proposed=47, max_workers=8,
        status="rejected", breach="cap", started_at_ns=ns_at("2026-11-03T00:00:00"))])
    with pytest.raises(IncidentNotFoundError) as caught:
        acknowledge(path, "d" * 8)
    message = str(caught.value)
    assert "matches several incidents" in message and "\n" not in message
    assert all(f"cap_breach-{run_id[:16]}" in message for run_id in twins)
    with read_store(path) as con:
        assert set(list_incidents(con)["status"].to_list()) == {"open"}  # nothing changed
