"""analytics.incidents: the incident list, its fields and its filters."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from cliffwatch.analytics.errors import UnknownTaskClassError
from cliffwatch.analytics.incidents import INCIDENT_COLUMNS, list_incidents
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

CAP_RUN = "1" * 32
CEILING_RUN = "2" * 32


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """25 research runs at $0.01 and one at $0.50 (runaway: > 10 x P50), a cap breach,
    and a ceiling breach on another class."""
    path = tmp_path_factory.mktemp("inc") / "store.duckdb"
    records = make_runs_costing(
        [0.01] * 25 + [0.50], task_class="research", seed=4,
        started_at_ns=ns_at("2026-11-01T00:00:00"), interval_s=3600,
    )
    records += make_run_records(
        run_id=CAP_RUN, task_class="research", worker_cost_usds=[], plan_cost_usd=0.01,
        proposed=47, max_workers=8, status="rejected", breach="cap",
        started_at_ns=ns_at("2026-11-03T12:00:00"),
    )
    records += make_run_records(
        run_id=CEILING_RUN, task_class="extract", worker_cost_usds=[0.2, 0.2],
        ceiling_usd=0.3, status="cancelled", breach="ceiling", workers_cancelled=1,
        started_at_ns=ns_at("2026-11-04T12:00:00"),
    )
    write_spans(path, records)
    return path


def test_list_incidents_fields(store) -> None:
    with read_store(store) as con:
        df = list_incidents(con)
    assert df.columns == list(INCIDENT_COLUMNS)
    assert sorted(df["kind"]) == ["cap_breach", "cost_ceiling", "runaway"]
    assert df["detected_at"].to_list() == sorted(df["detected_at"].to_list(), reverse=True)
    cap = df.filter(df["kind"] == "cap_breach").row(0, named=True)
    assert cap["run_id"] == CAP_RUN
    assert cap["task_class"] == "research"
    assert cap["status"] == "open"
    assert cap["detected_at"] == datetime(2026, 11, 3, 12, 0, 1)  # the run's end
    assert "47" in cap["detail"] and "8" in cap["detail"]
    data = json.loads(cap["data"])
    assert (data["proposed"], data["max_workers"]) == (47, 8)
    assert cap["note"] is None


def test_list_incidents_filters(store) -> None:
    with read_store(store) as con:
        assert list_incidents(con, kind="cost_ceiling")["run_id"].to_list() == [CEILING_RUN]
        assert set(list_incidents(con, task_class="research")["kind"]) == {
            "cap_breach", "runaway"
        }
        window = Window.parse("2026-11-03", "2026-11-04")
        assert list_incidents(con, window)["kind"].to_list() == ["cap_breach"]
        assert list_incidents(con, limit=1).height == 1
        with pytest.raises(ValueError, match="limit must be >= 0"):
            list_incidents(con, limit=-1)
        assert list_incidents(con, kind="runaway", status="resolved").is_empty()
        with pytest.raises(UnknownTaskClassError):
            list_incidents(con, task_class="nope")


def test_status_filter_follows_triage(tmp_path, store) -> None:
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(store.read_bytes())
    with open_store(copy, read_only=False) as con:
        con.execute("UPDATE incidents SET status = 'resolved' WHERE kind = 'runaway'")
    with read_store(copy) as con:
        assert list_incidents(con, status="resolved")["kind"].to_list() == ["runaway"]
        assert sorted(list_incidents(con, status="open")["kind"]) == [
            "cap_breach", "cost_ceiling"
        ]
