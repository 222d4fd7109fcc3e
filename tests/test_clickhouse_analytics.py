"""Every read analytics function gives the same numbers on ClickHouse as on DuckDB (issue 10).

One store is written the way production writes it (the dashboard fixture's classes, the
orchestrated runs of every runner branch, the prompt-cache calls), then copied into chDB (the
ClickHouse engine embedded, telemetry/clickhouse/copy_tables.py). Each analytics function
the CLI and the dashboard call runs on both connections; frames must have the same columns,
types and rows, floats equal to 1e-9 (relative; sums in another order differ in the last
digits), JSON text equal as parsed JSON. Percentiles are also checked against numpy's
'linear' over the raw run costs. The clickhouse-connect path runs when ``CLICKHOUSE_URL``
names a server (``clickhouse://user:password@host:8123/database``), skipped otherwise.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest
from cache_store import cache_spans
from dashboard_store import build_store
from replay_store import build_orchestrated_store
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner
from waits import scaled

from cliffwatch.analytics import (
    alert_view,
    audit,
    cache_savings,
    estimates,
    findings,
    incidents,
    percentiles,
    recorded,
    replay,
    report,
    run_measures,
    run_table,
    runs,
    triage,
    upper_bound,
    whatif,
    window_compare,
)
from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.cli import app
from cliffwatch.telemetry.clickhouse.client import connect
from cliffwatch.telemetry.clickhouse.copy_tables import copy_store
from cliffwatch.telemetry.clickhouse.url import parse_store_url
from cliffwatch.telemetry.conventions import CapPolicy
from cliffwatch.telemetry.otlp_mapping import map_spans
from cliffwatch.telemetry.store import StoreError
from cliffwatch.telemetry.write_pipeline import write_spans

pytest.importorskip("chdb")

APP_DIR = Path(__file__).resolve().parent.parent / "dashboard"
REL = 1e-9
NOW = datetime(2026, 12, 1)
WINDOW = Window(since=datetime(2026, 11, 3), until=datetime(2026, 11, 9))


@dataclasses.dataclass(frozen=True)
class Stores:
    duck: Path
    ch: str


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    base = tmp_path_factory.mktemp("ch_analytics")
    duck = base / "store.duckdb"
    build_store(duck)
    build_orchestrated_store(duck, runs=30)
    records, rejections = map_spans(cache_spans())
    assert not rejections
    write_spans(duck, records)
    url = f"chdb://{base / 'chdb'}"
    with connect(parse_store_url(url)) as client:
        copied = copy_store(duck, client, chunk_rows=100)  # several chunks per table
    assert copied["runs"] > 100 and copied["spans"] > 900 and copied["incidents"] > 10
    yield Stores(duck, url)


def _same_json(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same_json(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_json(x, y, f"{where}[{i}]")
    else:
        _same(a, b, where)


def _same_frame(a: pl.DataFrame, b: pl.DataFrame, where: str) -> None:
    assert a.schema == b.schema, f"{where}: {a.schema} != {b.schema}"
    assert a.height == b.height, f"{where}: {a.height} rows != {b.height}"
    for name in a.columns:
        for i, (x, y) in enumerate(zip(a[name].to_list(), b[name].to_list(), strict=True)):
            if isinstance(x, str) and x[:1] in "[{" and isinstance(y, str) and x != y:
                _same_json(json.loads(x), json.loads(y), f"{where}.{name}[{i}]")
            else:
                _same(x, y, f"{where}.{name}[{i}]")


def _same(a: Any, b: Any, where: str = "") -> None:
    """``a`` (DuckDB) and ``b`` (ClickHouse) hold the same figures."""
    if isinstance(a, pl.DataFrame):
        assert isinstance(b, pl.DataFrame), where
        _same_frame(a, b, where)
    elif isinstance(a, go.Figure):
        return  # drawn from the tables compared beside it
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            if f.name not in ("elapsed_s", "load_s"):  # timings
                _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: {list(a)} != {list(b)}"
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=REL), \
            f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _some_run(con: Any) -> str:
    return str(con.sql("SELECT run_id FROM runs WHERE task_class = 'research' "
                       "AND llm_calls > 3 ORDER BY run_id LIMIT 1").fetchall()[0][0])


def _replay(con: Any) -> Any:
    return replay.replay(con, _some_run(con), LimitsOverride(max_workers=2))


def _compare(con: Any) -> pl.DataFrame:
    ids = [r[0] for r in con.sql("SELECT run_id FROM runs ORDER BY run_id LIMIT 2").fetchall()]
    return replay.compare_runs(con, ids[0][:8], ids[1])


def _incident(con: Any) -> dict[str, Any]:
    return triage.get_incident(con, incidents.list_incidents(con)["incident_id"][0])


def _estimates(con: Any) -> tuple[Any, ...]:
    known = estimates.load_estimates(con)
    # the completed runs are a bag (their mean is used): no order to compare
    return (dict(known.workers), dict(known.synthesis_usd), dict(known.synthesis_price_input),
            known.completed.runs.sort(known.completed.runs.columns))


CASES: dict[str, Callable[[Any], Any]] = {
    "percentiles by class": lambda c: percentiles.cost_percentiles(c),
    "percentiles in window": lambda c: percentiles.cost_percentiles(c, WINDOW, "task_class",
                                                                    "research"),
    "percentiles by model": lambda c: percentiles.cost_percentiles(c, by="model"),
    "percentiles by role": lambda c: percentiles.cost_percentiles(c, by="role"),
    "overall percentiles": lambda c: percentiles.overall_percentiles(c),
    "overall of classes": lambda c: percentiles.overall_percentiles(
        c, task_classes=["research", "extract"]),
    "daily percentiles": lambda c: percentiles.daily_percentiles(c),
    "cap start": lambda c: percentiles.cap_start_date(c, "research"),
    "task classes": lambda c: runs.task_classes(c),
    "runs": lambda c: runs.list_runs(c, limit=1000),
    "runs filtered": lambda c: runs.list_runs(c, WINDOW, task_class="research", status="ok"),
    "run": lambda c: runs.get_run(c, _some_run(c)[:8]),
    "run spans": lambda c: runs.run_spans(c, _some_run(c)),
    "runs page": lambda c: run_table.runs_page(c, run_table.RunQuery(
        task_classes=("research",), sort_by="cost_usd"), offset=5, limit=20),
    "runs count": lambda c: run_table.count_runs(c, run_table.RunQuery(
        window=WINDOW, min_cost_usd=0.01)),
    "run statuses": lambda c: run_table.run_statuses(c),
    "per-run measures": lambda c: run_measures.run_measure_percentiles(c),
    "incidents": lambda c: incidents.list_incidents(c),
    "incidents filtered": lambda c: incidents.list_incidents(c, WINDOW, status="open", limit=3),
    "incident": _incident,
    "triage counts": lambda c: triage.triage_counts(c),
    "findings": lambda c: findings.find_findings(c, now=NOW),
    "what-if (cap)": lambda c: whatif.what_if(c, LimitsOverride(max_workers=3), now=NOW),
    "what-if in Python": lambda c: whatif.what_if(c, LimitsOverride(max_workers=3), now=NOW,
                                                  pushdown=False),
    "what-ifs": lambda c: whatif.what_ifs(c, [
        LimitsOverride(max_workers=2, policy=CapPolicy.TRUNCATE),
        LimitsOverride(ceiling_usd=0.03)], WINDOW, now=NOW),
    "report": lambda c: report.build_report(c, now=NOW),
    "audit": lambda c: audit.audit_costs(c, current_map=False),
    "audit, problems cut": lambda c: audit.audit_costs(c, current_map=False, problems_limit=3),
    "cache savings by model": lambda c: cache_savings.cache_savings(c),
    "cache savings by class": lambda c: cache_savings.cache_savings(c, by="task_class"),
    "cache savings overall": lambda c: cache_savings.cache_savings(c, by=None),
    "cache savings, one scan": lambda c: cache_savings.cache_savings_all(
        c, WINDOW, task_classes=["research", "extract"]),
    "window compare": lambda c: window_compare.compare_windows(
        c, Window(until=datetime(2026, 11, 6)), Window(since=datetime(2026, 11, 6))),
    "upper bound": lambda c: upper_bound.cache_detail_missing_calls(c),
    "alerts": lambda c: alert_view.alert_deliveries(c),
    "alerts filtered": lambda c: alert_view.alert_deliveries(c, WINDOW, "research",
                                                             status="no_webhook"),
    "delivery counts": lambda c: alert_view.delivery_counts(c),
    "recorded runs": lambda c: recorded.load_recorded_runs(c, WINDOW),
    "estimates": lambda c: _estimates(c),
    "replay": _replay,
    "compare runs": _compare,
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_figures_on_both_backends(stores: Stores, name: str) -> None:
    with read_store(stores.duck) as con:
        expected = CASES[name](con)
    with read_store(stores.ch) as con:
        got = CASES[name](con)
    _same(expected, got, name)


def test_whatif_sql_decides_runs_in_clickhouse(stores: Stores) -> None:
    """The pushed-down what-if runs in the engine: most runs decided there, not in Python."""
    with read_store(stores.ch) as con:
        found = whatif.what_if(con, LimitsOverride(ceiling_usd=0.03), now=NOW)
    assert found.runs.height > 100
    assert found.python_runs < found.runs.height


def test_whatif_in_run_id_chunks_gives_the_same_runs(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many chunks (7 runs each, cut by row number on both engines): the same rows."""
    monkeypatch.setattr("cliffwatch.analytics.whatif_sql.CHUNK_RUNS", 7)
    override = LimitsOverride(max_workers=2, ceiling_usd=0.05)
    found = {}
    for store in (str(stores.duck), stores.ch):
        with read_store(store) as con:
            found[store] = whatif.what_if(con, override, now=NOW)
    _same(found[str(stores.duck)], found[stores.ch], "chunked what-if")


def test_percentiles_are_numpy_linear_over_raw_costs(stores: Stores) -> None:
    with read_store(stores.duck) as con:
        raw = pl.DataFrame(con.sql("SELECT task_class, cost_usd FROM runs"))
    with read_store(stores.ch) as con:
        table = percentiles.cost_percentiles(con)
        overall = percentiles.overall_percentiles(con)
    assert table.height == raw["task_class"].n_unique() >= 4
    for row in table.iter_rows(named=True):
        costs = raw.filter(pl.col("task_class") == row["task_class"])["cost_usd"].to_numpy()
        want = np.quantile(costs, [0.5, 0.95, 0.99], method="linear")
        got = [row["p50_usd"], row["p95_usd"], row["p99_usd"]]
        assert got == pytest.approx(want, rel=REL), row["task_class"]
    want = np.quantile(raw["cost_usd"].to_numpy(), [0.5, 0.95, 0.99], method="linear")
    assert [overall[c][0] for c in ("p50_usd", "p95_usd", "p99_usd")] == pytest.approx(
        want, rel=REL)


READ_COMMANDS = [
    ["percentiles"],
    ["percentiles", "--by", "model", "--format", "csv"],
    ["runs", "--format", "json"],
    ["incidents"],
    ["alerts"],
    ["whatif", "--max-workers", "3"],
    ["findings", "--format", "json"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_cli_read_commands_print_the_same(stores: Stores, args: list[str]) -> None:
    runner = CliRunner()
    duck = runner.invoke(app, [*args, "--db", str(stores.duck)], env={"COLUMNS": "200"})
    ch = runner.invoke(app, [*args, "--db", stores.ch], env={"COLUMNS": "200"})
    assert duck.exit_code == 0, duck.output
    assert ch.exit_code == 0, ch.output
    if "json" in args:
        _same_json(json.loads(duck.stdout), json.loads(ch.stdout), " ".join(args))
    elif "csv" in args:  # full float text: sums in another order differ in the last digit
        _same_frame(pl.read_csv(io.StringIO(duck.stdout)), pl.read_csv(io.StringIO(ch.stdout)),
                    " ".join(args))
    else:
        assert _untimed(ch.stdout) == _untimed(duck.stdout)


def _untimed(text: str) -> list[str]:
    """The lines of a command's output without the what-if's timing line."""
    return [line for line in text.splitlines() if not re.search(r"runs in [\d.]+ s", line)]


def test_bad_store_urls_are_one_line_errors(stores: Stores, tmp_path: Path) -> None:
    runner = CliRunner()
    for db, words in [
        (f"chdb://{tmp_path / 'none'}", "does not exist"),
        ("clickhouse://h/db;drop", "letters, digits and underscores"),
        (stores.ch + "?traces_table=x&oops=1", "unknown parameter"),
    ]:
        result = runner.invoke(app, ["percentiles", "--db", db])
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    pruned = runner.invoke(app, ["prune", "--before", "2020-01-01", "--db", stores.ch])
    assert pruned.exit_code == 2 and "DuckDB store file only" in pruned.output


def test_triage_is_a_new_row_version(stores: Stores) -> None:
    """Last: it changes both stores the same way, and the incidents stay equal."""
    from cliffwatch.analytics.triage import set_incident_status

    with read_store(stores.ch) as con:
        first = incidents.list_incidents(con)["incident_id"][0]
    for store in (str(stores.duck), stores.ch):
        done = set_incident_status(store, first, "acknowledged", "on it", now=NOW)
        assert (done.incident_id, done.previous_status, done.note) == (first, "open", "on it")
        set_incident_status(store, first, "resolved", now=NOW)
    with read_store(stores.duck) as con:
        expected = incidents.list_incidents(con)
    with read_store(stores.ch) as con:
        got = incidents.list_incidents(con)
        rows = con.sql("SELECT count(*) FROM incidents WHERE incident_id = $id",
                       {"id": first}).fetchall()
    _same(expected, got, "incidents after triage")
    row = got.filter(pl.col("incident_id") == first).row(0, named=True)
    assert (row["status"], row["note"]) == ("resolved", "on it")
    assert rows == [(1,)]  # FINAL: one version of the incident


@pytest.mark.skipif(not os.environ.get("CLICKHOUSE_URL"), reason="CLICKHOUSE_URL not set")
def test_clickhouse_server_gives_the_same_figures(stores: Stores) -> None:
    url = os.environ["CLICKHOUSE_URL"]
    with connect(parse_store_url(url)) as client:
        copy_store(stores.duck, client)
    for name in ("percentiles by class", "daily percentiles", "incidents", "findings"):
        with read_store(stores.duck) as con:
            expected = CASES[name](con)
        try:
            with read_store(url) as con:
                got = CASES[name](con)
        except StoreError as exc:  # pragma: no cover - a server problem, said plainly
            pytest.fail(f"{name}: {exc}")
        _same(expected, got, name)


PAGES = [None, *sorted(f"views/{p.name}" for p in (APP_DIR / "views").glob("*.py")
                       if p.name != "__init__.py")]


def _page(db: str, page: str | None, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CLIFFWATCH_DB", db)
    app = AppTest.from_file(APP_DIR / "app.py", default_timeout=scaled(120))
    app.run()
    if page is not None:
        app.switch_page(page).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p or "overview")
def test_dashboard_pages_show_the_same_on_both_backends(
    stores: Stores, page: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    duck = _page(str(stores.duck), page, monkeypatch)
    ch = _page(stores.ch, page, monkeypatch)
    assert [e.value for e in ch.error] == [e.value for e in duck.error]
    assert not any("DB::Exception" in e.value or "chdb:" in e.value for e in ch.error)
    assert [m.value for m in ch.metric] == [m.value for m in duck.metric]
    shown_duck = [pl.from_pandas(d.value) for d in [*duck.dataframe, *duck.table]]
    shown_ch = [pl.from_pandas(d.value) for d in [*ch.dataframe, *ch.table]]
    assert len(shown_ch) == len(shown_duck)
    if page is None:
        assert shown_ch and shown_ch[0].height > 0  # the overview's percentiles
    for i, (a, b) in enumerate(zip(shown_duck, shown_ch, strict=True)):
        _same_frame(a, b, f"{page} table {i}")
