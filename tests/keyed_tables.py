"""Test helper: give a store's table the primary key an older schema version had."""

from __future__ import annotations

import duckdb


def rebuild_keyed(con: duckdb.DuckDBPyConnection, table: str, ddl_template: str,
                  alter_columns: tuple[tuple[str, str], ...], key: str) -> None:
    """Rebuild ``table`` from ``ddl_template`` (its ``{table}`` placeholder) and
    ``alter_columns`` with ``PRIMARY KEY (key)``, every row kept."""
    keyed = ddl_template.format(table=f"{table}_keyed").rstrip().removesuffix(")")
    con.execute(keyed + f", PRIMARY KEY ({key}))")
    for name, sql_type in alter_columns:
        con.execute(f"ALTER TABLE {table}_keyed ADD COLUMN {name} {sql_type}")
    con.execute(f"INSERT INTO {table}_keyed BY NAME SELECT * FROM {table}")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE {table}_keyed RENAME TO {table}")
