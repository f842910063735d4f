"""Whose turn it is to write the embedded SQLite store, among the grant logs of every process.

SQLite has one writer at a time. A writer that finds the lock taken does not wait for it to be
released: its busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms and tries again, blind to the
release. Every server worker commits audit records hundreds of times a second, so two workers'
grant logs collided all the time and each collision slept far longer than the other's commit
held the lock (5-50 ms commits, where one takes ~0.2 ms), which is what put vault reads' p99 at
16-64 connections at 33-116 ms. Here the grant logs take turns on an exclusive `flock` of a
file beside the database first: the kernel hands the lock to the next waiter as soon as it is
released, and waiting releases the GIL. Other writers (management calls) still queue through
SQLite's busy handler; they are rare.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine


class WriteTurn:
    """An exclusive lock per process and database, taken around a grant log commit."""

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._path = Path(database + "-write.lock") if database and database != ":memory:" else None
        self._fd: int | None = None
        self._pid = 0
        # flock is per open file: threads of one process sharing the descriptor would not
        # exclude each other, so they take turns on this lock first.
        self._threads = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._path is None:  # PostgreSQL: its own row locks and WAL, nothing to take turns on
            yield
            return
        with self._threads:
            fd = self._descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _descriptor(self) -> int:
        # Opened in the process that writes (uvicorn spawns its workers; a forked child must not
        # share its parent's open file, which would make them one lock holder).
        if self._fd is None or self._pid != os.getpid():
            assert self._path is not None
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd
