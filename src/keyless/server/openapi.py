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
from keyless.server import openapi_schemas as schemas

_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
# What every status means, for the description of each answer.
_MEANING = {
    200: "OK",
    201: "Created",
    204: "Done; nothing to return",
    400: "The request is not valid; the message says what to change",
    401: "No bearer token, or one this server does not accept",
    403: "The caller may not perform this action at this scope",
    404: "No such object (or one the caller may not see)",
    409: "Conflicts with what exists",
    413: "The request body is too large",
    429: "Too many requests of this kind at once; try again later",
}


def _statuses(route: Route, method: str, kind: str, oauth: bool) -> list[int]:
    """Every status the route can answer (the schemathesis run in the tests holds us to it)."""
    if kind == "public" and not oauth:
        return [200]
    if oauth:
        if route.path.endswith("/token"):
            return [200, 400, 401, 413, 429]
        if route.path.endswith(("/devicecode", "/revoke")):
            return [200, 400, 401, 413, 429]
        return [200, 400]  # discovery and JWKS: an unknown tenant
    statuses = [200, 400, 401, 403, 404]
    if route.path.endswith("/principals/{ref}"):
        statuses.append(409)  # a name several principals share: use the object ID
    if method in ("PUT", "POST"):
        statuses.append(201)
    if method in ("POST", "DELETE"):
        statuses.append(204)
    if method != "GET":
        statuses += [409, 413]
    return sorted(statuses)


def _request_body(route: Route, method: str) -> dict[str, Any] | None:
    """The body the route reads, where it reads one."""
    path, media = route.path, _JSON
    schema: dict[str, Any] | None = None
    if method in ("PUT", "PATCH") and path.endswith("/providers/{namespace}/{type}/{name}"):
        schema = schemas.RESOURCE
    elif method in ("PUT", "PATCH") and path.endswith("/resourceGroups/{group}"):
        schema = schemas.GROUP
    elif method == "POST" and path == "/subscriptions":
        schema = schemas.SUBSCRIPTION
    elif method == "PUT" and "/roleAssignments/" in path:
        schema = schemas.ASSIGNMENT
    elif method == "PUT" and "/roleDefinitions/" in path:
        schema = schemas.ROLE_DEFINITION
    elif method == "POST" and path.startswith("/admin/v1/"):
        schema = _ADMIN_BODIES.get(path.removeprefix("/admin/v1/"))
    elif method == "PATCH" and path == "/admin/v1/tenant":
        schema = schemas.TENANT
    elif method == "POST" and path.startswith("/{tenant}/oauth2/"):
        media, schema = _FORM, _OAUTH_FORMS.get(path.rsplit("/", 1)[-1])
    if schema is None:
        return None
    # A PATCH may change nothing; a credential reset with no body makes a new secret.
    required = method != "PATCH" and not path.endswith("/credentials")
    return {"required": required, "content": {media: {"schema": schema}}}


_ADMIN_BODIES = {
    "servicePrincipals": schemas.SERVICE_PRINCIPAL,
    "servicePrincipals/{id}/credentials": schemas.CREDENTIAL,
    "groups": schemas.GROUP_CREATE,
    "groups/{id}/members": schemas.MEMBER,
    "deviceCodes/approve": schemas.APPROVAL,
}
_OAUTH_FORMS = {
    "token": schemas.TOKEN_FORM,
    "devicecode": schemas.DEVICE_CODE_FORM,
    "revoke": schemas.REVOKE_FORM,
}


def _parameter(route: Route, name: str) -> dict[str, Any]:
    schema = schemas.PATH_PARAMETERS.get(name, {"type": "string"})
    if name == "id" and ("/roleAssignments/" in route.path or "/roleDefinitions/" in route.path):
        schema = schemas.GUID  # role assignments and definitions are named by GUIDs
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _operation(route: Route, method: str) -> dict[str, Any]:
    kind = getattr(route, "keyless_authorization", "undeclared")
    action = getattr(route, "keyless_action", None)
    oauth = route.path.startswith("/{tenant}/")
    error = schemas.OAUTH_ERROR if oauth else schemas.ARM_ERROR
    responses: dict[str, Any] = {}
    for status in _statuses(route, method, kind, oauth):
        answer: dict[str, Any] = {"description": _MEANING[status]}
        if status >= 400:
            answer["content"] = {_JSON: {"schema": error}}
        elif status != 204:
            media = "text/html" if route.path == "/device" else _JSON
            answer["content"] = {media: {"schema": {}}}
        responses[str(status)] = answer
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{route.name}",
        "x-keyless-authorization": kind,
        "parameters": [_parameter(route, name) for name in _PARAM.findall(route.path)],
        "responses": responses,
    }
    if kind != "public":
        operation["security"] = [{"bearer": []}]
    if action:
        operation["x-keyless-action"] = action
        operation["description"] = f"Requires `{action}` at the scope in the path" + (
            " (lists return only what the caller may read)." if kind == "rbac-filtered" else "."
        )
    if kind == "tenant-admin":
        operation["description"] = "Tenant administrators only."
    body = _request_body(route, method)
    if body is not None:
        operation["requestBody"] = body
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
