"""Users as accounts (finding and listing them), and disabling and enabling accounts: service
principals (applications and managed identities) and users, as `az ad sp update --set
accountEnabled=false` and `az ad user update --account-enabled false` do in Entra ID.

A disabled account keeps everything it has (credentials, role assignments, database role
mappings, group memberships), so enabling it again restores it as it was; while it is disabled
it gets no token (7000112 for an application or managed identity, 50057 for a user) and the
tokens it already holds are refused at Keyless's own resources from the next request on
(`principal_disabled`, see keyless.authority.principal_state): the change bumps the directory
generation in its transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from keyless.authority.directory import DirectoryError, find_service_principal, sp_json
from keyless.store.generation import bump_generation
from keyless.store.models import User


def account_enabled(body: dict[str, Any]) -> bool:
    """The one change these routes make: `{"accountEnabled": true|false}`."""
    value = body.get("accountEnabled")
    if not isinstance(value, bool) or set(body) != {"accountEnabled"}:
        raise DirectoryError(
            400,
            "BadRequest",
            'send {"accountEnabled": true} or {"accountEnabled": false} (nothing else can be '
            "changed here)",
        )
    return value


def set_service_principal_enabled(
    session: Session, tenant_id: str, ref: str, enabled: bool
) -> dict[str, Any]:
    sp = find_service_principal(session, tenant_id, ref)
    if sp.account_enabled != enabled:
        sp.account_enabled = enabled
        bump_generation(session)
    return sp_json(sp)


def find_user(session: Session, tenant_id: str, ref: str) -> User:
    """By object ID or UPN (case-insensitive), as `az ad user show --id` accepts."""
    if not ref or len(ref) > 320:
        raise DirectoryError(400, "BadRequest", "give the user's object ID or UPN")
    user = session.scalars(
        select(User).where(
            User.tenant_id == tenant_id,
            or_(User.object_id == ref, func.lower(User.user_principal_name) == ref.lower()),
        )
    ).first()
    if user is None:
        raise DirectoryError(
            404,
            "UserNotFound",
            "no user with that object ID or UPN in this tenant; `keyless ad user list` shows them",
        )
    return user


def set_user_enabled(
    session: Session, tenant_id: str, ref: str, enabled: bool, actor_id: str
) -> dict[str, Any]:
    user = find_user(session, tenant_id, ref)
    if not enabled and user.object_id == actor_id:
        raise DirectoryError(
            400,
            "BadRequest",
            "you cannot disable your own account (nobody might be left to enable it); ask "
            "another tenant administrator",
        )
    if user.account_enabled != enabled:
        user.account_enabled = enabled
        bump_generation(session)
    return user_json(user)


def list_users(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(User).where(User.tenant_id == tenant_id).order_by(User.user_principal_name)
    )
    return [user_json(u) for u in rows]


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.object_id,
        "userPrincipalName": user.user_principal_name,
        "displayName": user.display_name,
        "tenantAdministrator": user.is_tenant_admin,
        "accountEnabled": user.account_enabled,
    }
