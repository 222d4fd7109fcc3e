"""A writer process and a reader process on one store: nothing lost, no lock error shown.

DuckDB 2.0 lets one process hold a file read-write or several read-only, never both
(docs/sources.md#duckdb-single-writer). The writer here is the real tracing pipeline
(BatchSpanProcessor -> DuckDBSpanExporter) with a lock timeout short enough that it must
spill while the reader holds the file; the reader opens read-only over and over, as
dashboard pages do, and holds each connection a little while. Both are separate OS
processes; the writer starts once the reader has done its first read (however long the
reader took to start), so the two really overlap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from waits import scaled, wait_until

from cliffwatch.telemetry import spill
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans

RUNS = 40
WORKERS = 4
SPANS_PER_RUN = WORKERS + 1

WRITER = r"""
import json, os, sys, time
from cliffwatch.telemetry.tracing import configure_tracing
from cliffwatch.telemetry.write_ledger import LEDGER

path, runs, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tracing = configure_tracing(path, otlp_endpoint=None)
tracer = tracing.tracer
for i in range(runs):
    with tracer.start_as_current_span("run", attributes={
        "cliff.role": "run", "cliff.task_class": "research", "cliff.status": "ok"}):
        for w in range(workers):
            with tracer.start_as_current_span(f"worker {w}", attributes={
                "cliff.role": "worker", "cliff.cost_usd": 0.001, "cliff.cost_source": "computed"}):
                pass
    tracing.provider.force_flush()  # one export (one write or one spill) per run
    time.sleep(0.02)  # the next run's model calls
flushed = tracing.flush(timeout_millis=20_000)  # loads what was spilled
tracing.shutdown()
spans = LEDGER.snapshot()
print(json.dumps({"spans": runs * (workers + 1), "spills": spans.spilled, "flushed": flushed,
                  "lost": spans.lost, "counted": spans.written + spans.spilled}))
"""

READER = r"""
import json, os, random, sys, time
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.write_pipeline import write_spans
from cliffwatch.telemetry.testing import make_run_records

path, stop, ready = sys.argv[1], sys.argv[2], sys.argv[3]
reads, errors, last, went_down = 0, [], 0, 0
while not os.path.exists(stop):
    try:
        with open_store(path, read_only=True, timeout_s=15) as con:
            n = con.sql("SELECT count(*) FROM spans").fetchall()[0][0]
            con.sql("SELECT task_class, count(*), sum(cost_usd) FROM runs GROUP BY 1").fetchall()
            time.sleep(0.02)  # a page rendering while it holds the file
        went_down += n < last
        last, reads = n, reads + 1
        if reads == 1:
            open(ready, "w").close()
    except Exception as exc:  # any error here would have reached a user
        errors.append(f"{type(exc).__name__}: {exc}")
    time.sleep(random.uniform(0, 0.01))
print(json.dumps({"reads": reads, "errors": errors, "went_down": went_down, "last": last}))
"""


def _python(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )


@pytest.mark.slow
def test_writer_and_reader_processes_lose_nothing_and_show_no_lock_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.duckdb"
    stop, ready = tmp_path / "stop", tmp_path / "reader-ready"
    with open_store(path, read_only=False):
        pass  # the store exists before the reader's first open
    env = {**os.environ, "CLIFFWATCH_LOCK_TIMEOUT_S": "0.02"}  # writer gives up fast: spills

    reader = _python(READER, str(path), str(stop), str(ready), env=env)
    try:
        wait_until(lambda: ready.exists() or reader.poll() is not None, 60,
                   "the reader's first read")
        writer = _python(WRITER, str(path), str(RUNS), str(WORKERS), env=env)
        w_out, w_err = writer.communicate(timeout=scaled(120))
    finally:
        stop.touch()
        r_out, r_err = reader.communicate(timeout=scaled(120))
    assert writer.returncode == 0, w_err
    assert reader.returncode == 0, r_err
    wrote = json.loads(w_out)
    read = json.loads(r_out)

    assert read["errors"] == []
    assert read["reads"] >= 10
    assert read["went_down"] == 0
    assert wrote["spans"] == RUNS * SPANS_PER_RUN
    assert (wrote["counted"], wrote["lost"]) == (RUNS * SPANS_PER_RUN, 0)  # the ledger
    assert wrote["spills"] > 0, "the writer never met the reader's lock: test proves nothing"
    assert wrote["flushed"] is True
    assert spill.pending_spills(path) == []
    with open_store(path, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM spans").fetchall() == [(RUNS * SPANS_PER_RUN,)]
        assert con.sql("SELECT count(*), sum(llm_calls) FROM runs").fetchall() == [
            (RUNS, RUNS * WORKERS)
        ]


def test_threads_of_one_process_writing_and_reading_one_store(tmp_path: Path) -> None:
    """In one process DuckDB shares the file between connections; a read-only open while
    a read-write one is live fails with "different configuration": retried like a lock."""
    path = tmp_path / "threads.duckdb"
    batches = [make_run_records(seed=i, worker_cost_usds=[0.001] * 3) for i in range(12)]

    def read(_: int) -> int:
        with open_store(path, read_only=True, timeout_s=scaled(30)) as con:
            return con.sql("SELECT count(*) FROM spans").fetchall()[0][0]

    write_spans(path, batches[0])
    with ThreadPoolExecutor(max_workers=6) as pool:
        writes = [pool.submit(write_spans, path, b, timeout_s=scaled(30)) for b in batches[1:]]
        reads = [pool.submit(read, i) for i in range(12)]
        written = sum(f.result().spans_written for f in writes)
        counts = [f.result() for f in reads]
    assert written == 11 * 6
    assert all(6 <= c <= 12 * 6 for c in counts)
    with open_store(path, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM runs").fetchall() == [(12,)]
