"""What a read command says when it has nothing to show: where it looked (the store, or
the window asked for), and never "nothing found" when there were no runs to look at."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cliffwatch.cli import app
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("empty") / "empty.duckdb"
    with open_store(path, read_only=False):
        pass  # the schema, no run
    return path


@pytest.fixture(scope="module")
def some(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("some") / "some.duckdb"
    write_spans(path, make_runs_costing([0.01, 0.02, 0.03]))
    return path


def _say(db: Path, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--db", str(db)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("command", [["percentiles"], ["whatif", "--max-workers", "4"]])
def test_an_empty_store_says_the_store_and_a_window_says_the_window(
    command: list[str], empty: Path, some: Path
) -> None:
    assert _say(empty, *command) == "no runs in the store"
    assert _say(some, *command, "--since", "2001-01-01", "--until", "2001-02-01") == (
        "no runs in this window")


def test_findings_with_no_runs_to_look_at_do_not_read_as_all_clear(
    empty: Path, some: Path
) -> None:
    assert _say(empty, "findings") == "no runs in the store: nothing to look at"
    window = _say(some, "findings", "--since", "2001-01-01", "--until", "2001-02-01")
    assert window == "no runs in this window: nothing to look at"
    assert "anti-patterns" not in window
