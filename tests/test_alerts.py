"""Alerts: incidents and threshold rules become webhook POSTs, once each, retried, visible.

Every test runs a real HTTP receiver on loopback (tests/webhook_receiver.py) and a real
DuckDB store in tmp_path; the cross-process tests deliver from real subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waits import scaled, wait_until
from webhook_receiver import WebhookReceiver

from cliffwatch import settings
from cliffwatch.orchestrator.errors import CostCliffError
from cliffwatch.orchestrator.guard import cliffwatch_guard
from cliffwatch.telemetry import write_pipeline
from cliffwatch.telemetry.alerts import deliver_now, list_alerts, wait_for_deliveries
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

ROOT = Path(__file__).resolve().parent.parent
HOUR_NS = 3600 * 10**9


@pytest.fixture()
def receiver(monkeypatch: pytest.MonkeyPatch) -> Any:
    with WebhookReceiver() as rx:
        monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_URLS, rx.url)
        monkeypatch.setenv(settings.CLIFFWATCH_ALERT_BACKOFF_S, "0.05")
        yield rx


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.duckdb"


@pytest.fixture()
def no_background(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queue deliveries without this process sending them (another process will)."""
    monkeypatch.setattr(write_pipeline, "deliver_soon", lambda path, pending: None)


def alerts(db: Path, **kwargs: Any) -> list[dict[str, Any]]:
    with open_store(db, read_only=True) as con:
        return list_alerts(con, **kwargs).to_dicts()


def wait_status(db: Path, status: str, count: int = 1, timeout_s: float = 30.0) -> list[dict]:
    """The alerts in ``status`` once there are ``count`` of them (polled, scaled timeout)."""
    return wait_until(lambda: found if len(found := alerts(db, status=status)) >= count
                      else None, timeout_s, f"{count} alert(s) {status}")


def cap_breach(seed: int, **kwargs: Any) -> list:
    return make_run_records(seed=seed, worker_cost_usds=[], proposed=47, max_workers=8,
                            dispatched=0, status="rejected", breach="cap", **kwargs)


def test_a_cap_breach_through_the_guard_reaches_the_webhook_once(
    receiver: WebhookReceiver, db: Path
) -> None:
    with pytest.raises(CostCliffError), cliffwatch_guard("research", db=db) as guard:
        guard.record_call("gpt-4.1", 800, 1500, role="plan")
        guard.check_plan(47)
    [got] = receiver.wait_for(1)
    body = got.body
    incident_id = f"cap_breach-{guard.run_id[:16]}"
    assert body["alert"] == {
        "alert_id": incident_id, "source": "incident", "kind": "cap_breach",
        "task_class": "research", "run_id": guard.run_id,
        "raised_at": body["incident"]["detected_at"],
    }
    assert body["incident"]["data"] == {"proposed": 47, "max_workers": 8, "dispatched": 0,
                                        "policy": "reject", "plan_attempts": 1}
    assert body["text"] == (f"[cliffwatch] cap_breach in research: plan proposed 47 workers, "
                            f"cap 8: rejected at dispatch (run {guard.run_id[:12]})")
    assert got.headers["idempotency-key"] == incident_id
    assert got.headers["content-type"] == "application/json"
    [row] = wait_status(db, "delivered")
    assert (row["alert_id"], row["attempts"], row["last_http_status"]) == (incident_id, 1, 200)
    assert row["webhook"].startswith("http://127.0.0.1:")
    # a later write (another run) sends nothing again
    write_spans(db, make_run_records(seed=5))
    assert wait_for_deliveries(scaled(10))
    time.sleep(scaled(0.2))  # a second POST, were one sent, would have arrived by now
    assert receiver.delivered_counts() == {incident_id: 1}


def test_a_500_is_retried_with_backoff_until_delivered(receiver: WebhookReceiver,
                                                       db: Path) -> None:
    receiver.fail_next(2, status=500)
    write_spans(db, cap_breach(1))
    receiver.wait_for(1)
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    [row] = wait_status(db, "delivered")
    assert row["attempts"] == 3 and row["delivered_at"] is not None
    assert len(receiver.delivered()) == 1


def test_attempts_run_out_then_retry_delivers(
    receiver: WebhookReceiver, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_ALERT_MAX_ATTEMPTS, "2")
    receiver.fail_next(2, status=503)
    write_spans(db, cap_breach(2))
    [row] = wait_status(db, "failed")
    assert (row["attempts"], row["last_http_status"], row["last_error"]) == (2, 503, "HTTP 503")
    assert receiver.delivered() == []
    summary = deliver_now(db, retry_failed=True)
    assert (summary.attempted, summary.delivered) == (1, 1)
    assert alerts(db)[0]["status"] == "delivered"
    assert len(receiver.delivered()) == 1


def test_a_client_error_is_not_retried(receiver: WebhookReceiver, db: Path) -> None:
    receiver.fail_next(1, status=400)
    write_spans(db, cap_breach(3))
    [row] = wait_status(db, "failed")
    assert (row["attempts"], row["last_http_status"]) == (1, 400)
    assert len(receiver.requests) == 1


def test_an_unreachable_webhook_is_retried_and_kept(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as dead:
        url = dead.url  # the port is closed once the receiver stops
    monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_URLS, url)
    monkeypatch.setenv(settings.CLIFFWATCH_ALERT_BACKOFF_S, "0.02")
    monkeypatch.setenv(settings.CLIFFWATCH_ALERT_MAX_ATTEMPTS, "3")
    write_spans(db, cap_breach(4))
    [row] = wait_status(db, "failed")
    assert row["attempts"] == 3
    assert "Connection refused" in row["last_error"] or "URLError" in row["last_error"]


def test_the_writer_never_waits_for_the_webhook(receiver: WebhookReceiver, db: Path) -> None:
    write_spans(db, make_run_records(seed=7))  # the store exists: time only the write
    receiver.delay_s = scaled(3.0)
    start = time.monotonic()
    write_spans(db, cap_breach(6))
    assert time.monotonic() - start < receiver.delay_s  # the POST is still in flight
    receiver.wait_for(1, timeout_s=40)


@pytest.mark.slow
def test_nothing_is_delivered_twice_by_two_processes_or_a_restart(
    receiver: WebhookReceiver, db: Path, no_background: None
) -> None:
    for seed in range(10, 18):  # hours apart: no breaches-per-hour rule fires
        write_spans(db, cap_breach(seed, started_at_ns=ns_at("2026-11-01T00:00") + seed * HOUR_NS))
    assert len(alerts(db, status="pending")) == 8
    code = ("from cliffwatch.telemetry.alerts import deliver_now; "
            f"print(deliver_now({str(db)!r}).delivered)")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=scaled(120)) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(int(out.strip().splitlines()[-1]) for out, _ in outs) == 8
    # a restart: a third process finds nothing left to send
    again = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=scaled(120))
    assert again.stdout.strip() == "0", again.stderr
    counts = receiver.delivered_counts()
    assert len(counts) == 8 and set(counts.values()) == {1}
    assert len(alerts(db, status="delivered")) == 8


def test_a_send_cut_short_is_unknown_never_resent_automatically(
    receiver: WebhookReceiver, db: Path, no_background: None
) -> None:
    write_spans(db, cap_breach(20))
    past = datetime.utcnow() - timedelta(minutes=5)  # noqa: DTZ003 - the store is naive UTC
    with open_store(db, read_only=False) as con:  # a process died while sending it
        con.execute("UPDATE alert_deliveries SET status = 'sending', attempts = 1, "
                    "lease_until = ?", [past]).fetchall()
    assert deliver_now(db).attempted == 0
    [row] = alerts(db)
    assert row["status"] == "unknown" and "may or may not" in row["last_error"]
    assert receiver.requests == []
    assert deliver_now(db, retry_failed=True).delivered == 1  # the explicit retry sends it
    assert len(receiver.delivered()) == 1


def test_breaches_per_hour_fires_once_per_hour(receiver: WebhookReceiver, db: Path,
                                               no_background: None) -> None:
    base = ns_at("2026-11-03T10:00:00")
    records = []
    for i in range(5):
        records += cap_breach(30 + i, started_at_ns=base + i * 60 * 10**9)
    write_spans(db, records)
    write_spans(db, cap_breach(40, started_at_ns=base + 600 * 10**9))  # same hour: no new
    rules = [a for a in alerts(db) if a["source"] == "rule"]
    assert [r["alert_id"] for r in rules] == ["rule:breaches_per_hour:2026-11-03T10"]
    with open_store(db, read_only=True) as con:
        payload = json.loads(con.execute(
            "SELECT payload::VARCHAR FROM alerts WHERE source = 'rule'").fetchall()[0][0])
    assert payload["rule"]["value"] == 5 and payload["rule"]["threshold"] == 5
    assert payload["rule"]["task_classes"] == ["research"]
    assert payload["text"].startswith("[cliffwatch] breaches_per_hour: 5 runs breached")


def test_the_cliff_ratio_rule_matches_numpy(receiver: WebhookReceiver, db: Path,
                                            no_background: None) -> None:
    costs = [0.01] * 27 + [0.05, 0.2, 0.5]  # P99 / P50 far above 10
    write_spans(db, make_runs_costing(costs, task_class="extract", interval_s=600,
                                      started_at_ns=ns_at("2026-11-03T00:00:00")))
    [rule] = [a for a in alerts(db) if a["source"] == "rule"]
    assert rule["alert_id"] == "rule:cliff_ratio:extract:2026-11-03"
    with open_store(db, read_only=True) as con:
        payload = json.loads(con.execute(
            "SELECT payload::VARCHAR FROM alerts WHERE alert_id = ?", [rule["alert_id"]]
        ).fetchall()[0][0])
    p50, p99 = np.percentile(costs, [50, 99])
    assert payload["rule"]["value"] == pytest.approx(p99 / p50, rel=1e-9)
    assert payload["rule"]["runs"] == 30


def test_the_cliff_ratio_rule_needs_enough_runs_and_a_real_cliff(
    receiver: WebhookReceiver, db: Path, no_background: None
) -> None:
    write_spans(db, make_runs_costing([0.01] * 10 + [0.5], task_class="few", interval_s=60))
    write_spans(db, make_runs_costing([0.01, 0.02, 0.03] * 10, task_class="flat",
                                      interval_s=60))
    assert [a for a in alerts(db) if a["source"] == "rule"] == []


def test_daily_spend_rule_is_off_by_default_and_fires_over_the_limit(
    receiver: WebhookReceiver, db: Path, no_background: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = ns_at("2026-11-04T01:00:00")
    write_spans(db, make_runs_costing([1.0, 1.0], started_at_ns=day, seed=1))
    assert [a for a in alerts(db) if a["kind"] == "daily_spend"] == []
    monkeypatch.setenv(settings.CLIFFWATCH_ALERT_DAILY_SPEND_USD, "2.5")
    write_spans(db, make_runs_costing([1.0], started_at_ns=day + 10**12, seed=2))
    [rule] = [a for a in alerts(db) if a["kind"] == "daily_spend"]
    assert rule["alert_id"] == "rule:daily_spend:2026-11-04"


def test_no_webhook_still_records_the_alert(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.CLIFFWATCH_WEBHOOK_URLS, raising=False)
    write_spans(db, cap_breach(50))
    [row] = alerts(db)
    assert row["status"] == "no_webhook" and row["webhook"] is None


def test_a_bad_webhook_setting_never_fails_the_write(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_URLS, "hooks.example.com/no-scheme")
    result = write_spans(db, cap_breach(51))
    assert result.incidents_recorded == 1
    assert [a["status"] for a in alerts(db)] == ["no_webhook"]


def test_the_webhook_url_is_never_stored(
    receiver: WebhookReceiver, db: Path, monkeypatch: pytest.MonkeyPatch, no_background: None
) -> None:
    secret = receiver.url + "/services/T000/B000/XyZsecret"
    monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_URLS, secret)
    write_spans(db, cap_breach(52))
    with open_store(db, read_only=True) as con:
        dumped = str(con.sql("SELECT * FROM alert_deliveries").fetchall())
        dumped += str(con.sql("SELECT * FROM alerts").fetchall())
    assert "XyZsecret" not in dumped and "/services/" not in dumped
    assert deliver_now(db).delivered == 1
    assert receiver.delivered()[0].path == "/hook/services/T000/B000/XyZsecret"


def test_a_webhook_removed_from_the_settings_is_not_sent_to(
    receiver: WebhookReceiver, db: Path, monkeypatch: pytest.MonkeyPatch, no_background: None
) -> None:
    write_spans(db, cap_breach(53))
    monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_URLS, receiver.url + "/other")
    summary = deliver_now(db)
    assert (summary.attempted, summary.failed) == (1, 1)
    [row] = alerts(db)
    assert row["status"] == "failed" and "no longer" in row["last_error"]
    assert receiver.requests == []


def test_a_store_from_before_alerts_does_not_flood(
    receiver: WebhookReceiver, db: Path, no_background: None
) -> None:
    for seed in (60, 61):
        write_spans(db, cap_breach(seed))
    with open_store(db, read_only=False) as con:  # as if written before alerts existed
        con.execute("DELETE FROM alert_deliveries").fetchall()
        con.execute("DELETE FROM alerts").fetchall()
    records = cap_breach(62)
    write_spans(db, records)
    shown = alerts(db)
    assert [a["run_id"] for a in shown] == [records[0].trace_id]
    assert shown[0]["status"] == "pending"


def test_a_cap_breach_ingested_over_otlp_is_alerted(receiver: WebhookReceiver, db: Path) -> None:
    """The OTLP receiver writes through write_spans too: its incidents alert the same way."""
    import http.client

    from otlp_payloads import request_json, to_protobuf

    from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig

    records = cap_breach(80)
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        conn = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=scaled(60))
        conn.request("POST", "/v1/traces", body=to_protobuf(request_json(records)),
                     headers={"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == 200
        conn.close()
        [got] = receiver.wait_for(1)
    assert got.alert_id == f"cap_breach-{records[0].trace_id[:16]}"
    assert got.body["incident"]["data"]["proposed"] == 47


EXIT_SCRIPT = """
import sys
from cliffwatch.orchestrator.guard import Guard
from cliffwatch.telemetry.tracing import configure_tracing
tracing = configure_tracing(sys.argv[1], otlp_endpoint=None)
flush = sys.argv[2] == "flush"
guard = Guard("x", tracing=tracing, flush_on_close=flush, raise_on_breach=False).start()
guard.check_plan(47)
guard.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("when", ["flush", "exit"])
def test_a_short_script_exits_cleanly_and_its_alert_is_sent_once(
    receiver: WebhookReceiver, db: Path, when: str
) -> None:
    """Closed with a flush, the script sends the alert before exiting; flushed only by
    OpenTelemetry's exit hook, it exits cleanly with the alert queued, and the next
    process (here `cliffwatch alerts --retry`) sends it."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(db), when], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=scaled(240))
    assert done.returncode == 0, done.stderr
    if when == "flush":
        assert len(receiver.wait_for(1)) == 1
        assert [a["status"] for a in alerts(db)] == ["delivered"]
    else:
        assert [a["status"] for a in alerts(db)] == ["pending"]
        assert receiver.requests == []
    assert cli("alerts", "--db", str(db), "--retry").returncode == 0
    assert len(receiver.delivered()) == 1


# --- the CLI: `cliffwatch alerts` lists, `--retry` sends again (a separate process) -------

CLI = [str(Path(sys.executable).with_name("cliffwatch"))]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
    return subprocess.run([*CLI, *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=scaled(240))


@pytest.mark.slow
def test_cli_lists_failed_deliveries_and_retry_sends_them(
    receiver: WebhookReceiver, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CLIFFWATCH_ALERT_MAX_ATTEMPTS, "1")
    receiver.fail_next(1, status=502)
    write_spans(db, cap_breach(70))
    wait_status(db, "failed")
    listed = cli("alerts", "--db", str(db), "--status", "failed", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, "HTTP 502")
    retried = cli("alerts", "--db", str(db), "--retry", "--format", "csv")
    assert retried.returncode == 0, retried.stderr
    assert "1 delivered" in retried.stderr
    assert "delivered" in retried.stdout.splitlines()[1]
    assert len(receiver.delivered()) == 1
    again = cli("alerts", "--db", str(db), "--retry")  # nothing left: nothing sent twice
    assert again.returncode == 0 and "retried 0 deliveries" in again.stderr
    assert len(receiver.delivered()) == 1


@pytest.mark.slow
def test_cli_retry_that_fails_exits_1_and_bad_settings_exit_2(
    receiver: WebhookReceiver, db: Path, no_background: None
) -> None:
    write_spans(db, cap_breach(71))
    receiver.fail_next(1, status=400)
    failed = cli("alerts", "--db", str(db), "--retry")
    assert failed.returncode == 1 and "1 failed" in failed.stderr
    bad = cli("alerts", "--db", str(db), "--retry",
              env={settings.CLIFFWATCH_WEBHOOK_URLS: "ftp://nope"})
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1


def test_a_slow_webhook_does_not_delay_the_others(
    db: Path, no_background: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as fast, WebhookReceiver() as slow:
        slow.delay_s = scaled(4.0)
        monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_URLS, f"{slow.url} {fast.url}")
        monkeypatch.setenv(settings.CLIFFWATCH_WEBHOOK_TIMEOUT_S, str(scaled(60.0)))
        for seed in range(40, 43):  # hours apart: no breaches-per-hour rule fires
            write_spans(db, cap_breach(seed, started_at_ns=ns_at("2026-11-02T00:00")
                                       + seed * HOUR_NS))
        start = time.monotonic()
        sender = threading.Thread(target=deliver_now, args=(db,), daemon=True)
        sender.start()
        fast.wait_for(3, timeout_s=40)
        # All three reached the fast webhook before the slow one answered its first.
        assert time.monotonic() - start < slow.delay_s
        assert slow.delivered() == []
        sender.join(scaled(120))
        assert not sender.is_alive()
    assert len(fast.delivered()) == 3 and len(slow.delivered()) == 3
    assert len(alerts(db, status="delivered")) == 6
