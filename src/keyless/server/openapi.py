"""The OpenAPI document of the server, built from the routes themselves.

Every route carries how it is authorized (`keyless_authorization`) and, for management
routes, the action it needs (`keyless_action`): the document says both, so a reader (or a
client generator) sees exactly what each call requires, and the document cannot drift from
the code.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Route

import keyless

_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}
_RESOURCE = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "type": {"type": "string"},
        "location": {"type": "string"},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "properties": {"type": "object"},
        "identity": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "examples": ["SystemAssigned, UserAssigned"]},
                "principalId": {"type": "string", "format": "uuid"},
                "tenantId": {"type": "string", "format": "uuid"},
                "userAssignedIdentities": {"type": "object"},
            },
        },
    },
}


def _operation(route: Route, method: str) -> dict[str, Any]:
    kind = getattr(route, "keyless_authorization", "undeclared")
    action = getattr(route, "keyless_action", None)
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{route.name}",
        "x-keyless-authorization": kind,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ],
        "responses": {
            "200": {"description": "OK"},
            "400": {
                "description": "Bad request",
                "content": {"application/json": {"schema": _ERROR}},
            },
        },
    }
    if kind != "public":
        operation["security"] = [{"bearer": []}]
        operation["responses"]["401"] = {"description": "No or invalid bearer token"}
        operation["responses"]["403"] = {
            "description": "The caller lacks the action at this scope",
            "content": {"application/json": {"schema": _ERROR}},
        }
    if action:
        operation["x-keyless-action"] = action
        operation["description"] = f"Requires `{action}` at the scope in the path" + (
            " (lists return only what the caller may read)." if kind == "rbac-filtered" else "."
        )
    if kind == "tenant-admin":
        operation["description"] = "Tenant administrators only."
    if method in ("PUT", "PATCH") and "/providers/{namespace}" in route.path:
        operation["requestBody"] = {"content": {"application/json": {"schema": _RESOURCE}}}
    return operation


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(route, method)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Keyless",
            "version": keyless.__version__,
            "description": "Token service (Entra ID-compatible), directory administration, "
            "and the ARM-shaped management API.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
        },
        "paths": paths,
    }
