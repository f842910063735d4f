"""Opening the store: SQLite (WAL) embedded by default, PostgreSQL when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from keyless.base.errors import KeylessError


class StoreUrlError(KeylessError, ValueError):
    """The store URL cannot be used; the message says how to write one that can."""


def normalise_store_url(url: str) -> str:
    """Accept the URLs users paste (`postgresql://...`) and pick the psycopg 3 driver for them."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreUrlError(
            "the store URL is not a database URL; use sqlite:////path/keyless.db or "
            "postgresql://user@host:port/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
        raise StoreUrlError(
            f"the store URL uses {parsed.drivername!r}; Keyless stores data in SQLite "
            "(sqlite:///...) or PostgreSQL (postgresql://...)"
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; NORMAL sync is durable across process
    # crashes (not power loss), which is the usual WAL trade-off; busy_timeout makes several
    # server processes queue for the write lock instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_engine(url: str) -> Engine:
    url = normalise_store_url(url)
    if url.startswith("sqlite"):
        db_path = make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True
    )
