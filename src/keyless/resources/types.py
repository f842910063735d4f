"""The registry of resource types. Each part that brings a resource (apps, identities, and later
PostgreSQL servers, vaults, brokers) registers its type with a validator for its properties."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyless.base.errors import KeylessError

Properties = dict[str, Any]


class PropertiesError(KeylessError, ValueError):
    """The resource's properties are not acceptable; the message names the field."""


@dataclass(frozen=True)
class ResourceType:
    type: str  # canonical spelling, e.g. "Keyless.Web/apps"
    validate: Callable[[Properties], Properties]
    accepts_identity: bool = False  # may hold system- and user-assigned identities
    is_identity: bool = False  # is itself a user-assigned identity
    # Called as after_write(session, resource, created) in the request's transaction once the
    # row is written (a vault registers its host name); may raise ResourceError to refuse.
    after_write: Callable[[Any, Any, bool], None] | None = None
    # Called as before_delete(session, resource) in the request's transaction, before the row
    # goes (a PostgreSQL server drops its role mappings).
    before_delete: Callable[[Any, Any], None] | None = None

    @property
    def namespace(self) -> str:
        return self.type.split("/", 1)[0]

    def action(self, verb: str) -> str:
        return f"{self.type}/{verb}"


_REGISTRY: dict[str, ResourceType] = {}


def register(resource_type: ResourceType) -> ResourceType:
    _REGISTRY[resource_type.type.lower()] = resource_type
    return resource_type


def lookup(type_name: str) -> ResourceType | None:
    return _REGISTRY.get(type_name.lower())


def registered() -> list[str]:
    return sorted(t.type for t in _REGISTRY.values())


# ------------------------------------------------------------------------ Keyless.Web/apps

# '-' as in Spring Boot's property names (`spring.datasource.passwordless-enabled`), which
# Service Connector writes for client type springboot.
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
MAX_SETTINGS = 200


def validate_app_settings(settings: object) -> dict[str, str]:
    if not isinstance(settings, dict):
        raise PropertiesError("appSettings must be an object of NAME: value strings")
    if len(settings) > MAX_SETTINGS:
        raise PropertiesError(f"an app may have at most {MAX_SETTINGS} settings")
    out: dict[str, str] = {}
    for name, value in settings.items():
        if not isinstance(name, str) or not _SETTING_NAME.match(name):
            raise PropertiesError(
                f"app setting name {str(name)[:60]!r} is not valid: use letters, digits, '_', "
                "'.' and '-', starting with a letter or '_'"
            )
        if not isinstance(value, str) or len(value) > 8192 or "\x00" in value:
            raise PropertiesError(f"app setting {name} must be a string of at most 8 KiB")
        out[name] = value
    return out


_USER_IDENTITY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Keyless\.ManagedIdentity/userAssignedIdentities/[^/]+$",
    re.IGNORECASE,
)


def validate_reference_identity(value: object) -> str:
    """The identity that resolves the app's vault references (Azure's
    `keyVaultReferenceIdentity`): `SystemAssigned`, or a user-assigned identity's resource ID."""
    if isinstance(value, str) and value.lower() in ("systemassigned", "[system]", "system"):
        return "SystemAssigned"
    if isinstance(value, str) and len(value) <= 1024 and _USER_IDENTITY_ID.match(value):
        return value
    raise PropertiesError(
        "keyVaultReferenceIdentity must be SystemAssigned or the resource ID of a user-assigned "
        "identity (/subscriptions/S/resourceGroups/G/providers/"
        "Keyless.ManagedIdentity/userAssignedIdentities/NAME)"
    )


def _validate_app(properties: Properties) -> Properties:
    allowed = {
        "command",
        "appSettings",
        "description",
        "workingDirectory",
        "keyVaultReferenceIdentity",
    }
    unknown = set(properties) - allowed
    if unknown:
        raise PropertiesError(
            f"unknown app properties: {', '.join(sorted(unknown))} (an app has "
            f"{', '.join(sorted(allowed))})"
        )
    command = properties.get("command", [])
    if isinstance(command, str):
        command = [command] if command else []
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise PropertiesError("command must be a list of strings (the program and its arguments)")
    if len(command) > 256 or sum(len(c) for c in command) > 32768:
        raise PropertiesError("command is too long")
    description = properties.get("description", "")
    if not isinstance(description, str) or len(description) > 1024:
        raise PropertiesError("description must be text of at most 1024 characters")
    working_directory = properties.get("workingDirectory")
    if working_directory is not None and (
        not isinstance(working_directory, str) or len(working_directory) > 4096
    ):
        raise PropertiesError("workingDirectory must be a path")
    out: Properties = {
        "command": command,
        "appSettings": validate_app_settings(properties.get("appSettings", {})),
        "description": description,
    }
    if working_directory is not None:
        out["workingDirectory"] = working_directory
    reference_identity = properties.get("keyVaultReferenceIdentity")
    if reference_identity is not None:
        out["keyVaultReferenceIdentity"] = validate_reference_identity(reference_identity)
    return out


def _validate_identity(properties: Properties) -> Properties:
    # clientId, principalId and tenantId are Keyless's to set; a client may echo them back.
    unknown = set(properties) - {"clientId", "principalId", "tenantId"}
    if unknown:
        raise PropertiesError(
            "a user-assigned identity has no settable properties (got "
            f"{', '.join(sorted(unknown))})"
        )
    return {}


APPS = register(ResourceType("Keyless.Web/apps", _validate_app, accepts_identity=True))
USER_ASSIGNED_IDENTITIES = register(
    ResourceType(
        "Keyless.ManagedIdentity/userAssignedIdentities", _validate_identity, is_identity=True
    )
)
