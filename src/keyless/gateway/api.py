"""Role mappings as ARM child resources of a PostgreSQL server:
`{server}/roleMappings/{role}`, body `{"properties": {"principalId": "<object ID>"}}`.

Writing one says "this database role belongs to that principal": it is what lets a token log
in as the role, so it needs `Keyless.Database/postgresServers/roleMappings/write` on the
server (Owner, Contributor, PostgreSQL Administrator), and is audited with the mapping itself.
Creating the role inside PostgreSQL is the caller's (the CLI does it with the signed-in user's
token); Keyless keeps only who may log in as it.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from keyless.access.arm import ArmApi, Call
from keyless.base.errors import ResourceError, bad_request
from keyless.base.scopes import Scope
from keyless.gateway import servers
from keyless.gateway.mappings import (
    MappingError,
    RoleMapping,
    add_mapping,
    list_mappings,
    remove_mapping,
)
from keyless.resources.manager import find_resource

SERVER = (
    "/subscriptions/{subscription}/resourceGroups/{group}/providers/"
    "Keyless.Database/postgresServers/{server}"
)
CHILD = "roleMappings"
ACTION = f"{servers.POSTGRES_TYPE}/{CHILD}/{{}}"


def _server_scope(request: Request) -> Scope:
    p = request.path_params
    return Scope(
        p["subscription"], p["group"], "Keyless.Database", ("postgresServers",), (p["server"],)
    )


def _json(server_id: str, mapping: RoleMapping) -> dict[str, Any]:
    return {
        "id": f"{server_id}/{CHILD}/{mapping.role}",
        "name": mapping.role,
        "type": f"{servers.POSTGRES_TYPE}/{CHILD}",
        "properties": mapping.as_json(),
    }


def _server(call: Call) -> tuple[str, str]:
    resource = find_resource(call.session, call.caller.tenant_id, _server_scope(call.request))
    return resource.id, resource.name


def _error(exc: MappingError) -> ResourceError:
    code = {404: "ResourceNotFound", 409: "Conflict"}.get(exc.status, "InvalidRequestContent")
    return ResourceError(exc.status, code, str(exc))


def build_routes(api: ArmApi) -> list[Route]:
    def list_(call: Call) -> Any:
        server_id, name = _server(call)
        try:
            rows = list_mappings(call.session, call.caller.tenant_id, server=name)
        except MappingError as exc:
            raise _error(exc) from None
        return {"value": [_json(server_id, m) for m in rows]}

    def show(call: Call) -> Any:
        server_id, name = _server(call)
        role = call.param("role")
        for mapping in list_mappings(call.session, call.caller.tenant_id, server=name):
            if mapping.role == role:
                return _json(server_id, mapping)
        raise ResourceError(
            404, "ResourceNotFound", f"no role mapping for {role[:63]!r} on server {name!r}"
        )

    def put(call: Call) -> Any:
        server_id, name = _server(call)
        props = call.body.get("properties")
        principal = props.get("principalId") if isinstance(props, dict) else None
        if not isinstance(principal, str):
            raise bad_request(
                "properties.principalId is required: the object ID of the user, group, service "
                "principal or managed identity that logs in as this role"
            )
        try:
            principal = str(uuid.UUID(principal))
        except ValueError:
            raise bad_request("properties.principalId must be an object ID (GUID)") from None
        existing = {m.role for m in list_mappings(call.session, call.caller.tenant_id, name)}
        try:
            mapping = add_mapping(
                call.session,
                call.caller.tenant_id,
                name,
                call.param("role"),
                principal,
                call.caller.principal_id,
            )
        except MappingError as exc:
            raise _error(exc) from None
        return _json(server_id, mapping), mapping.role not in existing

    def delete(call: Call) -> Any:
        _server_id, name = _server(call)
        try:
            remove_mapping(
                call.session,
                call.caller.tenant_id,
                name,
                call.param("role"),
                call.caller.principal_id,
            )
        except MappingError as exc:
            raise _error(exc) from None
        return None

    def scope(request: Request) -> str:
        return _server_scope(request).id()

    one = f"{SERVER}/{CHILD}/{{role}}"
    return [
        api.route(f"{SERVER}/{CHILD}", "GET", ACTION.format("read"), scope, list_),
        api.route(one, "PUT", ACTION.format("write"), scope, put),
        api.route(one, "GET", ACTION.format("read"), scope, show),
        api.route(one, "DELETE", ACTION.format("delete"), scope, delete),
    ]
