"""The exporter's thread writer: batches queued compact, written by its own thread, which
gives way while the application makes spans; nothing lost (real DuckDB files)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult
from test_exporter import _sdk_run_spans, _stored
from waits import scaled_ms

from cliffwatch.telemetry import export_thread
from cliffwatch.telemetry.export_thread import ThreadSpanExporter, _GiveWay
from cliffwatch.telemetry.sdk_compact import (
    PACE_ROWS,
    compact_batch,
    load_rows,
    records_from_rows,
)
from cliffwatch.telemetry.testing import hold_store_lock
from cliffwatch.telemetry.write_ledger import WriteLedger


def test_export_queues_and_the_writer_thread_writes_every_span(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    ledger = WriteLedger()
    exporter = ThreadSpanExporter(path, ledger=ledger, activity=itertools.count().__next__)
    spans = _sdk_run_spans()
    assert exporter.export(spans[:2]) is SpanExportResult.SUCCESS
    assert exporter.export(spans[2:]) is SpanExportResult.SUCCESS
    assert exporter.force_flush(scaled_ms(60))
    counts = ledger.snapshot()
    assert (counts.written, counts.spilled, counts.lost) == (len(spans), 0, 0)
    assert set(_stored(path)) == {format(s.context.span_id, "016x") for s in spans}
    writer = exporter._thread
    exporter.shutdown()
    assert writer is not None and not writer.is_alive()
    assert exporter.export(spans) is SpanExportResult.FAILURE  # after shutdown: counted lost
    assert ledger.snapshot().lost == len(spans)


@pytest.mark.slow
def test_a_busy_store_spills_in_the_writer_thread_and_flush_loads_it(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    ledger = WriteLedger()
    exporter = ThreadSpanExporter(path, timeout_s=0.2, ledger=ledger)
    spans = _sdk_run_spans()
    with hold_store_lock(path):
        exporter.export(spans)
        assert not exporter.force_flush(scaled_ms(5))  # spilled; the store still busy
    assert ledger.snapshot().spilled == len(spans)
    assert exporter.force_flush(scaled_ms(60))  # the spill file loaded
    exporter.shutdown()
    assert len(_stored(path)) == len(spans)


def test_the_writer_waits_while_spans_are_made_until_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export_thread, "PAUSE_RATE", 1e-6)  # any new span: busy
    ended = [0]
    waited: list[float] = []

    def wait(seconds: float) -> None:  # the application makes 6 spans in each of 3 waits
        waited.append(seconds)
        if len(waited) <= 3:
            ended[0] += 6

    pace = _GiveWay(lambda: ended[0], behind=lambda: False, hurry=lambda: False, wait=wait)
    pace()
    assert waited == []  # nothing made meanwhile: no pause
    ended[0] += 6
    pace()
    assert waited == [export_thread.POLL_S] * 4  # waits until a look sees no new span
    pace()
    assert len(waited) == 4  # nothing new since


def test_a_trickle_of_spans_counts_as_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_thread, "PAUSE_RATE", 1e12)  # no application makes this many
    ended = [0]
    waited: list[float] = []
    pace = _GiveWay(lambda: ended[0], behind=lambda: False, hurry=lambda: False,
                    wait=waited.append)
    ended[0] += 6
    pace()
    assert waited == []


def test_a_writer_behind_gives_way_a_share_of_the_time_and_a_flush_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export_thread, "PAUSE_RATE", 1e-6)
    ended = [0]
    waited: list[float] = []
    hurry = [False]
    pace = _GiveWay(lambda: ended[0], behind=lambda: True, hurry=lambda: hurry[0],
                    wait=waited.append)
    ended[0] += 6
    pace()
    assert len(waited) == 1 and waited[0] >= 0  # GIVE_WAY times the chunk's CPU, once
    hurry[0] = True
    ended[0] += 6
    pace()
    assert len(waited) == 1  # a flush waits: no pause at all


def test_a_flush_wakes_a_writer_waiting_for_the_application_to_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export_thread, "MAX_LAG_S", 3600.0)  # only the flush can wake it
    path = tmp_path / "busy-app.duckdb"
    ledger = WriteLedger()
    exporter = ThreadSpanExporter(path, ledger=ledger,  # never pauses: 1e9 spans a look
                                  activity=itertools.count(step=10**9).__next__)
    spans = _sdk_run_spans()
    exporter.export(spans)
    assert exporter.force_flush(scaled_ms(60))  # the flush woke it
    assert ledger.snapshot().written == len(spans)
    exporter.shutdown()


def test_records_from_rows_paces_every_chunk() -> None:
    spans = _sdk_run_spans() * 200  # the same spans again: mapping does not mind
    calls: list[None] = []
    rows = load_rows(compact_batch(spans)[0])
    records = records_from_rows(rows, pace=lambda: calls.append(None))
    assert len(records) == len(spans)
    assert len(calls) == len(spans) // PACE_ROWS > 1
