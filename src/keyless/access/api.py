"""Role definitions, role assignments and check-access, under
`{scope}/providers/Keyless.Authorization/...` as ARM places them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.routing import Route

from keyless.access import assignments
from keyless.access.arm import ArmApi, Call
from keyless.access.engine import AccessEngine
from keyless.access.permissions import role_name
from keyless.base.errors import ResourceError, bad_request
from keyless.base.scopes import ROOT, is_within, parse_scope, scope_key
from keyless.store.models import RoleDefinition

AUTHZ = "/providers/Keyless.Authorization"
RA = "Keyless.Authorization/roleAssignments/{}"
RD = "Keyless.Authorization/roleDefinitions/{}"


def _scope(request: Request) -> str:
    raw = request.path_params.get("scope")
    return ROOT if raw is None else "/" + str(raw).strip("/")


def build_routes(api: ArmApi, access: AccessEngine) -> list[Route]:
    def list_definitions(call: Call) -> Any:
        index = access.index()
        name = call.request.query_params.get("roleName")
        name = role_name(name) if name is not None else None
        # The index holds every tenant's custom roles: list the built-in ones and the caller's.
        own = set(
            call.session.scalars(
                select(RoleDefinition.id).where(RoleDefinition.tenant_id == call.caller.tenant_id)
            )
        )
        roles = [
            r
            for r in index.roles.values()
            if (r.built_in or r.id in own) and (name is None or r.name.lower() == name.lower())
        ]
        return {
            "value": [
                assignments.role_json(r, call.scope)
                for r in sorted(roles, key=lambda r: (not r.built_in, r.name))
            ]
        }

    def show_definition(call: Call) -> Any:
        return assignments.role_json(
            assignments.find_role(call.session, call.caller.tenant_id, call.param("id")), call.scope
        )

    def role_scopes(call: Call) -> list[str]:
        row = call.session.get(RoleDefinition, call.param("id"))
        return list(row.assignable_scopes) if row and row.tenant_id == call.caller.tenant_id else []

    def allowed_at_role_scopes(call: Call, action: str, scopes: list[str]) -> None:
        """As in Azure: a custom role is changed or deleted only by whoever holds the action at
        every scope it can be assigned at (before and after), not merely at the URL's scope."""
        for scope in scopes:
            if not call.caller.check(action, scope).allowed:
                raise ResourceError(
                    403,
                    "AuthorizationFailed",
                    f"the client {call.caller.principal_id} does not have authorization to "
                    f"perform action {action} over scope {scope}, an assignable scope of the role",
                )

    def put_definition(call: Call) -> Any:
        before = role_scopes(call)
        result, created = assignments.put_role_definition(
            call.session, call.caller.tenant_id, call.param("id"), call.body
        )
        # Raising here rolls the write back: the handler runs in the request's transaction.
        allowed_at_role_scopes(
            call, RD.format("write"), before + result["properties"]["assignableScopes"]
        )
        return result, created

    def delete_definition(call: Call) -> Any:
        allowed_at_role_scopes(call, RD.format("delete"), role_scopes(call))
        return assignments.delete_role_definition(
            call.session, call.caller.tenant_id, call.param("id")
        )

    def list_assignments(call: Call) -> Any:
        principal = call.request.query_params.get("principalId")
        rows = assignments.list_assignments(
            call.session, call.caller.tenant_id, parse_scope(call.scope), principal
        )
        # Nobody sees what they cannot read: each assignment needs read at its own scope.
        visible = [r for r in rows if call.caller.check(RA.format("read"), r.scope).allowed]
        return {"value": [assignments.assignment_json(r) for r in visible]}

    def put_assignment(call: Call) -> Any:
        return assignments.create_assignment(
            call.session,
            call.caller.tenant_id,
            parse_scope(call.scope),
            call.param("id"),
            call.body,
            call.caller.principal_id,
        )

    def in_scope(call: Call) -> Any:
        """The assignment, if it lies at or below the scope of the URL: permission at a child
        scope must not reach an assignment made above it."""
        row = assignments.find_assignment(call.session, call.caller.tenant_id, call.param("id"))
        if not is_within(scope_key(call.scope), row.scope_key):
            raise ResourceError(
                404,
                "RoleAssignmentNotFound",
                f"no role assignment {row.id} at or below {call.scope}",
            )
        return row

    def show_assignment(call: Call) -> Any:
        return assignments.assignment_json(in_scope(call))

    def delete_assignment(call: Call) -> Any:
        return assignments.delete_assignment(call.session, call.caller.tenant_id, in_scope(call).id)

    def check(call: Call) -> Any:
        principal = call.body.get("principalId", call.caller.principal_id)
        actions = call.body.get("actions", [])
        if (
            not isinstance(principal, str)
            or not isinstance(actions, list)
            or not all(isinstance(a, str) and 0 < len(a) <= 256 for a in actions)
            or len(actions) > 100
        ):
            raise bad_request("send {principalId, actions: [action, 'data:dataAction', ...]}")
        assignments.principal_type(call.session, call.caller.tenant_id, principal)
        return assignments.check_access(access.index(), principal, call.scope, actions)

    def resolve(call: Call) -> Any:
        return assignments.resolve_principal(call.session, call.caller.tenant_id, call.param("ref"))

    routes: list[Route] = [
        api.route(
            "/providers/Keyless.Directory/principals/{ref}",
            "GET",
            "Keyless.Directory/principals/read",
            _scope,
            resolve,
        ),
    ]
    for prefix in (AUTHZ, "/{scope:path}" + AUTHZ):
        routes += [
            api.route(
                prefix + "/roleDefinitions", "GET", RD.format("read"), _scope, list_definitions
            ),
            api.route(
                prefix + "/roleDefinitions/{id}", "GET", RD.format("read"), _scope, show_definition
            ),
            api.route(
                prefix + "/roleDefinitions/{id}", "PUT", RD.format("write"), _scope, put_definition
            ),
            api.route(
                prefix + "/roleDefinitions/{id}",
                "DELETE",
                RD.format("delete"),
                _scope,
                delete_definition,
            ),
            api.route(
                prefix + "/roleAssignments",
                "GET",
                RA.format("read"),
                _scope,
                list_assignments,
                filtered=True,
            ),
            api.route(
                prefix + "/roleAssignments/{id}", "PUT", RA.format("write"), _scope, put_assignment
            ),
            api.route(
                prefix + "/roleAssignments/{id}", "GET", RA.format("read"), _scope, show_assignment
            ),
            api.route(
                prefix + "/roleAssignments/{id}",
                "DELETE",
                RA.format("delete"),
                _scope,
                delete_assignment,
            ),
            api.route(prefix + "/checkAccess", "POST", RA.format("read"), _scope, check),
        ]
    return routes
