"""Alembic environment for profstore's DuckDB file.

duckdb-engine has no Alembic implementation of its own, so we declare one (transactional DDL:
DuckDB rolls back a failed migration as a whole). The URL comes from ``-x url=…`` or from
``service.store.migrate``, which passes the connection in directly.
"""

from __future__ import annotations

from alembic import context
from alembic.ddl.impl import DefaultImpl
from sqlalchemy import create_engine


class AlembicDuckDBImpl(DefaultImpl):
    __dialect__ = "duckdb"
    transactional_ddl = True


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        # A DuckLake has no PRIMARY KEY: Alembic's version table goes without its own there.
        lake = bool(context.config.attributes.get("lake"))
        context.configure(connection=connection, target_metadata=None, version_table_pk=not lake)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("profstore migrations run online only: profstore migrate --data-dir DIR")
run_migrations_online()
