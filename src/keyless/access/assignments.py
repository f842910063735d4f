"""Role definitions and role assignments in the store: validated writes and their JSON shapes.

Every write bumps the access generation in the same transaction, so every process's decision
index follows on its next request.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from keyless.access.engine import ACCESS_GENERATION, AccessIndex, Role
from keyless.access.existence import require_group, require_resource
from keyless.access.permissions import (
    BUILT_IN_BY_ID,
    BUILT_IN_ROLES,
    Permissions,
    RolePermissionsError,
    role_name,
)
from keyless.base.errors import ResourceError, bad_request
from keyless.base.scopes import ROOT, Scope, ScopeError, is_within, parse_scope, scope_key
from keyless.base.vault_domain import SECRET_NAME
from keyless.store.generation import bump_generation
from keyless.store.models import (
    Group,
    RoleAssignment,
    RoleDefinition,
    ServicePrincipal,
    Subscription,
    User,
)

AUTHZ = "/providers/Keyless.Authorization"


def _role_id_path(scope: str, role_id: str) -> str:
    return f"{'' if scope == ROOT else scope}{AUTHZ}/roleDefinitions/{role_id}"


def role_json(role: Role, scope: str = ROOT, description: str = "") -> dict[str, Any]:
    built_in = BUILT_IN_BY_ID.get(role.id)
    return {
        "id": _role_id_path(scope, role.id),
        "name": role.id,
        "type": "Keyless.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.name,
            "type": "BuiltInRole" if role.built_in else "CustomRole",
            "description": built_in.description if built_in else description,
            "permissions": [role.permissions.as_json()],
            "assignableScopes": list(role.assignable_scopes),
        },
    }


def find_role(session: Session, tenant_id: str, ref: str) -> Role:
    """By ID, role definition resource ID, or name (case-insensitive, Azure's names of the
    vault roles too), as `az` accepts."""
    ref = role_name(ref)
    ref_id = ref.rsplit("/", 1)[-1]
    for role in BUILT_IN_ROLES:
        if role.id == ref_id or role.name.lower() == ref.lower():
            return Role(role.id, role.name, role.permissions, True)
    row = session.scalars(
        select(RoleDefinition).where(
            RoleDefinition.tenant_id == tenant_id,
            or_(RoleDefinition.id == ref_id, func.lower(RoleDefinition.role_name) == ref.lower()),
        )
    ).first()
    if row is None:
        raise ResourceError(
            404,
            "RoleDefinitionDoesNotExist",
            f"no role named or with ID {ref[:100]!r}; `keyless role definition list` shows them",
        )
    return Role(
        row.id,
        row.role_name,
        Permissions.from_json(row.permissions),
        False,
        tuple(row.assignable_scopes),
    )


# Data-plane objects that take role assignments though they are not resources.
DATA_SCOPES = {"keyless.vault/vaults/secrets"}


def check_scope_exists(session: Session, tenant_id: str, scope: Scope) -> None:
    if scope.level == "root":
        return
    subscription = session.get(Subscription, scope.subscription)
    if subscription is None or subscription.tenant_id != tenant_id:
        raise ResourceError(
            404, "SubscriptionNotFound", f"{scope.id()} is not a subscription of your tenant"
        )
    if scope.level == "resourceGroup":
        require_group(session, tenant_id, scope.subscription or "", scope.resource_group or "")
    elif scope.level == "resource":
        parent = scope.parent()
        if scope.resource_type.lower() in DATA_SCOPES and parent is not None:
            # As in Azure, one secret can be a scope (least privilege: an app reads its own
            # secret, not the vault). Secrets are the vault's data, not resources: the vault
            # must exist, the name must be a secret name; the secret itself may come later.
            if not SECRET_NAME.match(scope.name):
                raise bad_request(
                    f"{scope.name[:100]!r} is not a secret name (1-127 letters, digits, hyphens)"
                )
            require_resource(session, tenant_id, parent)
        else:
            require_resource(session, tenant_id, scope)


def put_role_definition(
    session: Session, tenant_id: str, role_id: str, body: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    if role_id in BUILT_IN_BY_ID:
        raise ResourceError(
            403,
            "BuiltInRoleCannotBeModified",
            "built-in roles cannot be changed; create a custom role",
        )
    try:
        uuid.UUID(role_id)
    except ValueError:
        raise bad_request("a role definition ID is a GUID") from None
    props = body.get("properties", body)
    if not isinstance(props, dict):
        raise bad_request("properties must be an object")
    name = props.get("roleName")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 128:
        raise bad_request("roleName must be 1 to 128 characters")
    permissions = props.get("permissions")
    if isinstance(permissions, list):
        if len(permissions) != 1:
            raise bad_request("permissions must hold exactly one permission block")
        permissions = permissions[0]
    try:
        parsed = Permissions.from_json(permissions)
    except RolePermissionsError as exc:
        raise bad_request(str(exc)) from None
    scopes = props.get("assignableScopes") or [ROOT]
    if not isinstance(scopes, list) or not scopes or len(scopes) > 50:
        raise bad_request("assignableScopes must be a list of scopes")
    normalised = []
    for scope in scopes:
        try:
            parsed_scope = parse_scope(scope)
        except (ScopeError, TypeError) as exc:
            raise bad_request(f"assignableScopes: {exc}") from None
        check_scope_exists(session, tenant_id, parsed_scope)
        normalised.append(parsed_scope.id())
    description = props.get("description", "")
    if not isinstance(description, str) or len(description) > 1024:
        raise bad_request("description must be at most 1024 characters")
    clash = session.scalars(
        select(RoleDefinition).where(
            RoleDefinition.tenant_id == tenant_id,
            func.lower(RoleDefinition.role_name) == name.strip().lower(),
            RoleDefinition.id != role_id,
        )
    ).first()
    if clash is not None or any(r.name.lower() == name.strip().lower() for r in BUILT_IN_ROLES):
        raise ResourceError(
            409, "RoleDefinitionWithSameNameExists", f"a role named {name!r} already exists"
        )
    row = session.get(RoleDefinition, role_id)
    created = row is None
    if row is None:
        row = RoleDefinition(id=role_id, tenant_id=tenant_id, created_at=time.time())
        session.add(row)
    elif row.tenant_id != tenant_id:
        raise ResourceError(404, "RoleDefinitionDoesNotExist", "no such role definition")
    row.role_name = name.strip()
    row.description = description
    row.permissions = parsed.as_json()
    row.assignable_scopes = normalised
    bump_generation(session, ACCESS_GENERATION)
    session.flush()
    role = Role(row.id, row.role_name, parsed, False, tuple(normalised))
    return role_json(role, description=description), created


def delete_role_definition(session: Session, tenant_id: str, role_id: str) -> dict[str, Any]:
    if role_id in BUILT_IN_BY_ID:
        raise ResourceError(403, "BuiltInRoleCannotBeModified", "built-in roles cannot be deleted")
    row = session.get(RoleDefinition, role_id)
    if row is None or row.tenant_id != tenant_id:
        raise ResourceError(404, "RoleDefinitionDoesNotExist", f"no custom role {role_id}")
    in_use = session.scalars(
        select(func.count())
        .select_from(RoleAssignment)
        .where(RoleAssignment.role_definition_id == role_id)
    ).one()
    if in_use:
        raise ResourceError(
            409,
            "RoleDefinitionHasAssignments",
            f"the role is assigned {in_use} time(s); delete those assignments first",
        )
    session.delete(row)
    bump_generation(session, ACCESS_GENERATION)
    return {"deleted": role_id}


def principal_type(session: Session, tenant_id: str, principal_id: str) -> str:
    if (user := session.get(User, principal_id)) is not None and user.tenant_id == tenant_id:
        return "User"
    if (group := session.get(Group, principal_id)) is not None and group.tenant_id == tenant_id:
        return "Group"
    sp = session.get(ServicePrincipal, principal_id)
    if sp is not None and sp.tenant_id == tenant_id:
        return "ServicePrincipal"
    raise bad_request(
        f"principal {principal_id[:60]!r} does not exist in the directory; give the object ID "
        "of a user, group, service principal or managed identity",
        "PrincipalNotFound",
    )


def resolve_principal(session: Session, tenant_id: str, ref: str) -> dict[str, Any]:
    """An assignee as `az` takes it: object ID, app ID, user principal name or display name."""
    candidates: list[tuple[str, str, str]] = []
    for user in session.scalars(
        select(User).where(
            User.tenant_id == tenant_id,
            or_(User.object_id == ref, func.lower(User.user_principal_name) == ref.lower()),
        )
    ):
        candidates.append((user.object_id, "User", user.user_principal_name))
    for group in session.scalars(
        select(Group).where(
            Group.tenant_id == tenant_id, or_(Group.object_id == ref, Group.display_name == ref)
        )
    ):
        candidates.append((group.object_id, "Group", group.display_name))
    for sp in session.scalars(
        select(ServicePrincipal).where(
            ServicePrincipal.tenant_id == tenant_id,
            or_(
                ServicePrincipal.object_id == ref,
                ServicePrincipal.app_id == ref,
                ServicePrincipal.display_name == ref,
            ),
        )
    ):
        candidates.append((sp.object_id, "ServicePrincipal", sp.display_name))
    unique = {c[0]: c for c in candidates}
    if not unique:
        raise ResourceError(
            404, "PrincipalNotFound", f"no user, group or service principal matches {ref[:100]!r}"
        )
    if len(unique) > 1:
        raise ResourceError(
            409,
            "AmbiguousPrincipal",
            f"{len(unique)} principals match {ref[:100]!r}; use the object ID",
        )
    object_id, kind, name = next(iter(unique.values()))
    return {"id": object_id, "type": kind, "displayName": name}


def assignment_json(row: RoleAssignment) -> dict[str, Any]:
    return {
        "id": f"{'' if row.scope == ROOT else row.scope}{AUTHZ}/roleAssignments/{row.id}",
        "name": row.id,
        "type": "Keyless.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": _role_id_path(ROOT, row.role_definition_id),
            "principalId": row.principal_id,
            "principalType": row.principal_type,
            "scope": row.scope,
            # ARM's shape (the SDK reads a datetime), as az prints it.
            "createdOn": dt.datetime.fromtimestamp(row.created_at, dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%f+00:00"
            ),
            "createdBy": row.created_by,
        },
    }


def create_assignment(
    session: Session,
    tenant_id: str,
    scope: Scope,
    assignment_id: str,
    body: dict[str, Any],
    created_by: str,
) -> tuple[dict[str, Any], bool]:
    try:
        uuid.UUID(assignment_id)
    except ValueError:
        raise bad_request("a role assignment name is a GUID") from None
    props = body.get("properties", body)
    if not isinstance(props, dict):
        raise bad_request("properties must be an object")
    role_ref, principal_id = props.get("roleDefinitionId"), props.get("principalId")
    if not isinstance(role_ref, str) or not isinstance(principal_id, str):
        raise bad_request("a role assignment needs properties.roleDefinitionId and principalId")
    role = find_role(session, tenant_id, role_ref)
    if not any(is_within(scope_key(s), scope.key()) for s in role.assignable_scopes):
        raise bad_request(
            f"role {role.name!r} cannot be assigned at {scope.id()}: its assignable scopes are "
            f"{', '.join(role.assignable_scopes)}"
        )
    kind = principal_type(session, tenant_id, principal_id)
    check_scope_exists(session, tenant_id, scope)
    existing = session.get(RoleAssignment, assignment_id)
    if existing is not None:
        same = (existing.principal_id, existing.role_definition_id, existing.scope_key) == (
            principal_id,
            role.id,
            scope.key(),
        )
        if not same:
            raise ResourceError(
                409,
                "RoleAssignmentUpdateNotPermitted",
                "a role assignment cannot be changed; delete it and create another",
            )
        return assignment_json(existing), False
    duplicate = session.scalars(
        select(RoleAssignment).where(
            RoleAssignment.principal_id == principal_id,
            RoleAssignment.role_definition_id == role.id,
            RoleAssignment.scope_key == scope.key(),
        )
    ).first()
    if duplicate is not None:
        raise ResourceError(
            409, "RoleAssignmentExists", f"the role assignment already exists (ID {duplicate.id})"
        )
    row = RoleAssignment(
        id=assignment_id,
        tenant_id=tenant_id,
        principal_id=principal_id,
        principal_type=kind,
        role_definition_id=role.id,
        scope=scope.id(),
        scope_key=scope.key(),
        created_at=time.time(),
        created_by=created_by,
    )
    session.add(row)
    bump_generation(session, ACCESS_GENERATION)
    session.flush()
    return assignment_json(row), True


def find_assignment(session: Session, tenant_id: str, assignment_id: str) -> RoleAssignment:
    row = session.get(RoleAssignment, assignment_id)
    if row is None or row.tenant_id != tenant_id:
        raise ResourceError(404, "RoleAssignmentNotFound", f"no role assignment {assignment_id}")
    return row


def delete_assignment(session: Session, tenant_id: str, assignment_id: str) -> dict[str, Any]:
    row = find_assignment(session, tenant_id, assignment_id)
    out = assignment_json(row)
    session.delete(row)
    bump_generation(session, ACCESS_GENERATION)
    return out


def list_assignments(
    session: Session, tenant_id: str, scope: Scope, principal_id: str | None = None
) -> list[RoleAssignment]:
    """Assignments that apply at `scope`: at it, above it (inherited) and below it."""
    key = scope.key()
    query = select(RoleAssignment).where(RoleAssignment.tenant_id == tenant_id)
    if principal_id is not None:
        query = query.where(RoleAssignment.principal_id == principal_id)
    rows = session.scalars(query.order_by(RoleAssignment.created_at)).all()
    return [r for r in rows if is_within(r.scope_key, key) or is_within(key, r.scope_key)]


def check_access(
    index: AccessIndex, principal_id: str, scope: str, actions: list[str]
) -> dict[str, Any]:
    """What P can do at S: a decision per action asked, and the roles that apply."""
    results = []
    for action in actions:
        data = action.startswith("data:")
        name = action[5:] if data else action
        decision = index.check(principal_id, name, scope, data=data)
        results.append(
            {
                "action": name,
                "dataAction": data,
                "allowed": decision.allowed,
                "reason": decision.reason,
            }
        )
    roles = []
    for grant in index.applicable(principal_id, scope):
        role = index.roles.get(grant.role_id)
        if role is not None:
            roles.append(
                {
                    "roleName": role.name,
                    "roleDefinitionId": role.id,
                    "scope": grant.scope,
                    "assignmentId": grant.assignment_id,
                    "viaGroup": grant.principal_id if grant.principal_id != principal_id else None,
                    "permissions": role.permissions.as_json(),
                }
            )
    return {"principalId": principal_id, "scope": scope, "results": results, "roles": roles}
