"""The audit record of what an authenticated caller did, written the same way by every API.

The management API (keyless.access.arm) and the directory API (keyless.authority.admin_api)
both record a caller's writes and failures with the caller's object, tenant, app and token type;
one function keeps those records alike, so `keyless audit list` reads them one way.
"""

from __future__ import annotations

from typing import Any

from keyless.authority.context import Authority
from keyless.authority.validation import TokenClaims
from keyless.store import audit


def audit_caller(
    authority: Authority,
    claims: TokenClaims,
    action: str,
    target: str,
    result: str,
    trace_id: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Write one record of `claims`' caller doing `action` on `target`, in its own transaction."""
    record = audit.AuditRecord(
        actor=claims.object_id,
        action=action,
        target=target,
        result=result,
        trace_id=trace_id,
        tenant_id=claims.tenant_id,
        details={"appId": claims.app_id, "idtyp": claims.idtyp, **(details or {})},
    )
    with authority.engine.begin() as connection:
        audit.write(connection, record)
