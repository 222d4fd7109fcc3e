"""Render a :class:`analytics.report.Report` as HTML, Markdown, CSV, JSON or Parquet.

Formats (:func:`write_report` writes files; :func:`report_bytes` gives one file's bytes):

- ``html``: one self-contained file: tables, and the figures drawn by plotly.js, whose
  bundle is embedded once (``include_plotlyjs=True`` on the first figure), so it opens
  with no network.
- ``md``: GitHub-flavoured Markdown tables, to paste into a ticket (figures left out).
- ``json``: one file, ``{"meta": {...}, "tables": {name: [row, ...]}}``, ISO 8601 times,
  null for missing.
- ``csv`` / ``parquet``: one file per table, named ``<table>.csv`` / ``<table>.parquet``
  (:data:`analytics.report.REPORT_TABLES`): in a zip archive when the output path ends in
  ``.zip``, else in a folder at that path (created; files of the same names replaced).

Every string that comes from the data (task classes, models, incident details, notes: a
task class can hold markup) is escaped: HTML-escaped in HTML, HTML-escaped and
backslash-escaped for Markdown's own syntax in Markdown. Plotly escapes ``<``, ``>`` and
``/`` in the figure data it embeds.
"""

from __future__ import annotations

import html
import io
import math
import re
import zipfile
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from cliffwatch.analytics.errors import AnalyticsError
from cliffwatch.analytics.plain import csv_safe_frame, json_text, plain_rows
from cliffwatch.analytics.report import REPORT_FIGURES, REPORT_TABLES, Report, report_meta
from cliffwatch.analytics.report_format import ReportFormat
from cliffwatch.analytics.scalars import as_int
from cliffwatch.formatting import MISSING, NUMBER_DECIMALS, number, usd


class ReportWriteError(AnalyticsError):
    """A report cannot be written to the path given (one line naming it)."""


# --- cell formatting (shared by HTML and Markdown) ------------------------------------------


def format_cell(column: str, value: Any) -> str:
    """A cell as text: money and numbers by :mod:`cliffwatch.formatting` (``*_usd`` as
    money), percentages, ratios, times to the minute; ``-`` for missing. Not escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if column.endswith("_usd"):
            return usd(value)
        if column.endswith("_pct"):
            return f"{number(value, 1)}%"
        if column == "cliff_ratio":
            return f"{number(value, 1)}x"
        return number(value, 0 if column.endswith("_ms") else NUMBER_DECIMALS)
    if isinstance(value, int):
        return number(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _header(column: str) -> str:
    text = column.replace("_usd", " $").replace("_pct", " %").replace("_", " ")
    return text.strip()


def _rows(df: pl.DataFrame) -> Iterable[dict[str, Any]]:
    return df.iter_rows(named=True)


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
.meta, .note { color: #555; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
nav a { margin-right: 1rem; }
.wide { overflow-x: auto; max-width: 100%; }
td.num, td.time { white-space: nowrap; }
td.long { min-width: 22rem; }
.empty { color: #777; font-style: italic; }
"""


LONG_TEXT_CHARS = 40
"""A text column with a value longer than this gets a minimum width in HTML tables."""


def _html_table(df: pl.DataFrame) -> str:
    if df.is_empty():
        return '<p class="empty">none</p>'
    head = "".join(f"<th>{html.escape(_header(c))}</th>" for c in df.columns)
    # Numbers and times never wrap; a column of sentences (an incident's detail, a
    # finding's title) keeps room to read instead of folding into a tall narrow strip.
    css = {c: "num" for c in df.columns if df.schema[c].is_numeric()}
    css |= {c: "time" for c in df.columns if df.schema[c].is_temporal()}
    css |= {c: "long" for c in df.columns if df.schema[c] == pl.String
            and as_int(df[c].str.len_chars().max() or 0) > LONG_TEXT_CHARS}
    body = []
    for row in _rows(df):
        cells = "".join(
            f'<td{f" class={css[c]}" if c in css else ""}>'
            f"{html.escape(format_cell(c, row[c]))}</td>"
            for c in df.columns
        )
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _html_summary(df: pl.DataFrame) -> str:
    """The one-row summary as a two-column table."""
    if df.is_empty():
        return '<p class="empty">none</p>'
    row = df.row(0, named=True)
    cells = "".join(
        f"<tr><th>{html.escape(_header(c))}</th>"
        f"<td>{html.escape(format_cell(c, row[c]))}</td></tr>"
        for c in df.columns
    )
    return f"<table>{cells}</table>"


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (plotly.js embedded once).

    Returns:
        The HTML text (UTF-8).
    """
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        f'<p class="meta">Runs started {esc(report.describe_window())}'
        + (f" · task class {esc(report.task_class)}" if report.task_class else "")
        + f" · generated {esc(report.generated_at.strftime('%Y-%m-%d %H:%M'))} UTC</p>",
        "<nav>" + "".join(
            f'<a href="#{name}">{esc(heading)}</a>' for name, heading in REPORT_TABLES.items()
            if name in report.tables
        ) + "</nav>",
    ]
    figure_after = {"percentiles": ("distribution", "trend"), "whatif": ("whatif",)}
    bundled = False
    for name, df in report.tables.items():
        parts.append(f'<section id="{esc(name)}"><h2>{esc(REPORT_TABLES.get(name, name))}</h2>')
        if name in report.notes:
            parts.append(f'<p class="note">{esc(report.notes[name])}</p>')
        parts.append(_html_summary(df) if name == "summary" else _html_table(df))
        for fig_name in figure_after.get(name, ()):
            fig = report.figures.get(fig_name)
            if fig is None:
                continue
            parts.append(f"<h3>{esc(REPORT_FIGURES[fig_name])}</h3>")
            note = report.notes.get(f"figure_{fig_name}")
            if note:
                parts.append(f'<p class="note">{esc(note)}</p>')
            parts.append(
                fig.to_html(
                    full_html=False,
                    include_plotlyjs=not bundled,
                    div_id=f"figure-{fig_name}",
                    config={"displaylogo": False, "responsive": True},
                )
            )
            bundled = True
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --- Markdown ----------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")


def md_escape(text: str) -> str:
    """``text`` safe in a Markdown table cell or line: ``& < >`` as HTML entities, the
    characters Markdown gives meaning inline (``\\ ` * _ [ ] | ~ $``) backslash-escaped,
    line breaks as spaces."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def _md_table(df: pl.DataFrame) -> str:
    if df.is_empty():
        return "_none_"
    lines = [
        "| " + " | ".join(md_escape(_header(c)) for c in df.columns) + " |",
        "| " + " | ".join("---:" if df.schema[c].is_numeric() else "---"
                          for c in df.columns) + " |",
    ]
    for row in _rows(df):
        lines.append("| " + " | ".join(md_escape(format_cell(c, row[c])) for c in df.columns)
                     + " |")
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown (tables only; the HTML report has charts)."""
    meta = f"Runs started {report.describe_window()}"
    if report.task_class:
        meta += f" · task class {report.task_class}"
    meta += f" · generated {report.generated_at:%Y-%m-%d %H:%M} UTC"
    parts = [f"# {md_escape(report.title)}", "", md_escape(meta), ""]
    for name, df in report.tables.items():
        parts += [f"## {md_escape(REPORT_TABLES.get(name, name))}", ""]
        if name in report.notes:
            parts += [f"_{md_escape(report.notes[name])}_", ""]
        if name == "summary" and df.height == 1:
            row = df.row(0, named=True)
            parts += ["| figure | value |", "| --- | --- |"]
            parts += [f"| {md_escape(_header(c))} | {md_escape(format_cell(c, row[c]))} |"
                      for c in df.columns]
        else:
            parts.append(_md_table(df))
        parts.append("")
    return "\n".join(parts)


# --- tables: JSON, CSV, Parquet --------------------------------------------------------------


def render_json(report: Report) -> str:
    """``{"meta": ..., "tables": {name: [row, ...]}}`` as JSON text."""
    tables = {name: plain_rows(df) for name, df in report.tables.items()}
    return json_text({"meta": report_meta(report), "tables": tables})


def _table_bytes(df: pl.DataFrame, fmt: ReportFormat) -> bytes:
    buffer = io.BytesIO()
    if fmt is ReportFormat.CSV:
        csv_safe_frame(df).write_csv(buffer)
    else:
        df.write_parquet(buffer)
    return buffer.getvalue()


_TEXT_RENDERERS = {ReportFormat.HTML: render_html, ReportFormat.MD: render_markdown,
                   ReportFormat.JSON: render_json}


def report_bytes(report: Report, fmt: ReportFormat | str) -> bytes:
    """``report`` in ``fmt`` as the bytes of one file, to download or send.

    Args:
        report: the report.
        fmt: html, md or json (UTF-8 text); csv or parquet: a zip archive of one file per
            table, named ``<table>.csv`` / ``<table>.parquet`` (what :func:`write_report`
            writes to a ``.zip`` path).

    Returns:
        The file's bytes.

    Raises:
        ValueError: ``fmt`` is not a report format.
    """
    fmt = ReportFormat(fmt)
    if fmt in _TEXT_RENDERERS:
        return _TEXT_RENDERERS[fmt](report).encode("utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, df in report.tables.items():
            archive.writestr(f"{name}.{fmt.value}", _table_bytes(df, fmt))
    return buffer.getvalue()


def check_destination(path: str | Path, *, make_parents: bool = False) -> None:
    """Check that a report can go to ``path`` before it is built: its folder must exist
    unless ``make_parents`` (a typo in ``-o`` never creates a tree of folders silently).

    Raises:
        ReportWriteError: the folder ``path`` goes in does not exist, or is a file.
    """
    parent = Path(path).parent
    if make_parents or parent.is_dir():
        return
    if parent.exists():
        raise ReportWriteError(f"cannot write {path}: {parent} is not a folder")
    raise ReportWriteError(
        f"folder {parent} does not exist: create it, or add --mkdir to create it"
    )


def write_report(report: Report, fmt: ReportFormat | str, path: str | Path, *,
                 make_parents: bool = False) -> list[Path]:
    """Write ``report`` in ``fmt`` to ``path`` (see the module docstring for the layout).

    Args:
        report: the report.
        fmt: html, md, json, csv or parquet.
        path: the output file; for csv/parquet a ``.zip`` file or a folder.
        make_parents: create the missing folders above ``path``; without it they must
            exist (:func:`check_destination`).

    Returns:
        The files written (the zip or folder's files for csv/parquet).

    Raises:
        ReportWriteError: the path cannot be written (a folder where a file is wanted,
            or the reverse, a missing folder without ``make_parents``, or no permission).
        ValueError: ``fmt`` is not a report format.
    """
    fmt = ReportFormat(fmt)
    out = Path(path)
    check_destination(out, make_parents=make_parents)
    try:
        if fmt in _TEXT_RENDERERS and out.is_dir():
            raise ReportWriteError(f"{out} is a folder: give a file name for a {fmt} report")
        if fmt in _TEXT_RENDERERS or out.suffix.lower() == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)  # exists unless make_parents
            out.write_bytes(report_bytes(report, fmt))
            return [out]
        if out.exists() and not out.is_dir():
            raise ReportWriteError(
                f"{out} is a file: give a folder, or a .zip path, for {fmt} tables"
            )
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, df in report.tables.items():
            target = out / f"{name}.{fmt.value}"
            target.write_bytes(_table_bytes(df, fmt))
            written.append(target)
        return written
    except OSError as exc:
        raise ReportWriteError(f"cannot write {out}: {exc.strerror or exc}") from None
