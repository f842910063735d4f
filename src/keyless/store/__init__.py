"""Persistence: SQLAlchemy 2 models and Alembic migrations (keyless.store)."""

from keyless.store.engine import StoreUrlError, default_store_url, open_engine
from keyless.store.migrate import upgrade

__all__ = ["StoreUrlError", "default_store_url", "open_engine", "upgrade"]
