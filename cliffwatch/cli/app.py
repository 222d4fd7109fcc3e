"""The ``cliffwatch`` typer app: its commands, in the order ``--help`` lists them, and
the one error boundary (:class:`CliffwatchGroup`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from cliffwatch.cli import analysis, audit, orchestrate, read, serve
from cliffwatch.cli.output import CliError, error_line
from cliffwatch.errors import CliffwatchError

USER_ERRORS: tuple[type[Exception], ...] = (CliffwatchError,)
"""Errors shown as one line and exit code 2, never a traceback: every exception
cliffwatch raises on purpose (a bad store, date, task class, setting, limit...)."""


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

for _command in (
    read.percentiles, read.runs, orchestrate.demo, orchestrate.run, serve.dashboard,
    serve.serve, serve.ingest, read.findings, read.alerts, analysis.replay, analysis.whatif,
    analysis.report, audit.audit,
):
    app.command()(_command)
app.add_typer(read.incidents_app, name="incidents")


def main() -> None:
    """Console-script entry point (``cliffwatch = cliffwatch.cli:main``)."""
    app()
