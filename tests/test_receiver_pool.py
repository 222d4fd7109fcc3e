"""The receiver's worker processes (``CLIFFWATCH_RECEIVER_WORKERS``): requests decoded,
mapped and journaled in a pool answer as the server's threads do (200, partial_success,
400, 503 past the backlog, /health), and a worker killed or hung mid-request costs that
request a retryable 503, never an acknowledgement, never a hang; a new worker serves on.

Marked slow: every receiver here starts worker processes.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp_payloads import otlp_span, to_protobuf
from test_receiver import JSON, PB, TRACE, _call_request, post, sid, span_count
from test_receiver_journal import _post_no_flush, health, journal_files
from waits import scaled, wait_until

from cliffwatch.telemetry.ingest_pool import IngestPool
from cliffwatch.telemetry.journal import journal_dir
from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig
from cliffwatch.telemetry.store import write_lock

pytestmark = pytest.mark.slow


def _pool(rx: OtlpReceiver) -> IngestPool:
    pool = rx._pool
    assert pool is not None, "the receiver runs no worker pool"
    return pool


def _leftovers(db: Path) -> list[str]:
    """Journal files not yet loaded and ``*.tmp`` files of requests never answered 200."""
    return sorted(p.name for p in journal_dir(db).iterdir() if p.suffix in (".tmp", ".arrow"))


def test_a_pool_answers_as_the_threads_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "rx.duckdb"
    config = ReceiverConfig(port=0, workers=2, backlog_max_spans=4)
    with OtlpReceiver(db, config) as rx:
        assert len(_pool(rx).pids) == 2 and os.getpid() not in _pool(rx).pids
        status, body, _ = post(rx, to_protobuf(_call_request(3)), token=None)
        assert status == 200
        assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
        assert span_count(db) == 3

        request = _call_request(1, first=10)
        spans = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans.append(otlp_span(trace_id=TRACE, span_id="abcd", name="short id"))
        spans.append(otlp_span(trace_id=TRACE, span_id=sid(77), start_ns=None, name="no start"))
        status, body, _ = post(rx, json.dumps(request).encode(), JSON, token=None)
        partial = json.loads(body)["partialSuccess"]
        assert status == 200 and int(partial["rejectedSpans"]) == 2
        assert "span_id has" in partial["errorMessage"]

        status, body, _ = post(rx, b"\x0a\xff\xff\xff", PB, token=None)
        assert status == 400 and b"\n" not in body.strip()

        monkeypatch.setenv("CLIFFWATCH_LOCK_TIMEOUT_S", "0.2")
        lock = write_lock(db)
        assert lock.acquire(timeout=scaled(30))  # the drain cannot write: the journal fills
        try:
            assert _post_no_flush(rx, to_protobuf(_call_request(3, trace="c" * 32)))[0] == 200
            status, _, headers = _post_no_flush(rx, to_protobuf(_call_request(2, trace="d" * 32)))
            assert status == 503 and headers["Retry-After"] == "1"
            assert len(journal_files(db)) == 1
        finally:
            lock.release()
        monkeypatch.setenv("CLIFFWATCH_LOCK_TIMEOUT_S", "30")
        assert rx.flush(scaled(60))
        counters = health(rx)
    assert counters["requests"] == 5 and counters["spans_accepted"] == 7
    assert counters["spans_rejected"] == 2 and counters["requests_refused"] == 1
    assert counters["requests_throttled"] == 1 and counters["spans_stored"] == 7
    assert span_count(db) == 7 and _leftovers(db) == []


def _post_in_thread(rx: OtlpReceiver, body: bytes) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(_post_no_flush(rx, body)))
    thread.start()
    return thread, answers


def test_a_worker_killed_mid_request_costs_a_503_and_a_new_worker_serves(
    tmp_path: Path,
) -> None:
    db = tmp_path / "rx.duckdb"
    with OtlpReceiver(db, ReceiverConfig(port=0, workers=1)) as rx:
        pool = _pool(rx)
        [victim] = pool.pids
        os.kill(victim, signal.SIGSTOP)  # it takes the request, and answers nothing
        thread, answers = _post_in_thread(rx, to_protobuf(_call_request(3)))
        wait_until(lambda: pool.busy == 1, 60, "the request at the worker")
        os.kill(victim, signal.SIGKILL)
        thread.join(scaled(60))
        [(status, body, headers)] = answers
        assert status == 503 and headers["Retry-After"] == "1"
        assert b"worker exited" in body
        assert _leftovers(db) == []  # nothing journaled for a request not acknowledged
        # The next request waits for the new worker, and is taken.
        assert post(rx, to_protobuf(_call_request(3)), token=None)[0] == 200
        assert victim not in pool.pids and len(pool.pids) == 1
        counters = health(rx)
    assert counters["requests_failed"] == 1 and counters["spans_stored"] == 3
    assert span_count(db) == 3


def test_a_worker_that_hangs_is_killed_after_the_write_timeout(tmp_path: Path) -> None:
    db = tmp_path / "rx.duckdb"
    config = ReceiverConfig(port=0, workers=1, write_timeout_s=scaled(3))
    with OtlpReceiver(db, config) as rx:
        pool = _pool(rx)
        [victim] = pool.pids
        os.kill(victim, signal.SIGSTOP)
        status, body, _ = _post_no_flush(rx, to_protobuf(_call_request(2)))
        assert status == 503 and b"did not answer in time" in body
        assert victim not in pool.pids  # killed, not left running
        with pytest.raises(ProcessLookupError):
            os.kill(victim, 0)
        # Its successor serves once its imports are done (503s until then: no worker free).
        body = to_protobuf(_call_request(2))
        wait_until(lambda: _post_no_flush(rx, body)[0] == 200, 120, "the new worker")
        assert rx.flush(scaled(60))
    assert span_count(db) == 2 and _leftovers(db) == []


def test_a_body_bigger_than_a_pipe_buffer_goes_through(tmp_path: Path) -> None:
    db = tmp_path / "rx.duckdb"
    body = to_protobuf(_call_request(600))  # well over 64 KiB
    assert len(body) > 65536
    with OtlpReceiver(db, ReceiverConfig(port=0, workers=1)) as rx:
        conn = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=scaled(60))
        try:
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": PB})
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        assert rx.flush(scaled(60))
    assert span_count(db) == 600
