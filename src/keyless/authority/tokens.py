"""Minting access tokens: claims as Entra ID shapes them, signed RS256 by the tenant's key."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from keyless.authority.cache import ResourceInfo, TenantInfo
from keyless.authority.keys import Signer

# Clients refresh at half the lifetime (docs/design.md "Tokens"); the skew allowance on nbf keeps a
# token usable at a resource whose clock runs a little behind ours.
NBF_SKEW_S = 300


@dataclass(frozen=True)
class Principal:
    object_id: str
    idtyp: str  # "app" | "user"
    app_id: str
    claims: dict[str, Any]  # extra claims: xms_mirid, upn, name, roles, groups...


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_on: int
    expires_in: int
    refresh_in: int
    jti: str

    def oauth_response(self) -> dict[str, Any]:
        return {
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "expires_on": self.expires_on,
            "refresh_in": self.refresh_in,
            "access_token": self.access_token,
        }


def mint(
    *,
    signer: Signer,
    issuer: str,
    tenant: TenantInfo,
    principal: Principal,
    resource: ResourceInfo,
    auth_method: str,
    lifetime_s: int | None = None,
    now: float | None = None,
) -> IssuedToken:
    now = time.time() if now is None else now
    iat = int(now)
    lifetime = lifetime_s or tenant.token_lifetime_s
    exp = iat + lifetime
    jti = uuid.uuid4().hex
    # appidacr/azpacr: "1" secret, "2" certificate or assertion, "0" public client.
    acr = {"client_secret": "1", "certificate": "2", "federated": "2", "managed_identity": "2"}.get(
        auth_method, "0"
    )
    claims: dict[str, Any] = {
        "aud": resource.audience,
        "iss": issuer,
        "iat": iat,
        "nbf": iat - NBF_SKEW_S,
        "exp": exp,
        "sub": principal.object_id,
        "oid": principal.object_id,
        "tid": tenant.id,
        "appid": principal.app_id,
        "azp": principal.app_id,
        "appidacr": acr,
        "azpacr": acr,
        "idtyp": principal.idtyp,
        "ver": "2.0",
        "uti": jti,
        "jti": jti,
    }
    claims.update(principal.claims)
    token = jwt.encode(claims, signer.key, algorithm="RS256", headers={"kid": signer.kid})
    return IssuedToken(
        access_token=token,
        expires_on=exp,
        expires_in=lifetime,
        refresh_in=max(1, math.floor(lifetime / 2)),
        jti=jti,
    )
