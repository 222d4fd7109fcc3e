"""Tables fit an 80-column terminal: every table command over a real demo store, rendered
with COLUMNS=80, keeps every line within 80 characters and never splits a money value."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cliffwatch.cli import app
from cliffwatch.formatting import usd

NARROW = {"COLUMNS": "80"}
WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def demo_made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 60-run demo store behind a path longer than 80 columns, and what `demo` printed
    at 80 columns."""
    folder = tmp_path_factory.mktemp("width") / "a-team-folder-with-a-long-name" / "stores"
    folder.mkdir(parents=True)
    path = folder / "cliffwatch-demo.duckdb"
    assert len(str(path)) > 80 or len(f"demo store {path}") > 80
    result = CliRunner().invoke(app, ["demo", "--runs", "60", "--days", "3", "--seed", "5",
                                      "--db", str(path)], env=NARROW)
    assert result.exit_code == 0, result.output
    return path, result.stdout


@pytest.fixture(scope="module")
def demo_db(demo_made: tuple[Path, str]) -> Path:
    return demo_made[0]


def test_demo_names_its_store_whole_at_80_columns(demo_made: tuple[Path, str]) -> None:
    path, printed = demo_made
    assert f"demo store {path}" in printed.splitlines()  # one line, never cut or wrapped
    assert "db path" not in printed  # said once, on that line
    assert re.search(r"^ *total cost +\$\d", printed, re.MULTILINE), printed


def _out(*args: str, env: dict[str, str]) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def _first_run_id(db: Path) -> str:
    rows = json.loads(_out("runs", "--db", str(db), "--format", "json", "--limit", "1",
                           env=WIDE))
    return rows[0]["run_id"]


TABLE_COMMANDS = {
    "percentiles": (["percentiles"], ["p50_usd", "p95_usd", "p99_usd"]),
    "runs": (["runs"], ["cost_usd"]),
    "incidents": (["incidents"], []),
    "whatif": (["whatif", "--max-workers", "4"], []),
    "findings": (["findings"], ["yearly_saving_usd"]),
    "alerts": (["alerts"], []),
    "audit": (["audit", "--no-current-map"], []),
}


def _header_lines(out: str) -> list[str]:
    """The header line of every table in ``out`` (the line above its rule)."""
    lines = out.splitlines()
    return [lines[i - 1] for i, line in enumerate(lines) if i and line.lstrip().startswith("─")]


def _assert_fits_with_whole_headers(out: str, width: int = 80) -> None:
    for line in out.splitlines():
        assert len(line) <= width, line
    headers = _header_lines(out)
    assert headers, out
    for header in headers:
        assert "…" not in header, header


@pytest.mark.parametrize("name", sorted(TABLE_COMMANDS))
def test_table_fits_80_columns_and_keeps_money_whole(demo_db, name) -> None:
    args, money_keys = TABLE_COMMANDS[name]
    table = _out(*args, "--db", str(demo_db), env=NARROW)
    assert table.strip()
    if "no alerts" in table or "no incidents" in table:
        for line in table.splitlines():
            assert len(line) <= 80, line
    else:
        _assert_fits_with_whole_headers(table)
    if not money_keys:
        return
    rows = json.loads(_out(*args, "--db", str(demo_db), "--format", "json", env=NARROW))
    rows = rows[:50] if name == "runs" else rows  # the table shows 50 by default
    for row in rows:
        for key in money_keys:
            assert usd(row[key]) in table, (key, row[key])


def test_whatif_keeps_money_whole(demo_db) -> None:
    args = ["whatif", "--max-workers", "4", "--db", str(demo_db)]
    table = _out(*args, env=NARROW)
    data = json.loads(_out(*args, "--format", "json", env=NARROW))
    assert "a year $" in _header_lines(table)[0]
    for row in data["by_class"]:
        assert usd(row["saving_usd"]) in table
        assert f"{usd(row['p95_before_usd'])} -> {usd(row['p95_after_usd'])}" in table


@pytest.mark.parametrize(("command", "column"), [("incidents", "detail"), ("alerts", "text")])
def test_sentences_with_money_wrap_whole_at_120_columns_and_are_named_when_hidden(
    demo_db, command: str, column: str
) -> None:
    rows = json.loads(_out(command, "--db", str(demo_db), "--format", "json", env=WIDE))
    assert any("$" in row[column] for row in rows)  # money among the words
    table = _out(command, "--db", str(demo_db), env={"COLUMNS": "120"})
    header = _header_lines(table)[0]
    lines = table.splitlines()
    at = header.index(column)  # the column's text, to the next heading, every line
    after = re.search(r"\S", header[at + len(column):])
    end = at + len(column) + after.start() if after else None
    texts = " ".join(line[at:end] for line in lines[lines.index(header) + 2:])
    assert "…" not in texts
    for row in rows:
        assert " ".join(row[column].split()) in " ".join(texts.split()), row
    narrow = _out(command, "--db", str(demo_db), env=NARROW)
    assert column in _tables(narrow)[0][1]  # hidden, and named


def test_replay_fits_80_columns(demo_db) -> None:
    run_id = _first_run_id(demo_db)
    args = ["replay", run_id, "--max-workers", "1", "--db", str(demo_db)]
    out = _out(*args, env=NARROW)
    assert "Timeline as recorded" in out
    _assert_fits_with_whole_headers(out)
    # the comparison's header, whole
    assert any("counterfactual " in h for h in _header_lines(out)), out
    if "Plan: as recorded, and counterfactual" in out:  # cf columns shown at 80 columns
        assert "cf outcome" in out
    data = json.loads(_out(*args, "--format", "json", env=NARROW))
    assert usd(data["counterfactual"]["cost_usd"]) in out


def _tables(out: str) -> list[tuple[list[str], str]]:
    """Each table of ``out``: its headers, and the text of its "hidden at this width:"
    line (wrapped lines joined; "" without one)."""
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if i and line.lstrip().startswith("─")]
    tables = []
    for n, i in enumerate(starts):
        headers = re.split(r"\s{2,}", lines[i - 1].strip())
        end = starts[n + 1] - 1 if n + 1 < len(starts) else len(lines)
        block = " ".join(line.strip() for line in lines[i + 1:end])
        found = re.search(r"hidden at this width: (.*?) \(a wider terminal", block)
        tables.append((headers, found.group(1) if found else ""))
    return tables


@pytest.mark.parametrize("name", [*sorted(TABLE_COMMANDS), "replay"])
def test_every_column_left_out_at_80_columns_is_named(demo_db, name) -> None:
    """A column shown at 200 columns and not at 80 is named in the table's "hidden at
    this width:" line, whether a secondary column (``narrow_drop``) or one hidden to fit."""
    args = (["replay", _first_run_id(demo_db), "--max-workers", "1"] if name == "replay"
            else TABLE_COMMANDS[name][0])
    wide = _tables(_out(*args, "--db", str(demo_db), env=WIDE))
    narrow = _tables(_out(*args, "--db", str(demo_db), env=NARROW))
    assert len(wide) == len(narrow)
    for (wide_headers, wide_hidden), (narrow_headers, hidden) in zip(wide, narrow,
                                                                      strict=True):
        every = wide_headers + (wide_hidden.split(", ") if wide_hidden else [])
        left_out = [h for h in every if h not in narrow_headers]
        # each named once; in the table's column order, which the wide table's own
        # hidden (empty) columns do not keep
        assert (sorted(hidden.split(", ")) == sorted(left_out) and len(set(left_out))
                == len(left_out)) if left_out else not hidden, (name, hidden)


def test_runs_keep_breach_at_80_columns(demo_db) -> None:
    headers, hidden = _tables(_out("runs", "--db", str(demo_db), env=NARROW))[0]
    assert "breach" in headers and "cost $" in headers
    assert hidden.split(", ") == ["proposed", "dispatched", "cap", "ceiling $"]


def test_narrow_tables_shorten_ids_and_wide_ones_show_more(demo_db) -> None:
    narrow = _out("runs", "--db", str(demo_db), env=NARROW)
    wide = _out("runs", "--db", str(demo_db), env=WIDE)
    run_id = _first_run_id(demo_db)
    assert run_id[:12] in narrow and run_id[:13] not in narrow
    assert "proposed" not in _header_lines(narrow)[0]  # a secondary column
    assert "proposed" in _header_lines(wide)[0]
    assert max(map(len, wide.splitlines())) > 80


def test_runs_machine_formats_return_every_run_and_the_table_says_how_many(demo_db) -> None:
    args = ["runs", "--db", str(demo_db)]
    assert len(json.loads(_out(*args, "--format", "json", env=WIDE))) == 60
    csv_lines = _out(*args, "--format", "csv", env=WIDE).strip().splitlines()
    assert len(csv_lines) == 61  # header + every run
    assert len(json.loads(_out(*args, "--format", "json", "--limit", "7", env=WIDE))) == 7
    table = _out(*args, env=WIDE)
    assert "the newest 50 shown (--limit 0 for all)" in table
    assert len(json.loads(_out(*args, "--format", "json", "--limit", "0", env=WIDE))) == 60
    assert "shown (--limit" not in _out(*args, "--limit", "0", env=WIDE)


def test_json_timestamps_carry_their_utc_offset(demo_db) -> None:
    rows = json.loads(_out("runs", "--db", str(demo_db), "--format", "json", env=WIDE))
    assert rows and all(r["started_at"].endswith("Z") for r in rows)
    incidents = json.loads(_out("incidents", "--db", str(demo_db), "--format", "json",
                                env=WIDE))
    assert all(r["detected_at"].endswith("Z") for r in incidents)


_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _timestamps(data: object, path: str = "") -> list[tuple[str, str]]:
    """Every (path, value) of ``data`` whose value is text that reads as a date and time."""
    if isinstance(data, dict):
        return [t for k, v in data.items() for t in _timestamps(v, f"{path}.{k}")]
    if isinstance(data, list):
        return [t for i, v in enumerate(data) for t in _timestamps(v, f"{path}[{i}]")]
    return [(path, data)] if isinstance(data, str) and _TIMESTAMP.match(data) else []


JSON_COMMANDS = {
    "findings": ["findings"],
    "replay": ["replay", "RUN", "--max-workers", "1"],
    "whatif": ["whatif", "--max-workers", "4", "--since", "2020-01-01"],
    "runs": ["runs"],
    "incidents": ["incidents"],
    "alerts": ["alerts"],
    "audit": ["audit", "--no-current-map"],
}


@pytest.mark.parametrize("name", [*sorted(JSON_COMMANDS), "report"])
def test_every_json_timestamp_ends_in_z(demo_db, tmp_path, name) -> None:
    """Every value of a command's JSON that reads as a timestamp is UTC ISO 8601 with Z
    (README: "Timestamps in JSON and CSV are UTC ISO 8601 with Z")."""
    if name == "report":
        out = tmp_path / "report.json"
        _out("report", "--format", "json", "-o", str(out), "--db", str(demo_db), env=WIDE)
        data = json.loads(out.read_text())
    else:
        args = [_first_run_id(demo_db) if a == "RUN" else a for a in JSON_COMMANDS[name]]
        data = json.loads(_out(*args, "--db", str(demo_db), "--format", "json", env=WIDE))
    found = _timestamps(data)
    assert found or name in ("alerts", "audit"), name  # each of the others has some
    assert [(p, v) for p, v in found if not v.endswith("Z")] == [], name


def test_incidents_show_the_run_and_accept_id_prefixes(demo_db, tmp_path) -> None:
    import shutil

    db = tmp_path / "triage.duckdb"
    shutil.copy(demo_db, db)
    incidents = json.loads(_out("incidents", "--db", str(db), "--format", "json", env=WIDE))
    assert incidents
    first = incidents[0]
    table = _out("incidents", "--db", str(db), env=NARROW)
    assert first["run_id"][:12] in table  # the run id column, to follow with replay
    ids = [i["incident_id"] for i in incidents]
    prefix = next(first["incident_id"][:n] for n in range(6, len(first["incident_id"]) + 1)
                  if sum(i.startswith(first["incident_id"][:n]) for i in ids) == 1)
    out = _out("incidents", "ack", prefix, "--db", str(db), env=WIDE)
    assert f"{first['incident_id']}: open -> acknowledged" in out
    short = CliRunner().invoke(app, ["incidents", "ack", prefix[:3], "--db", str(db)])
    assert short.exit_code == 2 and "too short" in short.stderr
    missing = CliRunner().invoke(app, ["incidents", "ack", "zzzzzzzz", "--db", str(db)])
    assert missing.exit_code == 2 and "no incident" in missing.stderr


def test_a_too_short_run_id_prefix_says_so(demo_db) -> None:
    result = CliRunner().invoke(app, ["replay", "abc", "--db", str(demo_db)])
    assert result.exit_code == 2 and "too short" in result.stderr


def test_narrow_table_never_cuts_a_status_or_a_header(monkeypatch, capsys) -> None:
    """A run ``incomplete`` beside long class names at 80 columns: the status and every
    header stay whole; the class (free text) is what gets cut."""
    from datetime import datetime

    import polars as pl

    from cliffwatch.cli.options import OutputFormat
    from cliffwatch.cli.output import render

    monkeypatch.setenv("COLUMNS", "80")
    df = pl.DataFrame({
        "run_id": ["0123456789abcdef0123", "fedcba98765432100000"],
        "task_class": ["customer_support_escalation_triage", "research"],
        "started_at": [datetime(2026, 11, 30, 9, 30), datetime(2026, 11, 30, 9, 31)],
        "status": ["incomplete", "ok"],
        "breach": ["ceiling", None],
        "cost_usd": [0.000123456, 12.5],
        "max_workers": [8, 3],
    })
    render(df, OutputFormat.TABLE, narrow_drop=("breach",))
    out = capsys.readouterr().out
    _assert_fits_with_whole_headers(out)
    assert "incomplete" in out
    assert "started (UTC)" in out and "cap" in _header_lines(out)[0]
    assert usd(0.000123456) in out and usd(12.5) in out
    assert "customer_support_escalation_triage" not in out  # free text is what is cut


def test_a_table_too_wide_hides_its_empty_columns_before_cutting_text(
    monkeypatch, capsys
) -> None:
    """Alerts not yet sent at 120 columns: the empty webhook and last-error columns go
    (named) before the class is cut; a table that fits keeps its empty columns."""
    import polars as pl

    from cliffwatch.cli.options import OutputFormat
    from cliffwatch.cli.output import render

    df = pl.DataFrame({
        "kind": ["cap_breach", "ceiling_breach"],
        "task_class": ["customer_support_escalation", "research"],
        "text": ["plan proposed 30 workers, cap 8: rejected at dispatch " * 2, "spent"],
        "webhook": pl.Series([None, None], dtype=pl.String),
        "attempts": [0, 0],
        "last_error": pl.Series([None, None], dtype=pl.String),
    })
    monkeypatch.setenv("COLUMNS", "120")
    render(df, OutputFormat.TABLE, wrap_columns=("text",))
    out = capsys.readouterr().out
    _assert_fits_with_whole_headers(out, 120)
    headers = _header_lines(out)[0]
    assert "webhook" not in headers and "last error" not in headers
    assert "customer_support_escalation" in out and "attempts" in headers
    assert _tables(out)[0][1] == "webhook, last error"
    monkeypatch.setenv("COLUMNS", "200")
    render(df.with_columns(pl.col("text").str.slice(0, 20)), OutputFormat.TABLE)
    wide = capsys.readouterr().out
    assert "webhook" in _header_lines(wide)[0] and "hidden" not in wide
