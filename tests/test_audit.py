"""``cliffwatch audit`` and :func:`cliffwatch.analytics.audit.audit_costs` over real stores:
a demo store recomputes; a tampered cost fails naming its span; drift, unpriced, missing
cache detail, duplicates and rejected usage are counted, checked against numpy over the
raw rows (an oracle independent of the audit's SQL)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
from test_cost_truth import chat, root, span, store_of
from typer.testing import CliRunner

from cliffwatch.analytics.audit import audit_costs
from cliffwatch.analytics.store_access import read_store
from cliffwatch.cli.app import app
from cliffwatch.orchestrator.demo import run_demo


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("audit") / "demo.duckdb"
    run_demo(db, runs=20, days=2, seed=3)
    return db


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def test_a_demo_store_recomputes_and_exits_0(demo_store: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "--db", str(demo_store)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "every stored cost recomputes from its row" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    with duckdb.connect(str(demo_store), read_only=True) as con:
        (calls,) = con.execute(
            "SELECT count(*) FROM spans WHERE is_llm_call AND is_leaf_call").fetchone()
    assert calls > 20 and f"({calls} calls)" in result.stdout


def test_a_tampered_cost_exits_1_naming_its_span(demo_store: Path, tmp_path: Path) -> None:
    db = _copy(demo_store, tmp_path / "tampered.duckdb")
    with duckdb.connect(str(db)) as con:
        (span_id,) = con.execute(
            "SELECT span_id FROM spans WHERE is_llm_call AND cost_usd > 0 "
            "ORDER BY span_id LIMIT 1").fetchone()
        con.execute("UPDATE spans SET cost_usd = cost_usd * (1 + 1e-6) WHERE span_id = ?",
                    [span_id])
    result = CliRunner().invoke(app, ["audit", "--db", str(db)], env={"COLUMNS": "80"})
    assert result.exit_code == 1, result.output
    assert span_id in result.stdout
    assert "1 of " in result.stdout and "do not recompute" in result.stdout
    as_json = CliRunner().invoke(app, ["audit", "--db", str(db), "--format", "json",
                                       "--no-current-map"])
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert doc["not_recomputing"] == 1
    (bad,) = [p for p in doc["problems"] if p["problem"] == "not_recomputing"]
    assert bad["span_id"] == span_id
    assert bad["stored_usd"] == pytest.approx(bad["recomputed_usd"] * (1 + 1e-6), rel=1e-12)


@pytest.fixture()
def mixed_store(tmp_path: Path) -> Path:
    cache = {"gen_ai.usage.cache_read.input_tokens": 300,
             "gen_ai.usage.cache_creation.input_tokens": 0}
    return store_of(tmp_path, [
        root(),
        # reported $0.50 for a call litellm prices at about $0.00035: drift
        span(2, 1, "chat", chat("gpt-4o", 100, 10, **{"gen_ai.usage.cost.amount": 0.5,
                                                      "gen_ai.usage.cost.currency": "USD"})),
        # a reported cost on a model with no price: provider, no drift to show
        span(3, 1, "chat", chat("acme-llm-9", 100, 10, **{"gen_ai.usage.cost.amount": 0.01})),
        span(4, 1, "chat", chat("acme-llm-9", 100, 10)),  # unpriced
        span(5, 1, "chat", chat("claude-sonnet-4-5", 1000, 10)),  # cache detail missing
        span(6, 1, "chat", chat("claude-sonnet-4-5", 450, 30, **cache,
                                **{"gen_ai.response.id": "msg_1"}), start_ms=10, end_ms=50,
             scope="com.anthropic.sdk.python"),
        span(7, 1, "chat", chat("claude-sonnet-4-5", 450, 30, **cache,
                                **{"gen_ai.response.id": "msg_1"}), start_ms=9, end_ms=51,
             scope="opentelemetry.instrumentation.anthropic"),
        span(8, 1, "chat", chat("gpt-4o", -1, 500)),  # usage rejected: tokens_negative
    ])


def _oracle(db: Path) -> dict[str, float]:
    """The audit's figures from the raw rows with numpy (not the audit's SQL)."""
    with duckdb.connect(str(db), read_only=True) as con:
        cur = con.execute(
            "SELECT input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
            "reasoning_tokens, price_input_usd_per_token, price_output_usd_per_token, "
            "price_cache_read_usd_per_token, price_cache_creation_usd_per_token, "
            "price_reasoning_usd_per_token, cost_usd, cost_source, reported_cost_usd, "
            "computed_cost_usd, cache_detail_missing, duplicate_of, attributes "
            "FROM spans WHERE is_llm_call AND (is_leaf_call OR duplicate_of IS NOT NULL)")
        names = [d[0] for d in cur.description]
        cols = dict(zip(names, zip(*cur.fetchall(), strict=True), strict=True))
    f = {k: np.array([np.nan if x is None else float(x) for x in v])
         for k, v in cols.items() if k.endswith(("tokens", "per_token", "usd"))}
    t = {k: np.nan_to_num(v) for k, v in f.items() if k.endswith("tokens")}
    inp, out = f["price_input_usd_per_token"], f["price_output_usd_per_token"]
    recomputed = (
        (t["input_tokens"] - t["cache_read_tokens"] - t["cache_creation_tokens"]) * inp
        + t["cache_read_tokens"] * np.where(np.isnan(f["price_cache_read_usd_per_token"]),
                                            inp, f["price_cache_read_usd_per_token"])
        + t["cache_creation_tokens"] * np.where(
            np.isnan(f["price_cache_creation_usd_per_token"]), inp,
            f["price_cache_creation_usd_per_token"])
        + (t["output_tokens"] - t["reasoning_tokens"]) * out
        + t["reasoning_tokens"] * np.where(np.isnan(f["price_reasoning_usd_per_token"]), out,
                                           f["price_reasoning_usd_per_token"])
    )
    source = np.asarray(cols["cost_source"], dtype=object)
    reported, computed = f["reported_cost_usd"], f["computed_cost_usd"]
    both = ~np.isnan(reported) & ~np.isnan(computed)
    drift = (source == "provider") & both & ~np.isclose(reported, computed, rtol=1e-9, atol=0)
    duplicate = np.array([d is not None for d in cols["duplicate_of"]])
    computed_ok = np.isclose(f["cost_usd"], recomputed, rtol=1e-9, atol=0)
    rejected = ["cliff.usage_rejected_reason" in json.loads(a) for a in cols["attributes"]]
    return {
        "calls": len(source),
        "computed_not_recomputing": int(np.sum((source == "computed") & ~computed_ok)),
        "drift": int(drift.sum()),
        "drift_usd": float(np.sum((reported - computed)[drift])),
        "unpriced": int(np.sum(source == "unpriced")),
        "cache_detail_missing": int(np.sum(np.asarray(cols["cache_detail_missing"], bool))),
        "duplicates": int(duplicate.sum()),
        "rejected": sum(rejected),
        "spend": float(np.nansum(f["cost_usd"][~duplicate])),
    }


def test_counts_match_an_independent_numpy_computation(mixed_store: Path) -> None:
    truth = _oracle(mixed_store)
    assert (truth["calls"], truth["drift"], truth["unpriced"], truth["duplicates"],
            truth["cache_detail_missing"], truth["rejected"]) == (7, 1, 2, 1, 1, 1)
    with read_store(mixed_store) as con:
        audit = audit_costs(con)
    summary = {row["check"]: row for row in audit.summary.iter_rows(named=True)}
    assert audit.calls == truth["calls"]
    assert audit.not_recomputing == truth["computed_not_recomputing"] == 0
    assert summary["reported vs computed drift"]["calls"] == truth["drift"]
    assert summary["reported vs computed drift"]["amount_usd"] == pytest.approx(
        truth["drift_usd"], rel=1e-12)
    assert summary["spend unpriced"]["calls"] == truth["unpriced"]
    assert summary["cache detail missing"]["calls"] == truth["cache_detail_missing"]
    assert summary["duplicates dropped"]["calls"] == truth["duplicates"]
    assert summary["usage rejected: tokens_negative"]["calls"] == truth["rejected"]
    assert summary["calls audited"]["amount_usd"] == pytest.approx(truth["spend"], rel=1e-12)
    shares = [summary[f"spend {s}"]["share"] for s in ("provider", "computed")]
    assert sum(shares) == pytest.approx(1.0)
    assert summary["price changed in current map"]["calls"] == 0
    problems = audit.problems
    (drifted,) = problems.filter(problems["problem"] == "drift").iter_rows(named=True)
    assert (drifted["span_id"], drifted["reported_usd"]) == ("0000000000000002", 0.5)
    assert sorted(problems.filter(problems["problem"] == "unpriced")["span_id"]) == [
        "0000000000000004", "0000000000000008"]


def test_the_cli_lists_drift_and_unpriced_calls_and_csv_carries_everything(
    mixed_store: Path,
) -> None:
    runner = CliRunner()
    table = runner.invoke(app, ["audit", "--db", str(mixed_store)], env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    assert "drift" in table.stdout and "0000000000000002" in table.stdout
    assert "every stored cost recomputes" in table.stdout
    csv_out = runner.invoke(app, ["audit", "--db", str(mixed_store), "--format", "csv"])
    assert csv_out.exit_code == 0
    lines = csv_out.stdout.splitlines()
    assert lines[0].startswith("section,check,calls,amount_usd,share,run_id,span_id")
    assert any(line.startswith("problem,") and ",drift," in line for line in lines)


def test_a_window_with_no_calls_audits_nothing(mixed_store: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "--db", str(mixed_store), "--since",
                                      "2099-01-01", "--no-current-map"])
    assert result.exit_code == 0, result.output
    assert "(0 calls)" in result.stdout


def test_a_problems_limit_keeps_the_first_rows_and_counts_them_all(mixed_store: Path) -> None:
    with read_store(mixed_store) as con:
        full = audit_costs(con, current_map=False)
        cut = audit_costs(con, current_map=False, problems_limit=3)
        none = audit_costs(con, current_map=False, problems_limit=0)
    assert full.problems.height == full.problem_rows == 6
    assert cut.problem_rows == none.problem_rows == 6
    assert cut.problems.rows() == full.problems.head(3).rows()
    assert none.problems.is_empty() and none.problems.columns == full.problems.columns
    assert cut.summary.equals(full.summary)


def test_format_help_says_what_json_emits(mixed_store: Path) -> None:
    out = CliRunner().invoke(app, ["audit", "--db", str(mixed_store), "--format", "json",
                                   "--no-current-map"])
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)  # one object, not an array of rows
    shown = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "200"})
    text = " ".join(shown.stdout.replace("│", " ").split())
    assert "one JSON object" in text and "JSON (array of objects)" not in text
    for key in doc:
        assert key in text
