"""Signing keys and their rotation.

Each tenant always has one `active` key (signs), one `next` key (published in JWKS, does not
sign yet) and any number of `retired` keys (published until every token they signed has
expired). A rotation promotes `next` to `active`, so a key has always been in JWKS for a whole
rotation period before it signs: relying parties that cache JWKS never meet an unknown `kid`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyless.authority.masterkey import MasterKey
from keyless.base.errors import KeylessError
from keyless.store.generation import bump_generation
from keyless.store.models import SigningKey, Tenant

KEY_BITS = 2048
# Covers clock skew between Keyless and relying parties, and a server process that signed with
# the old key in the moment before it saw the rotation.
RETIREMENT_GRACE_S = 300


def _purpose(kid: str) -> str:
    return f"signing-key:{kid}"


def jwk_thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members in lexical order, without whitespace."""
    members = {k: public_jwk[k] for k in ("e", "kty", "n")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _generate(master: MasterKey, tenant_id: str, status: str, now: float) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    public: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    kid = jwk_thumbprint(public)
    public = {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": public["n"],
        "e": public["e"],
    }
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey(
        kid=kid,
        tenant_id=tenant_id,
        status=status,
        public_jwk=public,
        private_key_encrypted=master.seal(pem, _purpose(kid)),
        created_at=now,
        activated_at=now if status == "active" else None,
    )


def create_initial_keys(session: Session, master: MasterKey, tenant_id: str) -> None:
    now = time.time()
    session.add(_generate(master, tenant_id, "active", now))
    session.add(_generate(master, tenant_id, "next", now))
    bump_generation(session)


class RotationConflict(KeylessError, RuntimeError):
    """Another process rotated the same tenant's keys at the same moment; nothing was changed."""

    status = 409
    code = "Conflict"


def rotate(
    session: Session,
    master: MasterKey,
    tenant_id: str,
    now: float | None = None,
    expected_active: str | None = None,
) -> str:
    """Promote `next`, retire `active`, publish a new `next`; returns the new active kid.

    The status updates are conditional on the states we read, so two processes (or replicas)
    rotating at once cannot both succeed: the loser's transaction is rolled back untouched.
    `expected_active` is the key a scheduled rotation found due: if another process rotated
    since, rotating again would promote a key published a moment ago, so it is refused.
    """
    now = time.time() if now is None else now
    # RSA key generation takes ~100 ms: do it before the first write, so the store's write lock
    # (all of SQLite's) is held only for the updates themselves.
    fresh_next = _generate(master, tenant_id, "next", now)
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"no tenant {tenant_id}")
    keys = session.scalars(
        select(SigningKey).where(
            SigningKey.tenant_id == tenant_id, SigningKey.status.in_(("active", "next"))
        )
    ).all()
    active = next((k for k in keys if k.status == "active"), None)
    upcoming = next((k for k in keys if k.status == "next"), None)
    if expected_active is not None and (active is None or active.kid != expected_active):
        raise RotationConflict("another process rotated this tenant's keys first")
    if upcoming is None:
        upcoming = _generate(master, tenant_id, "next", now)  # only if a store lost its next key
        session.add(upcoming)
        session.flush()
    if active is not None:
        retired = session.execute(
            update(SigningKey)
            .where(SigningKey.kid == active.kid, SigningKey.status == "active")
            .values(
                status="retired",
                retired_at=now,
                # An earlier, longer token lifetime may have been recorded on the key (see
                # admin_api._tenant_update): its tokens must stay verifiable until they expire.
                published_until=max(
                    now + tenant.token_lifetime_s + RETIREMENT_GRACE_S,
                    active.published_until or 0.0,
                ),
            )
        )
        if retired.rowcount != 1:  # type: ignore[attr-defined]
            raise RotationConflict("the active key changed during the rotation")
    promoted = session.execute(
        update(SigningKey)
        .where(SigningKey.kid == upcoming.kid, SigningKey.status == "next")
        .values(status="active", activated_at=now)
    )
    if promoted.rowcount != 1:  # type: ignore[attr-defined]
        raise RotationConflict("the next key changed during the rotation")
    session.add(fresh_next)
    bump_generation(session)
    return upcoming.kid


def due_for_rotation(session: Session, tenant_id: str, now: float) -> str | None:
    """The kid of the tenant's active key if its rotation is due, else None."""
    tenant = session.get(Tenant, tenant_id)
    active = session.scalars(
        select(SigningKey).where(SigningKey.tenant_id == tenant_id, SigningKey.status == "active")
    ).first()
    if tenant is None or active is None or active.activated_at is None:
        return None
    return active.kid if active.activated_at + tenant.key_rotation_interval_s <= now else None


def expire_retired(session: Session, now: float) -> int:
    """Drop retired keys whose tokens have all expired from JWKS, and erase their private part."""
    result = session.execute(
        update(SigningKey)
        .where(SigningKey.status == "retired", SigningKey.published_until <= now)
        .values(status="expired", private_key_encrypted=None)
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    if count:
        bump_generation(session)
    return count


def published_keys(session: Session, tenant_id: str) -> list[SigningKey]:
    return list(
        session.scalars(
            select(SigningKey)
            .where(
                SigningKey.tenant_id == tenant_id,
                SigningKey.status.in_(("active", "next", "retired")),
            )
            .order_by(SigningKey.created_at)
        )
    )


def jwks_document(keys: list[SigningKey]) -> dict[str, Any]:
    return {"keys": [dict(k.public_jwk) for k in keys]}


@dataclass(frozen=True)
class Signer:
    kid: str
    key: rsa.RSAPrivateKey


def load_signer(master: MasterKey, key: SigningKey) -> Signer:
    if key.private_key_encrypted is None:
        raise LookupError(f"signing key {key.kid} has no private part")
    pem = master.open(key.private_key_encrypted, _purpose(key.kid))
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError(f"signing key {key.kid} is not an RSA key")
    return Signer(kid=key.kid, key=private)
