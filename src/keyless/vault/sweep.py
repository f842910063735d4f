"""The purge sweep: soft-deleted secrets past their `scheduledPurgeDate` are erased for good.

Key Vault purges a deleted secret when its retention ends. Reads already treat such a secret as
gone, and a write of its name removes it, but without the sweep its sealed values would stay in
the store for ever. The server's maintenance loop runs the sweep (at most once a minute); each
delete is conditional, so replicas sweeping at the same moment purge, and audit, a secret once.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyless.store import audit
from keyless.store.models import Vault, VaultSecret
from keyless.vault.operations import PURGE

SWEEP_INTERVAL_S = 60.0
BATCH = 500  # per sweep: a backlog is worked off over a few minutes, in short transactions
ACTOR = "keyless:maintenance"

_last_sweep = 0.0


def purge_due(session: Session, now: float) -> list[str]:
    """Purge the deleted secrets whose purge date is past; returns `{vault}/{name}` of each.
    Does nothing when the last sweep of this process was less than a minute ago."""
    global _last_sweep
    if now - _last_sweep < SWEEP_INTERVAL_S:
        return []
    _last_sweep = now
    due = session.execute(
        select(VaultSecret.vault_name, VaultSecret.name_key, VaultSecret.name, VaultSecret.purge_at)
        .add_columns(Vault.resource_id, Vault.tenant_id)
        .join(Vault, Vault.name == VaultSecret.vault_name)
        .where(VaultSecret.deleted_at.is_not(None), VaultSecret.purge_at <= now)
        .limit(BATCH)
    ).all()
    purged: list[str] = []
    for vault_name, name_key, name, purge_at, resource_id, tenant_id in due:
        # The versions go with it (ON DELETE CASCADE). Only a secret still deleted and still
        # due is purged: it may have been recovered, or swept by another replica, meanwhile.
        result = session.execute(
            delete(VaultSecret).where(
                VaultSecret.vault_name == vault_name,
                VaultSecret.name_key == name_key,
                VaultSecret.deleted_at.is_not(None),
                VaultSecret.purge_at <= now,
            )
        )
        if getattr(result, "rowcount", 0) != 1:
            continue
        purged.append(f"{vault_name}/{name}")
        audit.write(
            session.connection(),
            audit.AuditRecord(
                actor=ACTOR,
                action=PURGE,
                target=f"{resource_id}/secrets/{name}",
                result="succeeded",
                trace_id=str(uuid.uuid4()),
                tenant_id=tenant_id,
                details={"reason": "scheduledPurgeDate", "scheduledPurgeDate": int(purge_at)},
            ),
        )
    return purged
