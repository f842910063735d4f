"""Tokens for managed identities, handed to the host that runs their resource.

A managed identity has no credential at all: the authority issues its tokens to a caller that
may run the resource holding it (checked by the management API before this is reached), as
Azure's platform does for App Service and VMs. The token names the identity (`oid`, `appid`)
and its resource (`xms_mirid`), and the grant is audited with the host that asked.
"""

from __future__ import annotations

import time

from keyless.authority.context import Authority
from keyless.authority.errors import OAuthError
from keyless.authority.token_endpoint import application_disabled, resolve_resource
from keyless.authority.tokens import IssuedToken, Principal, mint
from keyless.store import audit
from keyless.store.models import ServicePrincipal


def issue_for_identity(
    authority: Authority,
    identity: ServicePrincipal,
    resource_name: str,
    host_principal: str,
    holder_id: str,
    trace_id: str,
) -> IssuedToken:
    now = time.time()
    snapshot = authority.cache.current()
    tenant = snapshot.tenants[identity.tenant_id]
    try:
        resource = resolve_resource(snapshot.resources.get(tenant.id, {}), resource_name)
        if not identity.account_enabled:
            raise application_disabled(identity.app_id)
    except OAuthError as exc:
        _audit(
            authority, identity, resource_name, exc.error, host_principal, holder_id, trace_id, now
        )
        raise
    claims: dict[str, object] = {}
    if identity.resource_id:
        claims["xms_mirid"] = identity.resource_id
    issued = mint(
        signer=authority.cache.signer(snapshot, tenant.id),
        issuer=authority.issuer(tenant.id),
        tenant=tenant,
        principal=Principal(identity.object_id, "app", identity.app_id, claims),
        resource=resource,
        auth_method="managed_identity",
        now=now,
    )
    _audit(
        authority,
        identity,
        resource.audience,
        "granted",
        host_principal,
        holder_id,
        trace_id,
        now,
        issued,
    )
    return issued


def _audit(
    authority: Authority,
    identity: ServicePrincipal,
    audience: str,
    result: str,
    host_principal: str,
    holder_id: str,
    trace_id: str,
    now: float,
    issued: IssuedToken | None = None,
) -> None:
    details: dict[str, object] = {
        "grant": "managed_identity",
        "objectId": identity.object_id,
        "host": host_principal,
        "holder": holder_id,
    }
    if issued is not None:
        details.update(tokenId=issued.jti, expiresOn=issued.expires_on)
    with authority.engine.begin() as connection:
        audit.write(
            connection,
            audit.AuditRecord(
                actor=identity.app_id,
                action="token.issue",
                target=audience[:1024],
                result=result,
                trace_id=trace_id,
                tenant_id=identity.tenant_id,
                details=details,
                at=now,
            ),
        )
