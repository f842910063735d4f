"""Alembic environment: the engine comes from Keyless, never from an ini file."""

from __future__ import annotations

from alembic import context

from keyless.store.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    context.run_migrations()
