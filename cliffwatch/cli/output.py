"""What the commands print: the consoles, :func:`render` (a table, JSON or CSV: the one
output path of every tabular command), summary tables, and the one-line error.

Money and numbers in tables are written by :mod:`cliffwatch.formatting`; JSON and CSV
carry the values as they are.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import unicodedata
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cliffwatch.cli.options import OutputFormat
from cliffwatch.formatting import csv_cell, number, usd

if TYPE_CHECKING:
    from pathlib import Path

    import polars as pl

    from cliffwatch.analytics.window import Window
    from cliffwatch.telemetry.write_ledger import LedgerCounts

EXIT_USAGE = 2
"""Exit code of bad input: usage, a missing or foreign store, a bad date, an unknown
task class, a bad setting."""

EXIT_NOT_COMPLETED = 1
"""Exit code of a command that ran but did not complete: ``cliffwatch run`` without
status ok, ``ingest`` that left spans or lines out, ``alerts --retry`` with a failure,
and ``demo``, ``run``, ``ingest`` or ``serve`` when spans were lost or are spilled for a
store that failed."""


class CliError(typer.TyperException):
    """A bad request found by a command: printed as one line, exit code 2."""

    exit_code = EXIT_USAGE


def error_line(message: str) -> None:
    """Print ``error: <first line of message>`` in red on stderr, as one line."""
    # soft_wrap: the message stays one line whatever the terminal width.
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    Console(stderr=True).print(Text("error: ", style="bold red") + Text(first, style="red"),
                               soft_wrap=True)


def spans_verdict(spans: LedgerCounts, store: Path | str, *, lost_label: str = "lost",
                  stderr: bool = False) -> int:
    """Print what became of a command's spans; its exit code for them.

    Prints ``spans: W written, S spilled, L lost`` (``lost_label`` names the last); then,
    as a one-line error, the loss, or spilled spans still waiting because the store
    failed (a busy store is no error: the next write loads them).

    Args:
        spans: the command's part of :data:`telemetry.write_ledger.LEDGER` (the
            snapshot after its work less the one before).
        store: the store written (a DuckDB file's spill files are looked for; a
            ClickHouse store URL has none).
        lost_label: word for spans not stored ("lost"; the receiver: "not stored").
        stderr: print the count line on stderr (commands whose stdout is a log).

    Returns:
        0, or :data:`EXIT_NOT_COMPLETED` when spans were lost or wait in spill files of
        a failed store.
    """
    from cliffwatch.telemetry.spill import pending_spills, spill_dir  # lazy: pyarrow

    say(spans.summary(lost_label), stderr=stderr)
    if spans.lost:
        error_line(f"{spans.lost + spans.dropped:,} spans {lost_label}: "
                   f"{spans.last_error or 'see the log'}")
        return EXIT_NOT_COMPLETED
    if spans.dropped:
        error_line(f"{spans.dropped:,} spans {lost_label}: dropped before export "
                   "(the tracing queue was full or shut down)")
        return EXIT_NOT_COMPLETED
    if spans.store_failed and isinstance(store, Path) and pending_spills(store):
        error_line(f"{spans.store_failed:,} spans not in the store ({spans.last_error}): "
                   f"they wait in {spill_dir(store)} for the next write that succeeds")
        return EXIT_NOT_COMPLETED
    return 0


def scope_text(window: Window, task_class: str | None = None) -> str:
    """Where a command looked, for its empty-result line: ``in the store`` (no
    ``--since``/``--until``) or ``in this window``, after ``of class C`` when one was
    given."""
    of = f"of class {task_class} " if task_class else ""
    return of + ("in the store" if window.since is None and window.until is None
                 else "in this window")


def say(message: str, *, stderr: bool = False, style: str | None = None,
        wrap: bool = False) -> None:
    """Print one line of plain text (no markup, no highlighting, control characters
    escaped); never wrapped unless ``wrap`` (then at spaces, to the terminal's width)."""
    Console(stderr=stderr).print(shown_text(message), style=style, soft_wrap=not wrap,
                                 highlight=False, markup=False)


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
    "saving_pct": "saving %",
    "index": "#",
    "unpriced_calls": "unpriced",
    "offset_ms": "at ms",
    "duration_ms": "dur ms",
    "input_tokens": "in tok",
    "output_tokens": "out tok",
}
"""Short table headers (JSON and CSV keep the column names). A header is never cut: a
column is at least as wide as its whole header, so keep headers short."""

PIPED_TABLE_WIDTH = 200
"""Width of a table printed to a pipe or file (no terminal to fit)."""

SHORT_ID_CHARS = 12
"""A table shows run ids cut to this many characters (a unique prefix in practice);
JSON and CSV carry them whole."""


def stdout_console() -> Console:
    """A stdout console; :data:`PIPED_TABLE_WIDTH` wide when piped or captured (rich
    would fold tables to 80 columns) unless ``COLUMNS`` says otherwise."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPED_TABLE_WIDTH)
    return console


WIDE_TABLE_COLUMNS = 100
"""Below this terminal width a table drops its secondary columns (``render(narrow_drop=)``)."""

TEXT_MIN_CHARS = 8
"""The narrowest a text column gets before columns are hidden (text past its width is
cut with an ellipsis; numbers, money, ids and times are never cut or wrapped)."""

WRAP_MIN_CHARS = 24
"""The narrowest a wrapped column gets (``render(wrap_columns=)``) before it is hidden and
named: narrower, a sentence reads a word a line."""

ID_COLUMNS = frozenset({"run_id", "incident_id", "trace_id", "span_id"})
"""Text columns that are ids: shown whole (never cut or wrapped), like numbers."""

ENUM_COLUMNS = frozenset({"status", "breach", "kind", "outcome", "cf_outcome", "difficulty",
                          "cf_basis", "section", "severity", "now"})
"""Text columns holding a few short enumerated values (a run's status, a span's kind):
shown whole (never cut), like ids."""


def shown_text(text: str) -> str:
    """``text`` safe for a terminal: control and format characters (ESC, CR, newline, tab,
    bidi overrides...) written as escapes (``\\x1b``, ``\\n``, ``\\u202e``), never raw."""
    if text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in text
    )


def _header(column: str) -> str:
    if column in TABLE_HEADERS:
        return TABLE_HEADERS[column]
    if column.endswith("_usd"):
        return column.removesuffix("_usd").replace("_", " ") + " $"
    return column.replace("_", " ")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(column: str, value: Any) -> Text:
    if _missing(value):
        return Text("-", style="dim")
    if isinstance(value, float):
        if column.endswith(("_usd", " $")):  # " $": a money column renamed for a table
            return Text(usd(value))
        return Text(number(value, 0 if column.endswith("_ms") else 2))
    if isinstance(value, int) and not isinstance(value, bool):
        return Text(number(value))
    if isinstance(value, datetime):
        return Text(value.strftime("%Y-%m-%d %H:%M"))
    if column == "run_id":
        return Text(shown_text(str(value)[:SHORT_ID_CHARS]))
    return Text(shown_text(str(value)))


def _is_text_column(df: pl.DataFrame, column: str) -> bool:
    """A column that may be cut with an ellipsis: text that is not an id, a time or money."""
    import polars as pl  # lazy: only a table needs it

    return (df.schema[column] == pl.String and column not in ID_COLUMNS | ENUM_COLUMNS
            and not column.endswith(("_usd", " $")))


def _fit_columns(
    columns: list[str], need: dict[str, int], text: dict[str, int], width: int,
    blank: frozenset[str] = frozenset(),
) -> tuple[list[str], dict[str, int]]:
    """Which columns fit ``width`` and how wide each is: every other column at its full
    width (``need``), text columns (``text``: column -> narrowest width) sharing what is
    left. When the whole table does not fit, the ``blank`` columns (no value in any row)
    are hidden first; then trailing columns until the rest fit (the first always stays)."""
    def floor(c: str) -> int:
        return min(need[c], text[c]) if c in text else need[c]

    def overhead(n: int) -> int:  # padding 1 each side, one divider between columns
        return 3 * n - 1

    shown = list(columns)
    if sum(need[c] for c in shown) + overhead(len(shown)) > width:
        shown = [c for i, c in enumerate(shown) if i == 0 or c not in blank]
    while len(shown) > 1 and sum(map(floor, shown)) + overhead(len(shown)) > width:
        shown.pop()
    widths = {c: floor(c) for c in shown}
    spare = width - sum(widths.values()) - overhead(len(shown))
    for c in shown:
        if c in text and spare > 0:
            extra = min(spare, need[c] - widths[c])
            widths[c] += extra
            spare -= extra
    return shown, widths


def json_out(data: Any) -> None:
    """Print ``data`` as indented JSON: the one way a command prints JSON
    (:func:`cliffwatch.analytics.plain.json_text`: datetimes as ISO 8601 UTC ending in
    ``Z``, NaN as null). Hand it datetime objects, never ISO text of your own."""
    from cliffwatch.analytics.plain import json_text  # lazy: polars

    sys.stdout.write(json_text(data) + "\n")


def render(
    df: pl.DataFrame,
    fmt: OutputFormat,
    *,
    title: str | None = None,
    table_columns: Sequence[str] | None = None,
    json_columns: Sequence[str] = (),
    narrow_drop: Sequence[str] = (),
    wrap_columns: Sequence[str] = (),
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
            (:data:`SHORT_ID_CHARS`) and times (to the minute), and writes ``*_usd``
            columns as money and other numbers with :mod:`cliffwatch.formatting`.
        json_columns: columns holding JSON text, embedded as JSON values in ``json``
            output (CSV and tables show the text).
        narrow_drop: secondary columns a table leaves out on a terminal narrower than
            :data:`WIDE_TABLE_COLUMNS`. A table always fits the terminal: numbers, money,
            ids, times, headers and enumerated values (:data:`ENUM_COLUMNS`) are never
            wrapped or cut; columns with no value in any row are hidden first, other
            text columns are cut with an ellipsis, and columns that still do not fit
            are hidden from the right. A dim line under
            the table names every column left out, these and the ``narrow_drop`` ones
            (JSON and CSV carry them).
        wrap_columns: text columns holding money or ids among words (a replay's
            comparison, an incident's detail): wrapped at spaces, never cut, no word ever
            split; hidden (and named) below :data:`WRAP_MIN_CHARS` wide.
        empty: the line a table prints when there are no rows (JSON prints ``[]``, CSV
            the header only).
    """
    from cliffwatch.analytics.plain import plain_rows  # lazy: polars

    rows = plain_rows(df)
    if fmt is OutputFormat.JSON:
        for row in rows:
            for column in json_columns:
                if row[column] is not None:
                    row[column] = json.loads(row[column])
        json_out(rows)
        return
    if fmt is OutputFormat.CSV:
        # CRLF rows (RFC 4180): a CR or LF inside a cell is then quoted, not a broken row.
        writer = csv.DictWriter(sys.stdout, fieldnames=df.columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
        return
    console = stdout_console()
    if df.is_empty():
        console.print(Text(empty, style="yellow"))
        return
    asked = list(table_columns) if table_columns else df.columns
    columns = asked
    if console.width < WIDE_TABLE_COLUMNS:
        columns = [c for c in asked if c not in narrow_drop]
    values = {c: df[c].to_list() for c in columns}
    cells = {c: [_cell(c, v) for v in values[c]] for c in columns}
    # Headers are never cut: every column is at least as wide as its whole header.
    need = {c: max([cell.cell_len for cell in cells[c]] + [len(_header(c))]) for c in columns}
    text = {c: max(TEXT_MIN_CHARS, len(_header(c))) for c in columns
            if _is_text_column(df, c)}
    for c in wrap_columns:
        if c in text:
            text[c] = max([len(_header(c)), min(WRAP_MIN_CHARS, need[c])]
                          + [len(word) for cell in cells[c] for word in cell.plain.split()])
    blank = frozenset(c for c in columns if all(map(_missing, values[c])))
    shown, widths = _fit_columns(columns, need, text, console.width, blank)
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False)
    for column in shown:
        numeric = df.schema[column].is_numeric()
        table.add_column(_header(column), justify="right" if numeric else "left",
                         width=widths[column], no_wrap=column not in wrap_columns,
                         overflow="ellipsis" if column in text else "fold")
    for i in range(len(df)):
        table.add_row(*(cells[c][i] for c in shown))
    console.print(table)
    # Every column asked for and not shown is named: the secondary ones left out below
    # WIDE_TABLE_COLUMNS, the empty ones and those hidden to fit.
    hidden = [_header(c) for c in asked if c not in shown]
    if hidden:
        say(f"hidden at this width: {', '.join(hidden)} (a wider terminal or --format json "
            "shows them)", style="dim", wrap=True)


def facts_table(facts: Sequence[tuple[str, str]], *, title: str | None = None) -> Table:
    """A two-column table of label / text rows, with no header (a run's or a demo's
    summary); the text is shown as it is (no markup)."""
    table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in facts:
        table.add_row(label, Text(shown_text(value)))
    return table


def summary_table(summary: Any, *, leave_out: Collection[str] = ()) -> Table:
    """:func:`facts_table` of a dataclass's fields but ``leave_out`` (dicts as "key n,
    ...", times to the minute, ``*_usd`` as money, ``*_s`` as seconds); the unit is said
    once, by the value (``total_cost_usd`` is ``total cost  $7.30``, ``elapsed_s`` is
    ``elapsed  3.1 s``)."""
    facts = []
    for key, value in dataclasses.asdict(summary).items():
        if key in leave_out:
            continue
        label = key
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, datetime):
            shown = value.strftime("%Y-%m-%d %H:%M %Z").strip()
        elif isinstance(value, float) and key.endswith("_usd"):
            label, shown = key.removesuffix("_usd"), usd(value)
        elif isinstance(value, float) and key.endswith("_s"):
            label, shown = key.removesuffix("_s"), f"{value} s"
        else:
            shown = str(value)
        facts.append((label.replace("_", " "), shown))
    return facts_table(facts)
