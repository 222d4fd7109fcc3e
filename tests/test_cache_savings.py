"""Cache hit ratio and savings (analytics/cache_savings.py) against a by-hand computation
from ``litellm.model_cost``, and the "upper bound" label wherever a figure includes calls
without cache detail: ``cliffwatch percentiles`` and the HTML/Markdown report (issue 9)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from cache_store import CALLS, build_cache_store, truth
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from cliffwatch.analytics.cache_savings import (
    SAVINGS_COLUMNS,
    cache_savings,
    cache_savings_all,
)
from cliffwatch.analytics.report import build_report
from cliffwatch.analytics.report_render import render_html, render_markdown
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.upper_bound import cache_detail_missing_calls, upper_bound_note
from cliffwatch.analytics.window import Window
from cliffwatch.cli.app import app
from cliffwatch.telemetry.testing import make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans

LABEL = "upper bound: 1 call on caching models reported no cache detail"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cache_store(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def exact_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs whose every call gave its cache detail (or is on a model without a cache
    price): no figure is an upper bound."""
    db = tmp_path_factory.mktemp("exact") / "exact.duckdb"
    write_spans(db, make_runs_costing([0.01, 0.02, 0.03]))
    return db


@pytest.mark.parametrize("by", ["model", "task_class", None])
def test_savings_and_hit_ratio_equal_the_by_hand_figures(store: Path, by: str | None) -> None:
    expected = truth(by or "all")
    with read_store(store) as con:
        got = cache_savings(con, by=by)
    assert got.columns == ([by] if by else []) + list(SAVINGS_COLUMNS)
    rows = {(r[by] if by else None): r for r in got.iter_rows(named=True)}
    assert set(rows) == set(expected)
    for group, want in expected.items():
        row = rows[group]
        assert (row["calls"], row["calls_not_in_hit_ratio"]) == (
            want["calls"], want["no_detail"]), group
        assert (row["input_tokens"], row["cache_read_tokens"]) == (want["input"], want["read"])
        for column, key in (("hit_ratio", "hit_ratio"), ("read_saving_usd", "saved"),
                            ("write_premium_usd", "premium"), ("net_saving_usd", "net")):
            if want[key] is None:
                assert row[column] is None, (group, column)
            else:
                assert row[column] == pytest.approx(want[key], rel=1e-9, abs=1e-15), (
                    group, column)


@pytest.mark.parametrize("classes", [(), ("moons",), ("nope-none",)])
def test_all_three_groupings_from_one_scan_equal_each_alone(
    store: Path, classes: tuple[str, ...]
) -> None:
    with read_store(store) as con:
        if classes == ("nope-none",):
            with pytest.raises(LookupError, match="unknown task class"):
                cache_savings_all(con, task_classes=classes)
            return
        every = cache_savings_all(con, task_classes=classes)
        empty = cache_savings_all(con, Window(since=datetime(2099, 1, 1)))
        for by in ("model", "task_class", None):
            alone = cache_savings(con, by=by, task_classes=classes)  # type: ignore[arg-type]
            assert_frame_equal(every[by], alone, rel_tol=1e-12, abs_tol=1e-18)
            assert alone.height and empty[by].columns == alone.columns
            assert empty[by].is_empty()


def test_the_store_exercises_every_case(store: Path) -> None:
    by_model = truth("model")
    # Anthropic: a write premium beside the read saving; OpenAI: reads only; an unpriced
    # model's savings unknown; a call without cache detail left out of the ratio.
    assert by_model["claude-sonnet-4-5"]["premium"] > 0
    assert by_model["claude-sonnet-4-5"]["no_detail"] == 1
    assert by_model["gpt-4o"]["premium"] == 0 and by_model["gpt-4o"]["saved"] > 0
    assert by_model["acme-llm-9"]["saved"] is None
    assert by_model["acme-llm-9"]["hit_ratio"] == pytest.approx(100 / 500)
    assert sum(c.duplicate for c in CALLS) == 1


def test_a_class_filter_and_an_unknown_class(store: Path) -> None:
    with read_store(store) as con:
        moons = cache_savings(con, by="model", task_classes=["moons"])
        assert sorted(moons["model"]) == ["acme-llm-9", "gpt-4o", "gpt-5"]
        with pytest.raises(LookupError, match="unknown task class 'nope'"):
            cache_savings(con, task_classes=["nope"])
        with pytest.raises(ValueError, match="cannot group by"):
            cache_savings(con, by="role")  # type: ignore[arg-type]


def test_upper_bound_count_and_label(store: Path, exact_store: Path) -> None:
    with read_store(store) as con:
        assert cache_detail_missing_calls(con) == 1
        assert cache_detail_missing_calls(con, task_class="moons") == 0
    with read_store(exact_store) as con:
        assert cache_detail_missing_calls(con) == 0
    assert upper_bound_note(1) == LABEL
    assert upper_bound_note(0) is None
    assert upper_bound_note(1200) == (
        "upper bound: 1,200 calls on caching models reported no cache detail")


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    return result.exit_code, result.stdout, result.stderr


def test_cli_percentiles_prints_the_upper_bound_within_80_columns(
    store: Path, exact_store: Path
) -> None:
    code, out, _ = _cli("percentiles", "--db", str(store))
    assert code == 0, out
    assert LABEL in out
    assert max(len(line) for line in out.splitlines()) <= 80
    # only the class whose runs hold the call gets the label
    code, out, _ = _cli("percentiles", "--db", str(store), "--task-class", "moons")
    assert code == 0 and "upper bound" not in out
    code, out, _ = _cli("percentiles", "--db", str(exact_store))
    assert code == 0 and "upper bound" not in out


def test_cli_percentiles_json_stays_json_with_the_label_on_stderr(store: Path) -> None:
    import json

    code, out, err = _cli("percentiles", "--db", str(store), "--format", "json")
    assert code == 0
    assert {row["task_class"] for row in json.loads(out)} == {"tides", "moons"}
    assert LABEL in err


def test_report_says_upper_bound_in_html_and_markdown(store: Path, exact_store: Path) -> None:
    with read_store(store) as con:
        report = build_report(con)
    assert LABEL in report.notes["percentiles"] and LABEL in report.notes["summary"]
    assert LABEL in render_html(report)
    assert LABEL in render_markdown(report).replace("\\", "")
    with read_store(exact_store) as con:
        exact = build_report(con)
    assert "upper bound" not in render_html(exact)
    assert "upper bound" not in render_markdown(exact)
