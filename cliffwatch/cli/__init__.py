"""The ``cliffwatch`` command line: a small package that wires the layers together.

- :mod:`~cliffwatch.cli.app`: the typer app, the order of its commands, and the one error
  boundary: usage errors and every :class:`~cliffwatch.errors.CliffwatchError` become one
  red line on stderr and exit code 2, never a traceback.
- :mod:`~cliffwatch.cli.options`: the shared options (``--db``, ``--since``, ``--until``,
  ``--format``, ``--task-class``) and the store a command reads or writes.
- :mod:`~cliffwatch.cli.output`: the consoles, :func:`~cliffwatch.cli.output.render`
  (table, JSON or CSV), summary tables, the one-line error, the exit codes.
- commands, one module per group: :mod:`~cliffwatch.cli.read` (percentiles, runs,
  incidents and their triage, findings, alerts), :mod:`~cliffwatch.cli.orchestrate`
  (demo, run), :mod:`~cliffwatch.cli.analysis` (replay, whatif, report),
  :mod:`~cliffwatch.cli.serve` (serve, ingest, dashboard).

Exit codes: 0 success; 1 ``cliffwatch run`` finished without completing (breach or
failure), ``cliffwatch ingest`` left out spans or lines it could not read,
``alerts --retry`` had a delivery fail, or ``demo``, ``run``, ``ingest`` or ``serve``
could not store every span (each prints ``spans: W written, S spilled, L lost``); 2 bad
input (usage, a missing, foreign or damaged store, a bad date, an unknown task class, a
bad setting).

Imports: the command modules import typer, rich and cliffwatch's light modules (settings,
span conventions, the window parser, formatting) at the top; the data layer a command
calls (analytics and the store: polars, DuckDB, pyarrow; the orchestrator: litellm, the
OTel SDK) is imported inside that command, marked ``# lazy:``. So ``cliffwatch --help``
loads none of them (``python -m bench cli_help`` measures it) and a read command never
loads litellm (``tests/test_cli_imports.py``). Store reads come to polars through the Arrow
PyCapsule stream (``analytics.store_access.frame``), so ``percentiles``, ``runs``,
``incidents`` and ``alerts`` load no pyarrow either (``python -m bench cli_percentiles``).

Adding a command: write a function in the group's module taking ``db: DbOption`` (and
``fmt: FormatOption`` for tabular output), open the store with ``with
read_only_store(db) as con:``, call analytics, end with ``render(df, fmt)``; list it in
:mod:`~cliffwatch.cli.app`. The error boundary covers it with no more code.
"""

from __future__ import annotations

from cliffwatch.cli.app import app, main

__all__ = ["app", "main"]
