"""The span writer that keeps its store connection (``hold_s``, the receiver's): writes go
through one connection, readers still get the file, and failures still spill."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from waits import scaled

from cliffwatch.telemetry.receiver import WRITER_HOLD_S
from cliffwatch.telemetry.span_writer import IDLE_RELEASE_S, SpanWriter
from cliffwatch.telemetry.store import HeldStore, open_store
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans


def _count(path: Path, table: str) -> int:
    with open_store(path, read_only=True, timeout_s=scaled(30)) as con:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def test_a_held_connection_writes_batch_after_batch_and_closes_on_release(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.duckdb"
    held = HeldStore(path, hold_max_s=60)
    write_spans(path, make_run_records(seed=31), held=held)
    assert held.held and not held.due
    write_spans(path, make_run_records(seed=32), held=held)
    write_spans(path, make_run_records(seed=31), held=held)  # a re-send adds nothing
    held.release()
    assert not held.held
    assert (_count(path, "spans"), _count(path, "runs")) == (12, 2)


def test_the_writer_lets_go_when_idle(tmp_path: Path) -> None:
    path = tmp_path / "idle.duckdb"
    with SpanWriter(path, hold_s=60) as writer:
        writer.write(make_run_records(seed=33), timeout_s=scaled(60))
        time.sleep(IDLE_RELEASE_S)
        # A reader (read-only, which a read-write holder would refuse) gets the file
        # while the writer is still running, well before its 60 s hold is up.
        assert _count(path, "runs") == 1
        writer.write(make_run_records(seed=34), timeout_s=scaled(60))
    assert _count(path, "runs") == 2


@contextmanager
def _writing_without_pause(writer: SpanWriter, first_seed: int) -> Iterator[threading.Thread]:
    """A thread writing one new run after another through ``writer`` for the block's
    duration; yields it (alive while the load goes on), then stops it."""
    stop = threading.Event()

    def keep_writing() -> None:
        seed = first_seed
        while not stop.is_set():
            seed += 1
            writer.write(make_run_records(seed=seed), timeout_s=scaled(60))

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(scaled(60))


def test_a_reader_gets_in_while_the_writer_is_never_idle(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    with SpanWriter(path, hold_s=0.3) as writer:
        writer.write(make_run_records(seed=35), timeout_s=scaled(60))
        with _writing_without_pause(writer, 1000) as thread:
            time.sleep(0.5)
            assert _count(path, "runs") >= 1  # within its lock timeout, not after the load
            assert thread.is_alive()  # the load was still going when the reader got in
    assert _count(path, "runs") == writer.stats.runs_materialised


_READER = """
import sys
from cliffwatch.telemetry.store import open_store
with open_store(sys.argv[1], read_only=True, timeout_s=float(sys.argv[2])) as con:
    print(con.execute("SELECT count(*) FROM runs").fetchall()[0][0])
"""


@pytest.mark.slow
def test_another_process_reads_while_the_receivers_writer_never_idles(tmp_path: Path) -> None:
    path = tmp_path / "serve.duckdb"
    with SpanWriter(path, hold_s=WRITER_HOLD_S) as writer:
        writer.write(make_run_records(seed=36), timeout_s=scaled(60))
        with _writing_without_pause(writer, 2000) as thread:
            read = subprocess.run(
                [sys.executable, "-c", _READER, str(path), str(scaled(30))],
                capture_output=True, text=True, timeout=scaled(120),
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            still_writing = thread.is_alive()
    assert read.returncode == 0, read.stderr
    assert int(read.stdout) >= 1
    assert still_writing
