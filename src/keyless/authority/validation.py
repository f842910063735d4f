"""Checking Keyless access tokens inside the server (management API, later every service).

Keys come from the same cached JWKS the authority publishes, so a check costs one signature
verification and no store round trip beyond the generation read. A token that passed is
remembered in the authority's snapshot (by its SHA-256, not the token itself), so a client that
reuses its token, as every SDK does, costs a dictionary lookup and the time checks from then
on. Everything else the check depends on (tenants, resource APIs and their audiences, the
tenant's published keys, whether the token's principal still exists and is enabled and which of
its sessions are revoked: keyless.authority.principal_state) is in that snapshot, which is
dropped whenever the directory generation moves (a key rotated or retired, a tenant or resource
API changed, a principal deleted or disabled, a session revoked): from then on the token is
checked in full again, in every process. That is how revocation reaches Keyless's resources.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import jwt

from keyless.authority.cache import Snapshot
from keyless.authority.context import Authority
from keyless.authority.principal_state import refusal
from keyless.base.errors import KeylessError

LEEWAY_S = 60
# Bounds the memory of remembered tokens per snapshot; when full it starts again.
MAX_REMEMBERED = 10_000
# Times, audience and issuer are checked here rather than by PyJWT, to say which one is wrong.
SIGNATURE_ONLY: jwt.types.Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}


class InvalidToken(KeylessError):
    """The bearer token is not acceptable; the message says why without repeating it, and
    `code` names the check that failed (for audit records: `expired`, `wrong_audience`...)."""

    status = 401
    code: str

    def __init__(self, message: str, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TokenClaims:
    tenant_id: str
    object_id: str
    app_id: str
    idtyp: str
    raw: dict[str, Any]


def validate_access_token(
    authority: Authority, token: str, resource_name: str, snapshot: Snapshot | None = None
) -> TokenClaims:
    """Signature (with the tenant's published keys), issuer, audience and times.

    `snapshot` lets a caller that already read the authority's snapshot for this request (the
    token gateway does) check against the same one instead of reading the generation again.
    """
    if len(token) > 16 * 1024:
        raise InvalidToken("the bearer token is larger than 16 KiB", "too_large")
    if snapshot is None:
        snapshot = authority.cache.current()
    key = (hashlib.sha256(token.encode()).digest(), resource_name)
    known = snapshot.validated.get(key)
    if known is not None:
        _check_times(known.raw, time.time())
        return known
    claims = _validate(authority, token, resource_name, snapshot)
    if len(snapshot.validated) >= MAX_REMEMBERED:
        snapshot.validated.clear()
    snapshot.validated[key] = claims
    return claims


def _validate(
    authority: Authority, token: str, resource_name: str, snapshot: Snapshot
) -> TokenClaims:
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise InvalidToken("the bearer token is not a JWT", "not_a_jwt") from None
    if not isinstance(unverified.get("tid"), str):
        raise InvalidToken("the bearer token has no tenant (tid) claim", "no_tenant")
    tenant_id = unverified["tid"]
    if tenant_id not in snapshot.tenants:
        raise InvalidToken(
            "the bearer token names a tenant this server does not know", "unknown_tenant"
        )
    resource = next(
        (r for r in snapshot.resources.get(tenant_id, {}).values() if r.name == resource_name),
        None,
    )
    if resource is None:
        raise InvalidToken(f"the tenant has no {resource_name} resource API", "no_resource")
    keyset = authority.cache.keyset(snapshot, tenant_id)
    kid = header.get("kid")
    key = next((k for k in keyset.keys if k.key_id == kid), None)
    if key is None:
        raise InvalidToken(
            "the bearer token was signed by a key this tenant does not publish", "unknown_key"
        )
    try:
        claims = jwt.decode(token, key, algorithms=["RS256"], options=SIGNATURE_ONLY)
    except jwt.InvalidTokenError:
        raise InvalidToken(
            "the bearer token's signature does not verify with this tenant's keys",
            "bad_signature",
        ) from None
    if claims.get("iss") != authority.issuer(tenant_id):
        raise InvalidToken("the bearer token was issued by another authority", "wrong_issuer")
    if claims.get("aud") != resource.audience:
        raise InvalidToken(
            f"the bearer token is for {str(claims.get('aud'))[:100]!r}, not {resource.audience}; "
            f"request a token for {resource.audience}/.default",
            "wrong_audience",
        )
    _check_times(claims, time.time())
    object_id = claims.get("oid")
    if not isinstance(object_id, str) or not object_id:
        raise InvalidToken("the bearer token names no principal (oid claim)", "no_principal")
    # Revocation at Keyless's own resources: a deleted principal or a revoked session is
    # refused from the first check after the change (the generation it bumped dropped the
    # remembered tokens), in every process.
    refused = refusal(authority.cache.principal(snapshot, tenant_id, object_id), claims)
    if refused is not None:
        raise InvalidToken(refused[1], refused[0])
    return TokenClaims(
        tenant_id=tenant_id,
        object_id=object_id,
        app_id=str(claims.get("appid", "")),
        idtyp=str(claims.get("idtyp", "")),
        raw=claims,
    )


def _check_times(claims: dict[str, Any], now: float) -> None:
    """Checked on every use, remembered token or not: a token expires while it is reused."""
    if not isinstance(claims.get("exp"), int) or claims["exp"] + LEEWAY_S < now:
        raise InvalidToken(
            "the bearer token has expired; sign in again (`keyless login`)", "expired"
        )
    if isinstance(claims.get("nbf"), int) and claims["nbf"] - LEEWAY_S > now:
        raise InvalidToken("the bearer token is not valid yet", "not_yet_valid")
    iat = claims.get("iat")
    if isinstance(iat, int | float) and not isinstance(iat, bool) and iat - LEEWAY_S > now:
        raise InvalidToken(
            "the bearer token was issued in the future (iat is ahead of this server's clock "
            "by more than the allowed skew); check the clock of the server that issued it",
            "issued_in_future",
        )
