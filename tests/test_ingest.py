"""OTLP file import: every file format, idempotence, bad lines, and analytics on the result.

The reference is cliffwatch's own write path: the same runs written straight into a store
with ``write_spans`` must give exactly the ``runs`` table an ingest of their OTLP gives,
and percentiles and incidents on ingested data must equal numpy / the incident rules.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from otlp_payloads import otlp_span, request_json, request_of_spans, to_protobuf
from producer_app import PIPELINE, TASK_CLASS, expected_run

from cliffwatch.analytics.incidents import list_incidents
from cliffwatch.analytics.percentiles import cost_percentiles
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.ingest import IngestError, ingest_files, read_file
from cliffwatch.telemetry.otlp_mapping import MappingConfig
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Costs rounded to 1e-12 USD: a run's sum depends on the order DuckDB adds its calls in,
# which may differ between one write and several (last-bit float differences).
RUN_COLUMNS = (
    "run_id, task_class, started_at, ended_at, status, breach, round(cost_usd, 12), "
    "input_tokens, output_tokens, llm_calls, unpriced_calls, failed_calls, workers_proposed, "
    "workers_dispatched, max_workers, ceiling_usd, policy, planner_model, synthesis_model"
)


def _costs(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.lognormvariate(-5, 1), 9) for _ in range(n)]


@pytest.fixture(scope="module")
def records() -> list[SpanRecord]:
    """Two task classes of 25 runs each, one run a runaway, plus a cap breach."""
    research = _costs(25, 1)
    research[7] = 60 * float(np.median(research))  # a runaway: > 10 x P50
    out = make_runs_costing(research, task_class="research", seed=1)
    out += make_runs_costing(_costs(25, 2), task_class="support", seed=2, workers=2)
    out += make_run_records(
        task_class="support",
        worker_cost_usds=[],
        max_workers=3,
        proposed=12,
        breach="cap",
        status="rejected",
        seed=99,
    )
    return out


def _lines(records: list[SpanRecord], per_line: int) -> list[dict]:
    return [request_json(records[i : i + per_line]) for i in range(0, len(records), per_line)]


def write_formats(records: list[SpanRecord], directory: Path) -> dict[str, Path]:
    """The same spans in every format ingest reads."""
    requests = _lines(records, 37)
    files = {
        "jsonl": directory / "traces.jsonl",
        "jsonl.gz": directory / "traces.jsonl.gz",
        "json": directory / "one.json",
        "json array": directory / "many.json",
        "protobuf": directory / "body.pb",
        "protobuf stream": directory / "collector.binpb",
    }
    jsonl = "".join(json.dumps(r) + "\n" for r in requests)
    files["jsonl"].write_text(jsonl)
    files["jsonl.gz"].write_bytes(gzip.compress(jsonl.encode()))
    files["json"].write_text(json.dumps(request_json(records), indent=2))
    files["json array"].write_text(json.dumps(requests, indent=1))
    files["protobuf"].write_bytes(to_protobuf(request_json(records)))
    files["protobuf stream"].write_bytes(
        b"".join(len(pb).to_bytes(4, "big") + pb for pb in map(to_protobuf, requests))
    )
    return files


@pytest.fixture(scope="module")
def formats(records: list[SpanRecord], tmp_path_factory) -> dict[str, Path]:
    """The fixture runs written once in every format (read-only for the tests)."""
    return write_formats(records, tmp_path_factory.mktemp("formats"))


def runs_table(db: Path) -> list[tuple]:
    with open_store(db, read_only=True) as con:
        return con.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY run_id").fetchall()


@pytest.fixture(scope="module")
def reference_runs(records: list[SpanRecord], tmp_path_factory) -> list[tuple]:
    db = tmp_path_factory.mktemp("ref") / "own.duckdb"
    write_spans(db, records)
    return runs_table(db)


@pytest.mark.parametrize(
    "fmt", ["jsonl", "jsonl.gz", "json", "json array", "protobuf", "protobuf stream"]
)
def test_every_format_gives_the_runs_our_own_write_path_gives(
    records: list[SpanRecord],
    formats: dict[str, Path],
    reference_runs: list[tuple],
    tmp_path: Path,
    fmt: str,
) -> None:
    path = formats[fmt]
    db = tmp_path / "ingested.duckdb"
    summary = ingest_files([path], db, batch_spans=100)
    assert summary.complete, summary.problems
    assert summary.spans_read == summary.spans_written == len(records)
    assert summary.runs_materialised >= 51
    assert runs_table(db) == reference_runs


def test_ingesting_again_adds_nothing(records: list[SpanRecord], formats, tmp_path: Path) -> None:
    path = formats["jsonl"]
    db = tmp_path / "again.duckdb"
    first = ingest_files([path], db)
    before = runs_table(db)
    again = ingest_files([path, path], db)
    assert first.spans_written == len(records)
    assert again.spans_read == 2 * len(records) and again.spans_written == 0
    assert runs_table(db) == before


def test_percentiles_on_ingested_runs_equal_numpy(formats, tmp_path) -> None:
    db = tmp_path / "p.duckdb"
    ingest_files([formats["jsonl"]], db)
    with open_store(db, read_only=True) as con:
        df = cost_percentiles(con, Window())
        raw = dict(
            con.execute(
                "SELECT task_class, list(cost_usd) FROM runs GROUP BY task_class"
            ).fetchall()
        )
    for row in df.iter_rows(named=True):
        costs = np.array(raw[row["task_class"]])
        expected = np.percentile(costs, [50, 95, 99])
        assert [row["p50_usd"], row["p95_usd"], row["p99_usd"]] == pytest.approx(expected)
    # and the run costs are exactly what the runs were built to cost
    research = sorted(raw["research"])
    assert research == pytest.approx(sorted(_research_costs()), rel=1e-9)


def _research_costs() -> list[float]:
    costs = _costs(25, 1)
    costs[7] = 60 * float(np.median(costs))
    return costs


def test_incidents_are_found_on_ingested_runs(formats, tmp_path) -> None:
    db = tmp_path / "i.duckdb"
    ingest_files([formats["jsonl"]], db, batch_spans=50)
    with open_store(db, read_only=True) as con:
        incidents = list_incidents(con, Window())
    kinds = sorted(zip(incidents["kind"], incidents["task_class"], strict=True))
    assert kinds == [("cap_breach", "support"), ("runaway", "research")]


def test_a_bad_line_is_counted_and_the_rest_ingested(records, tmp_path) -> None:
    requests = _lines(records[:60], 20)
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps(requests[0])
        + "\n{broken json\n\n"
        + json.dumps({"not": "otlp"})
        + "\n"
        + "".join(json.dumps(r) + "\n" for r in requests[1:])
    )
    db = tmp_path / "m.duckdb"
    summary = ingest_files([path], db)
    assert summary.bad_requests == 2 and not summary.complete
    assert summary.spans_written == 60
    assert [p.split(": ")[0] for p in summary.problems] == [f"{path}:line 2", f"{path}:line 4"]


def test_a_broken_first_line_does_not_hide_the_others(records, tmp_path) -> None:
    path = tmp_path / "first-bad.jsonl"
    path.write_text("{oops\n" + "".join(json.dumps(r) + "\n" for r in _lines(records[:40], 20)))
    summary = ingest_files([path], tmp_path / "f.duckdb")
    assert (summary.bad_requests, summary.spans_written) == (1, 40)


def test_rejected_spans_are_named(tmp_path: Path) -> None:
    trace = "1" * 32
    request = request_of_spans(
        [
            otlp_span(trace_id=trace, span_id="2" * 16),
            otlp_span(trace_id=trace, span_id="3" * 10),
        ]
    )
    path = tmp_path / "r.json"
    path.write_text(json.dumps(request))
    summary = ingest_files([path], tmp_path / "r.duckdb")
    assert (summary.spans_written, summary.spans_rejected) == (1, 1)
    assert "span_id has 5 bytes" in summary.problems[0]


def test_empty_and_truncated_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    assert list(read_file(empty)) == []
    stream = tmp_path / "cut.binpb"
    pb = to_protobuf(request_of_spans([otlp_span(trace_id="4" * 32, span_id="5" * 16)]))
    stream.write_bytes(len(pb).to_bytes(4, "big") + pb + (999).to_bytes(4, "big") + b"\x0a\x01")
    items = list(read_file(stream))
    assert [i.error is None for i in items] == [True, False]
    assert "truncated" in items[1].error
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x0a\xff\xff\xff\xff")
    (item,) = read_file(garbage)
    assert item.request is None


def test_missing_files_fail_before_anything_is_written(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(request_of_spans([otlp_span(trace_id="6" * 32, span_id="7" * 16)])))
    db = tmp_path / "x.duckdb"
    with pytest.raises(IngestError, match="nope.jsonl is not a file"):
        ingest_files([good, tmp_path / "nope.jsonl"], db)
    assert not db.exists()
    with pytest.raises(IngestError):
        ingest_files([tmp_path], db)


@pytest.mark.parametrize(("name", "content"), [
    ("bad.json", b"just some junk text here\nand more\n"),  # read as protobuf before
    ("bad.jsonl", b"42\n"),
    ("bad.json.gz", gzip.compress(b"not json at all\n")),
])
def test_a_file_named_json_that_is_not_json_fails_before_anything_is_written(
    tmp_path: Path, name: str, content: bytes
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(request_of_spans([otlp_span(trace_id="6" * 32, span_id="7" * 16)])))
    bad = tmp_path / name
    bad.write_bytes(content)
    db = tmp_path / "x.duckdb"
    with pytest.raises(IngestError, match=rf"^{bad} is not OTLP JSON: ") as info:
        ingest_files([good, bad], db)
    assert "truncated" not in str(info.value) and "\n" not in str(info.value)
    assert not db.exists()
    # read_file reads it as JSON too: its lines are bad JSON, not a protobuf length prefix
    assert all(item.request is None and "JSON" in (item.error or "")
               for item in read_file(bad))


def test_the_cli_says_a_json_file_is_not_json_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app

    bad = tmp_path / "bad.json"
    bad.write_bytes(b"just some junk text here\n")
    result = CliRunner().invoke(app, ["ingest", str(bad), "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: {bad} is not OTLP JSON: Expecting value: "
                                     "line 1 column 1 (char 0)")
    assert result.stdout == ""


def test_progress_reaches_the_total(formats, tmp_path) -> None:
    files = formats
    seen: list[tuple[int, int]] = []
    paths = [files["jsonl"], files["protobuf"]]
    ingest_files(paths, tmp_path / "pg.duckdb", progress=lambda d, t: seen.append((d, t)))
    total = sum(p.stat().st_size for p in paths)
    assert seen[-1] == (total, total)
    assert all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_wrapper_repeating_its_childrens_usage_is_not_counted_twice(tmp_path: Path) -> None:
    trace = "8" * 32
    child = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.token_count.prompt": 100,
        "llm.token_count.completion": 20,
        "llm.cost.total": 0.25,
    }
    agent = {
        "openinference.span.kind": "AGENT",
        "agent.name": "triage",
        "llm.model_name": "gpt-4o-mini",
        "llm.token_count.prompt": 200,
        "llm.token_count.completion": 40,
        "llm.cost.total": 0.5,
    }
    request = request_of_spans(
        [
            otlp_span(trace_id=trace, span_id="a" * 16, name="agent", attributes=agent),
            otlp_span(
                trace_id=trace,
                span_id="b" * 16,
                parent_span_id="a" * 16,
                name="ChatCompletion",
                attributes=child,
            ),
            otlp_span(
                trace_id=trace,
                span_id="c" * 16,
                parent_span_id="a" * 16,
                name="ChatCompletion",
                attributes=child,
            ),
        ]
    )
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(request))
    db = tmp_path / "a.duckdb"
    ingest_files([path], db)
    with open_store(db, read_only=True) as con:
        row = con.execute(
            "SELECT task_class, cost_usd, input_tokens, llm_calls FROM runs"
        ).fetchall()
    assert row == [("triage", 0.5, 200, 2)]


def test_a_custom_task_class_rule(tmp_path: Path) -> None:
    request = request_of_spans(
        [
            otlp_span(
                trace_id="9" * 32,
                span_id="1" * 16,
                attributes={
                    "team": "growth",
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 10,
                },
            )
        ],
        resource={"service.name": "svc"},
    )
    path = tmp_path / "t.json"
    path.write_text(json.dumps(request))
    db = tmp_path / "t.duckdb"
    ingest_files([path], db, mapping=MappingConfig(task_class_attributes=("team",)))
    with open_store(db, read_only=True) as con:
        assert con.execute("SELECT task_class FROM runs").fetchall() == [("growth",)]


@pytest.mark.parametrize("producer", sorted(TASK_CLASS))
def test_fixtures_from_real_producers(producer: str, tmp_path: Path) -> None:
    """Spans the real instrumentation packages wrote (tests/fixtures/README.md): the run's
    tokens and cost come out as the fake server reported and litellm's prices say."""
    db = tmp_path / "fx.duckdb"
    summary = ingest_files([FIXTURES / f"{producer}.jsonl"], db)
    assert summary.complete and summary.unpriced_calls == 0
    with open_store(db, read_only=True) as con:
        rows = con.execute(
            "SELECT task_class, input_tokens, output_tokens, cost_usd, llm_calls FROM runs"
        ).fetchall()
    want_in, want_out, want_cost = expected_run()
    assert rows == [
        (TASK_CLASS[producer], want_in, want_out, pytest.approx(want_cost, rel=1e-9), len(PIPELINE))
    ]
