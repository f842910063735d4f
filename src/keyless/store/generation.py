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


def read_generation(connection: Connection, name: str = GENERATION) -> int:
    value = connection.execute(select(StoreState.value).where(StoreState.name == name)).scalar()
    return int(value or 0)
