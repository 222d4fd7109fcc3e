"""The README's "After an incident" steps work verbatim on the demo store: ``cliffwatch
demo`` fills a temporary store, then every command of that section runs as a real
process (the store given by ``CLIFFWATCH_DB``, as the section says), its ``RUN_ID`` and
``INCIDENT_ID`` taken from ``cliffwatch incidents --format json``; each exits 0."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from waits import scaled

ROOT = Path(__file__).resolve().parent.parent
CLIFFWATCH_BIN = Path(sys.executable).parent / "cliffwatch"


def _section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## After an incident\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no '## After an incident' section"
    steps = re.findall(r"^\d+\. (.*?)(?=^\d+\. |^\n|\Z)", match.group(1), re.M | re.S)
    commands = [re.match(r"`(cliffwatch [^`]+)`", step) for step in steps]
    assert all(commands), f"a step does not start with a command: {steps}"
    return [m.group(1) for m in commands if m]


def test_the_section_is_found() -> None:
    commands = _section_commands()
    assert commands[0] == "cliffwatch incidents"
    assert any("RUN_ID" in c for c in commands) and any("INCIDENT_ID" in c for c in commands)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLIFFWATCH_BIN), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=scaled(300))


@pytest.mark.slow
def test_after_an_incident_steps_work_verbatim_on_the_demo_store(tmp_path) -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "COLUMNS": "80",
           "CLIFFWATCH_DB": str(tmp_path / "demo.duckdb")}
    demo = _run(["demo"], env, tmp_path)
    assert demo.returncode == 0, demo.stderr
    listed = _run(["incidents", "--format", "json"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    incidents = json.loads(listed.stdout)
    assert incidents, "the demo store has no incident to follow up"
    ids = {"RUN_ID": incidents[0]["run_id"], "INCIDENT_ID": incidents[0]["incident_id"]}
    for command in _section_commands():
        args = [ids.get(word, word) for word in shlex.split(command)[1:]]
        done = _run(args, env, tmp_path)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert "Traceback" not in done.stderr and done.stdout, command
    assert (tmp_path / "cost-cliff.html").stat().st_size > 10_000
    status = json.loads(_run(["incidents", "--format", "json"], env, tmp_path).stdout)
    assert {i["incident_id"]: i["status"] for i in status}[ids["INCIDENT_ID"]] == "acknowledged"
