"""The ``cliffwatch`` typer app: its commands, in the order ``--help`` lists them, and
the one error boundary (:class:`CliffwatchGroup`)."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from cliffwatch.cli import analysis, audit, fleet, orchestrate, prune, read, serve
from cliffwatch.cli.helptext import CliffwatchCommand, HelpTextGroup
from cliffwatch.cli.output import CliError, error_line
from cliffwatch.errors import CliffwatchError

COMMAND_ORDER = (
    "demo", "run", "serve", "ingest", "watch", "percentiles", "runs", "incidents", "replay",
    "whatif", "findings", "report", "alerts", "audit", "dashboard", "migrate", "prune",
)
"""The order ``cliffwatch --help`` lists the commands in: the order a user meets them (fill
a store, read it, dig into an incident, hand it on, keep it), not alphabetical."""

USER_ERRORS: tuple[type[Exception], ...] = (CliffwatchError,)
"""Errors shown as one line and exit code 2, never a traceback: every exception
cliffwatch raises on purpose (a bad store, date, task class, setting, limit...)."""


def one_line_usage(message: str) -> str:
    """A usage error as one line: typer's pydantic wording ("Value error, ") dropped and
    a list of choices (click's "Choose from:" one per line) joined onto the line."""
    message = message.replace("Value error, ", "")
    return re.sub(r"\s*\n\s*", " ", message).strip()


class CliffwatchGroup(HelpTextGroup):
    """The app's command group: the one error boundary of the CLI.

    Usage errors (bad option values, unknown commands) and :data:`USER_ERRORS` raised by
    any command become one red line on stderr and exit code 2 (the same under
    ``typer.testing.CliRunner`` as in a real process).
    """

    def list_commands(self, ctx: Any) -> list[str]:
        """The commands in :data:`COMMAND_ORDER` (then any other, as registered)."""
        names = list(self.commands)
        return sorted(names, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER
                      else len(COMMAND_ORDER))

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
            message = one_line_usage(exc.format_message())
            ctx = getattr(exc, "ctx", None)
            if message and ctx is not None:
                message = f"{message} (see '{ctx.command_path} --help')"
            if message:  # empty when the help was shown instead (no arguments)
                error_line(message)
            code = exc.exit_code
        except typer.Abort:
            error_line("aborted")
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


def _print_version(wanted: bool) -> None:
    if wanted:
        from cliffwatch import __version__

        typer.echo(f"cliffwatch {__version__}")
        raise typer.Exit


@app.callback()
def _options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print cliffwatch's version and exit.")] = False,
) -> None:
    # The group's own options; each command's are its own (typer: a callback's docstring
    # would replace the group's help).
    del version


for _command in (
    orchestrate.demo, orchestrate.run, serve.serve, serve.ingest, fleet.watch,
    read.percentiles, read.runs, analysis.replay, analysis.whatif, read.findings,
    analysis.report, read.alerts, audit.audit, serve.dashboard, fleet.migrate, prune.prune,
):
    app.command(cls=CliffwatchCommand)(_command)
app.add_typer(read.incidents_app, name="incidents")


def main() -> None:
    """Console-script entry point (``cliffwatch = cliffwatch.cli:main``)."""
    app()
