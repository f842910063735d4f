"""Writing and reading the audit log.

Written with SQLAlchemy Core, not the ORM, because a record is written on every token request
and the ORM's unit of work would cost more than the insert itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from keyless.store.models import AuditEvent

_INSERT = insert(AuditEvent)
# What `AuditRecord.row` gives (the id is the store's).
AUDIT_COLUMNS = ("at", "tenant_id", "actor", "action", "target", "result", "details", "trace_id")


@dataclass
class AuditRecord:
    actor: str
    action: str
    target: str
    result: str
    trace_id: str
    tenant_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "tenant_id": self.tenant_id,
            "actor": self.actor[:256],
            "action": self.action,
            "target": self.target[:1024],
            "result": self.result[:128],
            "details": self.details,
            "trace_id": self.trace_id,
        }


def write(connection: Connection, *records: AuditRecord) -> None:
    connection.execute(_INSERT, [r.row() for r in records])


def query(
    session: Session,
    *,
    tenant_id: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    result: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if tenant_id is not None:
        stmt = stmt.where(AuditEvent.tenant_id == tenant_id)
    if action is not None:
        stmt = stmt.where(AuditEvent.action.like(action.replace("*", "%")))
    if actor is not None:
        stmt = stmt.where(AuditEvent.actor == actor)
    if result is not None:
        stmt = stmt.where(AuditEvent.result == result)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    out: list[dict[str, Any]] = []
    for event in session.scalars(stmt):
        out.append(
            {
                "id": event.id,
                "at": event.at,
                "tenantId": event.tenant_id,
                "actor": event.actor,
                "action": event.action,
                "target": event.target,
                "result": event.result,
                "details": event.details,
                "traceId": event.trace_id,
            }
        )
    return out
