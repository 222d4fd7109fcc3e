"""The write side: OpenTelemetry set-up, span conventions, the DuckDB store and exporter.

telemetry never imports analytics, orchestrator or dashboard.
"""
