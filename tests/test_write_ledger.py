"""write_or_spill: every failed write spills, except one the values themselves fail
(spilled, it would fail every later write); a spill that fails too is a counted loss."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cliffwatch.telemetry import spill
from cliffwatch.telemetry.ingest import ingest_files
from cliffwatch.telemetry.span_writer import SpanWriter
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_ledger import (
    LEDGER,
    LedgerCounts,
    SpansLostError,
    WriteLedger,
    is_data_error,
    write_or_spill,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "litellm.jsonl"


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.duckdb"
    path.write_bytes(b"garbage" * 100)  # every write to it fails
    return path


def test_a_sound_write_is_counted_written(tmp_path: Path) -> None:
    ledger = WriteLedger()
    records = make_run_records(seed=1)
    result = write_or_spill(tmp_path / "ok.duckdb", records, ledger=ledger)
    assert result is not None and result.spans_written == len(records)
    assert ledger.snapshot().written == len(records)


def test_a_failed_write_is_spilled_and_loaded_once_the_store_is_sound(tmp_path: Path) -> None:
    path = _garbage(tmp_path)
    ledger = WriteLedger()
    records = make_run_records(seed=2)
    assert write_or_spill(path, records, ledger=ledger) is None
    counts = ledger.snapshot()
    assert (counts.spilled, counts.store_failed, counts.lost) == (len(records), len(records), 0)
    path.unlink()  # the store is replaced: the next write loads the spilled batch
    write_or_spill(path, [], ledger=ledger)
    assert spill.pending_spills(path) == []
    with open_store(path, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM spans").fetchall()[0][0] == len(records)


def test_a_failed_spill_raises_and_counts_the_loss(tmp_path: Path) -> None:
    path = _garbage(tmp_path)
    spill.spill_dir(path).write_text("a file where the spill directory should be")
    ledger = WriteLedger()
    records = make_run_records(seed=3)
    with pytest.raises(SpansLostError, match="not a cliffwatch store.*failed too") as info:
        write_or_spill(path, records, ledger=ledger)
    assert info.value.spans_lost == len(records)
    assert ledger.snapshot().lost == len(records)
    assert "\n" not in str(info.value)


def test_values_the_store_cannot_take_are_raised_not_spilled(tmp_path: Path) -> None:
    bad = dataclasses.replace(make_run_records(seed=4)[1], name="bad \ud800 name")
    ledger = WriteLedger()
    with pytest.raises(Exception) as info:
        write_or_spill(tmp_path / "d.duckdb", [bad], ledger=ledger)
    assert is_data_error(info.value)
    assert spill.pending_spills(tmp_path / "d.duckdb") == []  # no poison spill file
    assert ledger.snapshot().spilled == 0


def test_span_writer_spills_a_failed_write(tmp_path: Path) -> None:
    path = _garbage(tmp_path)
    records = make_run_records(seed=5)
    with SpanWriter(path) as writer:
        outcome = writer.write(records, timeout_s=60)
    assert outcome.spilled and writer.stats.spans_spilled == len(records)


def test_ingest_counts_spilled_spans(tmp_path: Path) -> None:
    path = _garbage(tmp_path)
    before = LEDGER.snapshot()
    summary = ingest_files([FIXTURE], path)
    assert summary.spans_spilled == summary.spans_read > 0
    assert summary.spans_written == 0
    assert (LEDGER.snapshot() - before).spilled == summary.spans_read


def test_spans_ended_but_never_exported_count_as_lost() -> None:
    counts = LedgerCounts(written=7, spilled=1, lost=0, ended=10)
    assert counts.dropped == 2
    assert counts.summary() == "spans: 7 written, 1 spilled, 2 lost"
    assert LedgerCounts(written=5).dropped == 0  # no tracer (ingest, serve): nothing to say


def test_a_tracing_pipeline_accounts_for_every_ended_span(tmp_path: Path) -> None:
    from cliffwatch.telemetry.tracing import configure_tracing

    before = LEDGER.snapshot()
    tracing = configure_tracing(tmp_path / "t.duckdb", batch=False, otlp_endpoint=None)
    for name in ("a", "b", "c"):
        with tracing.tracer.start_as_current_span(name):
            pass
    tracing.shutdown()
    spans = LEDGER.snapshot() - before
    assert (spans.ended, spans.written, spans.dropped) == (3, 3, 0)


def test_span_writer_counts_a_lost_batch_once(tmp_path: Path) -> None:
    path = _garbage(tmp_path)
    spill.spill_dir(path).write_text("a file where the spill directory should be")
    ledger_before = LEDGER.snapshot()
    with SpanWriter(path, linger_s=0.5) as writer:  # the three coalesce into one batch
        futures = [writer.submit(make_run_records(seed=s)) for s in (6, 7, 8)]
        for future in futures:
            with pytest.raises(SpansLostError):
                future.result(timeout=60)
    lost = (LEDGER.snapshot() - ledger_before).lost
    assert lost == sum(len(make_run_records(seed=s)) for s in (6, 7, 8))
