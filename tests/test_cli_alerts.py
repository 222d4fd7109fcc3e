"""``cliffwatch alerts`` and ``incidents``: how many rows a table, JSON and CSV give by
default, as ``runs``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cliffwatch.cli import app
from cliffwatch.cli.read import ALERTS_TABLE_LIMIT, INCIDENTS_TABLE_LIMIT
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans

BREACHES = ALERTS_TABLE_LIMIT + 5


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with more cap-breach incidents (each an alert) than a table shows."""
    path = tmp_path_factory.mktemp("alerts") / "a.duckdb"
    write_spans(path, [record for seed in range(BREACHES) for record in make_run_records(
        seed=seed, worker_cost_usds=[], proposed=47, max_workers=8, dispatched=0,
        status="rejected", breach="cap")])
    return path


def _stored(db: Path) -> int:
    """Alerts in the store, read straight from its table (the incidents' and the
    breaches-per-hour rule's)."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM alerts").fetchall()[0][0])


def _alerts(db: Path, *args: str, command: str = "alerts") -> tuple[str, str]:
    result = CliRunner().invoke(app, [command, "--db", str(db), *args],
                                env={"COLUMNS": "120", "CLIFFWATCH_WEBHOOK_URLS": ""})
    assert result.exit_code == 0, result.stderr
    return result.stdout, result.stderr


def test_json_and_csv_give_every_alert_unless_limited(db: Path) -> None:
    stored = _stored(db)
    assert stored > ALERTS_TABLE_LIMIT
    assert len(json.loads(_alerts(db, "--format", "json")[0])) == stored
    rows = list(csv.DictReader(io.StringIO(_alerts(db, "--format", "csv")[0])))
    assert len(rows) == stored
    assert len(json.loads(_alerts(db, "--format", "json", "--limit", "3")[0])) == 3


def test_a_table_shows_the_newest_and_says_how_to_see_all(db: Path) -> None:
    table, _ = _alerts(db)  # one row a delivery status: none is configured here
    assert table.count("no_webhook") == ALERTS_TABLE_LIMIT
    assert f"the newest {ALERTS_TABLE_LIMIT} shown (--limit 0 for all)" in table
    everything, _ = _alerts(db, "--limit", "0")
    assert everything.count("no_webhook") == _stored(db)
    assert "--limit 0 for all" not in everything


def test_incidents_limit_as_runs_and_alerts(db: Path) -> None:
    assert BREACHES > INCIDENTS_TABLE_LIMIT
    assert len(json.loads(_alerts(db, "--format", "json", command="incidents")[0])) == BREACHES
    assert len(json.loads(_alerts(db, "--format", "json", "--limit", "3",
                                  command="incidents")[0])) == 3
    table, _ = _alerts(db, command="incidents")
    assert table.count("cap_breach-") == INCIDENTS_TABLE_LIMIT
    assert f"the newest {INCIDENTS_TABLE_LIMIT} shown (--limit 0 for all)" in table
    everything, _ = _alerts(db, "--limit", "0", command="incidents")
    assert everything.count("cap_breach-") == BREACHES
    assert "--limit 0 for all" not in everything
