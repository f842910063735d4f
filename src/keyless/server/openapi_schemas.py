"""The schemas `/openapi.json` gives requests and answers, as strict as the server's checks.

Each one mirrors the check it describes (named beside it), so that input the description
accepts is input the server takes, and a generated client refuses what the server would.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

ARM_ERROR: Schema = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}
# Entra ID's error shape, as the token, device code, revocation and discovery routes answer.
OAUTH_ERROR: Schema = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "error_description": {"type": "string"},
        "error_codes": {"type": "array", "items": {"type": "integer"}},
        "timestamp": {"type": "string"},
        "trace_id": {"type": "string"},
        "correlation_id": {"type": "string"},
    },
    "required": ["error", "error_description"],
}

GUID: Schema = {"type": "string", "format": "uuid"}
_GUID_RE = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# keyless.base.scopes: names, namespaces and type names of ARM IDs.
_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._()-]{0,89}"
_NAMESPACE_RE = r"[A-Za-z][A-Za-z0-9]*\.[A-Za-z][A-Za-z0-9.]*"
_TYPE_RE = r"[A-Za-z][A-Za-z0-9]{0,63}"
NAME: Schema = {"type": "string", "pattern": f"^{_NAME_RE}$"}
# A scope below the root, as the `{scope}` of `/{scope}/providers/Keyless.Authorization/...`
# (no leading slash: the path has it).
SCOPE: Schema = {
    "type": "string",
    "maxLength": 1024,
    "pattern": (
        f"^subscriptions/{_GUID_RE}(/resourceGroups/{_NAME_RE}"
        f"(/providers/{_NAMESPACE_RE}(/{_TYPE_RE}/{_NAME_RE})+)?)?$"
    ),
}
PATH_PARAMETERS: dict[str, Schema] = {
    "subscription": GUID,
    "group": NAME,
    "name": NAME,
    "connection": NAME,
    "namespace": {"type": "string", "pattern": f"^{_NAMESPACE_RE}$"},
    "type": {"type": "string", "pattern": f"^{_TYPE_RE}$"},
    "scope": SCOPE,
}
# Text the server strips and then wants 1..N characters of (display names, role names).
_STRIPPED_1_TO = r"^\s*\S([\s\S]{0,%d}\S)?\s*$"


def _named(most: int) -> Schema:
    return {"type": "string", "pattern": _STRIPPED_1_TO % (most - 2)}


_TAGS: Schema = {
    "type": "object",
    "maxProperties": 50,
    "propertyNames": {"minLength": 1, "maxLength": 512},
    "additionalProperties": {"type": "string", "maxLength": 256},
}
_LOCATION: Schema = {"type": "string", "minLength": 1, "maxLength": 64}
# keyless.resources.manager.put_resource
RESOURCE: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "type": {"type": "string"},
        "location": _LOCATION,
        "tags": _TAGS,
        "properties": {"type": "object"},
        "identity": {
            "type": "object",
            "properties": {
                "type": {
                    "type": "string",
                    "enum": [
                        "None",
                        "SystemAssigned",
                        "UserAssigned",
                        "SystemAssigned, UserAssigned",
                    ],
                },
                "principalId": GUID,
                "tenantId": GUID,
                "userAssignedIdentities": {"type": "object"},
            },
            "required": ["type"],
        },
    },
    "additionalProperties": False,
}
GROUP: Schema = {"type": "object", "properties": {"location": _LOCATION, "tags": _TAGS}}
SUBSCRIPTION: Schema = {
    "type": "object",
    "properties": {"displayName": _named(64)},
    "required": ["displayName"],
}
# keyless.access.assignments.create_assignment / put_role_definition
ASSIGNMENT: Schema = {
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {"roleDefinitionId": {"type": "string"}, "principalId": GUID},
            "required": ["roleDefinitionId", "principalId"],
        }
    },
    "required": ["properties"],
}
ROLE_DEFINITION: Schema = {
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {
                "roleName": _named(128),
                "description": {"type": "string", "maxLength": 1024},
                "permissions": {"type": "array", "minItems": 1, "maxItems": 1},
                "assignableScopes": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 50,
                    "items": {"type": "string"},
                },
            },
            "required": ["roleName", "permissions"],
        }
    },
    "required": ["properties"],
}
# keyless.authority.directory.check_display_name (1 to 120 printable characters)
_DISPLAY_NAME: Schema = {
    "type": "string",
    "maxLength": 120,
    "pattern": r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$",
}
SERVICE_PRINCIPAL: Schema = {
    "type": "object",
    "properties": {
        "displayName": _DISPLAY_NAME,
        "certificate": {"type": ["string", "null"]},  # a PEM; null or "" for none
        "createSecret": {"type": "boolean"},
        "secretYears": {"type": "number"},
    },
    "required": ["displayName"],
}
CREDENTIAL: Schema = {
    "type": "object",
    "properties": {
        "append": {"type": "boolean"},
        "certificate": {"type": "string"},
        "secretYears": {"type": "number"},
    },
}
GROUP_CREATE: Schema = {
    "type": "object",
    "properties": {"displayName": _DISPLAY_NAME},
    "required": ["displayName"],
}
MEMBER: Schema = {"type": "object", "properties": {"memberId": GUID}, "required": ["memberId"]}
# keyless.authority.sessions.decide_device_code
APPROVAL: Schema = {
    "type": "object",
    "properties": {
        "userCode": {
            "type": "string",
            "pattern": "^[BCDFGHJKLMNPQRSTVWXZbcdfghjklmnpqrstvwxz]{4}[- ]?"
            "[BCDFGHJKLMNPQRSTVWXZbcdfghjklmnpqrstvwxz]{4}$",
        },
        "deny": {"type": "boolean"},
    },
    "required": ["userCode"],
    "additionalProperties": False,
}
# keyless.authority.admin_api._tenant_update
TENANT: Schema = {
    "type": "object",
    "properties": {
        # null leaves a setting as it is.
        "tokenLifetimeSeconds": {"type": ["integer", "null"], "minimum": 5, "maximum": 86400},
        "keyRotationIntervalSeconds": {
            "type": ["integer", "null"],
            "minimum": 2,
            "maximum": 365 * 86400,
        },
    },
    "additionalProperties": False,
}
# The OAuth forms (keyless.authority.oauth_form: UTF-8, each field at most 16 KiB).
_FIELD: Schema = {"type": "string", "maxLength": 16 * 1024}
TOKEN_FORM: Schema = {
    "type": "object",
    "properties": {
        "grant_type": {
            "type": "string",
            "enum": [
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:device_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
            ],
        },
        "client_id": _FIELD,
        "client_secret": _FIELD,
        "client_assertion": _FIELD,
        "client_assertion_type": _FIELD,
        "scope": _FIELD,
        "device_code": _FIELD,
        "refresh_token": _FIELD,
        "assertion": _FIELD,
        "requested_token_use": _FIELD,
        "claims": _FIELD,
    },
    "required": ["grant_type", "client_id"],
}
DEVICE_CODE_FORM: Schema = {
    "type": "object",
    "properties": {"client_id": _FIELD, "scope": _FIELD},
    "required": ["client_id", "scope"],
}
REVOKE_FORM: Schema = {
    "type": "object",
    "properties": {"client_id": _FIELD, "token": _FIELD, "token_type_hint": _FIELD},
    "required": ["client_id", "token"],
}
