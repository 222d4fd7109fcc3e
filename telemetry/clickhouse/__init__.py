"""The ClickHouse backend of the store (issue 10): a ClickHouse server over HTTP
(``clickhouse://``, through clickhouse-connect) or the same engine embedded (``chdb://``).

- :mod:`.url`: which backend a ``--db`` names (:func:`~.url.parse_store_url`);
- :mod:`.client`: one small client over both (:func:`~.client.connect`);
- :mod:`.tables`: cliffwatch's own tables there (``cliffwatch_runs``, ...).

The packages are optional: ``pip install 'cliffwatch[clickhouse]'``.
"""


def is_engine_connection(con: object) -> bool:
    """Whether ``con`` is a ClickHouse store's connection
    (:class:`.connection.EngineConnection`), not DuckDB's. Imports nothing, so the DuckDB
    path pays nothing for it."""
    return getattr(con, "is_clickhouse", False) is True
