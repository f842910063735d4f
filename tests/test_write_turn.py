"""Grant logs of several server processes take turns writing the embedded SQLite store through
a lock file beside it (`keyless.store.write_turn`), handed on by the kernel as soon as it is
released, instead of sleeping blindly in SQLite's busy handler (the vault reads' p99).

Real parts: a SQLite store file, a GrantLog committing in a thread, and the lock held through
another open file, as another server process holds it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyless.store.audit import AuditRecord
from keyless.store.engine import open_engine
from keyless.store.grant_log import GrantLog
from keyless.store.migrate import upgrade
from keyless.store.models import AuditEvent


def _traces(engine: object, trace: str) -> list[str]:
    with Session(engine) as session:  # type: ignore[call-overload]
        return list(
            session.scalars(select(AuditEvent.trace_id).where(AuditEvent.trace_id == trace))
        )


def test_a_grant_log_commits_only_in_its_turn(tmp_path: Path) -> None:
    database = tmp_path / "keyless.db"
    engine = open_engine(f"sqlite:///{database}")
    upgrade(engine)
    log = GrantLog(engine)
    lock_file = Path(f"{database}-write.lock")
    # Another process's turn: the lock held through an open file of its own.
    other = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        outcome: list[bool] = []
        writer = threading.Thread(
            target=lambda: outcome.append(
                log.record(AuditRecord("reader", "read", "/s", "succeeded", "turn-1"))
            )
        )
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive() and outcome == []  # waiting for its turn, nothing written
        assert _traces(engine, "turn-1") == []
        fcntl.flock(other, fcntl.LOCK_UN)
        writer.join(timeout=30)
        assert outcome == [True]
        assert _traces(engine, "turn-1") == ["turn-1"]
    finally:
        os.close(other)
        engine.dispose()
    assert oct(lock_file.stat().st_mode & 0o777) == "0o600"
