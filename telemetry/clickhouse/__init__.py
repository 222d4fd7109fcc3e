"""The ClickHouse backend of the store (issue 10): a ClickHouse server over HTTP
(``clickhouse://``, through clickhouse-connect) or the same engine embedded (``chdb://``).

- :mod:`.url`: which backend a ``--db`` names (:func:`~.url.parse_store_url`);
- :mod:`.client`: one small client over both (:func:`~.client.connect`);
- :mod:`.tables`: cliffwatch's own tables there (``cliffwatch_runs``, ...).

The packages are optional: ``pip install 'cliffwatch[clickhouse]'``.
"""


from cliffwatch.telemetry.store import is_engine_connection

__all__ = ["is_engine_connection"]
