"""The ClickHouse interface (issue 10): store URLs, the client on chDB, cliffwatch's tables."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from cliffwatch.telemetry.clickhouse.client import ClickHouseError, connect
from cliffwatch.telemetry.clickhouse.tables import TABLES, columns, ensure_tables
from cliffwatch.telemetry.clickhouse.url import (
    StoreURL,
    StoreURLError,
    is_engine_url,
    parse_store_url,
)
from cliffwatch.telemetry.store import StoreError

pytest.importorskip("chdb")


def test_a_path_is_duckdb_and_engine_urls_parse() -> None:
    assert parse_store_url("data/x.duckdb") == StoreURL(kind="duckdb", path=Path("data/x.duckdb"))
    assert not is_engine_url("data/x.duckdb")
    assert is_engine_url("chdb:///tmp/x") and is_engine_url("ClickHouse://h/db")

    server = parse_store_url("clickhouse://ann:s%40cret@ch.example:9000/fleet?traces_table=tr")
    assert (server.kind, server.host, server.port, server.user, server.password) == (
        "clickhouse", "ch.example", 9000, "ann", "s@cret")
    assert (server.database, server.traces_table, server.secure) == ("fleet", "tr", False)
    assert "s@cret" not in str(server) and "cret" not in str(server)

    default = parse_store_url("clickhouses://ch.example")
    assert (default.port, default.user, default.database, default.traces_table) == (
        8443, "default", "default", "otel_traces")

    assert parse_store_url("chdb:///abs/dir").path == Path("/abs/dir")
    assert parse_store_url("chdb://rel/dir").path == Path("rel/dir")


@pytest.mark.parametrize("bad", [
    "clickhouse:///db",                        # no host
    "clickhouse://h:99999/db",                 # port out of range
    "clickhouse://h/db;drop",                  # database not an identifier
    "clickhouse://h/db?traces_table=a.b",      # table not an identifier
    "clickhouse://h/db?table=x",               # unknown parameter
    "chdb://",                                 # no folder
])
def test_bad_urls_raise_one_line_store_errors(bad: str) -> None:
    with pytest.raises(StoreURLError) as caught:
        parse_store_url(bad)
    assert isinstance(caught.value, StoreError)
    assert "\n" not in str(caught.value)


def test_chdb_tables_round_trip_and_replace_by_key(tmp_path: Path) -> None:
    url = parse_store_url(f"chdb://{tmp_path}/ch")
    with connect(url) as client:
        ensure_tables(client)
        ensure_tables(client)  # idempotent
        names = set(client.query_arrow("SELECT name FROM system.tables "
                                       "WHERE database = currentDatabase()")["name"].to_pylist())
        assert set(TABLES.values()) <= names
        described = client.query_arrow("DESCRIBE TABLE cliffwatch_runs").to_pylist()
        assert [(r["name"], r["type"]) for r in described] == list(columns("runs"))

        row = {"key": ["schema_version", "k2"], "value": ["3", "a"]}
        client.insert_arrow("cliffwatch_meta", pa.table(row))
        client.insert_arrow("cliffwatch_meta", pa.table({"key": ["k2"], "value": ["b"]}))
        got = client.query_arrow("SELECT key, value FROM cliffwatch_meta FINAL ORDER BY key")
        assert got.to_pylist() == [{"key": "k2", "value": "b"},
                                   {"key": "schema_version", "value": "3"}]

        when = datetime(2026, 11, 30, 12, 0, 0, 123456)
        client.insert_arrow("cliffwatch_class_p50", pa.table({
            "task_class": ["qa"], "p50_usd": [None], "class_runs": [3],
            "runs_since": [1], "refreshed_at": pa.array([when], pa.timestamp("us")),
        }))
        back = client.query_arrow("SELECT * FROM cliffwatch_class_p50 FINAL").to_pylist()[0]
        assert back["p50_usd"] is None
        assert back["refreshed_at"].replace(tzinfo=None) == when  # naive UTC kept exactly

        client.command("INSERT INTO cliffwatch_meta SELECT 'k3', 'c'")
        assert client.query_arrow("SELECT count() AS n FROM cliffwatch_meta FINAL")[
            "n"].to_pylist() == [3]

        with pytest.raises(ClickHouseError) as caught:
            client.query_arrow("SELECT * FROM no_such_table")
        assert "\n" not in str(caught.value) and "no_such_table" in str(caught.value)


def test_chdb_quantile_exact_inclusive_is_numpy_linear(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    values = [0.5, 3.0, 0.25, 7.0, 1.0, 1.0, 12.5]
    with connect(parse_store_url(f"chdb://{tmp_path}/q")) as client:
        got = client.query_arrow(
            "SELECT quantilesExactInclusive(0.5, 0.95, 0.99)(x) AS q "
            f"FROM values('x Float64', {', '.join(map(str, values))})")["q"].to_pylist()[0]
    assert got == pytest.approx(np.quantile(values, [0.5, 0.95, 0.99], method="linear"),
                                rel=1e-12)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [["percentiles"], ["watch", "--once"], ["migrate"]],
                         ids=lambda c: c[0])
def test_an_unreachable_server_is_one_line_and_no_driver_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, command: list[str]
) -> None:
    import logging

    from typer.testing import CliRunner

    from cliffwatch.cli import app
    from cliffwatch.telemetry.testing import make_runs_costing
    from cliffwatch.telemetry.write_pipeline import write_spans

    pytest.importorskip("clickhouse_connect")
    port = _closed_port()
    url = f"clickhouse://nobody@127.0.0.1:{port}/db"
    if command == ["migrate"]:
        source = tmp_path / "s.duckdb"
        write_spans(source, make_runs_costing([0.01], seed=1))
        args = ["migrate", "--from", str(source), "--to", url]
    else:
        args = [*command, "--db", url]
    caplog.set_level(logging.DEBUG, logger="clickhouse_connect")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: cannot reach ClickHouse at 127.0.0.1:{port}: "
                                     "connection refused")
    assert not [r for r in caplog.records
                if r.name.startswith("clickhouse_connect") and r.levelno >= logging.WARNING]
    # Quieted only while cliffwatch called the driver: the application's level is back.
    assert logging.getLogger("clickhouse_connect").level == logging.DEBUG
