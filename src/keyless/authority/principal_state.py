"""Whether an access token's principal may still use it at Keyless's own resources.

A JWT is self-contained, so a third-party resource accepts it until it expires. Keyless's own
resources (management API, vault, token gateway) can do better, cheaply: every change that ends
a principal's access (deleting or disabling a service principal, a managed identity or its
resource, or a user; an administrator's `keyless ad user revoke-sessions`; a sign-out; a
replayed refresh token) bumps
the directory generation in the same transaction, which drops every process's snapshot and the
validated tokens remembered in it. The next use of a token is then checked in full again, and
that check asks here: one indexed read per principal per generation, remembered in the snapshot,
so a reused token still costs a dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, select

from keyless.store.models import ServicePrincipal, SignInSession, User


@dataclass(frozen=True)
class PrincipalState:
    """What the directory says now about a token's `oid` in its tenant."""

    exists: bool
    enabled: bool = True
    tokens_valid_from: float | None = None  # users: iat before this is refused
    revoked_sessions: frozenset[str] = frozenset()  # users: `sid`s of revoked sign-ins


GONE = PrincipalState(exists=False)


_U = User.__table__.c
_SP = ServicePrincipal.__table__.c
_S = SignInSession.__table__.c
_USER = select(_U.tenant_id, _U.account_enabled, _U.tokens_valid_from).where(
    _U.object_id == bindparam("oid")
)
_SERVICE_PRINCIPAL = select(_SP.tenant_id, _SP.account_enabled).where(
    _SP.object_id == bindparam("oid")
)
_REVOKED = select(_S.id).where(_S.user_object_id == bindparam("oid"), _S.revoked_at.is_not(None))


def load_principal(engine: Engine, tenant_id: str, object_id: str) -> PrincipalState:
    """The state of a user or service principal (managed identities are service principals).
    SQLAlchemy Core, not the ORM: it runs after every directory change for each principal that
    presents a token, and the ORM's unit of work would cost more than the reads."""
    with engine.connect() as connection:
        user = connection.execute(_USER, {"oid": object_id}).first()
        if user is not None:
            if user.tenant_id != tenant_id:
                return GONE
            revoked = connection.execute(_REVOKED, {"oid": object_id}).scalars().all()
            return PrincipalState(
                True, bool(user.account_enabled), user.tokens_valid_from, frozenset(revoked)
            )
        sp = connection.execute(_SERVICE_PRINCIPAL, {"oid": object_id}).first()
        if sp is not None and sp.tenant_id == tenant_id:
            return PrincipalState(True, bool(sp.account_enabled))
    return GONE


def refusal(state: PrincipalState, claims: dict[str, Any]) -> tuple[str, str] | None:
    """(code, message) if the token may no longer be used, else None."""
    if not state.exists:
        return (
            "principal_deleted",
            "the bearer token's principal does not exist in its tenant's directory (it was "
            "deleted); a new identity needs a new token",
        )
    if not state.enabled:
        return (
            "principal_disabled",
            "the bearer token's principal is disabled; a tenant administrator can enable it "
            "again (`keyless ad sp update --id ID --set accountEnabled=true`, or "
            "`keyless ad user update --id UPN --account-enabled true`)",
        )
    sid = claims.get("sid")
    if isinstance(sid, str):
        # A token of a sign-in session is judged by its session: exact, even for a session
        # started in the same second as the revocation (iat has whole seconds only).
        if sid in state.revoked_sessions:
            return (
                "session_revoked",
                "the bearer token belongs to a sign-in session that was revoked (sign-out, "
                "`keyless ad user revoke-sessions`, or a replayed refresh token); sign in again",
            )
        return None
    iat = claims.get("iat")
    if state.tokens_valid_from is not None and (
        not isinstance(iat, int | float) or iat < state.tokens_valid_from
    ):
        return (
            "session_revoked",
            "the bearer token was issued before an administrator revoked this user's sessions "
            "(`keyless ad user revoke-sessions`); sign in again",
        )
    return None
