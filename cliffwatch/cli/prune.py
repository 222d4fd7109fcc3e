"""``cliffwatch prune``: data retention. Deletes runs started before a date, with their
spans, incidents and alerts (:mod:`cliffwatch.telemetry.prune`); a dry run unless
``--yes``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from cliffwatch import settings
from cliffwatch.analytics.window import WindowError, parse_when
from cliffwatch.cli.options import DbOption, read_only_store
from cliffwatch.cli.output import CliError, facts_table, say
from cliffwatch.formatting import number, usd

if TYPE_CHECKING:
    from cliffwatch.telemetry.prune import PrunePlan

MIB = 1024 * 1024


def _facts(plan: PrunePlan) -> list[tuple[str, str]]:
    rows = plan.rows
    span = "-"
    if plan.first_started_at is not None and plan.last_started_at is not None:
        span = (f"{plan.first_started_at:%Y-%m-%d %H:%M} to "
                f"{plan.last_started_at:%Y-%m-%d %H:%M} UTC")
    return [
        ("runs", f"{number(rows['runs'])} ({number(plan.runs_kept)} started later are kept)"),
        ("their spend", usd(plan.spend_usd)),
        ("started", span),
        ("spans", number(rows["spans"])),
        ("incidents", f"{number(rows['incidents'])} ({number(plan.triaged_incidents)} "
                      "acknowledged or resolved, with their notes)"),
        ("alerts", number(rows["alerts"])),
        ("webhook deliveries", f"{number(rows['alert_deliveries'])} "
                               f"({number(plan.undelivered_alerts)} not delivered)"),
    ]


def prune(
    before: Annotated[
        str,
        typer.Option("--before", metavar="WHEN", show_default=False,
                     help="Delete runs started before this time: 2026-10-01 (midnight UTC), "
                     "2026-10-01T12:00, or a duration back from now (90d, 12w)."),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", help="Delete (without it, only say what would go).")
    ] = False,
    compact: Annotated[
        bool,
        typer.Option("--compact", help="With --yes: then rewrite the store into a new file "
                     "that replaces it, so the file shrinks to its data (needs free disk "
                     "space for the copy)."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Delete runs started before a date, with their spans, incidents (and triage notes)
    and alerts (and webhook deliveries).

    A dry run unless --yes: it prints what would be deleted (counts, the runs' spend and
    start times). With --yes it deletes in one transaction, then checkpoints the store so
    new data reuses the space (--compact: shrinks the file too), and prints the file size
    before and after.
    """
    from cliffwatch.telemetry.prune import prune_plan, prune_store  # lazy: DuckDB

    try:
        cutoff = parse_when(before)
    except WindowError as exc:
        raise CliError(f"--before: {exc}") from exc
    path = settings.db_path(db)
    with read_only_store(path):
        pass  # a missing or foreign store is one line with its hint
    when = f"{cutoff:%Y-%m-%d %H:%M} UTC"
    if compact and not yes:
        raise CliError("--compact rewrites the store: give it with --yes")
    if not yes:
        plan = prune_plan(path, cutoff)
        if plan.empty:
            say(f"nothing to prune: no run in {path} started before {when}")
            return
        Console().print(facts_table(_facts(plan),
                                    title=f"Would delete, for runs started before {when}"))
        say(f"dry run: nothing deleted; add --yes to delete (cliffwatch prune --before "
            f"{before} --yes --db {path})", wrap=True)
        return
    done = prune_store(path, cutoff, compact=compact)
    if done.plan.empty:
        say(f"nothing to prune: no run in {path} started before {when}")
        if not compact:
            return
    else:
        Console().print(facts_table(_facts(done.plan),
                                    title=f"Deleted, runs started before {when}"))
    size = (f"store {path}: {done.size_before_bytes / MIB:.1f} MiB before, "
            f"{done.size_after_bytes / MIB:.1f} MiB after" + (" compacting" if compact else ""))
    if done.size_after_bytes >= done.size_before_bytes and not compact:
        size += ("; DuckDB keeps the freed space in the file for new data (it does not "
                 "shrink it); --compact shrinks it")
    say(size, wrap=True)
    if done.pending_spill_files:
        say(f"warning: {done.pending_spill_files} spill file(s) wait in {path}.spill/ and "
            "are loaded on the next write: old spans among them come back", style="yellow",
            wrap=True)
