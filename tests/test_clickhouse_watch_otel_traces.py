"""The Collector's ``otel_traces`` rows, both ways: a span read back from the exporter's
table maps to the same record (cost included) as the span ingested directly.

The table is created with the exporter's DDL in chDB (the ClickHouse engine embedded), the
rows inserted from Arrow and read back with SQL, so the round trip covers ClickHouse's own
Map, Nested and DateTime64 handling, not just our Arrow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from otlp_payloads import request_json

from cliffwatch.telemetry.clickhouse import otel_traces as ot
from cliffwatch.telemetry.clickhouse.client import connect
from cliffwatch.telemetry.clickhouse.url import parse_store_url
from cliffwatch.telemetry.ingest import read_file
from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.otlp_json import decode_json_object
from cliffwatch.telemetry.otlp_mapping import map_spans
from cliffwatch.telemetry.records import SPAN_RECORD_FIELDS, SpanRecord
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing

pytest.importorskip("chdb")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
JSON_FIELDS = ("attributes", "resource_attributes", "events")


def fixture_spans() -> list[OtlpSpan]:
    """Spans of real producers (tests/fixtures) and of cliffwatch's own runs."""
    spans: list[OtlpSpan] = []
    for name in ("openinference", "openllmetry", "litellm"):
        for item in read_file(FIXTURES / f"{name}.jsonl"):
            assert item.request is not None
            spans.extend(item.request.spans)
    own = make_runs_costing([0.01, 0.02, 0.5], task_class="research", seed=3)
    own += make_run_records(task_class="support", worker_cost_usds=[], max_workers=3,
                            proposed=12, breach="cap", status="rejected", seed=9)
    spans.extend(decode_json_object(request_json(own)).spans)
    return spans


def _as_stored(value):
    """What the exporter's text cell gives back for a value (the documented loss of
    telemetry/clickhouse/otel_traces.py: a JSON-array text and an array look alike)."""
    if isinstance(value, dict):
        return {k: _as_stored(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_as_stored(v) for v in value]
    return ot.parse_value(ot.render_value(value))


def assert_same_records(direct: list[SpanRecord], via: list[SpanRecord]) -> None:
    """Field by field, every figure exact; JSON columns compared as values, up to what the
    exporter's text cells cannot tell apart (3 == 3.0, '["stop"]' and ["stop"])."""
    by_key = {(r.trace_id, r.span_id): r for r in via}
    assert len(by_key) == len(direct)
    for record in direct:
        other = by_key[(record.trace_id, record.span_id)]
        for field in SPAN_RECORD_FIELDS:
            mine, theirs = getattr(record, field), getattr(other, field)
            if field in JSON_FIELDS:
                assert _as_stored(json.loads(mine)) == json.loads(theirs), (field, record.span_id)
            else:
                assert mine == theirs, (field, record.span_id, mine, theirs)


@pytest.fixture
def session(tmp_path: Path):
    """A client of chDB (the process's one embedded engine, on this test's folder)."""
    with connect(parse_store_url(f"chdb://{tmp_path}/chdb")) as one:
        yield one


def test_rows_read_back_from_clickhouse_map_to_the_same_records(session) -> None:
    spans = fixture_spans()
    direct, rejected = map_spans(spans)
    assert not rejected
    assert any(r.is_llm_call and r.cost_usd for r in direct)  # the test has costs to compare

    session.command(ot.create_table_sql("otel_traces"))
    session.insert_arrow("otel_traces", ot.spans_to_rows(spans))
    back = session.query_arrow(
        f"SELECT {ot.select_columns_sql()} FROM otel_traces ORDER BY TraceId, SpanId")
    assert back.num_rows == len(spans)
    via, rejected = map_spans(ot.rows_to_spans(back))
    assert not rejected
    assert_same_records(direct, via)


def test_the_table_is_the_exporters(session) -> None:
    session.command(ot.create_table_sql("my_traces"))
    described = session.query_arrow("DESCRIBE TABLE my_traces").to_pylist()
    types = {row["name"]: row["type"] for row in described}
    assert types["Timestamp"] == "DateTime64(9)"
    assert types["SpanAttributes"] == "Map(LowCardinality(String), String)"
    assert types["ResourceAttributes"] == "Map(LowCardinality(String), String)"
    assert types["Duration"] == "UInt64"
    assert types["Events.Attributes"] == "Array(Map(LowCardinality(String), String))"
    assert types["Links.TraceId"] == "Array(String)"
    assert tuple(types) == ot.COLUMNS
    engine = session.query_arrow(
        "SELECT engine, sorting_key, partition_key FROM system.tables WHERE name = 'my_traces'"
    ).to_pylist()[0]
    assert engine == {
        "engine": "MergeTree",
        "sorting_key": "ServiceName, SpanName, toDateTime(Timestamp)",
        "partition_key": "toDate(Timestamp)",
    }


@pytest.mark.parametrize(("value", "text"), [
    ("plain", "plain"), (42, "42"), (-7, "-7"), (True, "true"), (False, "false"),
    (0.5, "0.5"), (3.0, "3"), (1e-7, "1e-7"), (2.5e-5, "0.000025"),
    (3.7500000000000003e-05, "0.000037500000000000003"), (1e21, "1e+21"),
    (123456789012345680.0, "123456789012345680"), ([1, "a"], '[1,"a"]'),
])
def test_values_are_rendered_as_the_exporter_renders_them(value, text) -> None:
    assert ot.render_value(value) == text


@pytest.mark.parametrize(("text", "value"), [
    ("42", 42), ("true", True), ("0.5", 0.5), ("1e-7", 1e-7), ("gpt-4o", "gpt-4o"),
    ("007", "007"), ("99999999999999999999", "99999999999999999999"), ("[1,2]", [1, 2]),
    ('[{"role":"user"}]', '[{"role":"user"}]'), ("[not json", "[not json"),
    ("", ""), ("NaN", "NaN"),
])
def test_values_are_read_back_typed(text, value) -> None:
    parsed = ot.parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_kind_and_status_names_old_and_new() -> None:
    span = fixture_spans()[0]
    rows = ot.spans_to_rows([span])
    assert rows.column("SpanKind")[0].as_py() in ot.SPAN_KIND_NAMES
    legacy = rows.set_column(rows.schema.get_field_index("SpanKind"), "SpanKind",
                             pa.array(["SPAN_KIND_CLIENT"]))
    legacy = legacy.set_column(legacy.schema.get_field_index("StatusCode"), "StatusCode",
                               pa.array(["STATUS_CODE_ERROR"]))
    back = ot.rows_to_spans(legacy)[0]
    assert (back.kind, back.status_code) == (3, "error")


def test_a_bad_table_name_is_refused() -> None:
    with pytest.raises(ot.TableNameError, match="not a plain identifier"):
        ot.create_table_sql("x; DROP TABLE y")
