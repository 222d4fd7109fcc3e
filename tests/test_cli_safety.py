"""Data from spans is never a formula in a CSV cell (CLI --format csv, report csv,
dashboard downloads: one rule, :func:`cliffwatch.formatting.csv_cell`) and never raw
control characters on a terminal."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cliffwatch.analytics.plain import csv_safe_frame
from cliffwatch.cli import app
from cliffwatch.cli.output import shown_text
from cliffwatch.formatting import csv_cell
from cliffwatch.telemetry.testing import make_run_records, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

FORMULA_CLASS = "=HYPERLINK(\"http://x\")"
ESCAPE_CLASS = "red\x1b[31m\rclass"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("safety") / "store.duckdb"
    records = make_run_records(run_id="a" * 32, task_class=FORMULA_CLASS,
                               started_at_ns=ns_at("2026-11-01T00:00:00"))
    records += make_run_records(run_id="e" * 32, task_class=ESCAPE_CLASS,
                                started_at_ns=ns_at("2026-11-02T00:00:00"))
    write_spans(path, records)
    return path


@pytest.mark.parametrize(("value", "written"), [
    ("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("research", "research"), ("", ""),
    (-0.5, -0.5), (-3, -3), (None, None),
])
def test_csv_cell(value, written) -> None:
    assert csv_cell(value) == written


def test_csv_safe_frame_quotes_text_and_leaves_numbers() -> None:
    df = pl.DataFrame({"task_class": ["=cmd", "ok", None], "saving_usd": [-0.5, 1.0, None]})
    out = pl.read_csv(io.StringIO(csv_safe_frame(df).write_csv()))
    assert out["task_class"].to_list() == ["'=cmd", "ok", None]
    assert out["saving_usd"].to_list() == [-0.5, 1.0, None]  # still numbers


def test_cli_csv_neutralises_formulas_only_in_text(db) -> None:
    result = CliRunner().invoke(app, ["runs", "--db", str(db), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["a" * 32]["task_class"] == "'" + FORMULA_CLASS
    assert float(rows["a" * 32]["cost_usd"]) > 0


def test_report_csv_neutralises_formulas(db, tmp_path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", "--format", "csv", "-o", str(out),
                                      "--db", str(db)])
    assert result.exit_code == 0, result.output
    texts = [p.read_text() for p in out.glob("*.csv")]
    assert any("'" + FORMULA_CLASS.replace('"', '""') in t for t in texts)
    assert not any(line.startswith("=") or ",=" in line
                   for t in texts for line in t.splitlines())


def test_shown_text_escapes_control_characters() -> None:
    assert shown_text("a\x1b[31mb\n\u202e") == "a\\x1b[31mb\\n\\u202e"
    assert shown_text("plain $0.01 · ok") == "plain $0.01 · ok"


@pytest.mark.parametrize("command", [["runs"], ["percentiles"]])
def test_terminal_tables_show_control_characters_escaped(db, command) -> None:
    result = CliRunner().invoke(app, [*command, "--db", str(db)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert "red\\x1b[31m\\rclass" in result.stdout
