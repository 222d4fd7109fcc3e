"""Acceptance (issue 12): a truncated store (a real demo store cut to half) is one line
and a non-zero exit for every command, and ``st.error`` on every dashboard page; never a
traceback, never an answer read from what is left of the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner
from waits import scaled

from cliffwatch.cli import app
from cliffwatch.telemetry.store import open_store

pytestmark = pytest.mark.slow  # the demo store is made by a real `cliffwatch demo`

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_APP = ROOT / "dashboard" / "app.py"
PAGES = (None, "views/findings.py", "views/incidents.py", "views/run.py", "views/replay.py",
         "views/whatif.py", "views/report.py")


@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(a demo store cut to half its length, the id of a run it held)."""
    work = tmp_path_factory.mktemp("truncated")
    sound = work / "demo.duckdb"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    subprocess.run([sys.executable, "-c", "from cliffwatch.cli import main; main()", "demo",
                    "--runs", "30", "--db", str(sound)], check=True, capture_output=True,
                   env=env, timeout=scaled(600))
    with open_store(sound, read_only=True) as con:
        run_id = con.sql("SELECT run_id FROM runs LIMIT 1").fetchall()[0][0]
    half = work / "half.duckdb"
    shutil.copyfile(sound, half)
    with half.open("r+b") as f:
        f.truncate(half.stat().st_size // 2)
    return half, run_id


COMMANDS = [
    ["percentiles"], ["runs"], ["incidents"], ["findings"], ["alerts"], ["audit"],
    ["whatif", "--max-workers", "3"], ["replay", "RUN"], ["report", "--format", "csv", "-o",
                                                            "OUT"],
    ["ingest", str(ROOT / "tests" / "fixtures" / "litellm.jsonl")],
    ["demo", "--runs", "2", "--append"], ["run", "--task-class", "research", "--prompt", "x"],
    ["serve", "--port", "0"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_says_the_store_is_damaged_in_one_line(
    truncated: tuple[Path, str], tmp_path: Path, command: list[str]
) -> None:
    db, run_id = truncated
    size_before = db.stat().st_size
    args = [{"RUN": run_id, "OUT": str(tmp_path / "r.csv")}.get(a, a) for a in command]
    result = CliRunner().invoke(app, [*args, "--db", str(db)])
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: store ") and "is damaged" in line, result.output
    assert str(db) in line
    assert db.stat().st_size == size_before  # nothing was written to it


@pytest.mark.parametrize("page", PAGES)
def test_every_dashboard_page_says_the_store_is_damaged(
    truncated: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, page: str | None
) -> None:
    db, run_id = truncated
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    at = AppTest.from_file(DASHBOARD_APP, default_timeout=scaled(120))
    at.query_params["run_id"] = run_id
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("is damaged" in e.value for e in at.error), [e.value for e in at.error]
