"""Cost truth in the store: duplicate instrumentation, traces without calls, nested agent
spans, the cache columns and the migration of an older store (issue 9).

Every expected cost is priced by hand from ``litellm.model_cost``, never through
cliffwatch's pricing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.otlp_mapping import map_spans
from cliffwatch.telemetry.pricing import Price, TokenUsage, import_litellm, recompute_cost_usd
from cliffwatch.telemetry.schema import SCHEMA_VERSION, SPAN_COLUMNS_V2
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.testing import make_run_records
from cliffwatch.telemetry.write_pipeline import write_spans

TRACE = "5" * 32
T0 = 1_793_520_000_000_000_000
MS = 1_000_000


def span(
    n: int,
    parent: int | None,
    name: str,
    attrs: dict[str, Any],
    *,
    scope: str | None = "app",
    start_ms: int = 0,
    end_ms: int = 100,
    kind: int = 3,
    trace_id: str = TRACE,
) -> OtlpSpan:
    return OtlpSpan(
        trace_id=trace_id,
        span_id=f"{n:016x}",
        parent_span_id=f"{parent:016x}" if parent is not None else None,
        name=name,
        kind=kind,
        start_time_unix_nano=T0 + start_ms * MS,
        end_time_unix_nano=T0 + end_ms * MS,
        status_code="unset",
        status_message=None,
        attributes=attrs,
        resource_attributes={"service.name": "svc"},
        scope_name=scope,
    )


def root(n: int = 1, *, trace_id: str = TRACE, **attrs: Any) -> OtlpSpan:
    return span(n, None, "app", {"gen_ai.workflow.name": "tides", **attrs}, kind=1,
                end_ms=1000, trace_id=trace_id)


def chat(model: str, tin: int, tout: int, **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic" if "claude" in model else "openai",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": tin,
        "gen_ai.usage.output_tokens": tout,
        **extra,
    }


def by_hand(model: str, uncached: int, out: int, read: int = 0, write: int = 0) -> float:
    e = import_litellm().model_cost[model]
    return (
        uncached * e["input_cost_per_token"]
        + read * e.get("cache_read_input_token_cost", e["input_cost_per_token"])
        + write * e.get("cache_creation_input_token_cost", e["input_cost_per_token"])
        + out * e["output_cost_per_token"]
    )


def store_of(tmp_path: Path, spans: list[OtlpSpan], name: str = "t.duckdb") -> Path:
    records, rejections = map_spans(spans)
    assert not rejections
    db = tmp_path / name
    write_spans(db, records)
    return db


def runs(db: Path) -> list[dict[str, Any]]:
    with open_store(db, read_only=True) as con:
        cur = con.execute("SELECT * FROM runs ORDER BY run_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --- duplicate instrumentation ------------------------------------------------------------


def test_the_same_call_seen_by_two_sibling_instrumentations_is_counted_once(
    tmp_path: Path,
) -> None:
    # the anthropic SDK's own span and OpenLLMetry's, both children of the app span, with
    # the response id the provider gave (what anthropic 2.14 + OpenLLMetry 0.62.4 emit)
    cache = {"gen_ai.usage.cache_read.input_tokens": 300}
    sdk = chat("claude-sonnet-4-5", 450, 30, **cache,
               **{"gen_ai.usage.cache_write.input_tokens": 0, "gen_ai.response.id": "msg_1"})
    ol = chat("claude-sonnet-4-5", 450, 30, **cache,
              **{"gen_ai.usage.cache_creation.input_tokens": 0, "gen_ai.response.id": "msg_1"})
    other = chat("claude-sonnet-4-5", 450, 30, **cache,
                 **{"gen_ai.usage.cache_write.input_tokens": 0, "gen_ai.response.id": "msg_2"})
    db = store_of(tmp_path, [
        root(),
        span(2, 1, "anthropic.messages.create", sdk, scope="com.anthropic.sdk.python",
             start_ms=10, end_ms=50),
        span(3, 1, "anthropic.chat", ol, scope="opentelemetry.instrumentation.anthropic",
             start_ms=9, end_ms=51),
        # a second, distinct call with the same tokens: not a duplicate (other response id)
        span(4, 1, "anthropic.messages.create", other, scope="com.anthropic.sdk.python",
             start_ms=60, end_ms=90),
    ])
    (run,) = runs(db)
    assert (run["llm_calls"], run["duplicate_calls"]) == (2, 1)
    assert run["cost_usd"] == pytest.approx(
        2 * by_hand("claude-sonnet-4-5", 150, 30, read=300), rel=1e-9
    )
    with open_store(db, read_only=True) as con:
        marks = dict(con.execute(
            "SELECT span_id, duplicate_of FROM spans WHERE is_llm_call").fetchall())
    # the earliest of the two is kept; the other is kept in the store, marked
    assert marks == {"0000000000000002": "0000000000000003", "0000000000000003": None,
                     "0000000000000004": None}


def test_without_response_ids_the_match_is_model_tokens_and_overlapping_time(
    tmp_path: Path,
) -> None:
    oi = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-2024-08-06",
          "llm.token_count.prompt": 1000, "llm.token_count.completion": 50,
          "llm.token_count.prompt_details.cache_read": 800}
    genai = {**chat("gpt-4o", 1000, 50), "gen_ai.response.model": "gpt-4o-2024-08-06",
             "gen_ai.usage.cache_read.input_tokens": 800}
    db = store_of(tmp_path, [
        root(),
        # cousins: each under its own wrapper span
        span(2, 1, "agent step", {"gen_ai.operation.name": "invoke_agent"}, kind=1),
        span(3, 2, "ChatCompletion", oi, scope="openinference.instrumentation.openai",
             start_ms=10, end_ms=40),
        span(4, 1, "chat gpt-4o", genai, scope="opentelemetry.instrumentation.openai.v1",
             start_ms=12, end_ms=41),
        # same model and tokens but later: a different call
        span(5, 1, "chat gpt-4o", genai, scope="opentelemetry.instrumentation.openai.v1",
             start_ms=100, end_ms=140),
        # same time, same scope as span 4: one instrumentation never records a call twice
        span(6, 1, "chat gpt-4o", genai, scope="opentelemetry.instrumentation.openai.v1",
             start_ms=12, end_ms=41),
    ])
    (run,) = runs(db)
    assert (run["llm_calls"], run["duplicate_calls"]) == (3, 1)
    assert run["cost_usd"] == pytest.approx(3 * by_hand("gpt-4o", 200, 50, read=800), rel=1e-9)


def test_a_parent_and_child_call_are_left_to_the_leaf_rule(tmp_path: Path) -> None:
    # OpenInference's span is current when the anthropic SDK starts its own: parent/child
    parent = {"openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4-5",
              "llm.token_count.prompt": 450, "llm.token_count.completion": 30,
              "llm.token_count.prompt_details.cache_read": 300}
    child = chat("claude-sonnet-4-5", 450, 30, **{"gen_ai.usage.cache_read.input_tokens": 300})
    db = store_of(tmp_path, [
        root(),
        span(2, 1, "messages.create", parent, scope="openinference.instrumentation.anthropic"),
        span(3, 2, "anthropic.messages.create", child, scope="com.anthropic.sdk.python",
             start_ms=1, end_ms=99),
    ])
    (run,) = runs(db)
    assert (run["llm_calls"], run["duplicate_calls"]) == (1, 0)
    assert run["cost_usd"] == pytest.approx(by_hand("claude-sonnet-4-5", 150, 30, read=300))


# --- what is a run ---------------------------------------------------------------------------


def test_a_trace_without_an_llm_call_is_not_a_run(tmp_path: Path) -> None:
    db = store_of(tmp_path, [
        root(),
        span(2, 1, "invoke_agent helper", {"gen_ai.operation.name": "invoke_agent",
                                           "gen_ai.agent.name": "helper"}, kind=1),
        span(3, 2, "execute_tool lookup", {"gen_ai.operation.name": "execute_tool"}, kind=1),
    ])
    assert runs(db) == []
    with open_store(db, read_only=True) as con:  # the spans are kept
        assert con.execute("SELECT count(*) FROM spans").fetchall() == [(3,)]


def test_a_cliffwatch_run_rejected_before_any_call_is_still_a_run(tmp_path: Path) -> None:
    records = make_run_records(seed=4, worker_cost_usds=[], plan_cost_usd=None,
                               with_synthesis=False, status="rejected")
    root_only = [r for r in records if r.parent_span_id is None]
    db = tmp_path / "own.duckdb"
    write_spans(db, root_only)
    (run,) = runs(db)
    assert (run["status"], run["llm_calls"], run["cost_usd"]) == ("rejected", 0, 0.0)


def test_a_nested_genai_agent_trace_costs_the_sum_of_its_llm_calls(tmp_path: Path) -> None:
    # invoke_agent INTERNAL span carrying its children's summed usage and a model, over six
    # `chat {model}` CLIENT calls (two of them under a nested agent)
    calls = [("gpt-4o", 1200, 80, 1000), ("gpt-4o-mini", 300, 40, 0)] * 3
    total_in = sum(c[1] for c in calls)
    total_out = sum(c[2] for c in calls)
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "tides",
             "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": total_in,
             "gen_ai.usage.output_tokens": total_out}
    inner = {**agent, "gen_ai.agent.name": "helper", "gen_ai.usage.input_tokens": 1500,
             "gen_ai.usage.output_tokens": 120}
    spans = [root(), span(2, 1, "invoke_agent tides", agent, kind=1),
             span(3, 2, "invoke_agent helper", inner, kind=1)]
    want = 0.0
    for i, (model, tin, tout, read) in enumerate(calls):
        parent = 3 if i >= 4 else 2
        attrs = chat(model, tin, tout, **{"gen_ai.usage.cache_read.input_tokens": read})
        spans.append(span(10 + i, parent, f"chat {model}", attrs, start_ms=10 * i,
                          end_ms=10 * i + 5))
        want += by_hand(model, tin - read, tout, read=read)
    # the same agent span also without gen_ai.operation.name (named only): still not a call
    named_only = {k: v for k, v in agent.items() if k != "gen_ai.operation.name"}
    spans2 = [root(trace_id="6" * 32),
              span(2, 1, "invoke_agent tides", named_only, kind=1, trace_id="6" * 32)]
    for i, (model, tin, tout, read) in enumerate(calls):
        attrs = chat(model, tin, tout, **{"gen_ai.usage.cache_read.input_tokens": read})
        spans2.append(span(10 + i, 2, f"chat {model}", attrs, start_ms=10 * i,
                           end_ms=10 * i + 5, trace_id="6" * 32))
    db = store_of(tmp_path, spans + spans2)
    got = runs(db)
    assert len(got) == 2
    for run in got:
        assert run["task_class"] == "tides" and run["llm_calls"] == 6
        assert run["cost_usd"] == pytest.approx(want, rel=1e-9)
        assert (run["input_tokens"], run["output_tokens"]) == (total_in, total_out)


# --- the row explains its cost ---------------------------------------------------------------


def test_every_stored_call_recomputes_from_its_row(tmp_path: Path) -> None:
    db = store_of(tmp_path, [
        root(),
        span(2, 1, "chat", chat("claude-sonnet-4-5", 1000, 200, **{
            "gen_ai.usage.cache_read.input_tokens": 600,
            "gen_ai.usage.cache_creation.input_tokens": 100})),
        span(3, 1, "chat", chat("o4-mini", 400, 212, **{
            "gen_ai.usage.reasoning_tokens": 192, "gen_ai.usage.cache_read.input_tokens": 0})),
        span(4, 1, "chat", chat("gpt-4o", 100, 10, **{"gen_ai.usage.cost.amount": 0.5,
                                                      "gen_ai.usage.cost.currency": "USD"})),
    ])
    with open_store(db, read_only=True) as con:
        rows = con.execute(
            "SELECT input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
            "reasoning_tokens, price_input_usd_per_token, price_output_usd_per_token, "
            "price_cache_read_usd_per_token, price_cache_creation_usd_per_token, "
            "price_reasoning_usd_per_token, price_model_key, computed_cost_usd, cost_usd, "
            "cost_source, reported_cost_usd, cache_detail_missing "
            "FROM spans WHERE is_llm_call ORDER BY span_id"
        ).fetchall()
    assert [r[13] for r in rows] == ["computed", "computed", "provider"]
    for row in rows:
        usage = TokenUsage(*row[:5])
        price = Price(row[5], row[6], row[10], row[7], row[8], row[9])
        assert recompute_cost_usd(usage, price) == pytest.approx(row[11], rel=1e-12)
        assert row[15] is False
    assert rows[0][11] == pytest.approx(by_hand("claude-sonnet-4-5", 300, 200, 600, 100))
    assert rows[2][12] == 0.5 and rows[2][14] == 0.5  # reported wins, computed beside it
    assert rows[2][11] == pytest.approx(by_hand("gpt-4o", 100, 10))


def test_missing_cache_detail_is_flagged_and_counted_on_the_run(tmp_path: Path) -> None:
    db = store_of(tmp_path, [root(), span(2, 1, "chat", chat("claude-sonnet-4-5", 1000, 10))])
    (run,) = runs(db)
    assert run["cache_detail_missing_calls"] == 1


def test_an_older_store_gains_the_new_columns_on_its_next_write(tmp_path: Path) -> None:
    db = tmp_path / "v1.duckdb"
    with open_store(db, read_only=False) as con:  # make it look like a version-1 store
        for name, _ in SPAN_COLUMNS_V2:
            con.execute(f"ALTER TABLE spans DROP COLUMN {name}")
        con.execute("DROP INDEX runs_class_time")
        con.execute("ALTER TABLE runs DROP COLUMN duplicate_calls")
        con.execute("ALTER TABLE runs DROP COLUMN cache_detail_missing_calls")
        con.execute("UPDATE cliffwatch_meta SET value = '1' WHERE key = 'schema_version'")
    write_spans(db, make_run_records(seed=9))
    with open_store(db, read_only=True) as con:
        columns = {r[0] for r in con.execute("DESCRIBE spans").fetchall()}
        version = con.execute(
            "SELECT value FROM cliffwatch_meta WHERE key = 'schema_version'").fetchall()
    assert {name for name, _ in SPAN_COLUMNS_V2} <= columns
    assert version == [(str(SCHEMA_VERSION),)]
    (run,) = runs(db)
    assert run["duplicate_calls"] == 0


# --- producers' names for the token breakdown ------------------------------------------------

SPLIT = {  # 1000 prompt tokens: 300 uncached + 600 read + 100 written; 200 out, 50 reasoning
    "GenAI conventions / OpenLLMetry": {
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 600,
        "gen_ai.usage.cache_creation.input_tokens": 100,
        "gen_ai.usage.reasoning.output_tokens": 50,
    },
    "anthropic SDK's own tracing": {
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 600,
        "gen_ai.usage.cache_write.input_tokens": 100,
        "gen_ai.usage.reasoning_tokens": 50,
    },
    "legacy names": {
        "gen_ai.usage.prompt_tokens": 1000, "gen_ai.usage.completion_tokens": 200,
        "gen_ai.usage.cache_read_input_tokens": 600,
        "gen_ai.usage.cache_creation_input_tokens": 100,
        "gen_ai.usage.output_tokens.reasoning": 50,
    },
    "OpenInference": {
        "openinference.span.kind": "LLM",
        "llm.token_count.prompt": 1000, "llm.token_count.completion": 200,
        "llm.token_count.prompt_details.cache_read": 600,
        "llm.token_count.prompt_details.cache_write": 100,
        "llm.token_count.completion_details.reasoning": 50,
    },
    "Anthropic's API counts (input without the cache)": {
        "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 600,
        "gen_ai.usage.cache_creation.input_tokens": 100,
        "gen_ai.usage.details.reasoning_tokens": 50,
    },
}


@pytest.mark.parametrize("producer", sorted(SPLIT))
def test_every_producers_names_give_the_same_breakdown_and_cost(producer: str) -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
             **SPLIT[producer]}
    (record,), _ = map_spans([span(2, None, "chat", attrs)])
    assert (record.input_tokens, record.output_tokens) == (1000, 200)
    assert (record.cache_read_tokens, record.cache_creation_tokens) == (600, 100)
    assert record.reasoning_tokens == 50
    assert record.input_tokens_reported == SPLIT[producer].get(
        "gen_ai.usage.input_tokens", 1000)
    assert record.computed_cost_usd == pytest.approx(
        by_hand("claude-sonnet-4-5", 300, 200, read=600, write=100), rel=1e-12)
    assert record.cost_source == "computed" and record.cache_detail_missing is False


def test_reasoning_reported_apart_from_a_smaller_output_is_added_once() -> None:
    attrs = chat("o4-mini", 100, 20, **{"gen_ai.usage.reasoning.output_tokens": 192,
                                        "gen_ai.usage.cache_read.input_tokens": 0})
    (record,), _ = map_spans([span(2, None, "chat", attrs)])
    assert record.output_tokens == 212
    assert record.cost_usd == pytest.approx(by_hand("o4-mini", 100, 212), rel=1e-12)
