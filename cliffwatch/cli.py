"""The ``cliffwatch`` command line: one small module that wires the packages together.

Every command resolves the store with :func:`cliffwatch.settings.db_path` (``--db``, else
$CLIFFWATCH_DB, else ``data/cliffwatch.duckdb``), asks ``analytics`` (or ``orchestrator``)
for the data, and hands the DataFrame to :func:`render`, which prints it as a rich table,
JSON or CSV. Bad input never shows a traceback: :class:`CliffwatchGroup` turns usage
errors and cliffwatch's own exceptions (:data:`USER_ERRORS`) into one red line on stderr
and exit code 2.

Exit codes: 0 success; 1 ``cliffwatch run`` finished without completing (breach or
failure), or ``cliffwatch ingest`` left out spans or lines it could not read; 2 bad input
(usage, a missing or foreign store, a bad date, an unknown task class, a bad setting).

Adding a command: decorate a function with ``@app.command()``, take ``db: DbOption`` (and
``fmt: FormatOption`` for tabular output), call analytics inside ``with _store(db) as
con:``, end with ``render(df, fmt)``. The error boundary covers it with no more code.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import duckdb
import polars as pl
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from cliffwatch import settings
from cliffwatch.analytics.errors import AnalyticsError, UnknownTaskClassError
from cliffwatch.analytics.incidents import list_incidents
from cliffwatch.analytics.percentiles import cost_percentiles
from cliffwatch.analytics.plain import plain_rows, plain_value
from cliffwatch.analytics.report_render import ReportFormat
from cliffwatch.analytics.runs import list_runs
from cliffwatch.analytics.store_access import StoreError, read_store
from cliffwatch.analytics.window import Window
from cliffwatch.orchestrator.errors import OrchestratorError
from cliffwatch.telemetry.conventions import CapPolicy, IncidentKind, RunStatus
from cliffwatch.telemetry.schema import INCIDENT_STATUSES

USER_ERRORS: tuple[type[Exception], ...] = (
    StoreError,
    AnalyticsError,
    settings.SettingError,
    OrchestratorError,
)
"""cliffwatch's own exceptions: shown as one line and exit code 2, never a traceback.
(WindowError, UnknownTaskClassError and RunNotFoundError are AnalyticsErrors.)"""

EXIT_USAGE = 2
EXIT_RUN_NOT_COMPLETED = 1

DEFAULT_DASHBOARD_PORT = 8501


class CliError(typer.TyperException):
    """A bad request found by a command: printed as one line, exit code 2."""

    exit_code = EXIT_USAGE


def _error_line(message: str) -> None:
    # soft_wrap: the message stays one line whatever the terminal width.
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    Console(stderr=True).print(Text("error: ", style="bold red") + Text(first, style="red"),
                               soft_wrap=True)


class CliffwatchGroup(TyperGroup):
    """The app's command group: the one error boundary of the CLI.

    Usage errors (bad option values, unknown commands) and :data:`USER_ERRORS` raised by
    any command become one red line on stderr and exit code 2 (the same under
    ``typer.testing.CliRunner`` as in a real process).
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            raise CliError(str(exc)) from exc

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.TyperException as exc:  # click's usage errors and CliError
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if message and ctx is not None:
                message = f"{message} (see '{ctx.command_path} --help')"
            if message:  # empty when the help was shown instead (no arguments)
                _error_line(message)
            code = exc.exit_code
        except typer.Abort:
            _error_line("aborted")
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=CliffwatchGroup,
    name="cliffwatch",
    help="Cost Cliff control for orchestrator-worker LLM pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# --- shared options ----------------------------------------------------------------------


class OutputFormat(StrEnum):
    """How tabular output is printed."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class GroupByChoice(StrEnum):
    """What ``cliffwatch percentiles --by`` groups runs by."""

    TASK_CLASS = "task_class"
    MODEL = "model"
    ROLE = "role"


IncidentStatus = StrEnum(  # type: ignore[misc]
    "IncidentStatus", [(status.upper(), status) for status in INCIDENT_STATUSES]
)
"""Triage statuses of an incident (from the store's schema), as CLI choices."""

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="DuckDB store file (default: $CLIFFWATCH_DB, else data/cliffwatch.duckdb).",
        show_default=False,
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", help="Output: a table, JSON (array of objects) or CSV."),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="From this time on, inclusive: 2026-11-01, 2026-11-01T12:00, 7d, 24h, today.",
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", help="Before this time, exclusive (same forms as --since)."),
]
TaskClassOption = Annotated[
    str | None, typer.Option("--task-class", help="Only runs of this task class.")
]


@contextmanager
def _store(db: Path | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the resolved store (errors are StoreErrors)."""
    with read_store(settings.db_path(db)) as con:
        yield con


def _writable_store(db: Path | None) -> Path:
    """The resolved store path for a command that writes runs: a new file is fine, an
    existing one must be a cliffwatch store (checked now, before any work is done)."""
    path = settings.db_path(db)
    if path.exists():
        with read_store(path):
            pass
    return path


def _remove_store(path: Path) -> None:
    """Delete a cliffwatch store with its WAL and spill files (already checked to be ours)."""
    from cliffwatch.telemetry.spill import spill_dir

    for extra in (path, path.with_name(path.name + ".wal")):
        extra.unlink(missing_ok=True)
    spills = spill_dir(path)
    if spills.is_dir():
        for item in spills.iterdir():
            item.unlink()
        spills.rmdir()


# --- output ------------------------------------------------------------------------------


TABLE_HEADERS: dict[str, str] = {
    "task_class": "class",
    "run_id": "run",
    "incident_id": "incident",
    "started_at": "started (UTC)",
    "detected_at": "detected (UTC)",
    "workers_proposed": "proposed",
    "workers_dispatched": "dispatched",
    "max_workers": "cap",
    "p50_usd": "P50 $",
    "p95_usd": "P95 $",
    "p99_usd": "P99 $",
    "cliff_ratio": "P99/P50",
    "unpriced_calls": "unpriced",
}
"""Short table headers (JSON and CSV keep the column names)."""

PIPED_TABLE_WIDTH = 200
"""Width of a table printed to a pipe or file (no terminal to fit)."""


def _console() -> Console:
    """A stdout console; :data:`PIPED_TABLE_WIDTH` wide when piped or captured (rich
    would fold tables to 80 columns) unless ``COLUMNS`` says otherwise."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPED_TABLE_WIDTH)
    return console


SHORT_ID_CHARS = 12
"""A table shows run ids cut to this many characters (a unique prefix in practice);
JSON and CSV carry them whole."""


def _header(column: str) -> str:
    if column in TABLE_HEADERS:
        return TABLE_HEADERS[column]
    if column.endswith("_usd"):
        return column.removesuffix("_usd").replace("_", " ") + " $"
    return column.replace("_", " ")


def _usd(value: float | None) -> str:
    # Costs run from fractions of a cent to dollars: keep three significant digits below
    # $1 (0.00981, 0.000120), cents above. None: a cost that cannot be known.
    if value is None:
        return "unknown"
    if value == 0 or abs(value) >= 1:
        return f"{value:,.2f}"
    decimals = max(4, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _cell(column: str, value: Any) -> Text:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Text("-", style="dim")
    if isinstance(value, float):
        if column.endswith("_usd"):
            return Text(_usd(value))
        if column.endswith("_ms"):
            return Text(f"{value:,.0f}")
        return Text(f"{value:.2f}")
    if isinstance(value, datetime):
        return Text(value.strftime("%Y-%m-%d %H:%M"))
    if column == "run_id":
        return Text(str(value)[:SHORT_ID_CHARS])
    return Text(str(value))


def render(
    df: pl.DataFrame,
    fmt: OutputFormat,
    *,
    title: str | None = None,
    table_columns: Sequence[str] | None = None,
    json_columns: Sequence[str] = (),
    empty: str = "nothing to show",
) -> None:
    """Print ``df`` to stdout in ``fmt``: the one output path of every tabular command.

    Args:
        df: the rows, as an analytics function returned them.
        fmt: ``table`` (rich), ``json`` (an array of objects: ISO 8601 timestamps, null for
            missing) or ``csv`` (header row; ISO timestamps; empty cell for missing).
        title: table title (table format only).
        table_columns: the columns a table shows (JSON and CSV always carry every column).
            A table also shortens headers (:data:`TABLE_HEADERS`), run ids
            (:data:`SHORT_ID_CHARS`), times (to the minute) and costs (3 significant
            digits below $1).
        json_columns: columns holding JSON text, embedded as JSON values in ``json``
            output (CSV and tables show the text).
        empty: the line a table prints when there are no rows (JSON prints ``[]``, CSV
            the header only).
    """
    rows = plain_rows(df)
    if fmt is OutputFormat.JSON:
        for row in rows:
            for column in json_columns:
                if row[column] is not None:
                    row[column] = json.loads(row[column])
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if fmt is OutputFormat.CSV:
        writer = csv.DictWriter(sys.stdout, fieldnames=df.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    console = _console()
    if df.is_empty():
        console.print(Text(empty, style="yellow"))
        return
    columns = list(table_columns) if table_columns else df.columns
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD)
    for column in columns:
        numeric = df.schema[column].is_numeric()
        table.add_column(_header(column), justify="right" if numeric else "left",
                         overflow="fold")
    for row in df.select(columns).iter_rows(named=True):
        table.add_row(*(_cell(c, row[c]) for c in columns))
    console.print(table)


def _summary_table(summary: Any, *, title: str) -> Table:
    """A two-column table of a dataclass's fields (dicts as "key n, ...", times to the
    minute, ``*_usd`` as costs)."""
    table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in dataclasses.asdict(summary).items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, datetime):
            shown = value.strftime("%Y-%m-%d %H:%M %Z").strip()
        elif isinstance(value, float) and key.endswith("_usd"):
            shown = _usd(value)
        else:
            shown = str(value)
        table.add_row(key.replace("_", " "), Text(shown))
    return table


# --- commands ----------------------------------------------------------------------------


@app.command()
def percentiles(
    db: DbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    by: Annotated[
        GroupByChoice,
        typer.Option("--by", help="Group by task class, or per-run spend by model or role."),
    ] = GroupByChoice.TASK_CLASS,
    task_class: TaskClassOption = None,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """Cost per task: runs, total, mean, P50/P95/P99, max, cliff ratio (P99/P50), breaches."""
    window = Window.parse(since, until)
    with _store(db) as con:
        df = cost_percentiles(con, window, by=by.value, task_class=task_class)
    shown = [by.value, "runs", "total_usd", "mean_usd", "p50_usd", "p95_usd", "p99_usd",
             "max_usd", "cliff_ratio", "breaches"]
    if df["unpriced_calls"].sum():
        shown.append("unpriced_calls")  # only when there is something to warn about
    render(
        df,
        fmt,
        title=f"Cost per task (USD) by {by.value}",
        table_columns=shown,
        empty="no runs in this window",
    )


@app.command()
def runs(
    db: DbOption = None,
    task_class: TaskClassOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    status: Annotated[
        RunStatus | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Newest N runs; 0 for all.")
    ] = 50,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """List runs, newest first: cost, status, breach, workers proposed/dispatched, limits."""
    window = Window.parse(since, until)
    with _store(db) as con:
        df = list_runs(
            con,
            window,
            task_class=task_class,
            status=status.value if status else None,
            limit=limit or None,
        )
    render(
        df,
        fmt,
        title="Runs (newest first)",
        table_columns=(
            "run_id", "task_class", "started_at", "status", "breach", "cost_usd",
            "workers_proposed", "workers_dispatched", "max_workers", "ceiling_usd",
        ),
        empty="no runs match",
    )


incidents_app = typer.Typer(no_args_is_help=False)
"""``cliffwatch incidents``: lists incidents; its subcommands triage them."""


@incidents_app.callback(invoke_without_command=True)
def incidents(
    ctx: typer.Context,
    db: DbOption = None,
    kind: Annotated[
        IncidentKind | None, typer.Option("--kind", help="Only incidents of this kind.")
    ] = None,
    status: Annotated[
        IncidentStatus | None, typer.Option("--status", help="Only this triage status.")
    ] = None,
    task_class: TaskClassOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """List incidents, newest first: cap breaches, cost-ceiling breaches, runaways.

    Triage one with: cliffwatch incidents ack|resolve|reopen INCIDENT_ID [--note TEXT].
    """
    if ctx.invoked_subcommand is not None:
        return  # a triage subcommand runs instead of the list
    window = Window.parse(since, until)
    with _store(db) as con:
        df = list_incidents(
            con,
            window,
            kind=kind.value if kind else None,
            status=status.value if status else None,
            task_class=task_class,
        )
    render(
        df,
        fmt,
        title="Incidents (newest first)",
        table_columns=("incident_id", "task_class", "detected_at", "status", "detail"),
        json_columns=("data",),
        empty="no incidents",
    )


IncidentIdArgument = Annotated[
    str, typer.Argument(help="The incident's id, as `cliffwatch incidents` lists it.")
]
NoteOption = Annotated[
    str | None,
    typer.Option("--note", help="A note kept with the incident (default: keep its note)."),
]


def _triage(db: Path | None, incident_id: str, status: str, note: str | None) -> None:
    from cliffwatch.analytics.triage import set_incident_status

    done = set_incident_status(settings.db_path(db), incident_id, status, note)
    line = f"{done.incident_id}: {done.previous_status} -> {done.status}"
    Console().print(line + (f" (note: {done.note})" if done.note else ""), soft_wrap=True,
                    highlight=False, markup=False)


@incidents_app.command("ack")
def incidents_ack(incident_id: IncidentIdArgument, note: NoteOption = None,
                  db: DbOption = None) -> None:
    """Acknowledge an incident (someone is on it), with an optional note."""
    _triage(db, incident_id, "acknowledged", note)


@incidents_app.command("resolve")
def incidents_resolve(incident_id: IncidentIdArgument, note: NoteOption = None,
                      db: DbOption = None) -> None:
    """Resolve an incident, with an optional note."""
    _triage(db, incident_id, "resolved", note)


@incidents_app.command("reopen")
def incidents_reopen(incident_id: IncidentIdArgument, note: NoteOption = None,
                     db: DbOption = None) -> None:
    """Set an incident back to open, with an optional note."""
    _triage(db, incident_id, "open", note)


app.add_typer(incidents_app, name="incidents")


@app.command()
def demo(
    runs_: Annotated[
        int, typer.Option("--runs", min=1, help="How many runs to simulate.")
    ] = 500,
    days: Annotated[int, typer.Option("--days", min=1, help="Spread over this many days.")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same store).")] = 7,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Replace an existing store with a new demo.")
    ] = False,
    append: Annotated[
        bool, typer.Option("--append", help="Add the demo's runs to a store that has runs.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Fill a store with a simulated workload (offline): before and after a max-workers cap.

    A store that already holds runs is left alone unless ``--fresh`` (replace it) or
    ``--append`` (add to it) says otherwise: a second demo's eras would overlap the first's.
    """
    if fresh and append:
        raise CliError("--fresh and --append exclude each other")
    path = _writable_store(db)
    if path.exists():
        with read_store(path) as con:
            held = len(list_runs(con, Window(), limit=1))
        if held and fresh:
            _remove_store(path)
        elif held and not append:
            raise CliError(
                f"{path} already holds runs: --fresh replaces it with a new demo, "
                "--append adds to it"
            )
    from cliffwatch.orchestrator.demo import run_demo  # litellm: import only when needed

    with Progress(
        TextColumn("simulating runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("demo", total=runs_)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = run_demo(path, runs=runs_, days=days, seed=seed, progress=progress)
    console = Console()
    console.print(_summary_table(summary, title=f"demo store {path}"))
    db_arg = "" if db is None else f" --db {path}"
    console.print("\n[bold]next, try:[/]")
    for line in (
        f"cliffwatch percentiles{db_arg}",
        f"cliffwatch percentiles --by model{db_arg}",
        f"cliffwatch runs --limit 10{db_arg}",
        f"cliffwatch incidents{db_arg}",
        f"cliffwatch dashboard{db_arg}",
    ):
        console.print(f"  {line}", soft_wrap=True, highlight=False)


@app.command()
def run(
    task_class: Annotated[
        str, typer.Option("--task-class", help="Task class from data/workload.toml.")
    ],
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="The task, as text.")
    ] = None,
    task_file: Annotated[
        Path | None, typer.Option("--task-file", help="Read the task from this text file.")
    ] = None,
    max_workers: Annotated[
        int | None,
        typer.Option("--max-workers", min=0, help="Override the class's cap; 0 removes it."),
    ] = None,
    ceiling_usd: Annotated[
        float | None,
        typer.Option("--ceiling-usd", min=0.0, help="Override the per-task ceiling; 0 removes it."),
    ] = None,
    policy: Annotated[
        CapPolicy | None,
        typer.Option("--policy", help="What dispatch does with a plan over the cap."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the run's calls.")] = 0,
    db: DbOption = None,
) -> None:
    """Orchestrate one task (plan, capped dispatch, workers, synthesis) and record its spans.

    Exit code 0 when the run completed (status ok), 1 when it did not (rejected or
    cancelled by a breach, or failed), 2 for bad input.
    """
    if (prompt is None) == (task_file is None):
        raise CliError("give the task with exactly one of --prompt or --task-file")
    if task_file is not None:
        try:
            text = task_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read --task-file {task_file}: {exc}") from None
    else:
        text = prompt or ""
    if not text.strip():
        raise CliError("the task is empty")
    path = _writable_store(db)
    # litellm and the OTel SDK load only when a run is asked for.
    from cliffwatch.orchestrator.demo import DEMO_TIME_SCALE
    from cliffwatch.orchestrator.runner import orchestrate
    from cliffwatch.orchestrator.sim_provider import is_sim_model, register_sim_provider
    from cliffwatch.orchestrator.workload import Task, load_workload
    from cliffwatch.telemetry.tracing import configure_tracing

    workload = load_workload()
    if task_class not in workload.names:
        raise UnknownTaskClassError(task_class, workload.names)
    config = workload[task_class].config
    changes: dict[str, Any] = {}
    if max_workers is not None:
        changes["max_workers"] = max_workers or None
    if ceiling_usd is not None:
        changes["ceiling_usd"] = ceiling_usd or None
    if policy is not None:
        changes["policy"] = policy
    config = config.replace(**changes)
    models = [m for m in (config.planner_model, config.routine_model, config.hard_model,
                          config.synthesis_model, config.critic_model) if m]
    all_sim = all(is_sim_model(m) for m in models)
    # Simulated calls need not take real seconds; spans still show simulated time.
    time_scale = DEMO_TIME_SCALE if all_sim else 1.0
    register_sim_provider(seed, time_scale, models=[m for m in models if is_sim_model(m)])
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    task_id = task_file.stem if task_file else f"cli-{digest}"
    tracing = configure_tracing(path)
    try:
        result = orchestrate(
            Task(task_id, task_class, text), config, tracing=tracing, seed=seed,
            time_scale=time_scale, raise_on_breach=False,
        )
    finally:
        recorded = tracing.flush()
        tracing.shutdown()
    console = Console()
    summary = Table(box=box.SIMPLE, show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    proposed = "-" if result.workers_proposed is None else str(result.workers_proposed)
    for label, value in (
        ("run", result.run_id),
        ("task class", f"{task_class} (cap {config.max_workers or 'none'}, ceiling "
                       f"{'none' if config.ceiling_usd is None else _usd(config.ceiling_usd)}, "
                       f"policy {config.policy})"),
        ("status", str(result.status) + (f" (breach: {result.breach})" if result.breach else "")),
        ("cost $", _usd(result.cost_usd)
         + (f" ({result.unpriced_calls} unpriced calls)" if result.unpriced_calls else "")),
        ("workers", f"{proposed} proposed, {result.workers_dispatched} dispatched, "
                    f"{result.workers_failed} failed, {result.workers_cancelled} cancelled"),
        ("store", f"{path}" + ("" if recorded else " (some spans spilled; loaded on next write)")),
    ):
        summary.add_row(label, Text(value))
    console.print(summary)
    if result.answer:
        console.print(Text(result.answer))
    if result.status != RunStatus.OK:
        _error_line(f"run {result.run_id} {result.status}: {result.error or 'not completed'}")
        raise typer.Exit(EXIT_RUN_NOT_COMPLETED)


@app.command()
def dashboard(
    db: DbOption = None,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")
    ] = DEFAULT_DASHBOARD_PORT,
) -> None:
    """Open the Streamlit dashboard on the store (headless; prints the URL)."""
    import cliffwatch.dashboard as dashboard_pkg

    path = settings.db_path(db).resolve()
    with read_store(path):
        pass  # a missing or foreign store is one line here, not an error page later
    app_py = Path(dashboard_pkg.__file__).resolve().parent / "app.py"
    if not app_py.exists():
        raise CliError(f"dashboard entry point {app_py} is missing")
    command = [
        sys.executable, "-m", "streamlit", "run", str(app_py),
        "--server.headless", "true",
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
    ]
    Console().print(f"cliffwatch dashboard on [bold]http://localhost:{port}[/] (store {path})")
    env = {**os.environ, settings.CLIFFWATCH_DB: str(path)}
    try:
        code = subprocess.run(command, env=env, check=False).returncode
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


TaskClassAttrOption = Annotated[
    list[str] | None,
    typer.Option(
        "--task-class-attr",
        metavar="NAME",
        help="Span (then resource) attribute giving an ingested run its task class; repeat "
        "for fallbacks, tried in order (default: $CLIFFWATCH_TASK_CLASS_ATTRIBUTES, else "
        "cliff.task_class, gen_ai.workflow.name, traceloop.workflow.name, gen_ai.agent.name, "
        "agent.name; then service.name).",
        show_default=False,
    ),
]


def _mapping_config(task_class_attr: list[str] | None) -> Any:
    """The OTLP mapping for ``serve`` and ``ingest``: the task class rule from the option,
    else from the setting, else the default."""
    from cliffwatch.telemetry.otlp_mapping import MappingConfig

    attributes = tuple(task_class_attr or ()) or settings.task_class_attributes()
    return MappingConfig(task_class_attributes=attributes) if attributes else MappingConfig()


@app.command()
def serve(
    host: Annotated[
        str,
        typer.Option("--host", help="Interface to listen on: loopback unless told (0.0.0.0)."),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="TCP port (4318 is OTLP/HTTP's; 0: any)."),
    ] = 4318,
    db: DbOption = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on every request (default: "
            "$CLIFFWATCH_RECEIVER_TOKEN, else no token).",
            show_default=False,
        ),
    ] = None,
    task_class_attr: TaskClassAttrOption = None,
) -> None:
    """Receive OTLP/HTTP traces (POST /v1/traces; protobuf or JSON, gzip) into the store.

    Point any OpenTelemetry SDK or Collector otlphttp exporter at it; runs until Ctrl-C.
    """
    import signal

    from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig, ReceiverError

    path = _writable_store(db)
    config = ReceiverConfig(
        host=host,
        port=port,
        token=token or settings.receiver_token(),
        max_body_bytes=settings.otlp_max_body_bytes(),
        mapping=_mapping_config(task_class_attr),
    )
    receiver = OtlpReceiver(path, config)
    try:
        receiver.start()
    except ReceiverError as exc:
        raise CliError(str(exc)) from exc
    err = Console(stderr=True)
    err.print(f"cliffwatch OTLP receiver on [bold]{receiver.endpoint}[/] (store {path})",
              soft_wrap=True, highlight=False)
    base = receiver.endpoint.removesuffix("/v1/traces")
    err.print(f"  send with OTEL_EXPORTER_OTLP_ENDPOINT={base}; Ctrl-C stops",
              soft_wrap=True, highlight=False)
    if host not in ("127.0.0.1", "localhost", "::1") and config.token is None:
        err.print("[yellow]warning:[/] listening beyond loopback without --token",
                  soft_wrap=True)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        while not receiver.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        receiver.stop()
    stats = receiver.stats_snapshot()
    err.print(
        f"stopped: {stats['requests']} requests, {stats['spans_accepted']} spans accepted, "
        f"{stats['spans_rejected']} rejected, {stats['requests_refused']} requests refused",
        soft_wrap=True, highlight=False,
    )


@app.command()
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            exists=True,
            dir_okay=False,
            readable=True,
            help="OTLP trace files: JSON lines (the Collector's file exporter), OTLP/JSON or "
            "protobuf; gzip too.",
            show_default=False,
        ),
    ],
    db: DbOption = None,
    task_class_attr: TaskClassAttrOption = None,
) -> None:
    """Import OTLP trace files into the store; importing the same spans again adds nothing."""
    from cliffwatch.telemetry.ingest import IngestError, ingest_files

    path = _writable_store(db)
    err = Console(stderr=True)
    with Progress(
        TextColumn("ingesting"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=err,
    ) as bar:
        task = bar.add_task("ingest", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = ingest_files(
                files, path, mapping=_mapping_config(task_class_attr), progress=progress
            )
        except IngestError as exc:
            raise CliError(str(exc)) from exc
    Console().print(
        f"ingested {summary.files} file(s) into {path}: {summary.spans_read:,} spans read, "
        f"{summary.spans_written:,} new, {summary.spans_rejected:,} rejected, "
        f"{summary.bad_requests:,} unreadable lines or messages; "
        f"{summary.runs_materialised:,} runs updated, {summary.incidents_recorded:,} "
        f"incidents, {summary.unpriced_calls:,} unpriced calls "
        f"({summary.elapsed_s:.1f} s, {summary.spans_per_s:,.0f} spans/s)",
        soft_wrap=True, highlight=False,
    )
    for problem in summary.problems:
        err.print(Text("skipped: ", style="yellow") + Text(problem), soft_wrap=True)
    if not summary.complete:
        raise typer.Exit(EXIT_RUN_NOT_COMPLETED)


FINDING_TABLE_COLUMNS = (
    "task_class", "kind", "runs", "yearly_saving_usd", "still_present", "title",
)
"""Columns ``cliffwatch findings`` shows as a table (JSON and CSV carry every column)."""


@app.command()
def findings(
    db: DbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    task_class: TaskClassOption = None,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """The handbook's anti-patterns in your runs, with evidence and projected yearly saving."""
    from cliffwatch.analytics.findings import find_findings, findings_records

    window = Window.parse(since, until)
    with _store(db) as con:
        df = find_findings(con, window, task_class=task_class)
    if fmt is OutputFormat.JSON:  # evidence as objects, not JSON inside JSON
        sys.stdout.write(json.dumps(findings_records(df), indent=2) + "\n")
        return
    render(
        df.rename({"still_present": "now"}) if fmt is OutputFormat.TABLE else df,
        fmt,
        title="Findings (largest projected yearly saving first)",
        table_columns=[("now" if c == "still_present" else c) for c in FINDING_TABLE_COLUMNS],
        empty="no findings: none of the handbook's anti-patterns in this window",
    )


class AlertStatus(StrEnum):
    """Delivery statuses ``cliffwatch alerts --status`` filters on."""

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"
    NO_WEBHOOK = "no_webhook"


@app.command()
def alerts(
    db: DbOption = None,
    status: Annotated[
        AlertStatus | None, typer.Option("--status", help="Only deliveries with this status.")
    ] = None,
    retry: Annotated[
        bool,
        typer.Option(
            "--retry",
            help="First send every failed, unknown or waiting delivery once more, now.",
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Newest N alerts; 0 for all.")
    ] = 50,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """Alerts (incidents, threshold rules) and their webhook deliveries: status, attempts,
    last error. Exit code 1 when a --retry delivery failed."""
    from cliffwatch.telemetry.alerts import deliver_now, list_alerts

    summary = None
    if retry:
        summary = deliver_now(_writable_store(db), retry_failed=True)
        Console(stderr=True).print(
            f"retried {summary.attempted} deliveries: {summary.delivered} delivered, "
            f"{summary.retrying} to retry later, {summary.failed} failed",
            soft_wrap=True, highlight=False,
        )
    with _store(db) as con:
        df = list_alerts(con, status=status.value if status else None, limit=limit or None)
    render(
        df,
        fmt,
        title="Alerts (newest first)",
        table_columns=("raised_at", "kind", "task_class", "webhook", "status", "attempts",
                       "last_error", "text"),
        empty="no alerts",
    )
    if summary is not None and (summary.failed or summary.retrying):
        raise typer.Exit(EXIT_RUN_NOT_COMPLETED)


# --- replay, what-if, reports -----------------------------------------------------------

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


def _json_out(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=plain_value) + "\n")


def _print_replay(rp: Any, live: pl.DataFrame | None, live_id: str | None) -> None:
    run, cf, console = rp.run, rp.counterfactual, _console()

    def say(line: str, style: str = "") -> None:
        console.print(Text(line, style=style), soft_wrap=True)

    say(f"run {run.run_id} · {run.task_class} · task {run.task_id or '-'} · started "
        f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC", "bold")
    render(rp.timeline, OutputFormat.TABLE, title="Timeline as recorded", table_columns=(
        "step", "offset_ms", "duration_ms", "kind", "name", "model", "input_tokens",
        "output_tokens", "cost_usd", "status", "detail"))
    beside = rp.plan_beside_counterfactual()
    columns = ("index", "title", "difficulty", "model", "outcome", "attempts", "cost_usd")
    if beside is not None:
        render(beside, OutputFormat.TABLE, title="Plan: as recorded, and counterfactual (cf)",
               table_columns=(*columns, "cf_outcome", "cf_cost_usd", "cf_basis"))
    else:
        render(rp.subtasks, OutputFormat.TABLE, title="Plan as recorded (the dispatched plan)",
               table_columns=columns, empty="no usable plan recorded")
    render(rp.comparison(), OutputFormat.TABLE,
           title=f"Counterfactual ({rp.override.describe()}), no model called")
    if cf.subtasks and beside is None:
        render(rp.counterfactual_subtasks(), OutputFormat.TABLE,
               title="Counterfactual sub-tasks")
    notes = sorted({(i.note, i.stage) for i in cf.items if i.basis == "estimated"})
    for note, stage in notes:
        say(f"estimated ({stage}): {note}", "yellow")
    if not cf.replayable:
        say(cf.reason, "yellow")
    elif rp.reproduces_record:
        say("check: under its recorded limits the replay reproduces the record exactly", "dim")
    else:
        say("warning: under its recorded limits the replay does not reproduce the record",
            "yellow")
    if live is not None:
        render(live, OutputFormat.TABLE, title=f"Live re-run {live_id} beside the original")


@app.command()
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
    from cliffwatch.analytics.replay import LimitsOverride, compare_runs
    from cliffwatch.analytics.replay import replay as replay_run

    override = LimitsOverride.parse(max_workers, ceiling_usd, policy.value if policy else None)
    with _store(db) as con:
        rp = replay_run(con, run_id, override)
    comparison, new_id, live_data = None, None, None
    if live:
        from cliffwatch.orchestrator.rerun import rerun_live  # litellm: only for a live run

        done = rerun_live(settings.db_path(db), rp.run, rp.counterfactual.limits, seed=seed)
        new_id = done.result.run_id
        with _store(db) as con:
            comparison = compare_runs(con, rp.run.run_id, new_id)
        live_data = {"run_id": new_id, "status": done.result.status.value,
                     "cost_usd": done.result.cost_usd, "seed": done.seed,
                     "task_source": done.task_source, "comparison": comparison.to_dicts()}
    if fmt is ReplayFormat.JSON:
        data = rp.to_dict()
        if live_data is not None:
            data["live"] = live_data
        _json_out(data)
        return
    _print_replay(rp, comparison, new_id)


@app.command()
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
    from cliffwatch.analytics.replay import LimitsOverride
    from cliffwatch.analytics.whatif import what_if

    if max_workers is None and ceiling_usd is None and policy is None:
        raise CliError("give at least one of --max-workers, --ceiling-usd, --policy")
    override = LimitsOverride.parse(max_workers, ceiling_usd, policy.value if policy else None)
    window = Window.parse(since, until)
    with _store(db) as con:
        what = what_if(con, override, window, task_class)
    if fmt is OutputFormat.JSON:
        _json_out(what.to_dict())
        return
    if fmt is OutputFormat.CSV:
        render(what.by_class, fmt)
        return
    def arrow(name: str, label: str) -> pl.Expr:  # "before -> after" in one column
        return pl.struct(f"{name}_before_usd", f"{name}_after_usd").map_elements(
            lambda r: f"{_usd(r[f'{name}_before_usd'])} -> {_usd(r[f'{name}_after_usd'])}",
            return_dtype=pl.String,
        ).alias(label)

    shown = what.by_class.select(
        "task_class", "runs", pl.col("runs_affected").alias("affected"),
        pl.col("runs_rejected").alias("rejected"), pl.col("runs_truncated").alias("truncated"),
        pl.col("runs_cancelled").alias("cancelled"),
        pl.col("tasks_not_completed").alias("not completed"), arrow("spend", "spend $"),
        arrow("p50", "P50 $"), arrow("p95", "P95 $"), arrow("p99", "P99 $"), "saving_usd",
        "saving_pct", pl.col("annual_saving_usd").alias("a year $"),
    )
    render(shown, fmt, title=f"What-if: {what.describe()}", empty="no runs in this window")
    totals = what.totals()
    if not totals["runs"]:
        return
    console = _console()
    console.print(what.headline(), soft_wrap=True, highlight=False, markup=False)
    if totals["estimated_usd"]:
        console.print(f"${totals['estimated_usd']:,.4f} of the spend after is estimated "
                      "(sub-tasks the record does not hold, tasks redone; see cliffwatch "
                      "replay)",
                      style="yellow", soft_wrap=True, highlight=False, markup=False)
    console.print(f"replayed {totals['runs']:,} runs in {what.elapsed_s:.2f} s "
                  f"({what.load_s:.2f} s reading the store)", style="dim", soft_wrap=True,
                  highlight=False)


@app.command()
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
    db: DbOption = None,
) -> None:
    """Write a cost report: runs and spend, P50/P95/P99 and cliff ratio per class,
    incidents, what-if at each class's configured cap, spend by model and role."""
    from cliffwatch.analytics.report import build_report
    from cliffwatch.analytics.report_render import write_report
    from cliffwatch.orchestrator.errors import ConfigError
    from cliffwatch.orchestrator.workload import load_workload

    try:  # the what-if uses each class's configured cap; else its latest recorded one
        class_limits = {c.name: c.config.limits for c in load_workload().classes}
    except ConfigError:
        class_limits = None
    window = Window.parse(since, until)
    with _store(db) as con:
        built = build_report(con, window, task_class, class_limits=class_limits)
    written = write_report(built, fmt, output)
    where_to = output if len(written) > 1 else written[0]
    Console().print(f"wrote {fmt.value} report to {where_to} ({len(written)} file(s))",
                    soft_wrap=True, highlight=False, markup=False)


def main() -> None:
    """Console-script entry point (``cliffwatch = cliffwatch.cli:main``)."""
    app()
