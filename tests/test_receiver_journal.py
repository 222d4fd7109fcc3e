"""The receiver's journal (ack ``journal``, the default): a request is answered once its
spans are in ``<db>.journal/``; one drain thread loads them into the store; a full
backlog is a 503 with Retry-After, never a drop; files left behind load on the next start.

The store is made unwritable in this process by holding its write lock (what a long write
of another thread does), with a short lock timeout, so no second process is needed.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp_payloads import to_protobuf
from test_receiver import _call_request, post, span_count
from waits import scaled

from cliffwatch.telemetry.journal import Journal, arrow_table, journal_dir
from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig
from cliffwatch.telemetry.records import records_to_arrow
from cliffwatch.telemetry.store import write_lock
from cliffwatch.telemetry.testing import make_run_records


def journal_files(db: Path) -> list[Path]:
    return sorted(journal_dir(db).glob("*.arrow"))


def health(rx: OtlpReceiver) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=scaled(60))
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


def test_a_full_backlog_is_a_503_with_retry_after_and_nothing_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_LOCK_TIMEOUT_S", "0.2")
    db = tmp_path / "rx.duckdb"
    config = ReceiverConfig(port=0, backlog_max_spans=4)
    with OtlpReceiver(db, config) as rx:
        lock = write_lock(db)
        assert lock.acquire(timeout=scaled(30))  # the drain cannot write: the journal fills
        try:
            first = to_protobuf(_call_request(3))
            second = to_protobuf(_call_request(2, trace="c" * 32))
            status, body, _ = _post_no_flush(rx, first)
            assert status == 200
            assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
            assert len(journal_files(db)) == 1 and rx.flush(0.3) is False
            status, _, headers = _post_no_flush(rx, second)  # 3 + 2 spans > 4: throttled
            assert status == 503 and headers["Retry-After"] == "1"
            counters = health(rx)
            assert counters["backlog_spans"] == 3 and counters["backlog_files"] == 1
            assert counters["requests_throttled"] == 1 and counters["requests_failed"] == 0
            assert counters["backlog_limit_spans"] == 4 and counters["spans_stored"] == 0
        finally:
            lock.release()
        monkeypatch.setenv("CLIFFWATCH_LOCK_TIMEOUT_S", "30")  # readers wait out the writer
        assert rx.flush(scaled(60))
        assert journal_files(db) == [] and span_count(db) == 3
        assert post(rx, second, token=None)[0] == 200  # the retry is taken now
        counters = health(rx)
        assert counters["backlog_spans"] == 0 and counters["spans_stored"] == 5
        assert counters["store_errors"] >= 1 and "busy" in counters["last_store_error"]
    assert span_count(db) == 5


def _post_no_flush(rx: OtlpReceiver, body: bytes) -> tuple[int, bytes, http.client.HTTPMessage]:
    """One request, answered; unlike test_receiver.post, no wait for the store."""
    conn = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=scaled(60))
    try:
        conn.request("POST", "/v1/traces", body=body,
                     headers={"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def test_stop_writes_everything_answered(tmp_path: Path) -> None:
    db = tmp_path / "rx.duckdb"
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        for i in range(5):
            body = to_protobuf(_call_request(2, trace=f"{i + 1:032x}"))
            assert _post_no_flush(rx, body)[0] == 200
    assert journal_files(db) == [] and span_count(db) == 10


def test_files_left_in_the_journal_are_loaded_on_start(tmp_path: Path) -> None:
    db = tmp_path / "rx.duckdb"
    records = make_run_records(seed=3)
    Journal(db).append(records_to_arrow(records))  # what a receiver killed mid-load leaves
    (journal_dir(db) / "00000000000000000001-1-00000001.tmp").write_bytes(b"half a file")
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        assert rx.flush(scaled(60))
        assert span_count(db) == len(records)
        assert health(rx)["spans_stored"] == len(records)
    assert list(journal_dir(db).iterdir()) == []


def test_an_unreadable_journal_file_is_set_aside_not_blocking(tmp_path: Path) -> None:
    db = tmp_path / "rx.duckdb"
    journal_dir(db).mkdir()
    (journal_dir(db) / "00000000000000000001-1-00000001.arrow").write_bytes(b"not arrow")
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        assert post(rx, to_protobuf(_call_request(2)), token=None)[0] == 200
    assert span_count(db) == 2
    assert [p.name for p in journal_dir(db).iterdir()] == ["00000000000000000001-1-00000001.bad"]


def test_spans_arrow_cannot_hold_are_rejected_and_the_others_journaled(tmp_path: Path) -> None:
    db = tmp_path / "rx.duckdb"
    good = make_run_records(seed=5)
    bad = dataclasses.replace(good[1], span_id="e" * 16, name="bad \ud800 name")
    table, journaled, rejected = arrow_table([*good, bad])
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        assert rx._drain is not None  # the file a request leaves: the drain loads it
        rx._drain.journal.append(table)
        assert rx.flush(scaled(60))
    assert journaled == good and table.num_rows == len(good)
    assert [r.span_id for r in rejected] == ["e" * 16] and "cannot be stored" in rejected[0].reason
    assert span_count(db) == len(good)
