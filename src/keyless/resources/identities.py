"""Managed identities: service principals whose lifecycle a resource owns.

A system-assigned identity is born and dies with its resource. A user-assigned identity is a
resource of its own; deleting it detaches it from every resource. Either way, deleting the
principal also deletes every role assignment it held, so no grant outlives its holder.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import delete
from sqlalchemy.orm import Session

from keyless.access.engine import ACCESS_GENERATION
from keyless.store.generation import bump_generation
from keyless.store.models import (
    CertificateCredential,
    ClientSecret,
    FederatedCredential,
    GroupMember,
    RoleAssignment,
    ServicePrincipal,
)


def create_identity_principal(
    session: Session, tenant_id: str, resource_id: str, display_name: str
) -> ServicePrincipal:
    sp = ServicePrincipal(
        object_id=str(uuid.uuid4()),
        app_id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        display_name=display_name,
        kind="ManagedIdentity",
        resource_id=resource_id,
        created_at=time.time(),
    )
    session.add(sp)
    bump_generation(session)
    return sp


def delete_principal(session: Session, object_id: str) -> int:
    """Delete a managed identity's principal, its credentials, memberships and role
    assignments; returns how many role assignments went with it."""
    sp = session.get(ServicePrincipal, object_id)
    if sp is None:
        return 0
    for model in (CertificateCredential, ClientSecret, FederatedCredential):
        session.execute(delete(model).where(model.app_id == sp.app_id))
    session.execute(delete(GroupMember).where(GroupMember.member_id == object_id))
    removed = session.execute(
        delete(RoleAssignment).where(RoleAssignment.principal_id == object_id)
    )
    session.delete(sp)
    bump_generation(session)
    bump_generation(session, ACCESS_GENERATION)
    return int(removed.rowcount)  # type: ignore[attr-defined]
