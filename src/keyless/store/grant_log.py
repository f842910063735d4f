"""Group commit for the token service's writes: audit records and used assertion IDs.

Every token request writes: the audit record of the grant (or refusal) and, for a client
assertion, its `jti` so that no process accepts it twice. One transaction per request makes the
store's write lock the bottleneck (SQLite has one writer at a time; on PostgreSQL each commit
is a WAL flush). Here the request thread hands its rows to one writer thread per process and
waits: the writer commits whatever is waiting at that moment in one transaction, then wakes
every waiter. So a token is still never returned before its audit record is durable and its
jti refused everywhere, but N requests cost one commit instead of N.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Insert
from sqlalchemy.dialects import postgresql, sqlite

from keyless.store.audit import AuditRecord, write
from keyless.store.models import UsedAssertion

# How long a request waits for its commit before giving up with an error (the store is gone).
COMMIT_TIMEOUT_S = 30.0
# Bounds a transaction's size; under that, whoever is waiting goes into the next commit.
MAX_BATCH = 256


class GrantLogError(RuntimeError):
    """The store did not commit the request's records; nothing about it was recorded."""


class _Entry:
    __slots__ = ("audit", "done", "jti", "outcome")

    def __init__(self, audit: AuditRecord, jti: dict[str, Any] | None) -> None:
        self.audit = audit
        self.jti = jti
        self.done = threading.Event()
        self.outcome: bool | BaseException = False


class GrantLog:
    """One per process and store; `record` is called from request threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert_jti = _insert_ignoring_duplicates(engine)
        self._queue: queue.SimpleQueue[_Entry] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None

    def record(self, audit: AuditRecord, jti: dict[str, Any] | None = None) -> bool:
        """Commit the audit record (and the assertion's jti row) and return True; return False,
        recording nothing, when that jti was already used. Raises GrantLogError on store
        failure."""
        entry = _Entry(audit, jti)
        self._ensure_writer()
        self._queue.put(entry)
        if not entry.done.wait(COMMIT_TIMEOUT_S):
            raise GrantLogError(f"the store did not commit within {COMMIT_TIMEOUT_S:.0f} s")
        if isinstance(entry.outcome, BaseException):
            raise GrantLogError("the store refused the audit record") from entry.outcome
        return entry.outcome

    def _ensure_writer(self) -> None:
        # Started on first use, in the process that uses it (server workers are spawned).
        if self._writer is not None:
            return
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._run, name="keyless-grant-log", daemon=True
                )
                self._writer.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(batch)
            except Exception:
                # One entry must not fail the others: commit each on its own, so only the
                # entries the store truly refuses report failure.
                for entry in batch:
                    try:
                        self._commit([entry])
                    except Exception as exc:
                        entry.outcome = exc
            for entry in batch:
                entry.done.set()

    def _commit(self, batch: Sequence[_Entry]) -> None:
        with self._engine.begin() as connection:
            claimed = [self._claim(connection, entry) for entry in batch]
            records = [entry.audit for entry, ok in zip(batch, claimed, strict=True) if ok]
            if records:
                write(connection, *records)
        for entry, ok in zip(batch, claimed, strict=True):
            entry.outcome = ok

    def _claim(self, connection: Connection, entry: _Entry) -> bool:
        if entry.jti is None:
            return True
        # RETURNING, not rowcount: the PostgreSQL driver reports -1 for this statement.
        return connection.execute(self._insert_jti, entry.jti).first() is not None


def _insert_ignoring_duplicates(engine: Engine) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: a replay returns no row instead of raising
    an error that would abort the whole batch's transaction."""
    if engine.dialect.name == "postgresql":
        return (
            postgresql.insert(UsedAssertion).on_conflict_do_nothing().returning(UsedAssertion.jti)
        )
    return sqlite.insert(UsedAssertion).on_conflict_do_nothing().returning(UsedAssertion.jti)
