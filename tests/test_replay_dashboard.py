"""The Replay, What-if and Report pages and incident triage, in-process with AppTest, on a
hand-built store whose figures are known."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from apptest_pages import assert_human_tables, open_page
from replay_store import MINI, SONNET, Call, Sub, hand_run
from streamlit.testing.v1 import AppTest
from waits import scaled

from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.triage import get_incident
from cliffwatch.analytics.whatif import COUNTS_NOTE, what_if
from cliffwatch.dashboard import ui
from cliffwatch.dashboard.links import replay_link
from cliffwatch.telemetry.testing import hold_store_lock, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
RUNAWAY = "a" * 32
BREACH = "b" * 32
PLAN_USD = 0.01
COSTS = [0.001 * (i + 1) for i in range(12)]
BREACH_ID = f"cap_breach-{BREACH[:16]}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay_dash") / "store.duckdb"
    records = hand_run(RUNAWAY, plan=[Sub(f"part {i}", MINI if i % 2 == 0 else SONNET)
                                      for i in range(12)],
                       calls=[Call(i, c) for i, c in enumerate(COSTS)],
                       started_ns=ns_at("2026-11-02T08:00:00"))
    records += hand_run(BREACH, plan=[Sub(f"p{i}") for i in range(47)], synthesis=(),
                        status="rejected", breach="cap", max_workers=8, dispatched=0,
                        started_ns=ns_at("2026-11-03T08:00:00"))
    for n in range(4):
        records += hand_run(f"{n + 1}" * 32, plan=[Sub("a"), Sub("b", SONNET)], max_workers=8,
                            calls=[Call(0, 0.002), Call(1, 0.01)],
                            started_ns=ns_at(f"2026-11-0{n + 4}T08:00:00"))
    write_spans(path, records)
    return path


@pytest.fixture
def app(store: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CLIFFWATCH_DB", str(store))
    return AppTest.from_file(APP, default_timeout=scaled(120))


# A table is known by a column only it has (st.dataframe keeps no key unless selectable).
TABLE_COLUMNS = {"timeline": "step", "plan": "attempts", "comparison": "counterfactual",
                 "whatif_by_class": "runs_affected", "whatif_runs": "status_after",
                 "incidents": "incident_id"}


def _frame(app: AppTest, name: str) -> pl.DataFrame:
    found = [d.value for d in app.dataframe if TABLE_COLUMNS[name] in d.value.columns]
    assert len(found) == 1, f"{len(found)} {name} tables on the page"
    return pl.from_pandas(found[0])


def _metrics(app: AppTest) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in app.metric]


def _badges(app: AppTest) -> list[str]:
    """The text of every st.badge, in order (AppTest sees a badge as its Markdown)."""
    return [m.value.split("[", 1)[1].rstrip("]") for m in app.markdown if "-badge[" in m.value]


def _downloads(app: AppTest) -> list[str]:
    return [b.proto.label for b in app.get("download_button")]


def test_replay_deep_link_shows_the_run_and_its_counterfactual(app: AppTest) -> None:
    open_page(app, "views/replay.py", run_id=RUNAWAY[:8], max_workers="8")
    recorded, counterfactual = _metrics(app)[:2], _metrics(app)[2:]
    total = PLAN_USD + sum(COSTS) + 0.002
    assert recorded == [("Dispatched", "12 of 12"), ("Cost", ui.usd(total))]
    # rejected: its plan, and the task redone within the cap at the mean cost of the
    # class's runs that completed within it (the four two-worker runs)
    redo = PLAN_USD + 0.002 + 0.01 + 0.002
    assert counterfactual == [("Dispatched", "0 of 12"), ("Cost", ui.usd(PLAN_USD + redo))]
    assert _badges(app) == ["ok", "rejected", ":material/error: cap breach"]
    assert _frame(app, "timeline").height == 16  # plan, dispatch, 12 workers, synthesis, total
    plan = _frame(app, "plan")
    assert plan["cf_outcome"].unique().to_list() == ["rejected"]
    comparison = _frame(app, "comparison")
    assert comparison.filter(pl.col("figure") == "status")["counterfactual"].item() == "rejected"
    assert {"Download replay_comparison.csv", "Download replay_timeline.csv",
            "Download replay_plan.csv"} <= set(_downloads(app))


def test_replay_cost_shows_no_change_when_the_limits_change_nothing(app: AppTest) -> None:
    open_page(app, "views/replay.py", run_id="1" * 32, max_workers="8")  # its own cap
    recorded, counterfactual = app.metric[1], app.metric[3]
    assert (counterfactual.label, counterfactual.value) == ("Cost", recorded.value)
    assert not counterfactual.proto.delta  # no "+$0.00", no arrow
    open_page(app, "views/replay.py", run_id=RUNAWAY[:8], max_workers="8")
    assert app.metric[3].proto.delta.startswith("-$")  # a saving: its arrow down


def test_cost_delta_is_none_for_no_change() -> None:
    assert ui.cost_delta(None) is None and ui.cost_delta(0.0, 0.0) is None
    assert ui.cost_delta(0.25, 12.5) == "-$0.25 (12.5%)"
    assert ui.cost_delta(-0.25) == "+$0.25"


def test_replay_controls_change_the_counterfactual(app: AppTest) -> None:
    open_page(app, "views/replay.py", run_id=BREACH)
    assert _metrics(app)[2] == ("Dispatched", "0 of 47")
    app.number_input(key="max_workers").set_value(0).run()
    app.number_input(key="ceiling_usd").set_value(0.0).run()
    assert not app.exception
    assert _metrics(app)[2] == ("Dispatched", "47 of 47")
    assert _badges(app)[-1] == "ok"
    assert any("Estimated figures" in c.value for c in app.caption)


def test_replay_caption_shows_dollar_figures_as_text(app: AppTest) -> None:
    """Two dollar figures in one caption (the recorded ceiling, the replayed one) would be
    a LaTeX span to Streamlit's markdown: every ``$`` must come escaped."""
    open_page(app, "views/replay.py", run_id=BREACH)
    app.number_input(key="ceiling_usd").set_value(0.5).run()
    caption = next(c.value for c in app.caption if c.value.startswith("Task "))
    assert "replaying under" in caption and "$" in caption
    assert re.findall(r"(?<!\\)\$", caption) == [], caption


def test_replay_without_a_run_sends_to_the_runs_page(app: AppTest) -> None:
    open_page(app, "views/replay.py")
    assert "pick one on the Runs page" in app.info[0].value
    app.switch_page("views/runs.py").run()  # where every run has its replay link
    links = [d.value for d in app.dataframe if "replay_link" in d.value.columns][0]
    assert f"replay?run_id={BREACH}" in links["replay_link"].tolist()


def test_replay_of_an_unknown_run_is_an_error(app: AppTest) -> None:
    open_page(app, "views/replay.py", run_id="0123456789ab")
    assert "no run '0123456789ab'" in app.error[0].value


def test_whatif_page_matches_analytics(app: AppTest, store: Path) -> None:
    open_page(app, "views/whatif.py", max_workers="4")
    with read_store(store) as con:
        expected = what_if(con, LimitsOverride.parse(4))
    shown = _frame(app, "whatif_by_class")
    assert shown["saving_usd"].to_list() == pytest.approx(
        expected.by_class["saving_usd"].to_list())
    metrics = dict(_metrics(app))
    assert metrics["Runs"] == "6" and metrics["Affected"] == "1"
    # the runaway, newly rejected; not the run rejected as recorded (and again)
    assert metrics["Tasks not completed"] == "1"
    assert any(c.value.startswith(f"{COUNTS_NOTE} (the") for c in app.caption)  # as the CLI
    assert metrics["Spend"] == ui.usd(expected.totals()["spend_after_usd"])
    assert not any("handbook" in m.value for m in app.markdown)  # no stray "magic" text
    assert_human_tables(app)  # the replay link right after the time
    changed = _frame(app, "whatif_runs")
    assert changed["run_id"].to_list() == [RUNAWAY]
    assert changed["replay"].item() == replay_link(RUNAWAY, LimitsOverride.parse(4))
    assert {"Download whatif_by_class.csv"} <= set(_downloads(app))


def test_whatif_page_says_when_the_saving_is_unknown(app: AppTest) -> None:
    open_page(app, "views/whatif.py", max_workers="1")  # no run completed with one worker
    metrics = dict(_metrics(app))
    assert metrics["Spend"] == "unknown" and metrics["Saving"] == "unknown"
    assert metrics["Tasks not completed"] == "5"  # not the one rejected as recorded
    assert "5 tasks the limits leave undone" in app.warning[0].value


def test_whatif_page_bounds_its_points_and_changed_rows(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over many runs the chart draws a sample and the table the runs saving most, and the
    page says so (bounds lowered here to the test store's size)."""
    from cliffwatch.dashboard import queries, replay_queries

    monkeypatch.setattr(queries, "RUN_POINTS_LIMIT", 6)
    monkeypatch.setattr(replay_queries, "CHANGED_ROWS_SHOWN", 2)
    open_page(app, "views/whatif.py", max_workers="1")
    changed = _frame(app, "whatif_runs")
    assert changed.height == 2
    captions = " ".join(c.value for c in app.caption)
    assert "a uniform sample of 3 of the 6 runs" in captions
    assert "(the 2 with the largest saving shown; the CSV below has every run)" in captions
    (chart,) = [c for c in app.get("plotly_chart") if "whatif_distribution" in c.proto.id]
    points = sum(len(t["customdata"]) for t in json.loads(chart.proto.spec)["data"])
    assert 0 < points <= 6  # before and after, 3 runs each at most


def test_incident_triage_updates_the_store_and_the_open_count(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_DB", str(store))
    overview = AppTest.from_file(APP, default_timeout=scaled(120))
    overview.run()
    assert dict(_metrics(overview))["Open incidents"] == "1"

    app = open_page(AppTest.from_file(APP, default_timeout=scaled(120)), "views/incidents.py")
    assert _frame(app, "incidents")["replay"].item() == replay_link(BREACH)
    app.selectbox(key="triage_incident").set_value(BREACH_ID)
    app.radio(key="triage_status").set_value("resolved")
    app.text_input(key="triage_note").input("cap held: nothing dispatched")
    app.button[0].click().run()  # the form's submit button
    assert not app.exception and not app.error
    assert "open → resolved" in app.success[0].value
    with read_store(store) as con:
        row = get_incident(con, BREACH_ID)
    assert (row["status"], row["note"]) == ("resolved", "cap held: nothing dispatched")
    overview.run()
    assert dict(_metrics(overview))["Open incidents"] == "0"


def test_run_page_links_to_its_replay(app: AppTest) -> None:
    open_page(app, "views/run.py", run_id=RUNAWAY)
    links = [(p.proto.page, p.proto.query_string) for p in app.get("page_link")]
    assert ("replay", f"run_id={RUNAWAY}") in links
    assert "Download run_spans.csv" in _downloads(app)


def _built_report(app: AppTest, fmt: str) -> bytes:
    """The report file the page built in ``fmt`` (kept in session state for the button)."""
    built = [v for k, v in app.session_state.items() if k.startswith(f"report_{fmt}_")]
    assert len(built) == 1, f"{len(built)} {fmt} reports in session state"
    return built[0]


def test_report_page_builds_a_downloadable_report(app: AppTest) -> None:
    open_page(app, "views/report.py")
    app.radio(key="report_fmt").set_value("md").run()
    app.button(key="build_report").click().run()
    assert not app.error, [e.value for e in app.error]
    assert any(label.startswith("Download the report") for label in _downloads(app))
    assert _built_report(app, "md").decode().startswith("# cliffwatch cost report")


def _comparable(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {name: [{k: round(v, 12) if isinstance(v, float) else v
                    for k, v in row.items() if k != "generated_at"} for row in rows]
            for name, rows in tables.items()}


def test_report_page_builds_in_process_what_the_cli_writes(
    app: AppTest, store: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cliffwatch.cli import app as cli_app

    open_page(app, "views/report.py")
    app.radio(key="report_fmt").set_value("json").run()
    app.button(key="build_report").click().run()
    assert not app.error, [e.value for e in app.error]
    page = json.loads(_built_report(app, "json"))
    out = tmp_path / "cli.json"
    result = CliRunner().invoke(cli_app, ["report", "--format", "json", "-o", str(out),
                                          "--db", str(store)])
    assert result.exit_code == 0, result.output
    cli = json.loads(out.read_text())
    # The same figures, what-if caps included; a sum may differ in its last bit (DuckDB
    # adds in parallel), and each build has its own time.
    assert _comparable(page["tables"]) == _comparable(cli["tables"])
    assert page["meta"]["tables"] == cli["meta"]["tables"]

    app.radio(key="report_fmt").set_value("csv").run()
    app.button(key="build_report").click().run()
    with zipfile.ZipFile(io.BytesIO(_built_report(app, "csv"))) as archive:
        assert sorted(archive.namelist()) == sorted(f"{t}.csv" for t in cli["tables"])


@pytest.mark.slow
def test_report_page_shows_a_busy_store_as_one_line(
    app: AppTest, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_page(app, "views/report.py")
    monkeypatch.setenv("CLIFFWATCH_LOCK_TIMEOUT_S", "0.2")
    with hold_store_lock(store):
        app.button(key="build_report").click().run()
    assert not app.exception, [e.message for e in app.exception]
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and "is busy" in errors[0] and "\n" not in errors[0], errors
    assert "reload the page" not in errors[0]  # the build failed, not the page's own reads
    assert not any(label.startswith("Download the report") for label in _downloads(app))


@pytest.mark.slow
def test_live_rerun_button_runs_the_task_again_and_shows_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from cliffwatch.orchestrator.runner import aorchestrate
    from cliffwatch.orchestrator.sim_provider import register_sim_provider
    from cliffwatch.orchestrator.workload import load_workload
    from cliffwatch.telemetry.tracing import configure_tracing

    path = tmp_path / "live.duckdb"
    workload = load_workload()
    register_sim_provider(0, 1e-4, models=sorted(workload.models()))
    tracing = configure_tracing(path)
    task_class = workload["content_update"]
    original = asyncio.run(aorchestrate(task_class.tasks[0], task_class.config,
                                        tracing=tracing, seed=3, time_scale=1e-4,
                                        raise_on_breach=False))
    tracing.flush()
    tracing.shutdown()
    monkeypatch.setenv("CLIFFWATCH_DB", str(path))
    app = open_page(AppTest.from_file(APP, default_timeout=scaled(240)), "views/replay.py",
                run_id=original.run_id)
    app.button(key="live_button").click().run()
    assert not app.error, [e.value for e in app.error]
    assert app.success[0].value.startswith("New run ")
    side = pl.from_pandas(next(d.value for d in app.dataframe if "rerun" in d.value.columns))
    cost = side.filter(pl.col("figure") == "cost $")
    assert cost["original"].item() == cost["rerun"].item()  # same limits, seed and models
    with read_store(path) as con:
        replays = con.sql("SELECT count(*) FROM runs WHERE replay_of = $id",
                          params={"id": original.run_id}).fetchall()
    assert replays == [(1,)]


@pytest.mark.parametrize(("page", "params"), [
    ("views/whatif.py", {"max_workers": "4"}),
    ("views/replay.py", {"run_id": RUNAWAY, "max_workers": "4"}),
    ("views/run.py", {"run_id": RUNAWAY}),
    ("views/incidents.py", {}),
    ("views/findings.py", {}),
])
def test_every_table_column_has_a_human_heading(
    app: AppTest, page: str, params: dict[str, str]
) -> None:
    open_page(app, page, **params)
    assert_human_tables(app)  # headings, "-" for a missing cell, links first
    for table in app.dataframe:
        config = json.loads(table.proto.columns)
        for column in list(table.proto.column_order) or list(table.value.columns):
            number = config[column].get("type_config", {})
            if number.get("type") == "number":  # thousands separated, money as dollars
                assert "," in number["format"] or "%%" in number["format"], (column, number)
                assert number["format"].startswith("$") == column.endswith("_usd"), column
