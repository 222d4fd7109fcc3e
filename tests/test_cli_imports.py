"""``cliffwatch --help`` and the read commands load no heavy library: the console-script
entry point runs in a fresh Python process, which then reports what it imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cliffwatch.orchestrator.demo import run_demo

NEVER_FOR_READING = ("litellm", "cliffwatch.orchestrator.runner",
                     "cliffwatch.orchestrator.sim_provider", "opentelemetry.sdk")
"""What no read command needs: model calls, the orchestrator, the OTel SDK."""

NEVER_FOR_HELP = (*NEVER_FOR_READING, "polars", "duckdb", "pyarrow", "plotly")
"""``--help`` reads no store either (what keeps it under 0.5 s of CPU: bench cli_help)."""

NEVER_FOR_LISTING = (*NEVER_FOR_READING, "pyarrow", "plotly")
"""What percentiles, runs, incidents and alerts need neither: frames come through the Arrow
PyCapsule stream (pyarrow's import alone is 0.26 s of CPU; bench cli_percentiles)."""

# Runs `cliffwatch ARGS` through the console script's main() once per command given,
# in one process, then writes the exit codes and the watched modules it loaded.
PROBE = """
import json, sys
from cliffwatch.cli import main
report, commands, watched = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
codes = []
for args in commands:
    sys.argv = ["cliffwatch", *args]
    try:
        main()
        codes.append(0)
    except SystemExit as exit_:
        codes.append(exit_.code)
with open(report, "w") as out:
    json.dump({"codes": codes, "loaded": [m for m in watched if m in sys.modules]}, out)
"""


def _probe(tmp_path: Path, commands: list[list[str]], watched: tuple[str, ...]
           ) -> tuple[dict, str]:
    report = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), json.dumps(commands), json.dumps(watched)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text()), done.stdout


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("imports") / "demo.duckdb"
    run_demo(path, runs=20, days=5, seed=7, time_scale=1e-3)
    return path


@pytest.mark.slow
def test_help_loads_no_data_layer_and_no_litellm(tmp_path: Path) -> None:
    probe, out = _probe(tmp_path, [["--help"], ["percentiles", "--help"]], NEVER_FOR_HELP)
    assert probe == {"codes": [0, 0], "loaded": []}
    assert "percentiles" in out and "--since" in out


@pytest.mark.slow
def test_read_commands_on_a_demo_store_load_no_litellm(tmp_path: Path, demo_store: Path) -> None:
    db = ["--db", str(demo_store)]
    commands = [["percentiles", "--format", "json", *db], ["runs", *db], ["incidents", *db],
                ["findings", *db], ["alerts", *db],
                *(["report", "--format", fmt, "-o", str(tmp_path / f"report.{fmt}"), *db]
                  for fmt in ("csv", "json"))]
    probe, out = _probe(tmp_path, commands, NEVER_FOR_READING)
    assert probe == {"codes": [0] * len(commands), "loaded": []}
    rows = json.loads(out[: out.index("\n]\n") + 2])  # percentiles' JSON comes first
    assert sum(r["runs"] for r in rows) == 20
    assert "Runs (newest first)" in out
    assert (tmp_path / "report.csv").stat().st_size > 0
    assert json.loads((tmp_path / "report.json").read_text())


@pytest.mark.slow
def test_listing_commands_load_no_pyarrow(tmp_path: Path, demo_store: Path) -> None:
    db = ["--db", str(demo_store)]
    commands = [["percentiles", *db], ["percentiles", "--by", "model", *db], ["runs", *db],
                ["incidents", *db], ["alerts", *db]]
    probe, out = _probe(tmp_path, commands, NEVER_FOR_LISTING)
    assert probe == {"codes": [0] * len(commands), "loaded": []}
    assert "Cost per task (USD) by model" in out
