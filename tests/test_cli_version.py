"""``cliffwatch --version``: the version the project declares, and nothing run."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typer.testing import CliRunner

from cliffwatch.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_projects_and_exits_0() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"cliffwatch {declared}\n"


def test_version_goes_before_a_command_and_the_command_does_not_run(tmp_path: Path) -> None:
    db = tmp_path / "never.duckdb"
    result = CliRunner().invoke(app, ["--version", "demo", "--db", str(db)])
    assert result.exit_code == 0 and result.stdout.startswith("cliffwatch ")
    assert not db.exists()
