"""Bad input says what is wrong in one line: every choice of a choice option (never
typer's pydantic wording), a report folder that does not exist, a missing store with
what to run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cliffwatch.cli import app
from cliffwatch.telemetry.testing import make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("errors") / "store.duckdb"
    write_spans(path, make_runs_costing([0.01, 0.02, 0.03], task_class="research", seed=1,
                                        started_at_ns=ns_at("2026-11-01T00:00:00")))
    return path


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        (["incidents", "--kind", "foo"], ["cap_breach", "cost_ceiling", "runaway"]),
        (["runs", "--status", "weird"], ["ok", "rejected", "cancelled", "failed"]),
        (["percentiles", "--by", "colour"], ["task_class", "model", "role"]),
        (["runs", "--format", "yaml"], ["table", "json", "csv"]),
        (["whatif", "--policy", "panic"], ["reject", "replan", "truncate"]),
    ],
)
def test_a_bad_choice_lists_every_choice_in_one_line(db, args, choices) -> None:
    line = _one_line_error([*args, "--db", str(db)])
    assert "Value error" not in line and "pydantic" not in line.lower()
    assert repr(args[2]) in line and args[1] in line
    for choice in choices:
        assert choice in line


def test_report_without_format_lists_every_format(db, tmp_path) -> None:
    line = _one_line_error(["report", "-o", str(tmp_path / "r.html"), "--db", str(db)])
    assert "--format" in line
    for fmt in ("html", "md", "csv", "json", "parquet"):
        assert fmt in line


@pytest.mark.parametrize("name", ["report.html", "tables.zip", "tables"])
def test_report_into_a_missing_folder_is_refused_unless_mkdir(db, tmp_path, name) -> None:
    fmt = "html" if name.endswith(".html") else "csv"
    missing = tmp_path / "no" / "such"
    line = _one_line_error(["report", "--format", fmt, "-o", str(missing / name),
                            "--db", str(db)])
    assert str(missing) in line and "--mkdir" in line
    assert not (tmp_path / "no").exists()  # nothing created

    result = CliRunner().invoke(app, ["report", "--format", fmt, "-o", str(missing / name),
                                      "--mkdir", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert (missing / name).exists()


def test_report_into_a_folder_that_is_a_file(db, tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    line = _one_line_error(["report", "--format", "md", "-o", str(tmp_path / "afile" / "r.md"),
                            "--db", str(db)])
    assert "not a folder" in line


@pytest.mark.parametrize("command", ["dashboard", "runs", "prune"])
def test_a_missing_store_says_what_to_run(tmp_path, command) -> None:
    missing = tmp_path / "missing.duckdb"
    args = [command, "--db", str(missing)] + (["--before", "30d"] if command == "prune" else [])
    line = _one_line_error(args)
    assert f"store {missing} does not exist" in line
    assert f"cliffwatch demo --db {missing}" in line
    assert not missing.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["percentiles", "--since", "1000000d"],
        ["percentiles", "--since", "99999999999d"],  # past timedelta's C int of days
        ["runs", "--until", "1000000d"],
        ["findings", "--since", "99999999999w"],
        ["report", "-o", "OUT", "--format", "md", "--since", "1000000d"],
        ["prune", "--before", "1000000d"],
        ["incidents", "--since", "0001-01-01T00:00+01:00"],  # before year 1 in UTC
    ],
)
def test_a_time_out_of_range_is_one_line(db, tmp_path, args) -> None:
    args = [str(tmp_path / "r.md") if a == "OUT" else a for a in args]
    line = _one_line_error([*args, "--db", str(db)])
    assert args[-1] in line and "Overflow" not in line
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("args", [["percentiles", "--since", ""], ["runs", "--until", " "],
                                  ["audit", "--since", ""], ["whatif", "--max-workers", "2",
                                                             "--until", ""]])
def test_an_empty_since_or_until_is_refused_not_all_time(db, args) -> None:
    line = _one_line_error([*args, "--db", str(db)])
    option = next(a for a in args if a in ("--since", "--until"))
    assert f"'{option}'" in line and "empty" in line


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--runs", "1"],
        ["run", "--task-class", "research", "--prompt", "x"],
        ["ingest", str(Path(__file__).parent / "fixtures" / "litellm.jsonl")],
        ["serve", "--port", "0"],
        ["alerts", "--retry"],
    ],
    ids=lambda a: a[0],
)
@pytest.mark.parametrize(("variable", "value"), [
    ("CLIFFWATCH_ALERT_CLIFF_RATIO", "banana"),
    ("CLIFFWATCH_ALERT_BREACHES_PER_HOUR", "0"),
    ("CLIFFWATCH_WEBHOOK_URLS", "ftp://hooks.example"),
])
def test_a_bad_alert_setting_is_refused_before_any_work(tmp_path, args, variable,
                                                        value) -> None:
    # The write path only logs a bad alert setting (alerting never fails a write): a
    # command that writes spans refuses it up front instead of running without alerts.
    store = tmp_path / "new.duckdb"
    result = CliRunner().invoke(app, [*args, "--db", str(store)], env={variable: value})
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and variable in line and value[:12] in line
    assert not store.exists()  # nothing written, no store made


def test_watch_refuses_a_bad_alert_setting_before_connecting(tmp_path) -> None:
    folder = tmp_path / "chdb"
    result = CliRunner().invoke(app, ["watch", "--once", "--db", f"chdb://{folder}"],
                                env={"CLIFFWATCH_ALERT_WINDOW_H": "-1"})
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert "CLIFFWATCH_ALERT_WINDOW_H='-1'" in line
    assert not folder.exists()


def test_dashboard_on_a_busy_port_is_one_line_before_any_url(db) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _one_line_error(["dashboard", "--port", str(port), "--db", str(db)])
    assert f"127.0.0.1:{port}" in line and "--port" in line  # _one_line_error: no stdout


@pytest.mark.parametrize("args", [["watch", "--once", "--db", "http://x"],
                                  ["percentiles", "--db", "https://user:secret@x/db"],
                                  ["migrate", "--from", "FROM", "--to", "ftp://x"]],
                         ids=lambda a: a[0])
def test_a_url_of_another_scheme_is_named_not_taken_for_a_file(db, args) -> None:
    line = _one_line_error([str(db) if a == "FROM" else a for a in args])
    scheme = next(a for a in args if "://" in a).split("://")[0]
    assert f"unsupported store URL scheme {scheme}://" in line
    assert "clickhouse://" in line and "chdb://" in line
    assert "DuckDB file:" not in line and "secret" not in line


@pytest.mark.parametrize("source", ["http://x", "https://user:secret@x/db",
                                    "clickhouse://x/db"])
def test_migrate_from_a_url_says_from_takes_a_file_path(tmp_path, source) -> None:
    line = _one_line_error(["migrate", "--from", source, "--to", f"chdb://{tmp_path}/ch"])
    scheme = source.split("://")[0]
    assert f"--from takes a DuckDB file path, not a URL ({scheme}://...)" in line
    assert "does not exist" not in line and "secret" not in line
    assert not (tmp_path / "ch").exists()


def test_a_bad_scheme_in_the_setting_is_named_too(db) -> None:
    result = CliRunner().invoke(app, ["runs"], env={"CLIFFWATCH_DB": "http://x"})
    assert result.exit_code == 2
    assert "unsupported store URL scheme http://" in result.stderr


def test_migrate_from_a_missing_store_names_the_from_option(tmp_path) -> None:
    missing = tmp_path / "missing.duckdb"
    line = _one_line_error(["migrate", "--from", str(missing), "--to", f"chdb://{tmp_path}/ch"])
    assert f"store {missing} does not exist" in line
    assert "point --from at your store" in line and "--db or" not in line
    assert not (tmp_path / "ch").exists()
