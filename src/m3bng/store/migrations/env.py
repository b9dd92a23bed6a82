"""Alembic environment: runs on a connection handed in by m3bng.store.migrate (async engines)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from m3bng.store.models import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `m3bng db upgrade`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
