"""The connection resource: `Keyless.Web/apps/{app}/connections/{name}`, a child of the app
(it goes when the app goes). It records what the connection made, so `delete` can revert it
and `validate` knows what to check; it never holds a secret."""

from __future__ import annotations

import re
from typing import Any

from keyless.connector.keys import CLIENT_TYPES
from keyless.connector.target import AUTH_TYPES
from keyless.resources.types import Properties, PropertiesError, ResourceType, register

CONNECTION_TYPE = "Keyless.Web/apps/connections"
_CONNECTION_NAME = re.compile(r"^[A-Za-z0-9_.]{1,63}$")
_MAX_KEYS = 32


def check_connection_name(name: str) -> str:
    if not _CONNECTION_NAME.match(name):
        raise PropertiesError(
            f"connection name {name[:80]!r} is not valid: use 1-63 letters, digits, '_' and '.'"
        )
    return name


def _object(value: Any, what: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PropertiesError(f"{what} must be an object")
    unknown = set(value) - allowed
    if unknown:
        raise PropertiesError(f"{what} has unknown fields: {', '.join(sorted(unknown))}")
    for key, item in value.items():
        if not isinstance(item, str | int | bool) or (isinstance(item, str) and len(item) > 1024):
            raise PropertiesError(f"{what}.{key} must be a short string, number or boolean")
    return dict(value)


def _validate(properties: Properties) -> Properties:
    allowed = {
        "targetService",
        "authInfo",
        "clientType",
        "configurationKeys",
        "createdResources",
        "secretStore",
    }
    unknown = set(properties) - allowed
    if unknown:
        raise PropertiesError(f"unknown connection properties: {', '.join(sorted(unknown))}")
    target = _object(
        properties.get("targetService"),
        "targetService",
        {"type", "id", "database", "role", "roleAssignmentId", "endpoint"},
    )
    if not isinstance(target.get("type"), str) or not isinstance(target.get("id"), str):
        raise PropertiesError("targetService needs type and id")
    auth = _object(
        properties.get("authInfo"), "authInfo", {"authType", "principalId", "clientId", "tenantId"}
    )
    if auth.get("authType") not in AUTH_TYPES:
        raise PropertiesError(f"authInfo.authType must be one of {', '.join(AUTH_TYPES)}")
    if properties.get("clientType") not in CLIENT_TYPES:
        raise PropertiesError(f"clientType must be one of {', '.join(CLIENT_TYPES)}")
    keys = properties.get("configurationKeys", [])
    if (
        not isinstance(keys, list)
        or len(keys) > _MAX_KEYS
        or not all(isinstance(k, str) and 0 < len(k) <= 128 for k in keys)
    ):
        raise PropertiesError("configurationKeys must be a list of setting names")
    created = _object(
        properties.get("createdResources", {}), "createdResources", {"systemIdentity", "role"}
    )
    out = {
        "targetService": target,
        "authInfo": auth,
        "clientType": properties["clientType"],
        "configurationKeys": list(keys),
        "createdResources": created,
    }
    if "secretStore" in properties:
        # Where a service principal's client secret is kept (never the secret itself).
        store = _object(
            properties["secretStore"],
            "secretStore",
            {"vaultId", "secretName", "secretUri", "readerPrincipalId", "roleAssignmentId"},
        )
        if not all(isinstance(store.get(k), str) for k in ("vaultId", "secretName", "secretUri")):
            raise PropertiesError("secretStore needs vaultId, secretName and secretUri")
        if auth.get("authType") != "servicePrincipal":
            raise PropertiesError("only a service principal connection has a secretStore")
        out["secretStore"] = store
    return out


def _after_write(_session: Any, resource: Any, _created: bool) -> None:
    try:
        check_connection_name(resource.name)
    except PropertiesError as exc:
        from keyless.base.errors import ResourceError

        raise ResourceError(400, "InvalidConnectionName", str(exc)) from None


CONNECTIONS = register(ResourceType(CONNECTION_TYPE, _validate, after_write=_after_write))
