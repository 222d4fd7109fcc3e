"""Acceptance: spans from real third-party instrumentation, through ``cliffwatch serve``.

``cliffwatch serve`` runs as a real process. Three producer processes
(``tests/producer_app.py``) drive the real openai client instrumented by OpenInference's
and by OpenLLMetry's openai instrumentation, and litellm with its own ``"otel"`` callback,
against the fake OpenAI server; their SDKs export OTLP/HTTP to the receiver and also write
the same spans as OTLP/JSON lines. Then:

- each producer's run has the token counts the fake server reported and the cost computed
  by hand from ``litellm.model_cost`` (no double counting of the wrapper spans);
- ``cliffwatch percentiles`` shows those runs;
- ``cliffwatch ingest`` of the JSON lines into a fresh store gives the same runs table.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from producer_app import PIPELINE, PRODUCERS, TASK_CLASS, expected_run
from typer.testing import CliRunner
from waits import http_ok, scaled, stop_process, wait_until

from cliffwatch.cli import app
from cliffwatch.telemetry.store import open_store

TESTS = Path(__file__).resolve().parent
TOKEN = "producers-token"
CLI = [sys.executable, "-c", "from cliffwatch.cli import main; main()"]
# cost rounded to 1e-12 USD: sums may differ in the last bit with the order of addition
RUN_COLUMNS = (
    "run_id, task_class, started_at, ended_at, status, round(cost_usd, 12), input_tokens, "
    "output_tokens, llm_calls, unpriced_calls, failed_calls, planner_model, synthesis_model, "
    "service_name, source"
)

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1",
           "PYTHONFAULTHANDLER": "1"}  # SIGABRT prints every thread's stack
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Path]]]:
    """Run serve + the three producers once; yields (served store, {producer: jsonl})."""
    work = tmp_path_factory.mktemp("producers")
    db = work / "served.duckdb"
    server = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--db", str(db), "--token", TOKEN],
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=work,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()  # blocks until the receiver listens (or exits)
        match = re.search(r"(http://127\.0\.0\.1:\d+/v1/traces)", line)
        assert match, f"serve did not start: {line}{server.stderr.read()}"
        endpoint = match.group(1)
        health = endpoint.removesuffix("/v1/traces") + "/health"
        wait_until(lambda: http_ok(health), 60, f"the receiver's {health}")
        jsonl = {p: work / f"{p}.jsonl" for p in PRODUCERS}

        def produce(producer: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    str(TESTS / "producer_app.py"),
                    producer,
                    "--endpoint",
                    endpoint,
                    "--token",
                    TOKEN,
                    "--jsonl",
                    str(jsonl[producer]),
                ],
                capture_output=True,
                text=True,
                env=_env(),
                cwd=work,
                timeout=scaled(360),
            )

        with ThreadPoolExecutor(len(PRODUCERS)) as pool:
            results = dict(zip(PRODUCERS, pool.map(produce, PRODUCERS), strict=True))
        for producer, result in results.items():
            assert result.returncode == 0, f"{producer}: {result.stderr[-3000:]}"
            report = json.loads(result.stdout.strip().splitlines()[-1])
            assert report["flushed"] and report["spans"] >= 2 * len(PIPELINE) + 1, report
    finally:
        pending = sys.exc_info()[1]  # an error of the producers, raised after the stop
        stopped = stop_process(server, signal.SIGINT, 120)  # stacks printed if it hangs
        rest = stopped.err
        # An error above stays the one raised.
        if not stopped.in_time and pending is None:
            pytest.fail(f"serve did not stop within {scaled(120):.0f} s of SIGINT: {rest}")
    assert server.returncode == 0, rest
    assert "stopped:" in rest and "0 requests refused" in rest, rest
    yield db, jsonl


def runs_of(db: Path) -> dict[str, tuple]:
    with open_store(db, read_only=True) as con:
        rows = con.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY task_class").fetchall()
    return {row[1]: row for row in rows}


@pytest.mark.parametrize("producer", PRODUCERS)
def test_each_producers_run_has_the_right_tokens_and_cost(served, producer: str) -> None:
    db, _ = served
    runs = runs_of(db)
    assert set(runs) == set(TASK_CLASS.values())
    (
        _,
        task_class,
        _,
        _,
        status,
        cost_usd,
        tin,
        tout,
        calls,
        unpriced,
        failed,
        planner,
        synthesis,
        service,
        source,
    ) = runs[TASK_CLASS[producer]]
    want_in, want_out, want_cost = expected_run()
    assert (tin, tout, calls, unpriced, failed) == (want_in, want_out, len(PIPELINE), 0, 0)
    assert cost_usd == pytest.approx(want_cost, rel=1e-9)
    assert (status, planner, synthesis) == ("ok", "gpt-4o", "gpt-4o-mini")
    assert (service, source) == (f"{producer}-app", "otlp")
    with open_store(db, read_only=True) as con:
        roles = con.execute(
            "SELECT role, count(*) FROM spans WHERE trace_id = ? AND is_llm_call "
            "GROUP BY role ORDER BY role",
            [runs[TASK_CLASS[producer]][0]],
        ).fetchall()
    assert roles == [("plan", 1), ("synthesis", 1), ("worker", 3)]


def test_percentiles_show_the_producers_runs(served) -> None:
    db, _ = served
    result = CliRunner().invoke(app, ["percentiles", "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {row["task_class"]: row for row in json.loads(result.stdout)}
    _, _, want_cost = expected_run()
    assert set(rows) == set(TASK_CLASS.values())
    for row in rows.values():
        assert row["runs"] == 1
        assert row["p50_usd"] == pytest.approx(want_cost, rel=1e-9)
        assert row["p99_usd"] == pytest.approx(want_cost, rel=1e-9)


def test_ingesting_the_same_spans_as_json_lines_gives_the_same_runs(served, tmp_path: Path) -> None:
    db, jsonl = served
    fresh = tmp_path / "ingested.duckdb"
    started = time.perf_counter()
    result = subprocess.run(
        [*CLI, "ingest", *map(str, jsonl.values()), "--db", str(fresh)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=scaled(240),
    )
    assert result.returncode == 0, result.stderr
    assert "0 rejected" in result.stdout and time.perf_counter() - started < scaled(240)
    assert runs_of(fresh) == runs_of(db)
    # and again: nothing new
    again = CliRunner().invoke(app, ["ingest", *map(str, jsonl.values()), "--db", str(fresh)])
    assert again.exit_code == 0 and " 0 new" in again.stdout, again.output
