"""`POST {app}/identityToken`: a token for one of the app's managed identities, for the host
that runs the app.

Who may run an app may use its identities (as in Azure, where deploying code to an app gives
that code its identity): the route needs `Keyless.Web/apps/identityToken/action` on the app,
which Owner and Contributor have and Reader does not. Only identities the app holds are served.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from keyless.access.arm import ArmApi, Call
from keyless.authority import errors
from keyless.authority.context import Authority
from keyless.authority.errors import OAuthError
from keyless.authority.managed_identity import issue_for_identity
from keyless.base.errors import ResourceError, bad_request
from keyless.base.scopes import Scope, scope_key
from keyless.resources.manager import find_resource
from keyless.store.models import ServicePrincipal

ACTION = "Keyless.Web/apps/identityToken/action"
APP = "/subscriptions/{subscription}/resourceGroups/{group}/providers/Keyless.Web/apps/{name}"
SELECTORS = ("client_id", "object_id", "mi_res_id")


def _app_scope(request: Request) -> str:
    p = request.path_params
    return Scope(p["subscription"], p["group"], "Keyless.Web", ("apps",), (p["name"],)).id()


def select_identity(identity: dict[str, Any] | None, selector: dict[str, str]) -> str:
    """The principal (object ID) the request names, if the app holds it."""
    identity = identity or {}
    given = {k: v for k, v in selector.items() if k in SELECTORS and v}
    if len(given) > 1:
        raise bad_request("name the identity with one of client_id, object_id or mi_res_id")
    users: dict[str, dict[str, str]] = identity.get("userAssignedIdentities") or {}
    if not given:
        if "principalId" not in identity:
            raise bad_request(
                "the app has no system-assigned identity; enable it (`keyless app identity "
                "assign`) or name a user-assigned identity with client_id",
                "NoSystemAssignedIdentity",
            )
        return str(identity["principalId"])
    kind, value = next(iter(given.items()))
    for resource_id, info in users.items():
        if (
            (kind == "client_id" and info.get("clientId", "").lower() == value.lower())
            or (kind == "object_id" and info.get("principalId", "").lower() == value.lower())
            or (kind == "mi_res_id" and scope_key(resource_id) == scope_key(value))
        ):
            return info["principalId"]
    if kind == "object_id" and identity.get("principalId", "").lower() == value.lower():
        return str(identity["principalId"])
    raise ResourceError(
        400,
        "IdentityNotAssigned",
        f"the identity with {kind}={value[:200]} is not assigned to this app; attach it with "
        "`keyless app identity assign -g RG -n APP --identities ID`",
    )


def build_routes(api: ArmApi, authority: Authority) -> list[Route]:
    def identity_token(call: Call) -> Any:
        resource = call.body.get("resource")
        if not isinstance(resource, str) or not 0 < len(resource) <= 512:
            raise bad_request("resource must name the audience, e.g. api://keyless/postgres")
        selector = {k: call.body[k] for k in SELECTORS if isinstance(call.body.get(k), str)}
        app = find_resource(call.session, call.caller.tenant_id, _parse(call))
        principal_id = select_identity(app.identity, selector)
        identity = call.session.get(ServicePrincipal, principal_id)
        if identity is None:
            raise ResourceError(409, "IdentityMissing", "the app's identity no longer exists")
        try:
            issued = issue_for_identity(
                authority,
                identity,
                resource,
                call.caller.principal_id,
                app.id,
                str(uuid.uuid4()),
            )
        except OAuthError as exc:
            if exc.code == errors.APPLICATION_DISABLED:
                raise ResourceError(409, "IdentityDisabled", exc.description) from None
            raise bad_request(exc.description, "InvalidResource") from None
        return {
            **issued.oauth_response(),
            "resource": resource,
            "client_id": identity.app_id,
            "object_id": identity.object_id,
            "mi_res_id": identity.resource_id,
        }

    def _parse(call: Call) -> Scope:
        p = call.request.path_params
        return Scope(p["subscription"], p["group"], "Keyless.Web", ("apps",), (p["name"],))

    return [api.route(APP + "/identityToken", "POST", ACTION, _app_scope, identity_token)]
