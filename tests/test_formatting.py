"""cliffwatch.formatting: the one money and number format, and the CLI, the reports and
the dashboard writing the same cost the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cliffwatch.analytics.percentiles import cost_percentiles
from cliffwatch.analytics.report_render import format_cell
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.cli import app
from cliffwatch.formatting import MISSING, number, usd
from cliffwatch.telemetry.testing import make_runs_costing
from cliffwatch.telemetry.write_pipeline import write_spans


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.000123, "$0.000123"),  # sub-cent: three significant digits, never $0.0001
        (0.0001234, "$0.000123"),
        (0.00012, "$0.00012"),  # zeros past the digits dropped...
        (0.002, "$0.002"),
        (0.5, "$0.50"),  # ...but never the cents
        (0.1, "$0.10"),
        (0.0123, "$0.0123"),
        (0.125, "$0.125"),
        (0.99949, "$0.999"),
        (0.9996, "$1.00"),  # rounds up into dollars: cents
        (0.0099996, "$0.01"),
        (1, "$1.00"),
        (1234.5, "$1,234.50"),  # thousands separators
        (1234567.891, "$1,234,567.89"),  # never abbreviated
        (1e-9, "$0.000000001"),  # never cut to $0.00
        (0, "$0.00"),
        (-0.0123, "-$0.0123"),
        (None, MISSING),
        (float("nan"), MISSING),
        (float("inf"), "$inf"),
    ],
)
def test_usd_rule(value: float | None, text: str) -> None:
    assert usd(value) == text


def test_usd_signed_marks_a_positive_difference() -> None:
    assert usd(0.000123, signed=True) == "+$0.000123"
    assert usd(-2.5, signed=True) == "-$2.50"
    assert usd(0.0, signed=True) == "$0.00"


def test_number_rule() -> None:
    assert number(1234567) == "1,234,567"  # whole numbers: no decimals
    assert number(1234.567) == "1,234.57"
    assert number(1234.567, 0) == "1,235"
    assert number(2.0, 1) == "2.0"
    assert number(None) == number(float("nan")) == MISSING


def test_cli_report_and_dashboard_write_a_cost_the_same_way(tmp_path: Path) -> None:
    from cliffwatch.dashboard import ui  # streamlit: only this test needs it

    sample_usd, expected = 0.000123, "$0.000123"
    path = tmp_path / "same.duckdb"
    write_spans(path, make_runs_costing([sample_usd] * 5, task_class="extract"))
    runner = CliRunner()

    cli = runner.invoke(app, ["percentiles", "--db", str(path)])
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.count(expected) >= 5  # mean, P50, P95, P99, max

    report = tmp_path / "report.html"
    done = runner.invoke(app, ["report", "--format", "html", "-o", str(report),
                               "--db", str(path)])
    assert done.exit_code == 0, done.output
    assert f">{expected}<" in report.read_text(encoding="utf-8")
    assert format_cell("p50_usd", sample_usd) == expected

    with read_store(path) as con:
        percentiles = cost_percentiles(con, Window())
    assert expected in ui.percentile_table(percentiles, cliff_ratio=10.0).to_html()
    assert ui.usd(sample_usd) == expected
