"""The connection routes: `{app}/connections[/{name}]` (list, put, show, delete) and
`POST {app}/connections/{name}/validate`.

`validate` runs here because only the server can obtain the identity's token without handing
it to anyone: it issues one (audited like any other), uses it for one real login through the
target's own authentication, and returns only pass/fail lines with a fix for each failure.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.routing import Route

from keyless.access.arm import ArmApi, Call
from keyless.authority.context import Authority
from keyless.authority.managed_identity import issue_for_identity
from keyless.base.errors import ResourceError
from keyless.base.scopes import Scope, scope_key
from keyless.connector import clientsecret, records
from keyless.connector.target import ValidationContext, lookup
from keyless.resources import manager
from keyless.resources.manager import find_resource
from keyless.store.models import (
    DatabaseRoleMapping,
    Resource,
    ServicePrincipal,
    Vault,
    VaultSecret,
    VaultSecretVersion,
)

APP = "/subscriptions/{subscription}/resourceGroups/{group}/providers/Keyless.Web/apps/{name}"
ONE = APP + "/connections/{connection}"
ACTION = "Keyless.Web/apps/connections/{}"
_ = records.CONNECTIONS  # the resource type must be registered before the first request


def _app_scope(request: Request) -> Scope:
    p = request.path_params
    return Scope(p["subscription"], p["group"], "Keyless.Web", ("apps",), (p["name"],))


def _connection_scope(request: Request) -> Scope:
    p = request.path_params
    return Scope(
        p["subscription"],
        p["group"],
        "Keyless.Web",
        ("apps", "connections"),
        (p["name"], p["connection"]),
    )


def _identity_problem(app: Resource, principal_id: str, auth_type: str, sp: Any) -> str | None:
    if sp is None:
        return f"the identity {principal_id} no longer exists in the directory"
    identity = app.identity or {}
    if auth_type == "systemAssignedIdentity" and identity.get("principalId") != principal_id:
        return "the app's system-assigned identity was removed (or replaced by a new one)"
    if auth_type == "userAssignedIdentity":
        users = identity.get("userAssignedIdentities") or {}
        if not any(info.get("principalId") == principal_id for info in users.values()):
            return "the user-assigned identity is no longer assigned to the app"
    return None


def _secret_problem(session: Session, store: dict[str, Any]) -> str | None:
    """Why `keyless app run` could not be served the connection's client secret, from the
    store's rows (the value is never opened here)."""
    vault_id, name = str(store["vaultId"]), str(store["secretName"])
    vault = session.get(Vault, vault_id.rstrip("/").rsplit("/", 1)[-1].lower())
    if vault is None or scope_key(vault.resource_id) != scope_key(vault_id):
        return f"the vault {vault_id} no longer exists"
    secret = session.get(VaultSecret, (vault.name, name.lower()))
    if secret is None:
        return f"the secret {name!r} is gone from vault {vault.name}"
    if secret.deleted_at is not None:
        return f"the secret {name!r} in vault {vault.name} is deleted (recover it, or reconnect)"
    row = session.get(VaultSecretVersion, (vault.name, secret.name_key, secret.latest_version))
    now = time.time()
    if row is None or not row.enabled:
        return f"the latest version of {name!r} is disabled"
    if row.expires is not None and row.expires <= now:
        return f"the latest version of {name!r} has expired"
    if row.not_before is not None and row.not_before > now:
        return f"the latest version of {name!r} is not valid yet"
    return None


def _reference_principal(app: Resource) -> tuple[str | None, str]:
    """The object ID `keyless app run` reads vault references as (None if it has none)."""
    identity = app.identity or {}
    named = str((app.properties or {}).get("keyVaultReferenceIdentity") or "")
    if named and named.lower() != "systemassigned":
        for resource_id, info in (identity.get("userAssignedIdentities") or {}).items():
            if resource_id.lower() == named.lower():
                return info.get("principalId"), f"the user-assigned identity {resource_id}"
        return None, f"the app's keyVaultReferenceIdentity {named} is not assigned to the app"
    principal = identity.get("principalId")
    if principal is None:
        return None, "the app has no system-assigned identity to read vault references with"
    return str(principal), "the app's system-assigned identity"


def build_routes(api: ArmApi, authority: Authority) -> list[Route]:
    def list_(call: Call) -> Any:
        app = find_resource(call.session, call.caller.tenant_id, _app_scope(call.request))
        rows = [
            r
            for r in call.session.query(Resource)
            .filter(Resource.parent_key == app.key, Resource.type == records.CONNECTION_TYPE)
            .order_by(Resource.name)
        ]
        return {"value": [manager.resource_json(r) for r in rows]}

    def put(call: Call) -> Any:
        return manager.put_resource(
            call.session, call.caller, _connection_scope(call.request), call.body
        )

    def show(call: Call) -> Any:
        return manager.resource_json(
            find_resource(call.session, call.caller.tenant_id, _connection_scope(call.request))
        )

    def delete(call: Call) -> Any:
        return manager.delete_resource(
            call.session, call.caller.tenant_id, _connection_scope(call.request)
        )

    def validate(call: Call) -> Any:
        connection = find_resource(
            call.session, call.caller.tenant_id, _connection_scope(call.request)
        )
        app = call.session.get(Resource, connection.parent_key or "")
        if app is None:
            raise ResourceError(404, "ResourceNotFound", "the connection's app no longer exists")
        props = connection.properties
        auth = props["authInfo"]
        principal_id = str(auth.get("principalId", ""))
        sp = call.session.get(ServicePrincipal, principal_id)
        if sp is not None and sp.tenant_id != call.caller.tenant_id:
            sp = None
        target = call.session.get(Resource, scope_key(str(props["targetService"]["id"])))
        if target is not None and target.tenant_id != call.caller.tenant_id:
            target = None

        def issue_token(resource: str) -> str:
            assert sp is not None
            issued = issue_for_identity(
                authority, sp, resource, call.caller.principal_id, connection.id, str(uuid.uuid4())
            )
            return issued.access_token

        def role_owner(server: str, role: str) -> str | None:
            row = call.session.get(DatabaseRoleMapping, (server.lower(), role))
            if row is None or row.tenant_id != call.caller.tenant_id:
                return None
            return row.principal_id

        settings = (app.properties or {}).get("appSettings") or {}
        context = ValidationContext(
            connection=props,
            app_settings=dict(settings),
            identity_problem=_identity_problem(app, principal_id, str(auth["authType"]), sp),
            issue_token=issue_token,
            target=dict(target.properties) if target is not None else None,
            role_owner=role_owner,
            extra={
                # May the connection's identity do `action` at `scope`? (the vault target)
                "allowed": lambda action, scope: (
                    api.access.check(principal_id, action, scope, data=True).allowed
                ),
            },
        )
        try:
            target_impl = lookup(str(props["targetService"]["type"]))
        except ValueError as exc:
            raise ResourceError(400, "UnknownTarget", str(exc)) from None
        found = target_impl.validate(context)
        store = props.get("secretStore")
        if store:
            reader, who = _reference_principal(app)
            scope = f"{store['vaultId']}/secrets/{store['secretName']}"
            reader_problem: str | None = who
            if reader is not None:
                allowed = api.access.check(reader, clientsecret.GET_SECRET, scope, data=True)
                reader_problem = (
                    None
                    if allowed.allowed
                    else f"{who} ({reader}) may not read it ({clientsecret.GET_SECRET})"
                )
            found += clientsecret.checks(
                store, dict(settings), _secret_problem(call.session, store), reader_problem
            )
        checks = [c.as_json() for c in found]
        return {
            "id": connection.id,
            "valid": all(c["result"] == "pass" for c in checks),
            "checks": checks,
        }

    def scope(request: Request) -> str:
        return _connection_scope(request).id()

    def app_scope(request: Request) -> str:
        return _app_scope(request).id()

    return [
        api.route(APP + "/connections", "GET", ACTION.format("read"), app_scope, list_),
        api.route(ONE, "PUT", ACTION.format("write"), scope, put),
        api.route(ONE, "GET", ACTION.format("read"), scope, show),
        api.route(ONE, "DELETE", ACTION.format("delete"), scope, delete),
        api.route(ONE + "/validate", "POST", ACTION.format("validate/action"), scope, validate),
    ]
