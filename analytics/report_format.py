"""The formats a report can be written in, in a module of their own: the CLI offers them
as ``cliffwatch report --format`` choices without loading the renderers
(:mod:`analytics.report_render`: polars, plotly, the store)."""

from __future__ import annotations

from enum import StrEnum


class ReportFormat(StrEnum):
    """Output formats of a report (:func:`analytics.report_render.write_report`)."""

    HTML = "html"
    MD = "md"
    CSV = "csv"
    JSON = "json"
    PARQUET = "parquet"
