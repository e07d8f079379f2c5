"""Alembic environment: runs on the connection handed over by syncd.store.db.migrate."""

from alembic import context
from sqlalchemy import create_engine

from syncd.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # `alembic` CLI use: URL from -x url=... or alembic.ini
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    connection = create_engine(url).connect()

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
