"""One write transaction, run again when a concurrent writer got there first.

Handlers read, decide, then write: "is there a secret named X? no: insert it". Two requests
doing that at once both see nothing and both insert; the store's unique constraint lets one
commit and refuses the other. Instead of guarding every such site with its own lock or
upsert, every request pipeline runs its handler through `run_write`: when the store refuses
the commit for a write conflict (a unique or primary key taken meanwhile, a deadlock or
serialization victim, SQLite's lock wait running out), the whole transaction is rolled back
and the handler runs again from the start. The second run sees the row the other writer
committed and takes the path for an existing row (a new version of the secret, 200 instead
of 201, or the 409 that a real duplicate deserves). The constraint decides; nobody checks
and hopes.

A retry repeats everything the handler did, so a handler that acts outside the transaction
(issues a token with its own audit commit, connects to a database: a connection's `validate`,
an app's `identityToken`) must not write in it: with no write of its own it can never lose a
write conflict, so it never runs twice. Every other handler of the management API, the
directory API and the vault only touches the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

T = TypeVar("T")

# A conflict needs one more run to see the winner's row; more attempts cover a burst of
# writers where a run loses again to a third (a row deleted and re-created meanwhile).
ATTEMPTS = 8
logger = logging.getLogger("keyless.store")

# SQLSTATEs (PostgreSQL) and SQLite error names that mean "another transaction won".
_PG_CONFLICTS = frozenset({"23505", "40001", "40P01"})
_SQLITE_CONFLICTS = frozenset(
    {
        "SQLITE_CONSTRAINT_UNIQUE",
        "SQLITE_CONSTRAINT_PRIMARYKEY",
        "SQLITE_BUSY",
        "SQLITE_BUSY_SNAPSHOT",
        "SQLITE_LOCKED",
    }
)


def is_write_conflict(exc: BaseException) -> bool:
    """Whether the store refused a statement because a concurrent transaction won, so that
    running the same work again can succeed (not a bad value, which would fail again)."""
    if not isinstance(exc, IntegrityError | OperationalError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _PG_CONFLICTS
    name = getattr(orig, "sqlite_errorname", None)
    if name is not None:
        return name in _SQLITE_CONFLICTS
    text = str(orig)
    return "UNIQUE constraint failed" in text or "database is locked" in text


def run_write(engine: Engine, work: Callable[[Session], T], attempts: int = ATTEMPTS) -> T:
    """`work(session)` in one transaction, committed; run again from a fresh session when a
    concurrent writer wins (see the module). Other errors, and the work's own exceptions
    (a refusal it raises), go to the caller after rollback, as with `session.begin()`."""
    for attempt in range(1, attempts + 1):
        with Session(engine) as session:
            try:
                with session.begin():
                    return work(session)
            except (IntegrityError, OperationalError) as exc:
                if attempt == attempts or not is_write_conflict(exc):
                    raise
                logger.debug("write conflict, running the transaction again (%d)", attempt)
        # No pause: the conflict is only reported once the winner has committed (or, for a
        # deadlock, rolled back), so the next run sees the store as it now is.
    raise AssertionError("unreachable")  # the loop returns or raises
