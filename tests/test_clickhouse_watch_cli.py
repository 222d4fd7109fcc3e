"""``cliffwatch watch`` as a command and as the alert sender: ``--once`` prints its summary
line, a running watch stops cleanly on SIGTERM, and an incident it records reaches a real
webhook once (with the same alerts the DuckDB write path raises)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_clickhouse_watch import duckdb_reference, fleet_spans
from typer.testing import CliRunner
from waits import scaled, stop_process, wait_until
from webhook_receiver import WebhookReceiver

from cliffwatch import settings
from cliffwatch.cli import app
from cliffwatch.telemetry.clickhouse import otel_traces as ot
from cliffwatch.telemetry.clickhouse.client import connect
from cliffwatch.telemetry.clickhouse.url import parse_store_url
from cliffwatch.telemetry.clickhouse.watch import WatchConfig, watch
from cliffwatch.telemetry.store import open_store

pytest.importorskip("chdb")

ROOT = Path(__file__).resolve().parent.parent


def _fill(url: str) -> int:
    spans = fleet_spans()
    with connect(parse_store_url(url)) as client:
        client.command(ot.create_table_sql())
        client.insert_arrow("otel_traces", ot.spans_to_rows(spans))
    return len(spans)


def _terminate(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM ``proc`` and wait for it (killed if it does not stop): its stdout, stderr."""
    stopped = stop_process(proc, signal.SIGTERM, 120)
    return stopped.out, stopped.err


def test_watch_once_prints_its_summary_and_refuses_a_duckdb_file(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path}/ch"
    count = _fill(url)
    done = CliRunner().invoke(app, ["watch", "--once", "--db", url])
    assert done.exit_code == 0, done.output
    assert f"{count} spans, 51 runs, 2 incidents" in done.stdout
    again = CliRunner().invoke(app, ["watch", "--once", "--db", url])
    assert "0 spans, 0 runs, 0 incidents" in again.stdout

    refused = CliRunner().invoke(app, ["watch", "--once", "--db", str(tmp_path / "x.duckdb")])
    assert refused.exit_code == 2 and "is a DuckDB file" in refused.stderr


def test_an_incident_reaches_the_webhook_once(tmp_path: Path, monkeypatch) -> None:
    with WebhookReceiver() as hook:
        monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_URLS, hook.url)
        # The DuckDB write path's alerts, for comparison (delivered in its background).
        duckdb_reference(fleet_spans(), tmp_path / "ref.duckdb")
        with open_store(tmp_path / "ref.duckdb", read_only=True) as con:
            expected = sorted(r[0] for r in con.execute("SELECT alert_id FROM alerts").fetchall())
        wait_until(lambda: len(hook.delivered()) >= len(expected), 30,
                   "the DuckDB store's alerts at the webhook")
        hook_before = len(hook.delivered())

        url = f"chdb://{tmp_path}/ch"
        _fill(url)
        with connect(parse_store_url(url)) as client:
            summary = watch(client, WatchConfig(), once=True)
            alerts = sorted(r["alert_id"] for r in client.query_arrow(
                "SELECT alert_id FROM cliffwatch_alerts FINAL").to_pylist())
            assert alerts == expected
            assert summary.alerts == len(expected) and summary.delivered == len(expected)
            watch(client, WatchConfig(), once=True)  # nothing is sent twice
            states = client.query_arrow(
                "SELECT status, count() AS n FROM cliffwatch_alert_deliveries FINAL "
                "GROUP BY status").to_pylist()
        assert states == [{"status": "delivered", "n": len(expected)}]
        sent = [r.alert_id for r in hook.delivered()[hook_before:]]
        assert sorted(sent) == expected


@pytest.mark.slow
def test_a_running_watch_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path}/ch"
    _fill(url)
    # chDB keeps its engine on the folder for the process; opening another folder (with no
    # client left on the first) shuts it, so the child can take the folder.
    connect(parse_store_url(f"chdb://{tmp_path}/other")).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT), settings.CLIFFWATCH_WATCH_POLL_S: "0.2"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cliffwatch.cli import main; main()", "watch", "--db", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        # The process holds chDB's folder, so it is followed through its output: it says
        # it is watching before its first scan; SIGTERM stops it after that batch.
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "watching" in line, line
    finally:
        out, err = _terminate(proc)
    assert proc.returncode == 0, err
    assert out.startswith(f"watch {url}: ") and " runs, " in out
    assert "Traceback" not in err


@pytest.mark.slow
def test_cliffwatch_serve_with_a_chdb_db(tmp_path: Path) -> None:
    """`cliffwatch serve --db chdb://...` (a process): spans posted to it land in
    otel_traces; once it has stopped, watch makes the runs the DuckDB store gets."""
    import http.client
    import re

    from otlp_payloads import to_protobuf
    from test_clickhouse_watch import clickhouse_state, fleet_request

    url = f"chdb://{tmp_path}/served"
    runs, incidents = duckdb_reference(fleet_spans(), tmp_path / "ref.duckdb")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-c", "from cliffwatch.cli import main; main()", "serve",
         "--port", "0", "--db", url],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()  # blocks until the receiver listens (or exits)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1/traces", line)
        assert match, line
        assert f"(store {url})" in line
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=scaled(60))
        conn.request("POST", "/v1/traces", to_protobuf(fleet_request()),
                     {"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        _, rest = _terminate(server)
    assert server.returncode == 0, rest
    assert f"spans: {len(fleet_spans())} written, 0 spilled, 0 not stored" in rest, rest
    with connect(parse_store_url(url)) as client:
        watch(client, WatchConfig(deliver=False), once=True)
        assert clickhouse_state(client) == (runs, incidents)


def test_cliffwatch_demo_with_a_chdb_db_then_watch(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path}/demo"
    done = CliRunner().invoke(app, ["demo", "--runs", "12", "--days", "2", "--db", url])
    assert done.exit_code == 0, done.output
    assert f"cliffwatch watch --once --db {url}" in done.stdout
    watched = CliRunner().invoke(app, ["watch", "--once", "--db", url])
    assert watched.exit_code == 0, watched.output
    assert ", 12 runs, " in watched.stdout
    fresh = CliRunner().invoke(app, ["demo", "--fresh", "--db", url])
    assert fresh.exit_code == 2 and "does not empty a ClickHouse store" in fresh.stderr
