"""The commands that replay recorded runs under other limits and report on them:
``replay`` (one run; ``--live`` also runs it again through the orchestrator),
``whatif`` (every run of a window) and ``report`` (a cost report file)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cliffwatch import settings
from cliffwatch.analytics.report_format import ReportFormat
from cliffwatch.analytics.window import Window
from cliffwatch.cli.options import (
    DbOption,
    OutputFormat,
    SinceOption,
    TaskClassOption,
    UntilOption,
    read_only_store,
    return_freed_memory,
)
from cliffwatch.cli.output import CliError, json_out, render, say, scope_text
from cliffwatch.formatting import number, usd
from cliffwatch.orchestrator.workload import configured_limits
from cliffwatch.telemetry.conventions import CapPolicy

if TYPE_CHECKING:
    import polars as pl

    from cliffwatch.analytics.replay import Replay

MaxWorkersOption = Annotated[
    int | None,
    typer.Option("--max-workers", min=0,
                 help="Cap to replay under; 0 removes it (default: as each run recorded it)."),
]
CeilingOption = Annotated[
    float | None,
    typer.Option("--ceiling-usd", min=0.0,
                 help="Per-run ceiling (USD) to replay under; 0 removes it (default: as "
                      "recorded)."),
]
PolicyOption = Annotated[
    CapPolicy | None,
    typer.Option("--policy", help="Cap policy to replay under (default: as recorded)."),
]


class ReplayFormat(StrEnum):
    """How ``cliffwatch replay`` prints."""

    TABLE = "table"
    JSON = "json"


def _print_replay(rp: Replay, live: pl.DataFrame | None, live_id: str | None) -> None:
    run, cf = rp.run, rp.counterfactual

    say(f"run {run.run_id} · {run.task_class} · task {run.task_id or '-'} · started "
        f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC", style="bold", wrap=True)
    render(rp.timeline, OutputFormat.TABLE, title="Timeline as recorded", table_columns=(
        "step", "offset_ms", "duration_ms", "kind", "name", "model", "input_tokens",
        "output_tokens", "cost_usd", "status", "detail"),
        narrow_drop=("step", "offset_ms", "name", "input_tokens", "detail"))
    beside = rp.plan_beside_counterfactual()
    columns = ("index", "title", "difficulty", "model", "outcome", "attempts", "cost_usd")
    if beside is not None:
        render(beside, OutputFormat.TABLE, title="Plan: as recorded, and counterfactual (cf)",
               table_columns=(*columns, "cf_outcome", "cf_cost_usd", "cf_basis"),
               narrow_drop=("difficulty", "model", "attempts"))
    else:
        render(rp.subtasks, OutputFormat.TABLE, title="Plan as recorded (the dispatched plan)",
               table_columns=columns, empty="no usable plan recorded")
    render(rp.comparison(), OutputFormat.TABLE,
           title=f"Counterfactual ({rp.override.describe()}), no model called",
           wrap_columns=("recorded", "counterfactual", "basis"))
    if cf.subtasks and beside is None:
        render(rp.counterfactual_subtasks(), OutputFormat.TABLE,
               title="Counterfactual sub-tasks")
    notes = sorted({(i.note, i.stage) for i in cf.items if i.basis == "estimated"})
    for note, stage in notes:
        say(f"estimated ({stage}): {note}", style="yellow", wrap=True)
    if not cf.replayable:
        say(cf.reason, style="yellow", wrap=True)
    elif rp.reproduces_record:
        say("check: under its recorded limits the replay reproduces the record exactly",
            style="dim")
    else:
        say("warning: under its recorded limits the replay does not reproduce the record",
            style="yellow")
    if live is not None:
        render(live, OutputFormat.TABLE, title=f"Live re-run {live_id} beside the original")


def replay(
    run_id: Annotated[
        str, typer.Argument(help="The run's id, or a unique prefix of 6+ characters.")
    ],
    max_workers: MaxWorkersOption = None,
    ceiling_usd: CeilingOption = None,
    policy: PolicyOption = None,
    live: Annotated[
        bool,
        typer.Option("--live", help="Also run the task again through the orchestrator under "
                     "these limits (same models and seed), stored as a new run linked by "
                     "cliff.replay_of, and print both side by side."),
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the --live run (default: the recorded one)."),
    ] = None,
    db: DbOption = None,
    fmt: Annotated[
        ReplayFormat, typer.Option("--format", help="Output: tables, or one JSON object.")
    ] = ReplayFormat.TABLE,
) -> None:
    """Replay a run from its spans: its timeline, and what other limits would have done."""
    from cliffwatch.analytics.replay import LimitsOverride, compare_runs  # lazy: DuckDB
    from cliffwatch.analytics.replay import replay as replay_run  # lazy: DuckDB

    override = LimitsOverride.parse(max_workers, ceiling_usd, policy.value if policy else None)
    with read_only_store(db) as con:
        rp = replay_run(con, run_id, override)
    comparison, new_id, live_data = None, None, None
    if live:
        from cliffwatch.orchestrator.rerun import rerun_live  # lazy: litellm, only for --live

        done = rerun_live(settings.db_path(db), rp.run, rp.counterfactual.limits, seed=seed)
        new_id = done.result.run_id
        with read_only_store(db) as con:
            comparison = compare_runs(con, rp.run.run_id, new_id)
        live_data = {"run_id": new_id, "status": done.result.status.value,
                     "cost_usd": done.result.cost_usd, "seed": done.seed,
                     "task_source": done.task_source, "comparison": comparison.to_dicts()}
    if fmt is ReplayFormat.JSON:
        data = rp.to_dict()
        if live_data is not None:
            data["live"] = live_data
        json_out(data)
        return
    _print_replay(rp, comparison, new_id)


def whatif(
    max_workers: MaxWorkersOption = None,
    ceiling_usd: CeilingOption = None,
    policy: PolicyOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    task_class: TaskClassOption = None,
    db: DbOption = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", help="Output: a table, JSON (limits, window, totals and "
                     "per-class rows) or CSV (per-class rows)."),
    ] = OutputFormat.TABLE,
) -> None:
    """Replay every run of a window under other limits: per class, runs affected, spend and
    P50/P95/P99 before and after, saving, and the saving over a year."""
    return_freed_memory()  # before polars loads: a frame of every run
    import polars as pl  # lazy: with the data layer below

    from cliffwatch.analytics import result_cache  # lazy: DuckDB
    from cliffwatch.analytics.replay import LimitsOverride  # lazy: DuckDB
    from cliffwatch.analytics.rollup_read import write_version  # lazy: DuckDB
    from cliffwatch.analytics.whatif import COUNTS_NOTE, what_if  # lazy: DuckDB

    if max_workers is None and ceiling_usd is None and policy is None:
        raise CliError("give at least one of --max-workers, --ceiling-usd, --policy")
    override = LimitsOverride.parse(max_workers, ceiling_usd, policy.value if policy else None)
    window = Window.parse(since, until)
    with read_only_store(db) as con:
        # the dashboard's What-if page reads what this keeps, and the other way round
        key = result_cache.analysis_key("whatif", settings.db_url(db), write_version(con),
                                        window, (since, until), task_class,
                                        limits=override.cli_args())
        what = result_cache.whatif_through(
            key, override, window, task_class,
            lambda: what_if(con, override, window, task_class))
    if fmt is OutputFormat.JSON:
        json_out(what.to_dict())
        return
    if fmt is OutputFormat.CSV:
        render(what.by_class, fmt)
        return

    def arrow(name: str, label: str) -> pl.Expr:  # "before -> after" in one column
        return pl.struct(f"{name}_before_usd", f"{name}_after_usd").map_elements(
            lambda r: f"{usd(r[f'{name}_before_usd'])} -> {usd(r[f'{name}_after_usd'])}",
            return_dtype=pl.String,
        ).alias(label)

    # The headline columns first: a table too wide for the terminal hides from the right.
    shown = what.by_class.select(
        "task_class", "runs", pl.col("runs_affected").alias("affected"),
        arrow("p95", "P95 $"), "saving_usd", pl.col("annual_saving_usd").alias("a year $"),
        "saving_pct", arrow("spend", "spend $"), arrow("p50", "P50 $"), arrow("p99", "P99 $"),
        pl.col("runs_rejected").alias("rejected"), pl.col("runs_truncated").alias("truncated"),
        pl.col("runs_cancelled").alias("cancelled"),
        pl.col("tasks_not_completed").alias("not completed"),
    )
    render(shown, fmt, title=f"What-if: {what.describe()}",
           empty=f"no runs {scope_text(window, task_class)}",
           narrow_drop=("rejected", "truncated", "cancelled", "not completed", "spend $",
                        "P50 $", "P99 $", "saving_pct"))
    totals = what.totals()
    if not totals["runs"]:
        return
    say(what.headline(), wrap=True)
    say(f"{COUNTS_NOTE}.", style="dim", wrap=True)
    if totals["estimated_usd"]:
        say(f"{usd(totals['estimated_usd'])} of the spend after is estimated (sub-tasks the "
            "record does not hold, tasks redone; see cliffwatch replay)", style="yellow",
            wrap=True)
    say(f"replayed {number(totals['runs'])} runs in {what.elapsed_s:.2f} s "
        f"({what.load_s:.2f} s reading the class estimates)", style="dim")


def report(
    fmt: Annotated[
        ReportFormat,
        typer.Option("--format", help="html: one self-contained file with charts; md: to "
                     "paste into a ticket; json: one file of every table; csv, parquet: one "
                     "file per table, in a folder, or a zip when -o ends in .zip."),
    ],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="The file to write (csv/parquet: a folder or "
                     "a .zip file)."),
    ],
    since: SinceOption = None,
    until: UntilOption = None,
    task_class: TaskClassOption = None,
    mkdir: Annotated[
        bool, typer.Option("--mkdir", help="Create the folders of -o that do not exist.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Write a cost report: runs and spend, P50/P95/P99 and cliff ratio per class,
    incidents, what-if at each class's configured cap, spend by model and role."""
    return_freed_memory()  # before polars loads: frames of every run
    from cliffwatch.analytics.report import build_report  # lazy: DuckDB, plotly
    from cliffwatch.analytics.report_render import (  # lazy: plotly
        check_destination,
        write_report,
    )

    check_destination(output, make_parents=mkdir)  # before the work, not after
    class_limits = configured_limits()  # each class's configured cap, else its latest recorded
    window = Window.parse(since, until)
    with read_only_store(db) as con:
        built = build_report(con, window, task_class, class_limits=class_limits)
    written = write_report(built, fmt, output, make_parents=mkdir)
    where_to = output if len(written) > 1 else written[0]
    say(f"wrote {fmt.value} report to {where_to} ({len(written)} file(s))")
