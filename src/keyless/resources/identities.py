"""Managed identities: service principals whose lifecycle a resource owns.

A system-assigned identity is born and dies with its resource. A user-assigned identity is a
resource of its own; deleting it detaches it from every resource. Either way, deleting the
principal also deletes every role assignment it held, so no grant outlives its holder.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy.orm import Session

from keyless.authority import directory
from keyless.store.generation import bump_generation
from keyless.store.models import ServicePrincipal


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
    """Delete a managed identity's principal and everything it held (see
    `keyless.authority.directory.delete_principal`)."""
    sp = session.get(ServicePrincipal, object_id)
    return 0 if sp is None else directory.delete_principal(session, sp)
