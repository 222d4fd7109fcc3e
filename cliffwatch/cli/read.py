"""The read commands: ``percentiles``, ``runs``, ``incidents`` (and its triage
subcommands ``ack``, ``resolve``, ``reopen``), ``findings`` and ``alerts``.

Each parses its window, reads the store with an ``analytics`` (or ``telemetry.alerts``)
function and hands the rows to :func:`~cliffwatch.cli.output.render`. None of them loads
litellm or the orchestrator.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from cliffwatch import settings
from cliffwatch.analytics.window import Window
from cliffwatch.cli.helptext import CliffwatchCommand, HelpTextGroup
from cliffwatch.cli.options import (
    DbOption,
    FormatOption,
    IncidentStatus,
    OutputFormat,
    SinceOption,
    TaskClassOption,
    UntilOption,
    limit_option,
    read_only_store,
    return_freed_memory,
    writable_store,
)
from cliffwatch.cli.output import EXIT_NOT_COMPLETED, json_out, render, say, scope_text
from cliffwatch.telemetry.conventions import IncidentKind, RunStatus

if TYPE_CHECKING:
    import polars as pl


class GroupByChoice(StrEnum):
    """What ``cliffwatch percentiles --by`` groups runs by."""

    TASK_CLASS = "task_class"
    MODEL = "model"
    ROLE = "role"


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
    from cliffwatch.analytics.percentiles import cost_percentiles  # lazy: DuckDB, polars
    from cliffwatch.analytics.upper_bound import cache_detail_missing_calls, upper_bound_note

    window = Window.parse(since, until)
    with read_only_store(db) as con:
        df = cost_percentiles(con, window, by=by.value, task_class=task_class)
        note = upper_bound_note(cache_detail_missing_calls(con, window, task_class))
    shown = [by.value, "runs", "total_usd", "mean_usd", "p50_usd", "p95_usd", "p99_usd",
             "max_usd", "cliff_ratio", "breaches"]
    if df["unpriced_calls"].sum():
        shown.append("unpriced_calls")  # only when there is something to warn about
    render(
        df,
        fmt,
        title=f"Cost per task (USD) by {by.value}",
        table_columns=shown,
        narrow_drop=("total_usd", "mean_usd", "max_usd"),
        empty=f"no runs {scope_text(window, task_class)}",
    )
    if note:  # a footnote under the table; beside JSON and CSV, on stderr
        say(note, stderr=fmt is not OutputFormat.TABLE, wrap=True)


RUNS_TABLE_LIMIT = 50
"""Runs a ``cliffwatch runs`` table shows unless ``--limit`` says otherwise (JSON and CSV
return every run unless told)."""

INCIDENTS_TABLE_LIMIT = 50
"""Incidents a ``cliffwatch incidents`` table shows unless ``--limit`` says otherwise (JSON
and CSV return every incident unless told, as ``runs``)."""

ALERTS_TABLE_LIMIT = 50
"""Alerts a ``cliffwatch alerts`` table shows unless ``--limit`` says otherwise (JSON and
CSV return every alert unless told, as ``runs``)."""


def _rows_to_read(limit: int | None, fmt: OutputFormat, table_limit: int) -> int | None:
    """The rows a listing reads for its ``--limit`` (0 or None: all): left out, every row
    in JSON and CSV, and one more than ``table_limit`` in a table (whether there are
    more)."""
    if limit is None and fmt is OutputFormat.TABLE:
        return table_limit + 1
    return limit or None


def _table_cut(df: pl.DataFrame, limit: int | None, fmt: OutputFormat,
               table_limit: int) -> tuple[pl.DataFrame, bool]:
    """The rows a listing shows of those :func:`_rows_to_read` read, and whether the
    default ``table_limit`` cut some (then say so: :func:`_say_cut`)."""
    cut = limit is None and fmt is OutputFormat.TABLE and len(df) > table_limit
    return (df.head(table_limit) if cut else df), cut


def _say_cut(table_limit: int) -> None:
    """The line under a table the default ``--limit`` cut."""
    say(f"the newest {table_limit} shown (--limit 0 for all)", style="dim")


def runs(
    db: DbOption = None,
    task_class: TaskClassOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    status: Annotated[
        RunStatus | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    limit: Annotated[int | None, limit_option("runs", RUNS_TABLE_LIMIT)] = None,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """List runs, newest first: cost, status, breach, workers proposed/dispatched, limits."""
    from cliffwatch.analytics.runs import list_runs  # lazy: DuckDB, polars

    window = Window.parse(since, until)
    with read_only_store(db) as con:
        df = list_runs(
            con,
            window,
            task_class=task_class,
            status=status.value if status else None,
            limit=_rows_to_read(limit, fmt, RUNS_TABLE_LIMIT),
        )
    df, cut = _table_cut(df, limit, fmt, RUNS_TABLE_LIMIT)
    render(
        df,
        fmt,
        title="Runs (newest first)",
        table_columns=(
            "run_id", "task_class", "started_at", "status", "breach", "cost_usd",
            "workers_proposed", "workers_dispatched", "max_workers", "ceiling_usd",
        ),
        # breach is what the tool is for: at 80 columns the limits go before it does.
        narrow_drop=("workers_proposed", "workers_dispatched", "max_workers", "ceiling_usd"),
        empty="no runs match",
    )
    if cut:
        _say_cut(RUNS_TABLE_LIMIT)


incidents_app = typer.Typer(no_args_is_help=False, cls=HelpTextGroup)
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
    limit: Annotated[int | None, limit_option("incidents", INCIDENTS_TABLE_LIMIT)] = None,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """List incidents, newest first: cap breaches, cost-ceiling breaches, runaways.

    Triage one with: cliffwatch incidents ack|resolve|reopen INCIDENT_ID [--note TEXT].
    """
    if ctx.invoked_subcommand is not None:
        return  # a triage subcommand runs instead of the list
    from cliffwatch.analytics.incidents import list_incidents  # lazy: DuckDB, polars

    window = Window.parse(since, until)
    with read_only_store(db) as con:
        df = list_incidents(
            con,
            window,
            kind=kind.value if kind else None,
            status=status.value if status else None,
            task_class=task_class,
            limit=_rows_to_read(limit, fmt, INCIDENTS_TABLE_LIMIT),
        )
    df, cut = _table_cut(df, limit, fmt, INCIDENTS_TABLE_LIMIT)
    render(
        df,
        fmt,
        title="Incidents (newest first)",
        table_columns=("incident_id", "run_id", "task_class", "detected_at", "status",
                       "detail"),
        narrow_drop=("task_class",),
        json_columns=("data",),
        wrap_columns=("detail",),  # money among words: wrapped, never cut
        empty="no incidents",
    )
    if cut:
        _say_cut(INCIDENTS_TABLE_LIMIT)


IncidentIdArgument = Annotated[
    str, typer.Argument(help="The incident's id, or a unique prefix of 6+ characters.")
]
NoteOption = Annotated[
    str | None,
    typer.Option("--note", help="A note kept with the incident (default: keep its note)."),
]


def _triage(db: str | None, incident_id: str, status: str, note: str | None) -> None:
    from cliffwatch.analytics.triage import set_incident_status  # lazy: DuckDB

    done = set_incident_status(settings.db_url(db), incident_id, status, note)
    line = f"{done.incident_id}: {done.previous_status} -> {done.status}"
    say(line + (f" (note: {done.note})" if done.note else ""))


@incidents_app.command("ack", cls=CliffwatchCommand)
def incidents_ack(incident_id: IncidentIdArgument, note: NoteOption = None,
                  db: DbOption = None) -> None:
    """Acknowledge an incident (someone is on it), with an optional note."""
    _triage(db, incident_id, "acknowledged", note)


@incidents_app.command("resolve", cls=CliffwatchCommand)
def incidents_resolve(incident_id: IncidentIdArgument, note: NoteOption = None,
                      db: DbOption = None) -> None:
    """Resolve an incident, with an optional note."""
    _triage(db, incident_id, "resolved", note)


@incidents_app.command("reopen", cls=CliffwatchCommand)
def incidents_reopen(incident_id: IncidentIdArgument, note: NoteOption = None,
                     db: DbOption = None) -> None:
    """Set an incident back to open, with an optional note."""
    _triage(db, incident_id, "open", note)


FINDING_TABLE_COLUMNS = (
    "task_class", "kind", "runs", "yearly_saving_usd", "still_present", "title",
)
"""Columns ``cliffwatch findings`` shows as a table (JSON and CSV carry every column)."""


def findings(
    db: DbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    task_class: TaskClassOption = None,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """The handbook's anti-patterns in your runs, with evidence and projected yearly saving."""
    return_freed_memory()  # before polars loads: frames of every run
    # lazy: DuckDB, polars
    from cliffwatch.analytics import result_cache
    from cliffwatch.analytics.findings import Thresholds, find_findings, findings_records
    from cliffwatch.analytics.rollup_read import write_version
    from cliffwatch.analytics.runs import run_span

    window = Window.parse(since, until)
    thresholds = Thresholds.from_settings()
    with read_only_store(db) as con:
        # the dashboard's Findings page reads what this keeps, and the other way round
        key = result_cache.analysis_key(
            "findings", settings.db_url(db), write_version(con), window, (since, until),
            task_class, thresholds=dataclasses.asdict(thresholds))
        df = result_cache.findings_through(
            key, lambda: find_findings(con, window, task_class=task_class,
                                       thresholds=thresholds))
        # An empty list says "nothing found" only where there were runs to look at.
        looked = df.height > 0 or run_span(con, window, task_class)[0] is not None
    if fmt is OutputFormat.JSON:  # evidence as objects, not JSON inside JSON
        json_out(findings_records(df))
        return
    render(
        df.rename({"still_present": "now"}) if fmt is OutputFormat.TABLE else df,
        fmt,
        title="Findings (largest projected yearly saving first)",
        table_columns=[("now" if c == "still_present" else c) for c in FINDING_TABLE_COLUMNS],
        empty=(f"no findings: none of the handbook's anti-patterns "
               f"{scope_text(window, task_class)}" if looked
               else f"no runs {scope_text(window, task_class)}: nothing to look at"),
    )


class AlertStatus(StrEnum):
    """Delivery statuses ``cliffwatch alerts --status`` filters on."""

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"
    NO_WEBHOOK = "no_webhook"


def alerts(
    db: DbOption = None,
    task_class: TaskClassOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
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
    limit: Annotated[int | None, limit_option("alerts", ALERTS_TABLE_LIMIT)] = None,
    fmt: FormatOption = OutputFormat.TABLE,
) -> None:
    """Alerts (incidents, threshold rules) and their webhook deliveries: status, attempts,
    last error. The window is on when an alert was raised. Exit code 1 when a --retry
    delivery failed."""
    from cliffwatch.analytics.alert_view import alert_deliveries  # lazy: DuckDB, polars
    from cliffwatch.telemetry.alerts import deliver_now  # lazy: DuckDB

    window = Window.parse(since, until)  # a bad time is refused before any --retry send
    summary = None
    if retry:
        if task_class is not None:  # so is an unknown class
            from cliffwatch.analytics.runs import require_task_class  # lazy: DuckDB, polars

            with read_only_store(db) as con:
                require_task_class(con, task_class)
        summary = deliver_now(writable_store(db), retry_failed=True)
        say(f"retried {summary.attempted} deliveries: {summary.delivered} delivered, "
            f"{summary.retrying} to retry later, {summary.failed} failed", stderr=True)
    with read_only_store(db) as con:
        df = alert_deliveries(con, window, task_class, status=status.value if status else None,
                              limit=_rows_to_read(limit, fmt, ALERTS_TABLE_LIMIT))
    df, cut = _table_cut(df, limit, fmt, ALERTS_TABLE_LIMIT)
    render(
        df,
        fmt,
        title="Alerts (newest first)",
        table_columns=("raised_at", "kind", "task_class", "status", "text", "webhook",
                       "attempts", "last_error"),
        narrow_drop=("webhook", "attempts", "last_error"),
        wrap_columns=("text",),  # money among words: wrapped, never cut
        empty=f"no alerts {scope_text(window, task_class)}",
    )
    if cut:
        _say_cut(ALERTS_TABLE_LIMIT)
    if summary is not None and (summary.failed or summary.retrying):
        raise typer.Exit(EXIT_NOT_COMPLETED)
