"""Resource groups and resources: create, read, update, delete, with their identities.

Functions run inside the caller's transaction and validate everything before the first write,
so a refused request changes nothing. Authorization of the request itself is the API layer's;
the *linked* checks that depend on the body (may the caller attach that identity?) are made
here, through the `Caller.check` it is given.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from keyless.access.arm import Caller
from keyless.access.engine import ACCESS_GENERATION
from keyless.base.errors import ResourceError, bad_request
from keyless.base.scopes import Scope, ScopeError, check_name, parse_scope, scope_key
from keyless.resources import identities
from keyless.resources.types import PropertiesError, ResourceType, lookup, registered
from keyless.store.generation import bump_generation
from keyless.store.models import (
    IdentityAttachment,
    Resource,
    ResourceGroup,
    RoleAssignment,
    Subscription,
)

GROUP_TYPE = "Keyless.Resources/resourceGroups"
DEFAULT_LOCATION = "local"
ASSIGN_IDENTITY = "Keyless.ManagedIdentity/userAssignedIdentities/assign/action"


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def _tags(body: dict[str, Any]) -> dict[str, str]:
    tags = body.get("tags", {})
    if tags is None:
        return {}
    if (
        not isinstance(tags, dict)
        or len(tags) > 50
        or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 512 and len(v) <= 256
            for k, v in tags.items()
        )
    ):
        raise bad_request("tags must be an object of at most 50 string pairs (names <= 512)")
    return dict(tags)


def _location(body: dict[str, Any], default: str = DEFAULT_LOCATION) -> str:
    location = body.get("location", default)
    if not isinstance(location, str) or not 0 < len(location) <= 64:
        raise bad_request("location must be a short name, e.g. local")
    return location


def subscription_for(session: Session, tenant_id: str, subscription_id: str) -> Subscription:
    subscription = session.get(Subscription, subscription_id)
    if subscription is None or subscription.tenant_id != tenant_id:
        raise ResourceError(
            404,
            "SubscriptionNotFound",
            f"the subscription {subscription_id} was not found in your tenant "
            "(`keyless account show` prints yours)",
        )
    return subscription


# ---------------------------------------------------------------------------------- groups


def group_json(group: ResourceGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "type": GROUP_TYPE,
        "location": group.location,
        "tags": group.tags,
        "properties": {"provisioningState": "Succeeded"},
        "systemData": {"createdAt": _iso(group.created_at)},
    }


def find_group(session: Session, tenant_id: str, subscription_id: str, name: str) -> ResourceGroup:
    subscription_for(session, tenant_id, subscription_id)
    key = scope_key(Scope(subscription_id, name).id())
    group = session.get(ResourceGroup, key)
    if group is None:
        raise ResourceError(
            404, "ResourceGroupNotFound", f"resource group {name!r} could not be found"
        )
    return group


def put_group(
    session: Session, tenant_id: str, subscription_id: str, name: str, body: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    subscription_for(session, tenant_id, subscription_id)
    try:
        check_name(name, "resource group name")
    except ScopeError as exc:
        raise bad_request(str(exc), "InvalidResourceGroupName") from None
    tags, location = _tags(body), _location(body)
    key = scope_key(Scope(subscription_id, name).id())
    group = session.get(ResourceGroup, key)
    if group is not None:
        group.tags = tags
        return group_json(group), False
    group = ResourceGroup(
        key=key,
        id=Scope(subscription_id, name).id(),
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        name=name,
        location=location,
        tags=tags,
        created_at=time.time(),
    )
    session.add(group)
    session.flush()
    return group_json(group), True


def list_groups(session: Session, tenant_id: str, subscription_id: str) -> list[ResourceGroup]:
    subscription_for(session, tenant_id, subscription_id)
    return list(
        session.scalars(
            select(ResourceGroup)
            .where(ResourceGroup.subscription_id == subscription_id)
            .order_by(ResourceGroup.name)
        )
    )


def delete_group(
    session: Session, tenant_id: str, subscription_id: str, name: str
) -> dict[str, Any]:
    """Everything in the group goes, identities and role assignments included, in the
    caller's one transaction."""
    group = find_group(session, tenant_id, subscription_id, name)
    resources = session.scalars(select(Resource).where(Resource.group_key == group.key)).all()
    # Children before parents, identities last so attachments are dropped with their apps first.
    ordered = sorted(
        resources, key=lambda r: (r.type.endswith("userAssignedIdentities"), -r.key.count("/"))
    )
    assignments = 0
    for resource in ordered:
        assignments += _delete_resource_row(session, resource)
    assignments += _delete_assignments_within(session, group.key)
    session.delete(group)
    return {"deletedResources": len(resources), "deletedRoleAssignments": assignments}


# ------------------------------------------------------------------------------- resources


def resource_json(resource: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": resource.id,
        "name": resource.name,
        "type": resource.type,
        "location": resource.location,
        "tags": resource.tags,
        "properties": {**resource.properties, "provisioningState": "Succeeded"},
        "systemData": {
            "createdAt": _iso(resource.created_at),
            "lastModifiedAt": _iso(resource.updated_at),
        },
    }
    if resource.identity:
        out["identity"] = resource.identity
    return out


def resolve_type(scope: Scope) -> ResourceType:
    resource_type = lookup(scope.resource_type)
    if resource_type is None:
        raise ResourceError(
            400,
            "InvalidResourceType",
            f"the resource type {scope.resource_type!r} is not known; Keyless has "
            f"{', '.join(registered())}",
        )
    return resource_type


def find_resource(session: Session, tenant_id: str, scope: Scope) -> Resource:
    find_group(session, tenant_id, scope.subscription or "", scope.resource_group or "")
    resource = session.get(Resource, scope.key())
    if resource is None:
        raise ResourceError(
            404,
            "ResourceNotFound",
            f"the resource {scope.resource_type}/{scope.name} was not found in resource group "
            f"{scope.resource_group!r}",
        )
    return resource


def _parse_identity_request(body: Any) -> tuple[bool | None, dict[str, Any] | None]:
    """(system wanted, user-assigned map) from an ARM identity block; None means unchanged."""
    if body is None:
        return None, None
    if not isinstance(body, dict):
        raise bad_request("identity must be an object with a type")
    kinds_text = body.get("type", "")
    if not isinstance(kinds_text, str):
        raise bad_request("identity.type must be a string")
    kinds = {k.strip().lower() for k in kinds_text.split(",") if k.strip()}
    allowed = {"systemassigned", "userassigned", "none"}
    if not kinds or not kinds <= allowed or ("none" in kinds and len(kinds) > 1):
        raise bad_request(
            "identity.type must be SystemAssigned, UserAssigned, "
            "'SystemAssigned, UserAssigned' or None"
        )
    users = body.get("userAssignedIdentities")
    if "userassigned" in kinds:
        if not isinstance(users, dict) or not users:
            raise bad_request(
                "identity type UserAssigned needs userAssignedIdentities: {resourceId: {}}"
            )
    elif users:
        raise bad_request("userAssignedIdentities is given but identity.type has no UserAssigned")
    return "systemassigned" in kinds, (users if "userassigned" in kinds else {})


def _user_identity(
    session: Session, caller: Caller, identity_id: str
) -> tuple[str, dict[str, str]]:
    try:
        scope = parse_scope(identity_id)
    except ScopeError as exc:
        raise bad_request(f"user-assigned identity {identity_id[:200]!r}: {exc}") from None
    if scope.level != "resource" or scope.resource_type.lower() != (
        "keyless.managedidentity/userassignedidentities"
    ):
        raise bad_request(
            f"{identity_id[:200]!r} is not a Keyless.ManagedIdentity/userAssignedIdentities ID"
        )
    try:
        identity = find_resource(session, caller.tenant_id, scope)
    except ResourceError:
        raise bad_request(
            f"the user-assigned identity {identity_id} does not exist; create it with "
            "`keyless identity create`",
            "InvalidUserAssignedIdentity",
        ) from None
    decision = caller.check(ASSIGN_IDENTITY, identity.id)
    if not decision.allowed:
        raise ResourceError(
            403,
            "LinkedAuthorizationFailed",
            f"the client {caller.principal_id} may not perform action {ASSIGN_IDENTITY} on the "
            f"linked identity {identity.id}; it needs a role such as Managed Identity Operator",
        )
    return identity.key, {
        "principalId": identity.properties["principalId"],
        "clientId": identity.properties["clientId"],
    }


def _apply_identity(
    session: Session,
    caller: Caller,
    resource: Resource,
    system: bool | None,
    users: dict[str, Any] | None,
    merge: bool,
) -> None:
    current = dict(resource.identity or {})
    current_users: dict[str, Any] = dict(current.get("userAssignedIdentities") or {})
    has_system = "principalId" in current
    want_system = has_system if system is None else system
    if users is None:
        wanted_users = current_users
    elif merge and users:  # {} means the type names no UserAssigned: none are kept, as in ARM
        wanted_users = dict(current_users)
        for identity_id, value in users.items():
            if value is None:
                wanted_users.pop(
                    next(
                        (k for k in wanted_users if k.lower() == identity_id.lower()), identity_id
                    ),
                    None,
                )
            else:
                wanted_users[identity_id] = value
    else:
        wanted_users = users
    resolved: dict[str, dict[str, str]] = {}
    keys: set[str] = set()
    for identity_id in wanted_users:
        existing = next(
            (v for k, v in current_users.items() if k.lower() == identity_id.lower()), None
        )
        key, info = (
            _user_identity(session, caller, identity_id)
            if existing is None
            else (scope_key(identity_id), existing)
        )
        if key not in keys:
            keys.add(key)
            resolved[identity_id] = info
    if has_system and not want_system:
        identities.delete_principal(session, current["principalId"])
    identity: dict[str, Any] = {}
    if want_system:
        if has_system:
            identity["principalId"] = current["principalId"]
        else:
            sp = identities.create_identity_principal(
                session, caller.tenant_id, resource.id, resource.name
            )
            identity["principalId"] = sp.object_id
        identity["tenantId"] = caller.tenant_id
    kinds = [
        k for k, on in (("SystemAssigned", want_system), ("UserAssigned", bool(resolved))) if on
    ]
    if not kinds:
        resource.identity = {"type": "None"} if resource.identity else None
    else:
        identity["type"] = ", ".join(kinds)
        if resolved:
            identity["userAssignedIdentities"] = resolved
        resource.identity = identity
    session.execute(
        delete(IdentityAttachment).where(IdentityAttachment.resource_key == resource.key)
    )
    for key in keys:
        session.add(IdentityAttachment(resource_key=resource.key, identity_key=key))


def put_resource(
    session: Session, caller: Caller, scope: Scope, body: dict[str, Any], merge: bool = False
) -> tuple[dict[str, Any], bool]:
    """PUT (create or replace) or, with `merge`, PATCH (only the fields given)."""
    resource_type = resolve_type(scope)
    group = find_group(
        session, caller.tenant_id, scope.subscription or "", scope.resource_group or ""
    )
    unknown = set(body) - {"location", "tags", "properties", "identity", "id", "name", "type"}
    if unknown:
        raise bad_request(f"unknown fields in the request body: {', '.join(sorted(unknown))}")
    existing = session.get(Resource, scope.key())
    if merge and existing is None:
        raise ResourceError(404, "ResourceNotFound", f"{scope.id()} does not exist; PUT creates")
    properties = body.get("properties", existing.properties if merge and existing else {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise bad_request("properties must be an object")
    if merge and existing is not None and "properties" in body:
        properties = {**existing.properties, **properties}
        if "appSettings" in body["properties"] and isinstance(
            body["properties"]["appSettings"], dict
        ):
            properties["appSettings"] = body["properties"]["appSettings"]
    try:
        properties = resource_type.validate(properties)
    except PropertiesError as exc:
        raise bad_request(str(exc)) from None
    system, users = _parse_identity_request(body.get("identity"))
    if (system or users) and not resource_type.accepts_identity:
        raise bad_request(f"{resource_type.type} resources cannot hold managed identities")
    tags = _tags(body) if ("tags" in body or not merge) else (existing.tags if existing else {})
    now = time.time()
    created = existing is None
    if existing is None:
        parent = scope.parent()
        resource = Resource(
            key=scope.key(),
            id=scope.id(),
            tenant_id=caller.tenant_id,
            subscription_id=scope.subscription or "",
            group_key=group.key,
            parent_key=parent.key() if parent and parent.level == "resource" else None,
            type=resource_type.type,
            name=scope.name,
            location=_location(body, group.location),
            tags=tags,
            properties=properties,
            identity=None,
            created_at=now,
            updated_at=now,
        )
        session.add(resource)
        session.flush()
        if resource_type.is_identity:
            sp = identities.create_identity_principal(
                session, caller.tenant_id, resource.id, resource.name
            )
            resource.properties = {
                "clientId": sp.app_id,
                "principalId": sp.object_id,
                "tenantId": caller.tenant_id,
            }
    else:
        resource = existing
        resource.tags = tags
        if not resource_type.is_identity:
            resource.properties = properties
        resource.updated_at = now
    if resource_type.accepts_identity and (system is not None or users is not None or not merge):
        if not merge and body.get("identity") is None:
            system, users = False, {}
        _apply_identity(session, caller, resource, system, users, merge)
    session.flush()
    if resource_type.after_write is not None:
        resource_type.after_write(session, resource, created)
        session.flush()
    return resource_json(resource), created


def list_resources(
    session: Session,
    tenant_id: str,
    subscription_id: str,
    group: str | None = None,
    type_name: str | None = None,
) -> list[Resource]:
    subscription_for(session, tenant_id, subscription_id)
    query = select(Resource).where(Resource.subscription_id == subscription_id)
    if group is not None:
        query = query.where(
            Resource.group_key == find_group(session, tenant_id, subscription_id, group).key
        )
    if type_name is not None:
        query = query.where(Resource.type == type_name)
    return list(session.scalars(query.order_by(Resource.key)))


def _delete_assignments_within(session: Session, key: str) -> int:
    result = session.execute(
        delete(RoleAssignment).where(
            or_(
                RoleAssignment.scope_key == key,
                RoleAssignment.scope_key.startswith(key + "/", autoescape=True),
            )
        )
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    if count:
        bump_generation(session, ACCESS_GENERATION)
    return count


def _detach_everywhere(session: Session, identity: Resource) -> None:
    for attachment in session.scalars(
        select(IdentityAttachment).where(IdentityAttachment.identity_key == identity.key)
    ).all():
        holder = session.get(Resource, attachment.resource_key)
        if holder is not None and holder.identity:
            users = {
                k: v
                for k, v in (holder.identity.get("userAssignedIdentities") or {}).items()
                if scope_key(k) != identity.key
            }
            updated = {k: v for k, v in holder.identity.items() if k != "userAssignedIdentities"}
            kinds = ["SystemAssigned"] if "principalId" in updated else []
            if users:
                updated["userAssignedIdentities"] = users
                kinds.append("UserAssigned")
            updated["type"] = ", ".join(kinds) or "None"
            holder.identity = updated
        session.delete(attachment)


def _delete_resource_row(session: Session, resource: Resource) -> int:
    """Delete a resource, its children, identities and role assignments; returns how many
    role assignments went (at or below it, and those its identities held)."""
    removed = 0
    resource_type = lookup(resource.type)
    if resource_type is not None and resource_type.before_delete is not None:
        resource_type.before_delete(session, resource)
    if resource.identity and "principalId" in resource.identity:
        removed += identities.delete_principal(session, resource.identity["principalId"])
    if resource.type == "Keyless.ManagedIdentity/userAssignedIdentities":
        _detach_everywhere(session, resource)
        removed += identities.delete_principal(session, resource.properties.get("principalId", ""))
    for child in session.scalars(select(Resource).where(Resource.parent_key == resource.key)).all():
        removed += _delete_resource_row(session, child)
    session.execute(
        delete(IdentityAttachment).where(IdentityAttachment.resource_key == resource.key)
    )
    removed += _delete_assignments_within(session, resource.key)
    session.delete(resource)
    return removed


def delete_resource(session: Session, tenant_id: str, scope: Scope) -> dict[str, Any]:
    resource = find_resource(session, tenant_id, scope)
    assignments = _delete_resource_row(session, resource)
    return {"deleted": resource.id, "deletedRoleAssignments": assignments}
