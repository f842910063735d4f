"""Group commit for the token service's writes: audit records and used assertion IDs.

Every token request writes: the audit record of the grant (or refusal) and, for a client
assertion, its `jti` so that no process accepts it twice. One transaction per request makes the
store's write lock the bottleneck (SQLite has one writer at a time; on PostgreSQL each commit
is a WAL flush). Here the request thread hands its rows to one writer thread per process and
waits: the writer commits whatever is waiting at that moment in one transaction, then wakes
every waiter. So a token is still never returned before its audit record is durable and its
jti refused everywhere, but N requests cost one commit instead of N. A request served on the
event loop (a vault secret read) awaits `record_async`, which holds no thread: the records of
one loop iteration reach the writer together, and the writer wakes the loop once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Insert
from sqlalchemy.dialects import postgresql, sqlite

from keyless.base.errors import KeylessError
from keyless.store.audit import AUDIT_COLUMNS, AuditRecord
from keyless.store.models import AuditEvent, Base, UsedAssertion
from keyless.store.prepared import PreparedInsert
from keyless.store.write_turn import WriteTurn

# How long a request waits for its commit before giving up with an error (the store is gone).
COMMIT_TIMEOUT_S = 30.0
# Bounds a transaction's size; under that, whoever is waiting goes into the next commit.
MAX_BATCH = 256


class GrantLogError(KeylessError, RuntimeError):
    """The store did not commit the request's records; nothing about it was recorded."""


logger = logging.getLogger("keyless.store")


class _Entry:
    __slots__ = ("audit", "committed", "jti", "loop", "woken")

    def __init__(
        self,
        audit: AuditRecord,
        jti: dict[str, Any] | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.audit = audit
        self.jti = jti
        self.committed: Future[bool] = Future()
        # For `record_async`: the event loop that waits, and what it waits on.
        self.loop = loop
        self.woken: asyncio.Future[None] | None = None if loop is None else loop.create_future()


class GrantLog:
    """One per process and store; `record` is called from request threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._turn = WriteTurn(engine)
        self._insert_jti = _insert_ignoring_duplicates(engine)
        # The writer's one statement per batch: on the driver's cursor, it costs a third of
        # SQLAlchemy's executemany for the few rows a batch usually has.
        self._insert_audit = PreparedInsert(
            Base.metadata.tables[AuditEvent.__tablename__], AUDIT_COLUMNS, engine.dialect
        )
        self._queue: queue.SimpleQueue[_Entry | list[_Entry]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        # record_async's entries of the current loop iteration, handed over together.
        self._from_loops: dict[asyncio.AbstractEventLoop, list[_Entry]] = {}

    def submit(self, audit: AuditRecord, jti: dict[str, Any] | None = None) -> Future[bool]:
        """Queue the audit record (and the assertion's jti row). The future becomes True once
        committed, False (nothing recorded) when that jti was already used, or raises the
        store's error. An event loop awaits it with `asyncio.wrap_future`, holding no thread."""
        entry = _Entry(audit, jti)
        self._ensure_writer()
        self._queue.put(entry)
        return entry.committed

    def record(self, audit: AuditRecord, jti: dict[str, Any] | None = None) -> bool:
        """`submit` and wait for the commit. Raises GrantLogError on store failure."""
        return wait_for_commit(self.submit(audit, jti))

    async def record_async(self, audit: AuditRecord) -> None:
        """`record` on an event loop, holding no thread. The records of one loop iteration go
        to the writer together, and the writer wakes the loop once per batch for all of
        them, where awaiting `submit`'s future costs two thread wake-ups, a wrapped future
        and a timeout task per record. Raises GrantLogError."""
        loop = asyncio.get_running_loop()
        entry = _Entry(audit, None, loop)
        assert entry.woken is not None
        waiting = self._from_loops.get(loop)
        if waiting is None:
            waiting = self._from_loops[loop] = []
            loop.call_soon(self._hand_over, loop)
        waiting.append(entry)
        with _reported_as_grant_log_error():
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await entry.woken
            entry.committed.result(0)  # done by now: True, or the store's error

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        entries = self._from_loops.pop(loop)
        self._ensure_writer()
        self._queue.put(entries)

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
            batch: list[_Entry] = []
            _add(batch, self._queue.get())
            while len(batch) < MAX_BATCH:
                try:
                    _add(batch, self._queue.get_nowait())
                except queue.Empty:
                    break
            self.commit(batch)
            _wake_loops(batch)

    def commit(self, batch: Sequence[_Entry]) -> None:
        """Commit these records now, on the calling thread, in one transaction, and settle each
        entry's `committed` future. The writer thread does this for what is queued; a thread
        that made a batch of records itself (`RecordBatch`, the token issuing thread) calls it
        directly, saving the hand-over to the writer and back."""
        for entry in batch:
            # From here a waiter that goes away (a client that hung up) can no longer
            # cancel its entry: the token was minted, so its record is written regardless.
            entry.committed.set_running_or_notify_cancel()
        try:
            self._commit(batch)
        except Exception:
            # One entry must not fail the others: commit each on its own, so only the
            # entries the store truly refuses report failure.
            for entry in batch:
                try:
                    self._commit([entry])
                except Exception as exc:
                    # The record itself is not logged: it names clients and addresses.
                    logger.exception("the store refused an audit record (%s)", entry.audit.action)
                    _settle(entry, exc)

    def _commit(self, batch: Sequence[_Entry]) -> None:
        with self._turn.held(), self._engine.begin() as connection:
            claimed = self._claim(connection, batch)
            records = [entry.audit for entry, ok in zip(batch, claimed, strict=True) if ok]
            if records:
                self._insert_audit.execute_many(connection, [r.row() for r in records])
        for entry, ok in zip(batch, claimed, strict=True):
            _settle(entry, ok)

    def _claim(self, connection: Connection, batch: Sequence[_Entry]) -> list[bool]:
        """Insert every jti of the batch in one statement; the rows it returns are the ones
        that were new. Of two entries with the same jti, the first is the one accepted."""
        rows = [entry.jti for entry in batch if entry.jti is not None]
        inserted: set[tuple[str, str]] = set()
        if rows:
            result = connection.execute(self._insert_jti, rows)
            inserted = {(row.client_id, row.jti) for row in result}
        claimed = []
        for entry in batch:
            if entry.jti is None:
                claimed.append(True)
                continue
            key = (entry.jti["client_id"], entry.jti["jti"])
            claimed.append(key in inserted)
            inserted.discard(key)  # a second entry with that jti was refused
        return claimed


class RecordSink(Protocol):
    """Where a decision's records go: the GrantLog's writer, or a `RecordBatch`."""

    def submit(self, audit: AuditRecord, jti: dict[str, Any] | None = None) -> Future[bool]: ...


class RecordBatch:
    """Records collected for one `GrantLog.commit` by the thread that makes them: `submit`
    has `GrantLog.submit`'s contract, but nothing is queued until that thread commits."""

    def __init__(self) -> None:
        self.entries: list[_Entry] = []

    def submit(self, audit: AuditRecord, jti: dict[str, Any] | None = None) -> Future[bool]:
        entry = _Entry(audit, jti)
        self.entries.append(entry)
        return entry.committed


def _insert_ignoring_duplicates(engine: Engine) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: a replay returns no row instead of raising
    an error that would abort the whole batch's transaction."""
    returned = (UsedAssertion.client_id, UsedAssertion.jti)
    if engine.dialect.name == "postgresql":
        return postgresql.insert(UsedAssertion).on_conflict_do_nothing().returning(*returned)
    return sqlite.insert(UsedAssertion).on_conflict_do_nothing().returning(*returned)


def _add(batch: list[_Entry], item: _Entry | list[_Entry]) -> None:
    if isinstance(item, list):
        batch.extend(item)  # one loop iteration's records (may take a batch past MAX_BATCH)
    else:
        batch.append(item)


def _wake_loops(batch: Sequence[_Entry]) -> None:
    """One call into each event loop that has records in the batch, for all of them."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Entry]] = {}
    for entry in batch:
        if entry.loop is not None:
            by_loop.setdefault(entry.loop, []).append(entry)
    for loop, entries in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_wake, entries)


def _wake(entries: list[_Entry]) -> None:
    for entry in entries:
        if entry.woken is not None and not entry.woken.done():  # not cancelled meanwhile
            entry.woken.set_result(None)


def _settle(entry: _Entry, outcome: bool | Exception) -> None:
    if entry.committed.cancelled():  # cancelled before the writer took it; nobody waits
        return
    if isinstance(outcome, Exception):
        entry.committed.set_exception(outcome)
    else:
        entry.committed.set_result(outcome)


@contextlib.contextmanager
def _reported_as_grant_log_error() -> Iterator[None]:
    """A commit that timed out or that the store refused, as the one error callers handle."""
    try:
        yield
    except TimeoutError:  # concurrent.futures' and asyncio's are both this one (3.11+)
        raise GrantLogError(f"the store did not commit within {COMMIT_TIMEOUT_S:.0f} s") from None
    except GrantLogError:
        raise
    except Exception as exc:
        raise GrantLogError("the store refused the audit record") from exc


def wait_for_commit(committed: Future[bool]) -> bool:
    with _reported_as_grant_log_error():
        return committed.result(COMMIT_TIMEOUT_S)


async def wait_for_commit_async(committed: Future[bool]) -> bool:
    """`wait_for_commit` for an event loop: the request waits without holding a thread."""
    with _reported_as_grant_log_error():
        return await asyncio.wait_for(asyncio.wrap_future(committed), COMMIT_TIMEOUT_S)
