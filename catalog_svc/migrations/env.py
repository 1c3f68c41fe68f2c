"""Alembic environment: runs on the connection that catalog_svc.migrate hands over."""

from alembic import context

from catalog_svc.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
