"""Usage bounds: an absurd token count or cost never reaches a run's sum or a percentile.

The cases are the ones seen fuzzing the receiver (issue 12): a 1e308 cost made a run cost
``inf``; 10^15 tokens were priced as a $150M call; ``input_tokens=-1`` priced the call
from its output alone; 2^62 tokens overflowed the run's token sum.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp_payloads import otlp_span, request_of_spans, to_protobuf

from cliffwatch.analytics.percentiles import cost_percentiles
from cliffwatch.telemetry.ingest import ingest_files
from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.otlp_mapping import map_span
from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.usage_bounds import (
    MAX_COST_USD_PER_CALL,
    MAX_TOKENS_PER_SPAN,
    USAGE_REJECTED_REASON,
    UsageRejection,
    cost_problem,
    token_problem,
    usage_rejection,
)

TRACE = "7b8efff798038103d269b633813fc60c"
T0 = 1_793_520_000_000_000_000
CALL = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}


def _span(attrs: dict[str, Any]) -> OtlpSpan:
    return OtlpSpan(
        trace_id=TRACE, span_id="00000000000000a1", parent_span_id=None, name="chat",
        kind=3, start_time_unix_nano=T0, end_time_unix_nano=T0 + 10**9, status_code="unset",
        status_message=None, attributes=attrs, resource_attributes={"service.name": "b"},
    )


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (None, None), ("", None), (0, None), (1200, None), ("1200", None), (1200.0, None),
        (MAX_TOKENS_PER_SPAN, None),
        (-1, UsageRejection.TOKENS_NEGATIVE), ("-1", UsageRejection.TOKENS_NEGATIVE),
        (MAX_TOKENS_PER_SPAN + 1, UsageRejection.TOKENS_TOO_LARGE),
        (10**15, UsageRejection.TOKENS_TOO_LARGE), (2**62, UsageRejection.TOKENS_TOO_LARGE),
        ("9" * 5000, UsageRejection.TOKENS_TOO_LARGE),  # past Python's int parsing limit
        (math.inf, UsageRejection.TOKENS_TOO_LARGE), ("1e400", UsageRejection.TOKENS_TOO_LARGE),
        (1.5, UsageRejection.TOKENS_NOT_A_COUNT), (math.nan, UsageRejection.TOKENS_NOT_A_COUNT),
        ("many", UsageRejection.TOKENS_NOT_A_COUNT), (True, UsageRejection.TOKENS_NOT_A_COUNT),
        ([1], UsageRejection.TOKENS_NOT_A_COUNT),
    ],
)
def test_token_bounds(raw: Any, problem: UsageRejection | None) -> None:
    assert token_problem(raw) is problem


def test_cost_bounds() -> None:
    assert cost_problem(None) is None and cost_problem(0.0) is None
    assert cost_problem(MAX_COST_USD_PER_CALL) is None
    for bad in (MAX_COST_USD_PER_CALL * 1.01, 1e308, math.inf, math.nan, -0.01):
        assert cost_problem(bad) is UsageRejection.COST_TOO_LARGE


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        ({"gen_ai.usage.cost.amount": 1e308, "gen_ai.usage.input_tokens": 10},
         UsageRejection.COST_TOO_LARGE),
        ({"gen_ai.usage.input_tokens": 10**15, "gen_ai.usage.output_tokens": 10},
         UsageRejection.TOKENS_TOO_LARGE),
        ({"gen_ai.usage.input_tokens": -1, "gen_ai.usage.output_tokens": 500},
         UsageRejection.TOKENS_NEGATIVE),
        ({"gen_ai.usage.input_tokens": 2**62, "gen_ai.usage.output_tokens": 2**62},
         UsageRejection.TOKENS_TOO_LARGE),
        ({"llm.token_count.prompt": 1.5, "llm.token_count.completion": 3},
         UsageRejection.TOKENS_NOT_A_COUNT),
        # tokens within bounds, but priced over the cost bound ($2.50 + $10 per 1M tokens)
        ({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10**9,
          "gen_ai.usage.output_tokens": 10**9}, UsageRejection.COST_TOO_LARGE),
    ],
)
def test_a_call_out_of_bounds_keeps_its_span_but_not_its_usage(
    usage: dict[str, Any], reason: UsageRejection
) -> None:
    record = map_span(_span({**CALL, **usage}))
    assert record.is_llm_call and record.request_model in ("gpt-4o-mini", "gpt-4o")
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (None, None, None)
    assert record.cost_source == "unpriced"  # counted as unpriced by the store, never $0
    assert record.price_input_usd_per_token is None
    assert json.loads(record.attributes)[USAGE_REJECTED_REASON] == reason
    assert usage_rejection(record) is reason


def test_usage_in_bounds_is_untouched_and_a_producers_own_reason_is_dropped() -> None:
    usage = {"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    record = map_span(_span({**CALL, **usage}))
    assert (record.input_tokens, record.output_tokens) == (1000, 100)
    assert record.cost_source == "computed" and 0 < record.cost_usd < 1
    assert usage_rejection(record) is None
    forged = map_span(_span({**CALL, **usage, USAGE_REJECTED_REASON: "tokens_negative"}))
    assert USAGE_REJECTED_REASON not in json.loads(forged.attributes)
    assert forged.cost_usd == record.cost_usd


def _calls(attrs: dict[str, Any], n: int, trace: str) -> list[dict[str, Any]]:
    return [
        otlp_span(trace_id=trace, span_id=f"{i:016x}", name="chat", start_ns=T0 + i,
                  end_ns=T0 + 10**9, attributes={**CALL, "cliff.task_class": "bounds", **attrs})
        for i in range(1, n + 1)
    ]


def test_absurd_usage_through_the_receiver_never_reaches_the_percentiles(tmp_path: Path) -> None:
    db = tmp_path / "bounds.duckdb"
    huge_cost = _calls({"gen_ai.usage.cost.amount": 1e308}, 5, "a" * 32)
    huge_tokens = _calls({"gen_ai.usage.input_tokens": 2**62,
                          "gen_ai.usage.output_tokens": 2**62}, 3, "b" * 32)
    negative = _calls({"gen_ai.usage.input_tokens": -1,
                       "gen_ai.usage.output_tokens": 800}, 1, "c" * 32)
    fine = _calls({"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100},
                  2, "d" * 32)
    body = to_protobuf(request_of_spans(huge_cost + huge_tokens + negative + fine))
    with OtlpReceiver(db, ReceiverConfig(port=0)) as rx:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=60)
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        health = rx.stats_snapshot()
    assert response.status == 200
    partial = ExportTraceServiceResponse.FromString(payload).partial_success
    # a warning (nothing rejected: every span stored) naming the spans and why
    assert partial.rejected_spans == 0
    assert "9 span(s) stored with their usage rejected" in partial.error_message
    assert "usage cost_too_large" in partial.error_message
    assert health["spans_accepted"] == 11 and health["spans_usage_rejected"] == 9
    assert health["usage_rejected"] == {
        "cost_too_large": 5, "tokens_too_large": 3, "tokens_negative": 1}
    with open_store(db, read_only=True) as con:
        runs = con.execute(
            "SELECT run_id, cost_usd, input_tokens, llm_calls, unpriced_calls FROM runs "
            "ORDER BY run_id").fetchall()
        reasons = con.execute(
            f"""SELECT attributes->>'$."{USAGE_REJECTED_REASON}"' AS r, count(*) FROM spans
                GROUP BY r ORDER BY r NULLS LAST""").fetchall()
        percentiles = cost_percentiles(con)
    by_run = {r[0]: r[1:] for r in runs}
    for trace, calls in (("a" * 32, 5), ("b" * 32, 3), ("c" * 32, 1)):
        cost, tokens, llm_calls, unpriced = by_run[trace]
        assert (llm_calls, unpriced) == (calls, calls)  # the calls count, unpriced
        assert tokens in (None, 0) and cost in (None, 0.0)
    assert 0 < by_run["d" * 32][0] < 1  # the sound run is priced as usual
    assert reasons == [("cost_too_large", 5), ("tokens_negative", 1),
                       ("tokens_too_large", 3), (None, 2)]
    for row in percentiles.iter_rows(named=True):
        assert all(math.isfinite(row[c]) for c in ("p50_usd", "p95_usd", "p99_usd"))


def test_ingest_counts_and_names_spans_with_usage_rejected(tmp_path: Path) -> None:
    source = tmp_path / "spans.json"
    spans = _calls({"gen_ai.usage.input_tokens": -1, "gen_ai.usage.output_tokens": 50},
                   1, "e" * 32)
    spans += _calls({"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5},
                    1, "f" * 32)
    source.write_text(json.dumps(request_of_spans(spans)))
    summary = ingest_files([source], tmp_path / "in.duckdb")
    assert summary.spans_written == 2 and summary.spans_usage_rejected == 1
    assert not summary.complete  # the CLI exits non-zero: the input was bad
    assert summary.problems == (
        f"span {1:016x} of trace {'e' * 32}: stored with its usage rejected (tokens_negative)",
    )
