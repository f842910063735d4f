"""Persistence: SQLAlchemy 2 models and Alembic migrations (keyless.store).

Import from the submodules (`keyless.store.engine`, `.migrate`, `.models`): this package
imports nothing itself, so CLI commands that never open a store start without SQLAlchemy.
"""
