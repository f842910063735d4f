"""The directory generation: one integer that every cache in every server process watches.

Any write that could change who gets a token (directory, credentials, keys, tenants) bumps it
in the same transaction. A process compares it with the value its caches were built at, and
rebuilds them when it moved, so replicas sharing a store never serve from stale caches.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from keyless.store.models import StoreState

GENERATION = "directory_generation"
# Role definitions and assignments: what keyless.access rebuilds its decision index from.
ACCESS_GENERATION = "access_generation"


def bump_generation(session: Session, name: str = GENERATION) -> None:
    """Move a generation counter; `access_generation` is kept apart so role changes do not
    invalidate the token service's caches, nor directory changes the custom-role index."""
    result = session.execute(
        update(StoreState).where(StoreState.name == name).values(value=StoreState.value + 1)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.add(StoreState(name=name, value=1))
        session.flush()


# Read on every token request and every management call, so it skips SQLAlchemy's statement
# compilation and cache-key work (several times the query's own cost). The names are this
# module's constants, never input, and plain SQL reads the same on SQLite and PostgreSQL.
_READ_BOTH = (
    "SELECT name, value FROM store_state "
    "WHERE name IN ('directory_generation', 'access_generation')"
)


def read_generations(connection: Connection) -> tuple[int, int]:
    """Both counters in one statement: (directory generation, access generation)."""
    # On the driver's own cursor: the statement has no parameters, so it reads the same on
    # sqlite3 and psycopg, and SQLAlchemy's result machinery would cost more than the query.
    # The pool's reset on return ends the transaction psycopg opens for it.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_READ_BOTH)
        values: dict[str, int] = dict(cursor.fetchall())
    finally:
        cursor.close()
    return int(values.get(GENERATION) or 0), int(values.get(ACCESS_GENERATION) or 0)


def read_generation(connection: Connection, name: str = GENERATION) -> int:
    value = connection.execute(select(StoreState.value).where(StoreState.name == name)).scalar()
    return int(value or 0)
