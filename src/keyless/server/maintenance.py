"""Background upkeep each server process runs: scheduled key rotation, store clean-up, and the
purge of soft-deleted vault secrets past their scheduled purge date.

Every process runs it; the writes are conditional, so replicas never rotate the same key twice.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from keyless.authority import keys, sessions
from keyless.authority.context import Authority
from keyless.store.models import Tenant, UsedAssertion
from keyless.vault import sweep

log = logging.getLogger("keyless.maintenance")
INTERVAL_S = 1.0


def run_once(authority: Authority, now: float | None = None) -> list[str]:
    """Rotate the tenants whose active key is due, expire retired keys, and purge deleted vault
    secrets that are due; returns the rotated kids."""
    now = time.time() if now is None else now
    rotated: list[str] = []
    with Session(authority.engine) as session:
        tenant_ids = list(session.scalars(select(Tenant.id)))
    for tenant_id in tenant_ids:
        with Session(authority.engine) as session:
            try:
                with session.begin():
                    due = keys.due_for_rotation(session, tenant_id, now)
                    if due is not None:
                        rotation = keys.rotate(
                            session,
                            authority.master,
                            tenant_id,
                            now,
                            expected_active=due,
                            jwks_max_age_s=authority.jwks_max_age_s,
                        )
                        rotated.append(rotation.active_kid)
            except keys.RotationConflict:
                pass  # another process rotated it first: exactly what we wanted
    with Session(authority.engine) as session, session.begin():
        keys.expire_retired(session, now)
        session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < now))
        sessions.purge_expired(session, now)  # device codes, refresh tokens, sign-in sessions
    authority.refusals.flush()  # the count rows of a flood of refusals that has stopped
    with Session(authority.engine) as session, session.begin():
        for purged in sweep.purge_due(session, now):
            log.info("purged the deleted secret %s: its scheduled purge date has passed", purged)
    return rotated


async def maintenance_loop(authority: Authority) -> None:
    while True:
        try:
            rotated = await asyncio.to_thread(run_once, authority)
            for kid in rotated:
                log.info("rotated signing key; %s is now active", kid)
        except OperationalError as exc:  # store briefly unavailable or locked: try next time
            log.warning("maintenance skipped: %s", exc.orig)
        await asyncio.sleep(INTERVAL_S)
