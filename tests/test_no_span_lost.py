"""Acceptance (issue 12, "No span lost silently"): with the disk full, ``demo``, ``run``,
``ingest`` and ``serve`` store every span or say how many they could not and exit
non-zero; the count of written / spilled / lost spans is printed by each.

The full disk is a real one: a 1 MiB tmpfs filled to the last byte (needs ``mount``, so
root; skipped with the reason otherwise), or, anywhere, ``RLIMIT_FSIZE`` in the child
process (with SIGXFSZ ignored a write past the limit fails with EFBIG, as a full disk
fails with ENOSPC).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from otlp_payloads import request_json
from waits import scaled

from cliffwatch.telemetry import spill
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from cliffwatch.cli import main; main()"]
SPANS_LINE = re.compile(
    r"spans: ([\d,]+) written, ([\d,]+) spilled, ([\d,]+) (lost|not stored \(answered 503\))"
)
FSIZE_LIMIT_BYTES = 8 * 1024
"""The child's file size limit: the store (800 KB when new) cannot grow, nor its WAL
past 8 KB (one run's spans need more); a small spill file may still fit, so a batch may
be spilled instead of lost."""


def _limit_file_size() -> None:  # runs in the child, between fork and exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT_BYTES, FSIZE_LIMIT_BYTES))


@dataclass
class FullDisk:
    """Where the store lives and how a child process is started so that it cannot write."""

    directory: Path
    preexec: Callable[[], None] | None

    def store(self) -> Path:
        """A new, empty store on the disk, which is then full (tmpfs: to the last byte)."""
        path = self.directory / "full.duckdb"
        with open_store(path, read_only=False):
            pass
        if self.preexec is None:
            fd = os.open(self.directory / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass  # ENOSPC: full
            finally:
                os.close(fd)
        return path


@pytest.fixture(params=["tmpfs", "rlimit"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    if request.param == "rlimit":
        yield FullDisk(tmp_path, _limit_file_size)
        return
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the rlimit variant runs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})"
                    "; the rlimit variant runs")
    try:
        yield FullDisk(mount_point, None)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _env() -> dict[str, str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1",
           "CLIFFWATCH_LOCK_TIMEOUT_S": "5", "COLUMNS": "200"}
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(key, None)
    return env


def _spans_in(db: Path) -> int:
    with open_store(db, read_only=True) as con:
        return int(con.sql("SELECT count(*) FROM spans").fetchall()[0][0])


def _spilled_rows(db: Path) -> int:
    tables, _ = spill.read_spills(spill.pending_spills(db))
    return sum(t.num_rows for t in tables)


def _check_said_so(returncode: int, output: str, db: Path) -> None:
    """The command counted its spans, the written ones are in the store, the spilled
    ones in spill files; when not every span is in the store it said so in one line and
    failed (the disk is full, so it did, or the test would not test anything)."""
    assert "Traceback" not in output, output
    match = SPANS_LINE.search(output)
    assert match, output
    written, spilled, lost = (int(match.group(i).replace(",", "")) for i in (1, 2, 3))
    assert _spans_in(db) == written
    assert spilled + lost > 0, output  # the disk is full: something could not be stored
    assert returncode == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert ("lost" in errors[0] or "not stored" in errors[0] or "not in the store"
            in errors[0]), output
    assert "no transaction is active" not in output  # the real cause, not the ROLLBACK's
    assert _spilled_rows(db) == spilled


def _run_cli(args: list[str], disk: FullDisk, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), cwd=cwd,
                          preexec_fn=disk.preexec, timeout=scaled(600))


def test_demo_on_a_full_disk_says_how_many_spans_it_lost(full_disk: FullDisk,
                                                         tmp_path: Path) -> None:
    db = full_disk.store()
    done = _run_cli(["demo", "--runs", "5", "--days", "2", "--db", str(db)], full_disk, tmp_path)
    _check_said_so(done.returncode, done.stdout + done.stderr, db)


def test_run_on_a_full_disk_says_how_many_spans_it_lost(full_disk: FullDisk,
                                                        tmp_path: Path) -> None:
    db = full_disk.store()
    done = _run_cli(["run", "--task-class", "research", "--prompt",
                     "Compare the main approaches to carbon capture.", "--db", str(db)],
                    full_disk, tmp_path)
    _check_said_so(done.returncode, done.stdout + done.stderr, db)


def test_ingest_on_a_full_disk_says_how_many_spans_it_lost(full_disk: FullDisk,
                                                           tmp_path: Path) -> None:
    db = full_disk.store()
    fixture = ROOT / "tests" / "fixtures" / "openllmetry.jsonl"
    done = _run_cli(["ingest", str(fixture), "--db", str(db)], full_disk, tmp_path)
    _check_said_so(done.returncode, done.stdout + done.stderr, db)


def test_serve_on_a_full_disk_answers_503_and_says_how_many(full_disk: FullDisk,
                                                            tmp_path: Path) -> None:
    db = full_disk.store()
    server = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--db", str(db)], stderr=subprocess.PIPE, text=True,
        env=_env(), cwd=tmp_path, preexec_fn=full_disk.preexec,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()  # blocks until the receiver listens (or exits)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1/traces", line)
        assert match, line + server.stderr.read()
        statuses = []
        for seed in (1, 2, 3):
            body = json.dumps(request_json(make_run_records(seed=seed))).encode()
            conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)),
                                              timeout=scaled(120))
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/json"})
            statuses.append(conn.getresponse().status)
            conn.close()
        server.send_signal(signal.SIGTERM)
        _, rest = server.communicate(timeout=scaled(120))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert set(statuses) <= {200, 503}, statuses  # stored or spilled, or retryable
    _check_said_so(server.returncode, rest, db)
    if 503 in statuses:
        assert "not stored (answered 503)" in rest
