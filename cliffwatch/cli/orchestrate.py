"""The commands that run tasks through cliffwatch's orchestrator: ``demo`` (a simulated
workload, offline) and ``run`` (one task, through
:func:`cliffwatch.orchestrator.tasks.run_task`).

The orchestrator (litellm, the OTel SDK, the simulated provider) is imported inside the
command that runs it, never for ``--help`` or a read command.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from cliffwatch import settings
from cliffwatch.analytics.window import Window
from cliffwatch.cli.options import DbOption, read_only_store, span_store
from cliffwatch.cli.output import (
    EXIT_NOT_COMPLETED,
    CliError,
    error_line,
    facts_table,
    say,
    spans_verdict,
    summary_table,
)
from cliffwatch.formatting import usd
from cliffwatch.orchestrator.workload import Task
from cliffwatch.telemetry.conventions import CapPolicy, RunStatus


def _remove_store(path: Path) -> None:
    """Delete a cliffwatch store with its WAL and spill files (already checked to be ours)."""
    from cliffwatch.telemetry.spill import spill_dir  # lazy: pyarrow

    for extra in (path, path.with_name(path.name + ".wal")):
        extra.unlink(missing_ok=True)
    spills = spill_dir(path)
    if spills.is_dir():
        for item in spills.iterdir():
            item.unlink()
        spills.rmdir()


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
    engine = settings.is_engine_store(settings.db_url(db))
    if engine and fresh:
        raise CliError("--fresh replaces a DuckDB file: it does not empty a ClickHouse store")
    path = span_store(db)
    if isinstance(path, Path) and path.exists():
        from cliffwatch.analytics.runs import list_runs  # lazy: DuckDB, polars

        with read_only_store(path) as con:
            held = len(list_runs(con, Window(), limit=1))
        if held and fresh:
            _remove_store(path)
        elif held and not append:
            raise CliError(
                f"{path} already holds runs: --fresh replaces it with a new demo, "
                "--append adds to it"
            )
    from cliffwatch.orchestrator.demo import run_demo  # lazy: litellm, the OTel SDK
    from cliffwatch.telemetry.write_ledger import LEDGER  # lazy: DuckDB

    before = LEDGER.snapshot()

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
    # The store on a line of its own, whole however long (a table would wrap or cut it).
    say(f"demo store {path}")
    console = Console()
    console.print(summary_table(summary, leave_out=("db_path",)))
    code = spans_verdict(LEDGER.snapshot() - before, path)
    if code:
        raise typer.Exit(code)
    db_arg = "" if db is None else f" --db {path}"
    console.print("\n[bold]next, try:[/]")
    if engine:  # the spans are in the traces table: watch turns them into runs
        console.print(f"  cliffwatch watch --once{db_arg}", soft_wrap=True, highlight=False)
    for line in (
        f"cliffwatch percentiles{db_arg}",
        f"cliffwatch percentiles --by model{db_arg}",
        f"cliffwatch runs --limit 10{db_arg}",
        f"cliffwatch incidents{db_arg}",
        f"cliffwatch dashboard{db_arg}",
    ):
        console.print(f"  {line}", soft_wrap=True, highlight=False)


def _task_text(prompt: str | None, task_file: Path | None) -> str:
    """The task given by exactly one of ``--prompt`` and ``--task-file``."""
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
    return text


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
    cancelled by a breach, or failed) or some of its spans were not stored, 2 for bad
    input.
    """
    text = _task_text(prompt, task_file)
    path = span_store(db)
    from cliffwatch.analytics.replay import LimitsOverride  # lazy: DuckDB
    from cliffwatch.orchestrator.tasks import class_config, run_task  # lazy: litellm, OTel SDK

    config = class_config(task_class)
    override = LimitsOverride.parse(max_workers, ceiling_usd, policy.value if policy else None)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    task_id = task_file.stem if task_file else f"cli-{digest}"
    from cliffwatch.telemetry.write_ledger import LEDGER  # lazy: DuckDB

    before = LEDGER.snapshot()
    done = run_task(path, Task(task_id, task_class, text), config,
                    limits=override.apply(config.limits), seed=seed)
    spans = LEDGER.snapshot() - before
    result, config = done.result, done.config
    proposed = "-" if result.workers_proposed is None else str(result.workers_proposed)
    ceiling = "none" if config.ceiling_usd is None else usd(config.ceiling_usd)
    console = Console()
    console.print(facts_table([
        ("run", result.run_id),
        ("task class", f"{task_class} (cap {config.max_workers or 'none'}, ceiling "
                       f"{ceiling}, policy {config.policy})"),
        ("status", str(result.status) + (f" (breach: {result.breach})" if result.breach else "")),
        ("cost $", usd(result.cost_usd)
         + (f" ({result.unpriced_calls} unpriced calls)" if result.unpriced_calls else "")),
        ("workers", f"{proposed} proposed, {result.workers_dispatched} dispatched, "
                    f"{result.workers_failed} failed, {result.workers_cancelled} cancelled"),
        ("store", f"{path}" + ("" if done.flushed else
                               " (some spans spilled; loaded on next write)")),
    ]))
    if result.answer:
        console.print(Text(result.answer))
    code = spans_verdict(spans, path)
    if code:
        raise typer.Exit(code)
    if result.status != RunStatus.OK:
        error_line(f"run {result.run_id} {result.status}: {result.error or 'not completed'}")
        raise typer.Exit(EXIT_NOT_COMPLETED)
