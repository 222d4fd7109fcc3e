"""The fleet commands (issue 10, docs/fleet.md): ``watch`` follows the Collector's
``otel_traces`` table in ClickHouse and writes runs, incidents and alerts into cliffwatch's
own tables there; ``migrate`` moves a DuckDB store's history up into ClickHouse."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from cliffwatch import settings
from cliffwatch.cli.output import EXIT_NOT_COMPLETED, CliError, error_line, say
from cliffwatch.cli.serve import TaskClassAttrOption, mapping_config

if TYPE_CHECKING:
    from cliffwatch.telemetry.clickhouse.url import StoreURL

EngineDbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="The ClickHouse store: clickhouse://user@host:8123/db, or "
        "chdb:///dir (the engine embedded); ?traces_table=NAME names the Collector's table "
        "(default otel_traces). Default: $CLIFFWATCH_DB.",
        metavar="URL",
        show_default=False,
    ),
]


def engine_url(db: str | None, option: str = "--db") -> StoreURL:
    """The ClickHouse store a fleet command works on.

    Raises:
        CliError: the store is a DuckDB file (these commands need ClickHouse).
        StoreURLError: the URL is malformed (one line).
    """
    from cliffwatch.telemetry.clickhouse.url import parse_store_url  # lazy: store layer

    text = settings.db_url(db)
    if not settings.is_engine_store(text):
        raise CliError(f"{option} {text} is a DuckDB file: give a ClickHouse store "
                       "(clickhouse://user@host:8123/database or chdb:///dir)")
    return parse_store_url(text)


def watch(
    db: EngineDbOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Process the spans there are, then exit (cron, "
                           "tests); without it, keep following the table until stopped."),
    ] = False,
    batch_spans: Annotated[
        int, typer.Option("--batch-spans", metavar="N", min=1,
                          help="Spans per batch at most."),
    ] = 50_000,
    task_class_attr: TaskClassAttrOption = None,
) -> None:
    """Follow the OpenTelemetry Collector's trace table in ClickHouse: map new spans with
    the same rules as ingest, materialise runs, record incidents and send alerts, into
    cliffwatch's own tables in the same database (created on first use).

    Incremental and safe to restart: a watermark remembers the spans done, spans landing
    late (within $CLIFFWATCH_WATCH_LATENESS_S, default 10 minutes) are still picked up,
    and a span is never counted twice. Ctrl-C or SIGTERM stops after the current batch.
    Prints a summary line: spans, runs, incidents, alerts.
    """
    from cliffwatch.telemetry.clickhouse.client import connect  # lazy: pyarrow, chdb
    from cliffwatch.telemetry.clickhouse.watch import WatchConfig, WatchSummary
    from cliffwatch.telemetry.clickhouse.watch import watch as follow
    from cliffwatch.telemetry.stop_signals import stop_on_signals

    url = engine_url(db)
    settings.check_alert_settings()  # the write path only logs a bad one: refused here
    err = Console(stderr=True)
    config = WatchConfig(traces_table=url.traces_table, batch_spans=batch_spans,
                         mapping=mapping_config(task_class_attr))

    def progress(summary: WatchSummary) -> None:
        if err.is_terminal:
            err.print(f"watch: {summary.line()}", highlight=False, markup=False,
                      soft_wrap=True)

    with connect(url) as client, stop_on_signals() as stop:
        if not once:
            say(f"watching {url} ({url.traces_table}); Ctrl-C stops after the batch",
                stderr=True)
        summary = follow(client, config, once=once, stop=stop, progress=progress)
    say(f"watch {url}: {summary.line()}")


def migrate(
    source: Annotated[
        str,  # not a Path: typer would make http://x the path http:/x (tests/test_cli_errors.py)
        typer.Option("--from", metavar="PATH", show_default=False,
                     help="The DuckDB store to move up (read only; never changed)."),
    ],
    to: Annotated[
        str,
        typer.Option("--to", metavar="URL", show_default=False,
                     help="The ClickHouse store: clickhouse://user@host:8123/db or "
                     "chdb:///dir (?traces_table=NAME: the Collector's table)."),
    ],
) -> None:
    """Move a DuckDB store's history into a ClickHouse store: its spans into the
    Collector's trace table (in the exporter's shape), its runs, incidents (with their
    triage), alerts and spans into cliffwatch's own tables, and the watch watermark past
    them, so 'cliffwatch watch' goes on from there.

    Safe to run again: nothing is added twice. Prints the counts; exit code 1 when not
    every span arrived.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cliffwatch.cli.options import read_only_store
    from cliffwatch.telemetry.clickhouse.client import connect  # lazy: pyarrow, chdb
    from cliffwatch.telemetry.clickhouse.migrate import migrate_store

    scheme = settings.url_scheme(source)  # as --db names one; the rest may hold a password
    if scheme is not None:
        raise CliError(f"--from takes a DuckDB file path, not a URL ({scheme}...)")
    path = Path(source)
    url = engine_url(to, "--to")
    with read_only_store(path, "--from"):
        pass  # a missing or foreign store is one line with its hint
    with connect(url) as client, Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}"),
        TimeElapsedColumn(), console=Console(stderr=True),
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(f"migrating {step}", total=total or None)
            bar.update(tasks[step], completed=done)

        summary = migrate_store(path, client, url.traces_table, progress=progress)
    tables = ", ".join(f"{n:,} {t}" for t, n in summary.tables.items() if n)
    say(f"migrated {path} to {url}: {summary.spans_read:,} spans "
        f"({summary.spans_added:,} added to {url.traces_table}); {tables or 'no rows'}")
    if not summary.complete:
        error_line(f"not every span arrived: {summary.traces_table_spans:,} of "
                   f"{summary.spans_read:,} in {url.traces_table}; run migrate again")
        raise typer.Exit(EXIT_NOT_COMPLETED)
