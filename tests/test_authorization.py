"""Authorization of every route of the server, enumerated from the real ASGI application.

Four service principals call the management API: an Owner, a Contributor and a Reader, each
assigned at the subscription, and one with no role at all. Every role-checked route (each path
and method) gets a concrete request against real objects, and every call must either succeed as
the role allows or be refused with 403 naming the missing action (and be audited as denied).
Lists answer 200 with only what the caller may read. A route that declares no authorization, or
that this module has no request for, fails the test: no route is left unchecked.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.routing import Route

from keyless.authority.config import DataDir
from keyless.authority.context import Authority
from keyless.authority.masterkey import MasterKey
from keyless.server.app import create_app
from keyless.store.engine import open_engine
from keyless.store.location import default_store_url
from tests.support.server import KeylessServer, running_server

MANAGEMENT = "api://keyless/management/.default"
# "user": any signed-in user, acting for themselves (approving a device sign-in).
KINDS = {"public", "tenant-admin", "user", "rbac", "rbac-filtered"}
# The only routes anybody may call without a management token: OAuth/OIDC discovery, JWKS,
# the token endpoint itself, the health check and the OpenAPI document.
PUBLIC = {
    ("/healthz", "GET"),
    ("/openapi.json", "GET"),
    ("/{tenant}/v2.0/.well-known/openid-configuration", "GET"),
    ("/{tenant}/.well-known/openid-configuration", "GET"),
    ("/{tenant}/discovery/v2.0/keys", "GET"),
    ("/{tenant}/oauth2/v2.0/token", "POST"),
    # Developer sign-in (public clients): RFC 8628 device authorization, RFC 7009 revocation,
    # and the static page the device code response points to.
    ("/{tenant}/oauth2/v2.0/devicecode", "POST"),
    ("/{tenant}/oauth2/v2.0/revoke", "POST"),
    ("/device", "GET"),
}
ROLES = ("Owner", "Contributor", "Reader")
PRINCIPALS = (*ROLES, "none")

SUB = "/subscriptions/{subscription}"
RG = SUB + "/resourceGroups/{group}"
RES = RG + "/providers/{namespace}/{type}/{name}"
AUTHZ = "/providers/Keyless.Authorization"
SCOPED = "/{scope:path}" + AUTHZ
RD = "Keyless.Authorization/roleDefinitions/"
RA = "Keyless.Authorization/roleAssignments/"
GROUP = "Keyless.Resources/subscriptions/resourceGroups/"
APPS = "Keyless.Web/apps"
IDENTITIES = "Keyless.ManagedIdentity/userAssignedIdentities"
APP_ROUTE = RG + "/providers/Keyless.Web/apps/{name}"
IDENTITY_ROUTE = RG + "/providers/" + IDENTITIES + "/{name}"
FIC = "/federatedIdentityCredentials"
FIC_ACTION = IDENTITIES + FIC + "/"
_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


# ------------------------------------------------------------------------------------ helpers


def short() -> str:
    return uuid.uuid4().hex[:8]


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def client_token(server: KeylessServer, app_id: str, secret: str, scope: str = MANAGEMENT) -> str:
    with server.http() as http:
        response = http.post(
            server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": app_id,
                "client_secret": secret,
                "scope": scope,
            },
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def routes_of_app(data_dir: Path, endpoint: str) -> list[Any]:
    """The route objects of the real ASGI application, built in-process over the data dir."""
    engine = open_engine(default_store_url(data_dir))
    authority = Authority.create(engine, MasterKey.load(DataDir(data_dir).master_key), endpoint, [])
    try:
        return list(create_app(authority, run_maintenance=False).routes)
    finally:
        authority.issuer_keys.close()
        engine.dispose()


def methods_of(route: Route) -> list[str]:
    return sorted((route.methods or set()) - {"HEAD"})


@dataclass
class World:
    server: KeylessServer
    http: httpx.Client
    admin: str
    tokens: dict[str, str]  # principal name -> management token
    oids: dict[str, str]
    other_audience: str  # the Owner's token for api://keyless/postgres
    sub: str
    rg: str
    app: str
    identity: str
    custom_role: str
    bystander: str  # a service principal the calls talk about
    assignment: str  # an assignment at the resource group
    root_assignment: str  # the administrator's Owner assignment at /
    routes: list[Any] = field(default_factory=list)

    @property
    def sub_id(self) -> str:
        return f"/subscriptions/{self.sub}"

    @property
    def rg_id(self) -> str:
        return f"{self.sub_id}/resourceGroups/{self.rg}"

    def resource_id(self, type_: str, name: str, group: str | None = None) -> str:
        return f"{self.sub_id}/resourceGroups/{group or self.rg}/providers/{type_}/{name}"

    def as_admin(self, method: str, url: str, body: Any = None) -> Any:
        response = self.http.request(
            method, url, json=body, headers={"Authorization": f"Bearer {self.admin}"}
        )
        assert response.status_code < 300, f"{method} {url}: {response.text}"
        return response.json() if response.content else None

    def new_group(self) -> str:
        return str(self.as_admin("POST", "/admin/v1/groups", {"displayName": f"g-{short()}"})["id"])

    def assign(self, scope: str, principal: str, role: str) -> str:
        name = str(uuid.uuid4())
        prefix = "" if scope == "/" else scope
        self.as_admin(
            "PUT",
            f"{prefix}{AUTHZ}/roleAssignments/{name}",
            {"properties": {"roleDefinitionId": role, "principalId": principal}},
        )
        return name

    def new_role(self, scope: str) -> str:
        role_id = str(uuid.uuid4())
        prefix = "" if scope == "/" else scope
        self.as_admin(
            "PUT",
            f"{prefix}{AUTHZ}/roleDefinitions/{role_id}",
            {
                "properties": {
                    "roleName": f"role-{short()}",
                    "permissions": [{"actions": [f"{APPS}/read"]}],
                    "assignableScopes": [scope],
                }
            },
        )
        return role_id

    def new_resource(self, type_: str, group: str | None = None) -> str:
        name = f"r-{short()}"
        body = {"properties": {"command": ["true"]}} if type_ == APPS else {}
        self.as_admin("PUT", self.resource_id(type_, name, group), body)
        return name


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("authorization") / "data"
    with running_server(data_dir) as server, server.http() as http:
        admin = server.admin_token()
        tokens, oids = {}, {}
        secrets: dict[str, tuple[str, str]] = {}
        for who in PRINCIPALS:
            created = server.cli_json(
                "ad", "sp", "create-for-rbac", "--name", f"authz-{who}", "--secret"
            )
            secrets[who] = (created["appId"], created["password"])
            tokens[who] = client_token(server, created["appId"], created["password"])
            oids[who] = claims_of(tokens[who])["oid"]
        w = World(
            server=server,
            http=http,
            admin=admin,
            tokens=tokens,
            oids=oids,
            other_audience=client_token(
                server, *secrets["Owner"], scope="api://keyless/postgres/.default"
            ),
            sub=server.subscription_id,
            rg="authz",
            app="",
            identity="",
            custom_role="",
            bystander="",
            assignment="",
            root_assignment="",
        )
        for role in ROLES:
            w.assign(w.sub_id, oids[role], role)
        w.as_admin("PUT", w.rg_id, {"tags": {"purpose": "authorization"}})
        w.app = w.new_resource(APPS)
        w.identity = w.new_resource(IDENTITIES)
        w.as_admin("PATCH", w.resource_id(APPS, w.app), {"identity": {"type": "SystemAssigned"}})
        w.custom_role = w.new_role(w.sub_id)
        w.bystander = w.as_admin(
            "POST", "/admin/v1/servicePrincipals", {"displayName": f"bystander-{short()}"}
        )["id"]
        w.assignment = w.assign(w.rg_id, w.bystander, "Reader")
        listed = w.as_admin("GET", f"{AUTHZ}/roleAssignments")["value"]
        w.root_assignment = next(a["name"] for a in listed if a["properties"]["scope"] == "/")
        w.routes = routes_of_app(data_dir, server.endpoint)
        yield w


# ------------------------------------------------------------ the request for every rbac route


@dataclass
class Call:
    method: str
    url: str
    action: str
    scope: str
    body: Any = None
    listed: str | None = None  # filtered lists: an ID every principal with a role must see
    hidden: str | None = None  # filtered lists: an ID no subscription-scoped principal may see


Spec = Callable[[World, str], list[Call]]


def expected_allowed(who: str, action: str, scope: str, sub: str) -> bool:
    """The built-in roles as documented (not as implemented): roles reach their scope and
    below; Owner may do anything, Contributor anything but write or delete role assignments and
    definitions, Reader only read."""
    if who == "none" or not (scope + "/").lower().startswith(f"/subscriptions/{sub}/".lower()):
        return False
    if who == "Owner":
        return True
    if who == "Contributor":
        lowered = action.lower()
        return not (
            lowered.startswith("keyless.authorization/") and lowered.endswith(("/write", "/delete"))
        )
    return action.lower().endswith("/read")


def _authz_specs(prefix: str) -> dict[tuple[str, str], Spec]:
    """Role definitions and assignments, at / (prefix AUTHZ) or at the resource group."""

    def base(w: World) -> tuple[str, str]:
        return ("", "/") if prefix == AUTHZ else (w.rg_id, w.rg_id)

    def list_defs(w: World, _who: str) -> list[Call]:
        url, scope = base(w)
        return [Call("GET", f"{url}{AUTHZ}/roleDefinitions", RD + "read", scope)]

    def show_def(w: World, _who: str) -> list[Call]:
        url, scope = base(w)
        return [
            Call("GET", f"{url}{AUTHZ}/roleDefinitions/{w.custom_role}", RD + "read", scope),
            Call("GET", f"{url}{AUTHZ}/roleDefinitions/Owner", RD + "read", scope),
        ]

    def put_def(w: World, who: str) -> list[Call]:
        url, scope = base(w)
        body = {
            "properties": {
                "roleName": f"custom-{who}-{short()}",
                "permissions": [{"actions": [f"{APPS}/read"], "notActions": []}],
                "assignableScopes": [scope],
            }
        }
        return [
            Call("PUT", f"{url}{AUTHZ}/roleDefinitions/{uuid.uuid4()}", RD + "write", scope, body)
        ]

    def delete_def(w: World, _who: str) -> list[Call]:
        url, scope = base(w)
        role = w.new_role(scope)
        return [Call("DELETE", f"{url}{AUTHZ}/roleDefinitions/{role}", RD + "delete", scope)]

    def list_assignments(w: World, _who: str) -> list[Call]:
        url, scope = base(w)
        return [
            Call(
                "GET",
                f"{url}{AUTHZ}/roleAssignments",
                RA + "read",
                scope,
                listed=w.assignment,
                hidden=w.root_assignment,
            )
        ]

    def put_assignment(w: World, _who: str) -> list[Call]:
        url, scope = base(w)
        body = {"properties": {"roleDefinitionId": "Reader", "principalId": w.new_group()}}
        return [
            Call("PUT", f"{url}{AUTHZ}/roleAssignments/{uuid.uuid4()}", RA + "write", scope, body)
        ]

    def show_assignment(w: World, _who: str) -> list[Call]:
        url, scope = base(w)
        return [Call("GET", f"{url}{AUTHZ}/roleAssignments/{w.assignment}", RA + "read", scope)]

    def delete_assignment(w: World, _who: str) -> list[Call]:
        url, scope = base(w)
        name = w.assign(w.rg_id, w.new_group(), "Reader")
        return [Call("DELETE", f"{url}{AUTHZ}/roleAssignments/{name}", RA + "delete", scope)]

    def check(w: World, _who: str) -> list[Call]:
        url, scope = base(w)
        body = {"principalId": w.bystander, "actions": [f"{APPS}/read", f"{APPS}/delete"]}
        return [Call("POST", f"{url}{AUTHZ}/checkAccess", RA + "read", scope, body)]

    return {
        (prefix + "/roleDefinitions", "GET"): list_defs,
        (prefix + "/roleDefinitions/{id}", "GET"): show_def,
        (prefix + "/roleDefinitions/{id}", "PUT"): put_def,
        (prefix + "/roleDefinitions/{id}", "DELETE"): delete_def,
        (prefix + "/roleAssignments", "GET"): list_assignments,
        (prefix + "/roleAssignments/{id}", "PUT"): put_assignment,
        (prefix + "/roleAssignments/{id}", "GET"): show_assignment,
        (prefix + "/roleAssignments/{id}", "DELETE"): delete_assignment,
        (prefix + "/checkAccess", "POST"): check,
    }


def _resource_calls(verb: str, method: str) -> Spec:
    """The four verbs on a resource, for an app and for a user-assigned identity."""

    def spec(w: World, who: str) -> list[Call]:
        calls = []
        for type_, existing in ((APPS, w.app), (IDENTITIES, w.identity)):
            body: Any = None
            if method == "PUT":
                name = f"new-{who.lower()}-{short()}"
                body = {"properties": {"command": ["true"]}} if type_ == APPS else {}
            elif method == "DELETE":
                name = w.new_resource(type_)
            else:
                name = existing
                body = {"tags": {"patchedBy": who}} if method == "PATCH" else None
            rid = w.resource_id(type_, name)
            calls.append(Call(method, rid, f"{type_}/{verb}", rid, body))
        return calls

    return spec


def _resource_group_delete(w: World, _who: str) -> list[Call]:
    group = f"doomed-{short()}"
    w.as_admin("PUT", f"{w.sub_id}/resourceGroups/{group}", {})
    w.new_resource(APPS, group)
    scope = f"{w.sub_id}/resourceGroups/{group}"
    return [Call("DELETE", scope, GROUP + "delete", scope)]


def _resource_group_put(w: World, who: str) -> list[Call]:
    scope = f"{w.sub_id}/resourceGroups/rg-{who.lower()}-{short()}"
    return [Call("PUT", scope, GROUP + "write", scope, {"location": "local"})]


def _fic_put(w: World, who: str) -> list[Call]:
    identity = w.resource_id(IDENTITIES, w.identity)
    body = {"properties": {"issuer": "https://issuer.example", "subject": f"sub-{who}-{short()}"}}
    url = f"{identity}{FIC}/fic-{who.lower()}-{short()}"
    return [Call("PUT", url, FIC_ACTION + "write", identity, body)]


def _fic_existing(method: str, verb: str) -> Spec:
    def spec(w: World, _who: str) -> list[Call]:
        identity = w.resource_id(IDENTITIES, w.identity)
        name = f"fic-{short()}"
        body = {"properties": {"issuer": "https://issuer.example", "subject": f"s-{name}"}}
        w.as_admin("PUT", f"{identity}{FIC}/{name}", body)
        return [Call(method, f"{identity}{FIC}/{name}", FIC_ACTION + verb, identity)]

    return spec


PG = "Keyless.Database/postgresServers"
PG_ROUTE = RG + "/providers/" + PG + "/{server}"
MAPPINGS = "/roleMappings"
MAPPING_ACTION = PG + MAPPINGS + "/"
CONNECTIONS = "/connections"
CONNECTION_ACTION = APPS + CONNECTIONS + "/"


def _pg_server(w: World) -> str:
    name = f"pg-{short()}"
    w.as_admin("PUT", w.resource_id(PG, name), {"properties": {"host": "127.0.0.1"}})
    return w.resource_id(PG, name)


def _mapping_put(w: World, who: str) -> list[Call]:
    server = _pg_server(w)
    body = {"properties": {"principalId": w.bystander}}
    return [
        Call("PUT", f"{server}{MAPPINGS}/r_{who.lower()}", MAPPING_ACTION + "write", server, body)
    ]


def _mapping_list(w: World, _who: str) -> list[Call]:
    server = _pg_server(w)
    return [Call("GET", server + MAPPINGS, MAPPING_ACTION + "read", server)]


def _mapping_existing(method: str, verb: str) -> Spec:
    def spec(w: World, _who: str) -> list[Call]:
        server = _pg_server(w)
        url = f"{server}{MAPPINGS}/role_{short()}"
        w.as_admin("PUT", url, {"properties": {"principalId": w.bystander}})
        return [Call(method, url, MAPPING_ACTION + verb, server)]

    return spec


def _connection_body(w: World) -> dict[str, Any]:
    return {
        "properties": {
            "targetService": {
                "type": "postgres",
                "id": w.resource_id(PG, "absent"),
                "database": "db",
                "role": "r",
            },
            "authInfo": {"authType": "systemAssignedIdentity", "principalId": w.bystander},
            "clientType": "python",
            "configurationKeys": [],
        }
    }


def _connection_put(w: World, who: str) -> list[Call]:
    url = f"{w.resource_id(APPS, w.app)}{CONNECTIONS}/c_{who.lower()}_{short()}"
    return [Call("PUT", url, CONNECTION_ACTION + "write", url, _connection_body(w))]


def _connection_existing(method: str, verb: str, suffix: str = "") -> Spec:
    def spec(w: World, _who: str) -> list[Call]:
        url = f"{w.resource_id(APPS, w.app)}{CONNECTIONS}/c_{short()}"
        w.as_admin("PUT", url, _connection_body(w))
        return [Call(method, url + suffix, CONNECTION_ACTION + verb, url, {} if suffix else None)]

    return spec


def build_specs() -> dict[tuple[str, str], Spec]:
    specs: dict[tuple[str, str], Spec] = {
        ("/providers/Keyless.Directory/principals/{ref}", "GET"): lambda w, _: [
            Call(
                "GET",
                f"/providers/Keyless.Directory/principals/{w.bystander}",
                "Keyless.Directory/principals/read",
                "/",
            )
        ],
        ("/subscriptions", "GET"): lambda w, _: [
            Call(
                "GET",
                "/subscriptions",
                "Keyless.Resources/subscriptions/read",
                "/",
                listed=w.sub_id,
            )
        ],
        ("/subscriptions", "POST"): lambda w, who: [
            Call(
                "POST",
                "/subscriptions",
                "Keyless.Resources/subscriptions/write",
                "/",
                {"displayName": f"sub of {who}"},
            )
        ],
        (SUB, "GET"): lambda w, _: [
            Call("GET", w.sub_id, "Keyless.Resources/subscriptions/read", w.sub_id)
        ],
        ("/providers/Keyless.Resources/resourceTypes", "GET"): lambda w, _: [
            Call(
                "GET",
                "/providers/Keyless.Resources/resourceTypes",
                "Keyless.Resources/resourceTypes/read",
                "/",
            )
        ],
        (SUB + "/resourceGroups", "GET"): lambda w, _: [
            Call("GET", f"{w.sub_id}/resourceGroups", GROUP + "read", w.sub_id, listed=w.rg_id)
        ],
        (SUB + "/resources", "GET"): lambda w, _: [
            Call(
                "GET",
                f"{w.sub_id}/resources",
                "Keyless.Resources/resources/read",
                w.sub_id,
                listed=w.resource_id(APPS, w.app),
            ),
            Call(
                "GET",
                f"{w.sub_id}/resources?resourceType={IDENTITIES}",
                "Keyless.Resources/resources/read",
                w.sub_id,
                listed=w.resource_id(IDENTITIES, w.identity),
                hidden=w.resource_id(APPS, w.app),
            ),
        ],
        (RG, "PUT"): _resource_group_put,
        (RG, "GET"): lambda w, _: [Call("GET", w.rg_id, GROUP + "read", w.rg_id)],
        (RG, "PATCH"): lambda w, who: [
            Call("PATCH", w.rg_id, GROUP + "write", w.rg_id, {"tags": {"by": who}})
        ],
        (RG, "DELETE"): _resource_group_delete,
        (RG + "/resources", "GET"): lambda w, _: [
            Call(
                "GET",
                f"{w.rg_id}/resources",
                "Keyless.Resources/resources/read",
                w.rg_id,
                listed=w.resource_id(IDENTITIES, w.identity),
            )
        ],
        (RG + "/providers/{namespace}/{type}", "GET"): lambda w, _: [
            Call(
                "GET",
                f"{w.rg_id}/providers/{type_}",
                f"{type_}/read",
                w.rg_id,
                listed=w.resource_id(type_, name),
            )
            for type_, name in ((APPS, w.app), (IDENTITIES, w.identity))
        ],
        (APP_ROUTE + "/identityToken", "POST"): lambda w, _: [
            Call(
                "POST",
                w.resource_id(APPS, w.app) + "/identityToken",
                "Keyless.Web/apps/identityToken/action",
                w.resource_id(APPS, w.app),
                {"resource": "api://keyless/postgres"},
            )
        ],
        (IDENTITY_ROUTE + FIC, "GET"): lambda w, _: [
            Call(
                "GET",
                w.resource_id(IDENTITIES, w.identity) + FIC,
                FIC_ACTION + "read",
                w.resource_id(IDENTITIES, w.identity),
            )
        ],
        (IDENTITY_ROUTE + FIC + "/{fic}", "PUT"): _fic_put,
        (IDENTITY_ROUTE + FIC + "/{fic}", "GET"): _fic_existing("GET", "read"),
        (IDENTITY_ROUTE + FIC + "/{fic}", "DELETE"): _fic_existing("DELETE", "delete"),
        (PG_ROUTE + MAPPINGS, "GET"): _mapping_list,
        (PG_ROUTE + MAPPINGS + "/{role}", "PUT"): _mapping_put,
        (PG_ROUTE + MAPPINGS + "/{role}", "GET"): _mapping_existing("GET", "read"),
        (PG_ROUTE + MAPPINGS + "/{role}", "DELETE"): _mapping_existing("DELETE", "delete"),
        (APP_ROUTE + CONNECTIONS, "GET"): lambda w, _: [
            Call(
                "GET",
                w.resource_id(APPS, w.app) + CONNECTIONS,
                CONNECTION_ACTION + "read",
                w.resource_id(APPS, w.app),
            )
        ],
        (APP_ROUTE + CONNECTIONS + "/{connection}", "PUT"): _connection_put,
        (APP_ROUTE + CONNECTIONS + "/{connection}", "GET"): _connection_existing("GET", "read"),
        (APP_ROUTE + CONNECTIONS + "/{connection}", "DELETE"): _connection_existing(
            "DELETE", "delete"
        ),
        (APP_ROUTE + CONNECTIONS + "/{connection}/validate", "POST"): _connection_existing(
            "POST", "validate/action", "/validate"
        ),
        (RES, "PUT"): _resource_calls("write", "PUT"),
        (RES, "GET"): _resource_calls("read", "GET"),
        (RES, "PATCH"): _resource_calls("write", "PATCH"),
        (RES, "DELETE"): _resource_calls("delete", "DELETE"),
    }
    specs.update(_authz_specs(AUTHZ))
    specs.update(_authz_specs(SCOPED))
    return specs


def declared(world: World, kinds: set[str]) -> list[tuple[str, str, Any]]:
    return [
        (route.path, method, route)
        for route in world.routes
        if getattr(route, "keyless_authorization", None) in kinds
        for method in methods_of(route)
    ]


def ids_in(response: httpx.Response) -> list[str]:
    body = response.json()
    assert isinstance(body.get("value"), list), body
    return [str(item.get("id")) for item in body["value"]] + [
        str(item.get("name")) for item in body["value"]
    ]


def fill(path: str, w: World) -> str:
    values = {
        "tenant": w.server.tenant_id,
        "subscription": w.sub,
        "group": w.rg,
        "namespace": "Keyless.Web",
        "type": "apps",
        "name": w.app,
        "id": str(uuid.uuid4()),
        "ref": w.bystander,
        "scope": w.rg_id.lstrip("/"),
    }
    return _PARAM.sub(lambda m: values.get(m.group(1), "x"), path)


# ---------------------------------------------------------------------------------------- tests


def test_every_route_declares_how_it_is_authorized(world: World) -> None:
    assert world.routes, "the application has no routes"
    undeclared = [
        getattr(route, "path", repr(route))
        for route in world.routes
        if getattr(route, "keyless_authorization", None) not in KINDS
    ]
    assert not undeclared, f"routes without a declared authorization check: {undeclared}"
    assert all(isinstance(route, Route) for route in world.routes), "unexpected route kinds"
    public = {(path, method) for path, method, _ in declared(world, {"public"})}
    assert public == PUBLIC, (
        f"public routes changed: added {sorted(public - PUBLIC)}, removed {sorted(PUBLIC - public)}"
    )
    for path, method, route in declared(world, {"rbac", "rbac-filtered"}):
        assert getattr(route, "keyless_action", None), f"{method} {path} names no action"
    # Every role-checked route has a concrete request below, and no request is stale.
    rbac = {(path, method) for path, method, _ in declared(world, {"rbac", "rbac-filtered"})}
    specs = set(build_specs())
    assert not rbac - specs, f"routes this test does not exercise (add them): {rbac - specs}"
    assert not specs - rbac, f"requests for routes that no longer exist: {specs - rbac}"


def test_four_principals_over_every_rbac_route(world: World) -> None:
    specs = build_specs()
    failures: list[str] = []
    denied: list[tuple[str, str, str]] = []
    exercised = 0
    for path, method, route in declared(world, {"rbac", "rbac-filtered"}):
        filtered = route.keyless_authorization == "rbac-filtered"
        for who in PRINCIPALS:
            for call in specs[(path, method)](world, who):
                exercised += 1
                declared_action = str(route.keyless_action)
                if "{" not in declared_action and declared_action != "per-request":
                    assert declared_action == call.action, (path, method, declared_action)
                response = world.http.request(
                    call.method,
                    call.url,
                    json=call.body,
                    headers={"Authorization": f"Bearer {world.tokens[who]}"},
                )
                what = f"{who}: {call.method} {call.url} -> {response.status_code}"
                if filtered:
                    if response.status_code != 200:
                        failures.append(f"{what} (a list must answer 200): {response.text}")
                        continue
                    ids = ids_in(response)
                    if who == "none" and ids:
                        failures.append(f"{what}: a principal without roles sees {ids}")
                    if who != "none" and call.listed and call.listed not in ids:
                        failures.append(f"{what}: {call.listed} missing from {ids}")
                    if call.hidden and call.hidden in ids:
                        failures.append(f"{what}: {call.hidden} is listed but not readable")
                    continue
                allowed = expected_allowed(who, call.action, call.scope, world.sub)
                if allowed:
                    if not 200 <= response.status_code < 300:
                        failures.append(f"{what}, expected success: {response.text}")
                    elif call.method == "PUT" and response.status_code != 201:
                        failures.append(f"{what}, expected 201 Created")
                    continue
                if response.status_code != 403:
                    failures.append(f"{what}, expected 403: {response.text[:300]}")
                    continue
                error = response.json().get("error", {})
                if error.get("code") != "AuthorizationFailed" or call.action not in error.get(
                    "message", ""
                ):
                    failures.append(f"{what}: the refusal does not name {call.action}: {error}")
                denied.append((world.oids[who], call.action, call.scope))
    assert exercised > 150
    assert not failures, "\n".join(failures)

    # Every refusal is in the audit log, as denied, with who, what and where.
    audit = world.as_admin("GET", "/admin/v1/audit?result=denied&limit=1000")["value"]
    assert all(record["result"] == "denied" for record in audit)
    recorded = {(r["actor"], r["action"], r["target"]) for r in audit}
    missing = [d for d in denied if d not in recorded]
    assert not missing, f"denied calls missing from the audit log: {missing}"
    # The Reader and the principal without roles were refused at least once per write route.
    assert {d[0] for d in denied} >= {world.oids["Reader"], world.oids["none"]}
    # The Contributor was refused exactly the role-assignment and role-definition writes.
    contributor = {(a, s) for o, a, s in denied if o == world.oids["Contributor"]}
    assert (RA + "write", world.rg_id) in contributor
    assert (RD + "delete", world.rg_id) in contributor
    assert all(a.startswith("Keyless.Authorization/") or s == "/" for a, s in contributor)


def test_filtered_lists_show_each_principal_only_what_it_may_read(world: World) -> None:
    """A Reader at one resource group sees that group's resources and nothing else."""
    group = f"other-{short()}"
    world.as_admin("PUT", f"{world.sub_id}/resourceGroups/{group}", {})
    elsewhere = world.new_resource(APPS, group)
    narrow = world.as_admin(
        "POST",
        "/admin/v1/servicePrincipals",
        {"displayName": f"narrow-{short()}", "createSecret": True},
    )
    token = client_token(world.server, narrow["appId"], narrow["password"])
    world.assign(world.rg_id, narrow["id"], "Reader")
    headers = {"Authorization": f"Bearer {token}"}
    resources = world.http.get(f"{world.sub_id}/resources", headers=headers)
    assert resources.status_code == 200, resources.text
    ids = ids_in(resources)
    assert world.resource_id(APPS, world.app) in ids
    assert world.resource_id(APPS, elsewhere, group) not in ids
    groups = world.http.get(f"{world.sub_id}/resourceGroups", headers=headers)
    assert [g["id"] for g in groups.json()["value"]] == [world.rg_id]
    subscriptions = world.http.get("/subscriptions", headers=headers)
    assert subscriptions.status_code == 200
    assert subscriptions.json()["value"] == []  # no read at the subscription itself
    direct = world.http.get(world.resource_id(APPS, elsewhere, group), headers=headers)
    assert direct.status_code == 403
    assert f"{APPS}/read" in direct.json()["error"]["message"]


def test_tenant_admin_routes_refuse_everyone_else(world: World) -> None:
    routes = declared(world, {"tenant-admin"})
    assert len(routes) >= 15
    for path, method, route in routes:
        for who in ("Owner", "none"):
            response = world.http.request(
                method,
                fill(path, world),
                json={} if method != "GET" else None,
                headers={"Authorization": f"Bearer {world.tokens[who]}"},
            )
            assert response.status_code == 403, (who, method, path, response.text)
            error = response.json()["error"]
            assert error["code"] == "AuthorizationFailed"
            assert route.name in error["message"], error
    audit = world.as_admin("GET", "/admin/v1/audit?result=denied&limit=1000")["value"]
    recorded = {(r["actor"], r["action"]) for r in audit}
    for _path, _method, route in routes:
        assert (world.oids["Owner"], route.name) in recorded


def test_every_protected_route_needs_a_management_token(world: World) -> None:
    routes = declared(world, {"tenant-admin", "user", "rbac", "rbac-filtered"})
    assert len(routes) > 40
    bad = {
        "no token": {},
        "empty bearer": {"Authorization": "Bearer"},
        "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "another audience": {"Authorization": f"Bearer {world.other_audience}"},
    }
    for path, method, _route in routes:
        url = fill(path, world)
        for label, headers in bad.items():
            response = world.http.request(
                method, url, json={} if method != "GET" else None, headers=headers
            )
            assert response.status_code == 401, (label, method, url, response.text)
            assert response.headers.get("www-authenticate", "").startswith("Bearer")
            assert "error" in response.json()
    # The token for the other audience is genuine: the same principal's management token works.
    ok = world.http.get(world.sub_id, headers={"Authorization": f"Bearer {world.tokens['Owner']}"})
    assert ok.status_code == 200


def test_public_routes_answer_without_a_token(world: World) -> None:
    tenant = world.server.tenant_id
    for path in (
        "/healthz",
        "/openapi.json",
        f"/{tenant}/v2.0/.well-known/openid-configuration",
        f"/{tenant}/.well-known/openid-configuration",
        f"/{tenant}/discovery/v2.0/keys",
    ):
        response = world.http.get(path)
        assert response.status_code == 200, (path, response.text)
    token = world.http.post(
        f"/{tenant}/oauth2/v2.0/token", data={"grant_type": "client_credentials"}
    )
    assert token.status_code == 400
    assert "error" in token.json()


def test_custom_roles_need_the_action_at_every_assignable_scope(world: World) -> None:
    """As in Azure, changing or deleting a custom role needs the action at every scope the role
    can be assigned at (before and after the change), not only at the scope in the URL:
    otherwise an Owner of one subscription could widen a role that is assigned elsewhere."""
    owner = {"Authorization": f"Bearer {world.tokens['Owner']}"}
    wide = world.new_role("/")
    before = world.as_admin("GET", f"{AUTHZ}/roleDefinitions/{wide}")
    url = f"{world.sub_id}{AUTHZ}/roleDefinitions/{wide}"
    widened = {
        "properties": {
            "roleName": before["properties"]["roleName"],
            "permissions": [{"actions": ["*"]}],
            "assignableScopes": [world.sub_id],
        }
    }
    refused = world.http.put(url, json=widened, headers=owner)
    assert refused.status_code == 403, refused.text
    assert RD + "write" in refused.json()["error"]["message"]
    assert world.as_admin("GET", f"{AUTHZ}/roleDefinitions/{wide}") == before
    refused = world.http.delete(url, headers=owner)
    assert refused.status_code == 403, refused.text
    assert RD + "delete" in refused.json()["error"]["message"]
    assert world.as_admin("GET", f"{AUTHZ}/roleDefinitions/{wide}") == before

    tenant_wide = {
        "properties": {
            "roleName": f"tenant-wide-{short()}",
            "permissions": [{"actions": ["*"]}],
            "assignableScopes": ["/"],
        }
    }
    new_id = str(uuid.uuid4())
    refused = world.http.put(
        f"{world.sub_id}{AUTHZ}/roleDefinitions/{new_id}", json=tenant_wide, headers=owner
    )
    assert refused.status_code == 403, refused.text
    missing = world.http.get(
        f"{AUTHZ}/roleDefinitions/{new_id}", headers={"Authorization": f"Bearer {world.admin}"}
    )
    assert missing.status_code == 404

    # A role that lives within the Owner's subscription is the Owner's to change.
    mine = world.new_role(world.sub_id)
    narrowed = {
        "properties": {
            "roleName": f"narrowed-{short()}",
            "permissions": [{"actions": [f"{APPS}/read", f"{APPS}/write"]}],
            "assignableScopes": [world.rg_id],
        }
    }
    changed = world.http.put(
        f"{world.sub_id}{AUTHZ}/roleDefinitions/{mine}", json=narrowed, headers=owner
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["properties"]["assignableScopes"] == [world.rg_id]

    audit = world.as_admin("GET", "/admin/v1/audit?result=denied&limit=1000")["value"]
    refusals = {(r["actor"], r["action"]) for r in audit}
    assert (world.oids["Owner"], RD + "write") in refusals
    assert (world.oids["Owner"], RD + "delete") in refusals
