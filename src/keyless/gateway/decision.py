"""One bind, decided: is this token good for logging in as this role on this server?

A bind is granted only if the token's signature (the tenant's published keys, from the
authority's in-process cache), issuer, audience (the `postgres` resource API) and times are
valid, and the role was created for the token's principal, or for a group the principal is in,
in the token's tenant. Every outcome becomes one audit record: role, server, principal,
result and reason; never the token (a granted token is traceable by its `jti`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from keyless.authority.context import Authority
from keyless.authority.validation import InvalidToken, TokenClaims, validate_access_token
from keyless.gateway.names import BindDnError, BindTarget, parse_bind_dn
from keyless.gateway.rolemap import RoleMap, RoleMapCache
from keyless.store.audit import AuditRecord

RESOURCE_API = "postgres"
AUDIT_ACTION = "gateway.bind"
GRANTED = "granted"
# The LDAP result code a refusal is answered with: a DN PostgreSQL could not have built is a
# syntax error, everything about the token or the role is invalidCredentials.
INVALID_DN_SYNTAX = 34
INVALID_CREDENTIALS = 49
UNWILLING_TO_PERFORM = 53
SUCCESS = 0

_FIX = {
    "expired": "the access token has expired; get a new one for api://keyless/postgres "
    "(keyless.identity and azure-identity refresh tokens before they expire)",
    "not_a_jwt": "the password is not a Keyless access token; use a token for "
    "api://keyless/postgres (or https://ossrdbms-aad.database.windows.net) as the password",
    "too_large": "the password is larger than any Keyless access token",
}


@dataclass(frozen=True)
class BindOutcome:
    result: str  # "granted" or the reason code of the refusal
    message: str  # what is wrong and how to fix it; never the token
    ldap_code: int
    role: str
    server: str
    tenant_id: str | None = None
    principal_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def granted(self) -> bool:
        return self.result == GRANTED

    def audit_record(self, client: str, transport: str = "ldap") -> AuditRecord:
        """`client` is the address that bound (the database server), `transport` ldap or
        ldaps."""
        return AuditRecord(
            actor=self.principal_id or "unknown",
            action=AUDIT_ACTION,
            target=f"{self.server}/{self.role}",
            result=self.result,
            trace_id=str(uuid.uuid4()),
            tenant_id=self.tenant_id,
            details={
                "role": self.role,
                "server": self.server,
                "principalId": self.principal_id,
                "reason": self.message,
                "client": client,
                "transport": transport,
                **self.details,
            },
        )


class BindChecker:
    """Thread-safe: binds are decided on a few worker threads of the gateway process."""

    def __init__(self, authority: Authority, resource_api: str = RESOURCE_API) -> None:
        self._authority = authority
        self._resource_api = resource_api
        self._roles = RoleMapCache(authority.engine)

    def check(self, dn: str, password: bytes) -> BindOutcome:
        try:
            target = parse_bind_dn(dn)
        except BindDnError as exc:
            return BindOutcome("invalid_dn", str(exc), INVALID_DN_SYNTAX, dn[:200], "")
        snapshot = self._authority.cache.current()  # the one store read of a bind
        roles = self._roles.at(snapshot.generation)
        owner = roles.owner(target.server, target.role)
        tenant_id = owner.tenant_id if owner is not None else None
        if not password:
            # RFC 4513 5.1.2: an "unauthenticated" bind (a name, no password) is refused with
            # unwillingToPerform, never treated as anonymous.
            return self._refuse(
                target,
                "no_token",
                "no password was sent; send a Keyless access token as the password",
                tenant_id,
                ldap_code=UNWILLING_TO_PERFORM,
            )
        try:
            token = password.decode("ascii")
            claims = validate_access_token(
                self._authority, token, self._resource_api, snapshot=snapshot
            )
        except UnicodeDecodeError:
            return self._refuse(target, "not_a_jwt", _FIX["not_a_jwt"], tenant_id)
        except InvalidToken as exc:
            message = _FIX.get(exc.code, str(exc).replace("bearer token", "access token"))
            return self._refuse(target, exc.code, message, tenant_id)
        return self._decide(target, claims, roles)

    def refusal(self, dn: str, result: str, message: str, ldap_code: int) -> BindOutcome:
        """A bind refused for its form (version, method, controls...): attributed to the
        server's tenant when the DN names a mapped role, so its administrators see it."""
        try:
            target = parse_bind_dn(dn)
        except BindDnError:
            return BindOutcome(result, message, ldap_code, dn[:200], "")
        owner = self._roles.at(self._authority.cache.current().generation).owner(
            target.server, target.role
        )
        return self._refuse(
            target,
            result,
            message,
            owner.tenant_id if owner is not None else None,
            ldap_code=ldap_code,
        )

    def _decide(self, target: BindTarget, claims: TokenClaims, roles: RoleMap) -> BindOutcome:
        owner = roles.owner(target.server, target.role)
        who = {
            "appId": claims.app_id,
            "idtyp": claims.idtyp,
            "tokenId": str(claims.raw.get("jti", ""))[:64],
            "tokenTenant": claims.tenant_id,
        }
        refusal = (
            f"the token's principal may not log in as role {target.role!r} on server "
            f"{target.server!r}; create the role for this identity (Service Connector, or "
            "map the role to a group the identity is in)"
        )
        if owner is None:
            return self._refuse(
                target, "role_not_mapped", refusal, claims.tenant_id, claims.object_id, who
            )
        if owner.tenant_id != claims.tenant_id:
            return self._refuse(
                target, "wrong_tenant", refusal, owner.tenant_id, claims.object_id, who
            )
        if owner.principal_type == "Group":
            allowed = owner.principal_id in roles.principals(claims.object_id)
        else:
            allowed = owner.principal_id == claims.object_id
        if not allowed:
            return self._refuse(
                target, "principal_not_mapped", refusal, owner.tenant_id, claims.object_id, who
            )
        via = {"viaGroup": owner.principal_id} if owner.principal_type == "Group" else {}
        return BindOutcome(
            GRANTED,
            f"granted: role {target.role!r} belongs to "
            + (f"group {owner.principal_id}" if via else "the token's principal"),
            SUCCESS,
            target.role,
            target.server,
            owner.tenant_id,
            claims.object_id,
            {**who, **via},
        )

    @staticmethod
    def _refuse(
        target: BindTarget,
        result: str,
        message: str,
        tenant_id: str | None,
        principal_id: str | None = None,
        details: dict[str, Any] | None = None,
        ldap_code: int = INVALID_CREDENTIALS,
    ) -> BindOutcome:
        return BindOutcome(
            result,
            message,
            ldap_code,
            target.role,
            target.server,
            tenant_id or None,
            principal_id,
            details or {},
        )
