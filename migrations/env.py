"""Alembic environment. mdl runs migrations programmatically (registry.db), passing its own connection."""
from __future__ import annotations

from alembic import context

from mdl.registry.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` CLI use: build an engine from the ini url
        from sqlalchemy import create_engine

        with create_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
            _run(conn)
    else:
        _run(connection)


def _run(connection) -> None:
    # render_as_batch: SQLite can only ALTER by copying tables; batch mode does that for us.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("mdl migrations run online only (mdl init / mdl db upgrade)")
run_migrations_online()
