"""Which principal a database role belongs to: the gateway's role -> object ID mappings.

A mapping says "role R on server S was created for principal P of tenant T"; P may be a user,
a service principal (managed identities are service principals) or a group, whose members
(also through nested groups) may then log in as R. Writes validate at the edge, bump the
directory generation (so every gateway process sees the change on its next bind) and are
audited in the same transaction.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyless.base.errors import KeylessError
from keyless.gateway.names import GatewayNameError, check_role_name, server_key
from keyless.store import audit
from keyless.store.generation import bump_generation
from keyless.store.models import DatabaseRoleMapping, Group, ServicePrincipal, User


class MappingError(KeylessError, ValueError):
    """The mapping cannot be written; the message says what is wrong and how to fix it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RoleMapping:
    server: str
    role: str
    tenant_id: str
    principal_id: str
    principal_type: str
    created_at: float
    created_by: str

    @classmethod
    def of(cls, row: DatabaseRoleMapping) -> RoleMapping:
        return cls(
            server=row.server_key,
            role=row.role_name,
            tenant_id=row.tenant_id,
            principal_id=row.principal_id,
            principal_type=row.principal_type,
            created_at=row.created_at,
            created_by=row.created_by,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "role": self.role,
            "principalId": self.principal_id,
            "principalType": self.principal_type,
            "tenantId": self.tenant_id,
            "createdAt": self.created_at,
            "createdBy": self.created_by,
        }


def _server(server: str) -> str:
    try:
        return server_key(server)
    except GatewayNameError as exc:
        raise MappingError(str(exc)) from None


def _names(server: str, role: str) -> tuple[str, str]:
    try:
        return _server(server), check_role_name(role)
    except GatewayNameError as exc:
        raise MappingError(str(exc)) from None


def _principal_type(session: Session, tenant_id: str, principal_id: str) -> str:
    user = session.get(User, principal_id)
    if user is not None and user.tenant_id == tenant_id:
        return "User"
    group = session.get(Group, principal_id)
    if group is not None and group.tenant_id == tenant_id:
        return "Group"
    sp = session.get(ServicePrincipal, principal_id)
    if sp is not None and sp.tenant_id == tenant_id:
        return "ServicePrincipal"
    raise MappingError(
        f"no user, group, service principal or managed identity with object ID "
        f"{principal_id[:60]!r} in this tenant; give the principal's object ID "
        "(`keyless ad sp show`, `keyless identity show` print it)",
        404,
    )


def _audit(session: Session, tenant_id: str, actor: str, action: str, m: RoleMapping) -> None:
    audit.write(
        session.connection(),
        audit.AuditRecord(
            actor=actor,
            action=action,
            target=f"{m.server}/{m.role}",
            result="success",
            trace_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            details={
                "server": m.server,
                "role": m.role,
                "principalId": m.principal_id,
                "principalType": m.principal_type,
            },
        ),
    )


def add_mapping(
    session: Session, tenant_id: str, server: str, role: str, principal_id: str, created_by: str
) -> RoleMapping:
    """Record that `role` on `server` belongs to `principal_id`. A role belongs to one principal
    (to let several log in as one role, map it to a group)."""
    key, role = _names(server, role)
    principal_type = _principal_type(session, tenant_id, principal_id)
    existing = session.get(DatabaseRoleMapping, (key, role))
    if existing is not None:
        if existing.tenant_id == tenant_id and existing.principal_id == principal_id:
            return RoleMapping.of(existing)
        raise MappingError(
            f"role {role!r} on server {key!r} already belongs to another principal; remove "
            "that mapping first, or map the role to a group and add both principals to it",
            409,
        )
    row = DatabaseRoleMapping(
        server_key=key,
        role_name=role,
        tenant_id=tenant_id,
        principal_id=principal_id,
        principal_type=principal_type,
        created_at=time.time(),
        created_by=created_by[:256],
    )
    session.add(row)
    session.flush()
    bump_generation(session)
    mapping = RoleMapping.of(row)
    _audit(session, tenant_id, created_by, "gateway.mapping.add", mapping)
    return mapping


def remove_mapping(
    session: Session, tenant_id: str, server: str, role: str, removed_by: str
) -> RoleMapping:
    key, role = _names(server, role)
    row = session.get(DatabaseRoleMapping, (key, role))
    if row is None or row.tenant_id != tenant_id:
        raise MappingError(
            f"no mapping for role {role!r} on server {key!r}; list them with list_mappings", 404
        )
    mapping = RoleMapping.of(row)
    session.delete(row)
    session.flush()
    bump_generation(session)
    _audit(session, tenant_id, removed_by, "gateway.mapping.remove", mapping)
    return mapping


def remove_principal_mappings(session: Session, tenant_id: str, principal_id: str) -> None:
    """A deleted principal's roles: nobody may log in as them any more. Registered with
    `keyless.authority.principal_hooks`, so it runs in the transaction that deletes the
    principal; each removal is audited like an administrator's."""
    rows = session.scalars(
        select(DatabaseRoleMapping).where(
            DatabaseRoleMapping.tenant_id == tenant_id,
            DatabaseRoleMapping.principal_id == principal_id,
        )
    ).all()
    for row in rows:
        mapping = RoleMapping.of(row)
        session.delete(row)
        _audit(session, tenant_id, "directory", "gateway.mapping.remove", mapping)
    if rows:
        session.flush()
        bump_generation(session)


def list_mappings(
    session: Session,
    tenant_id: str,
    server: str | None = None,
    principal_id: str | None = None,
) -> list[RoleMapping]:
    stmt = (
        select(DatabaseRoleMapping)
        .where(DatabaseRoleMapping.tenant_id == tenant_id)
        .order_by(DatabaseRoleMapping.server_key, DatabaseRoleMapping.role_name)
    )
    if server is not None:
        stmt = stmt.where(DatabaseRoleMapping.server_key == _server(server))
    if principal_id is not None:
        stmt = stmt.where(DatabaseRoleMapping.principal_id == principal_id)
    return [RoleMapping.of(row) for row in session.scalars(stmt)]
