"""The audit record of a refused management request, and the wait for it.

A refusal is recorded before it is answered (as the vault does), through the process's
`RefusalAudit`, which folds identical refusals so that a flood cannot fill the store. A refusal
of a token names no actor (nobody was authenticated); it is recorded under the tenant the token
claims when this server knows it, else under the default tenant, so that the administrators who
read `keyless audit list` see attacks on their server. Nothing of the token is recorded.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from typing import Any

import jwt
from starlette.requests import Request

from keyless.authority.context import Authority
from keyless.authority.validation import TokenClaims
from keyless.store.audit import AuditRecord
from keyless.store.grant_log import GrantLogError, wait_for_commit, wait_for_commit_async

RESULT = "denied"


def tenant_of(authority: Authority, token: str | None) -> str | None:
    """The tenant a refused token claims, if this server has it, else the default tenant."""
    tenants = authority.cache.latest().tenants
    if token:
        with contextlib.suppress(jwt.InvalidTokenError, ValueError, TypeError):
            tid = jwt.decode(token, options={"verify_signature": False}).get("tid")
            if isinstance(tid, str) and tid in tenants:
                return tid
    return next((t.id for t in tenants.values() if t.is_default), None)


def token_refused(
    authority: Authority,
    request: Request,
    token: str | None,
    reason: str,
    status: int,
    action: str,
    trace_id: str,
) -> Future[bool] | None:
    """Audit a request refused for its credential (401, or 400 for a malformed one): folded
    by (reason, source address, action), whatever the path or token."""
    source = request.client.host if request.client else ""
    record = AuditRecord(
        actor="unknown",
        action=action,
        target=request.url.path,
        result=RESULT,
        trace_id=trace_id,
        tenant_id=tenant_of(authority, token),
        details={"reason": reason, "status": status, "clientIp": source},
    )
    return authority.refusals.refused(record, source, action)


def caller_refused(
    authority: Authority,
    claims: TokenClaims,
    action: str,
    target: str,
    trace_id: str,
    **details: Any,
) -> Future[bool] | None:
    """Audit an authenticated caller refused (403): folded only when the same principal is
    refused the same action at the same scope again."""
    record = AuditRecord(
        actor=claims.object_id,
        action=action,
        target=target,
        result=RESULT,
        trace_id=trace_id,
        tenant_id=claims.tenant_id,
        details={"status": 403, "appId": claims.app_id, "idtyp": claims.idtyp, **details},
    )
    return authority.refusals.refused(record, claims.object_id, f"{action} {target}")


def recorded(committed: Future[bool] | None) -> None:
    """Wait for a refusal's record (on a request thread). A store failure does not change the
    answer: the request is refused either way."""
    if committed is not None:
        with contextlib.suppress(GrantLogError):
            wait_for_commit(committed)


async def recorded_async(committed: Future[bool] | None) -> None:
    """`recorded` on the event loop, holding no thread."""
    if committed is not None:
        with contextlib.suppress(GrantLogError):
            await wait_for_commit_async(committed)
