"""Signing keys and their rotation.

Each tenant always has one `active` key, one `next` key (published in JWKS, does not sign
yet) and any number of `retired` keys (published until every token they signed has expired).
A rotation promotes `next` to `active`. Relying parties cache JWKS for `Cache-Control:
max-age` (`jwks_max_age_s`), so a key may only sign once it has been published that long:
otherwise a client that fetched JWKS just before the key appeared meets an unknown `kid`.
Rotations can come closer together than that (a short schedule, or `keyless keys rotate`
twice in a minute), so a promoted key's `activated_at` is when it *starts* signing: the later
of now and its publication plus the JWKS lifetime. Until then the key it replaces goes on
signing, and that key's `retired_at` is the moment it stops. `signing_key` picks, at a given
time, the key most recently activated by then.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from keyless.authority.masterkey import MasterKey
from keyless.base.errors import KeylessError
from keyless.store.generation import bump_generation
from keyless.store.models import SigningKey, Tenant

KEY_BITS = 2048
# Covers clock skew between Keyless and relying parties, and a server process that signed with
# the old key in the moment before it saw the rotation.
RETIREMENT_GRACE_S = 300
# How long relying parties may cache JWKS (`Cache-Control: max-age` on jwks_uri), and so how
# long a key is published before it signs. KEYLESS_JWKS_MAX_AGE (seconds) changes it for a
# server: shorter makes rotations take effect sooner, and clients refetch JWKS more often.
JWKS_MAX_AGE_S = 300
MAX_JWKS_MAX_AGE_S = 86400


def jwks_max_age_from_env() -> int:
    """The JWKS cache lifetime this server announces and waits out before a new key signs."""
    raw = os.environ.get("KEYLESS_JWKS_MAX_AGE", "").strip()
    if not raw:
        return JWKS_MAX_AGE_S
    if not raw.isdigit() or int(raw) > MAX_JWKS_MAX_AGE_S:
        raise ValueError(
            f"KEYLESS_JWKS_MAX_AGE must be a whole number of seconds from 0 to "
            f"{MAX_JWKS_MAX_AGE_S} (default {JWKS_MAX_AGE_S}); unset it to use the default"
        )
    return int(raw)


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


@dataclass(frozen=True)
class Rotation:
    active_kid: str  # the promoted key
    signs_from: float  # when it starts signing (now, or once published for the JWKS lifetime)


def rotate(
    session: Session,
    master: MasterKey,
    tenant_id: str,
    now: float | None = None,
    expected_active: str | None = None,
    jwks_max_age_s: float = JWKS_MAX_AGE_S,
) -> Rotation:
    """Promote `next`, retire `active`, publish a new `next`.

    The promoted key signs from `Rotation.signs_from`: not before it has been in JWKS for
    `jwks_max_age_s` (the module says why); the retired key signs until then.
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
    # Never before it has been published for the JWKS lifetime, nor before the key it
    # replaces started (that one may itself still be waiting, after two quick rotations).
    signs_from = max(
        now,
        upcoming.created_at + jwks_max_age_s,
        (active.activated_at or 0.0) if active is not None else 0.0,
    )
    if active is not None:
        retired = session.execute(
            update(SigningKey)
            .where(SigningKey.kid == active.kid, SigningKey.status == "active")
            .values(
                status="retired",
                retired_at=signs_from,  # it signs until the promoted key takes over
                # An earlier, longer token lifetime may have been recorded on the key (see
                # admin_api._tenant_update): its tokens must stay verifiable until they expire.
                published_until=max(
                    signs_from + tenant.token_lifetime_s + RETIREMENT_GRACE_S,
                    active.published_until or 0.0,
                ),
            )
        )
        if retired.rowcount != 1:  # type: ignore[attr-defined]
            raise RotationConflict("the active key changed during the rotation")
    promoted = session.execute(
        update(SigningKey)
        .where(SigningKey.kid == upcoming.kid, SigningKey.status == "next")
        .values(status="active", activated_at=signs_from)
    )
    if promoted.rowcount != 1:  # type: ignore[attr-defined]
        raise RotationConflict("the next key changed during the rotation")
    session.add(fresh_next)
    bump_generation(session)
    return Rotation(upcoming.kid, signs_from)


def signing_key(session: Session, tenant_id: str, now: float) -> tuple[SigningKey, float] | None:
    """The key that signs the tenant's tokens at `now`, and until when (the activation of a
    promoted key still waiting out the JWKS lifetime; infinity if none waits)."""
    candidates = session.scalars(
        select(SigningKey)
        .where(
            SigningKey.tenant_id == tenant_id,
            SigningKey.status.in_(("active", "retired")),
            SigningKey.activated_at.is_not(None),
            SigningKey.private_key_encrypted.is_not(None),
        )
        .order_by(SigningKey.activated_at.desc())
    )
    until = math.inf
    waiting: SigningKey | None = None
    for key in candidates:
        assert key.activated_at is not None
        if key.activated_at <= now:
            return key, until
        until, waiting = key.activated_at, key
    # No key has started yet: the one that replaced them was taken out of JWKS early (an
    # operator expiring keys by hand). Signing with the promoted key beats refusing tokens.
    return None if waiting is None else (waiting, math.inf)


def due_for_rotation(session: Session, tenant_id: str, now: float) -> str | None:
    """The kid of the tenant's active key if its rotation is due, else None (the interval
    counts from when the key started signing)."""
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
        .where(
            SigningKey.status == "retired",
            SigningKey.published_until <= now,
            # Never one that still signs (until a promoted key has been published long enough).
            or_(SigningKey.retired_at.is_(None), SigningKey.retired_at <= now),
        )
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
    # When a promoted key takes over from this one (see `signing_key`).
    signs_until: float = math.inf


def load_signer(master: MasterKey, key: SigningKey, signs_until: float = math.inf) -> Signer:
    if key.private_key_encrypted is None:
        raise LookupError(f"signing key {key.kid} has no private part")
    pem = master.open(key.private_key_encrypted, _purpose(key.kid))
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError(f"signing key {key.kid} is not an RSA key")
    return Signer(kid=key.kid, key=private, signs_until=signs_until)
