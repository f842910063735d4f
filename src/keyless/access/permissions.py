"""Role permissions: `actions`, `notActions`, `dataActions`, `notDataActions` with Azure's
wildcards.

A `*` matches any run of characters, '/' included (`*/read`, `Keyless.Vault/vaults/secrets/*`);
matching ignores case. A role permits an action when one of its `actions` matches and none of
its `notActions` does: `notActions` subtract within that role only, they are not a deny, exactly
as in Azure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from keyless.base.errors import KeylessError
from keyless.base.roles import OWNER_ROLE_ID

_ACTION = re.compile(r"^(\*|[A-Za-z][A-Za-z0-9.]*)(/[A-Za-z0-9.*]+)*$")


class RolePermissionsError(KeylessError, ValueError):
    """A role definition's permissions are malformed."""


@lru_cache(maxsize=4096)
def _pattern(wildcard: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in wildcard.split("*")) + "$", re.I)


def matches(wildcard: str, action: str) -> bool:
    return _pattern(wildcard).match(action) is not None


def check_action_pattern(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256 or not _ACTION.match(value):
        raise RolePermissionsError(
            f"{what} {str(value)[:100]!r} is not an action: write Namespace/type/operation, "
            "with * as a wildcard (e.g. Keyless.Web/apps/read, */read, *)"
        )
    return value


@dataclass(frozen=True)
class Permissions:
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    def allows(self, action: str, data: bool = False) -> bool:
        allowed, denied = (
            (self.data_actions, self.not_data_actions) if data else (self.actions, self.not_actions)
        )
        return any(matches(p, action) for p in allowed) and not any(
            matches(p, action) for p in denied
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "actions": list(self.actions),
            "notActions": list(self.not_actions),
            "dataActions": list(self.data_actions),
            "notDataActions": list(self.not_data_actions),
        }

    @classmethod
    def from_json(cls, body: object) -> Permissions:
        if not isinstance(body, dict):
            raise RolePermissionsError(
                "permissions must be an object with actions, notActions, ..."
            )
        unknown = set(body) - {"actions", "notActions", "dataActions", "notDataActions"}
        if unknown:
            raise RolePermissionsError(f"unknown permission fields: {', '.join(sorted(unknown))}")
        lists = []
        for key in ("actions", "notActions", "dataActions", "notDataActions"):
            values = body.get(key, [])
            if not isinstance(values, list) or len(values) > 200:
                raise RolePermissionsError(f"{key} must be a list of at most 200 actions")
            lists.append(tuple(check_action_pattern(v, key) for v in values))
        if not lists[0] and not lists[2]:
            raise RolePermissionsError("a role needs at least one action or data action")
        return cls(*lists)


@dataclass(frozen=True)
class BuiltInRole:
    id: str
    name: str
    description: str
    permissions: Permissions = field(default_factory=Permissions)


def _role(id_: str, name: str, description: str, **perms: list[str]) -> BuiltInRole:
    return BuiltInRole(
        id_,
        name,
        description,
        Permissions(
            tuple(perms.get("actions", [])),
            tuple(perms.get("not_actions", [])),
            tuple(perms.get("data_actions", [])),
            tuple(perms.get("not_data_actions", [])),
        ),
    )


# IDs are Azure's own for the roles Azure has, so scripts that name roles by ID keep working.
BUILT_IN_ROLES: tuple[BuiltInRole, ...] = (
    _role(
        OWNER_ROLE_ID,
        "Owner",
        "Full access to manage all resources, including assigning roles.",
        actions=["*"],
    ),
    _role(
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "Contributor",
        "Full access to manage all resources, but not to assign roles.",
        actions=["*"],
        not_actions=["Keyless.Authorization/*/write", "Keyless.Authorization/*/delete"],
    ),
    _role(
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "Reader",
        "View all resources, but make no changes.",
        actions=["*/read"],
    ),
    _role(
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "User Access Administrator",
        "Manage user access to resources.",
        actions=["*/read", "Keyless.Authorization/*"],
    ),
    _role(
        "f1a07417-d97a-45cb-824c-7a7467783830",
        "Managed Identity Operator",
        "Read and assign user-assigned identities.",
        actions=[
            "Keyless.ManagedIdentity/userAssignedIdentities/*/read",
            "Keyless.ManagedIdentity/userAssignedIdentities/read",
            "Keyless.ManagedIdentity/userAssignedIdentities/*/assign/action",
            # The action the resource manager checks when an identity is attached: `/*/`
            # above needs a segment between, so it alone would never grant it.
            "Keyless.ManagedIdentity/userAssignedIdentities/assign/action",
        ],
    ),
    _role(
        "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
        "Managed Identity Contributor",
        "Create, read, update and delete user-assigned identities.",
        actions=["Keyless.ManagedIdentity/userAssignedIdentities/*", "*/read"],
    ),
    _role(
        "4633458b-17de-408a-b874-0445c86b69e6",
        "Vault Secrets User",
        "Read secret contents.",
        actions=["Keyless.Vault/vaults/read"],
        data_actions=[
            "Keyless.Vault/vaults/secrets/getSecret/action",
            "Keyless.Vault/vaults/secrets/readMetadata/action",
        ],
    ),
    _role(
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        "Vault Secrets Officer",
        "Perform any action on secrets, except purge and manage permissions.",
        actions=["Keyless.Vault/vaults/read", "Keyless.Vault/vaults/secrets/*"],
        data_actions=["Keyless.Vault/vaults/secrets/*"],
        not_data_actions=["Keyless.Vault/vaults/secrets/purge/action"],
    ),
    _role(
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        "Vault Administrator",
        "Perform all data plane operations on a vault and all objects in it.",
        actions=["Keyless.Vault/vaults/*", "*/read"],
        data_actions=["Keyless.Vault/vaults/*"],
    ),
    _role(
        "d8c3b6a4-6a2e-4d1b-9a51-2f6b5d3e1c01",
        "PostgreSQL Administrator",
        "Manage PostgreSQL servers and the database roles of principals.",
        actions=["Keyless.Database/postgresServers/*", "*/read"],
    ),
)
BUILT_IN_BY_ID = {r.id: r for r in BUILT_IN_ROLES}
# Azure's names for the built-in roles Keyless has under its own (their IDs are the same), so
# commands copied from Azure's docs work. Storage Blob Data Reader/Contributor/Owner join when
# Keyless has blob storage roles.
AZURE_ROLE_NAMES = {
    "key vault secrets user": "Vault Secrets User",
    "key vault secrets officer": "Vault Secrets Officer",
    "key vault administrator": "Vault Administrator",
}


def role_name(ref: str) -> str:
    """Keyless's name for a role Azure spells otherwise; any other reference unchanged."""
    return AZURE_ROLE_NAMES.get(ref.strip().lower(), ref)
