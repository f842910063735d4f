"""The resource manager and role-based access control, through the HTTPS management API.

Managed identities (system-assigned ones live and die with their app, user-assigned ones are
shared and outlive the apps), inheritance down the scope tree, group and nested-group grants,
notActions, resource group deletion in one transaction, check-access, tenant isolation, and bad
input that must be refused with a clear 4xx and change nothing in the store. Names carry a random
suffix; the module has its own server.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from keyless.access.engine import ACCESS_GENERATION, AccessEngine
from keyless.access.permissions import BUILT_IN_ROLES
from keyless.authority.bootstrap import initialise
from keyless.store.engine import open_engine
from keyless.store.generation import GENERATION
from keyless.store.location import default_store_url
from keyless.store.models import (
    Base,
    Group,
    GroupMember,
    IdentityAttachment,
    Resource,
    RoleAssignment,
    RoleDefinition,
    ServicePrincipal,
    StoreState,
    Subscription,
    Tenant,
)
from tests.support.server import KeylessServer, running_server

MANAGEMENT = "api://keyless/management/.default"
AUTHZ = "/providers/Keyless.Authorization"
APPS = "Keyless.Web/apps"
IDENTITIES = "Keyless.ManagedIdentity/userAssignedIdentities"
ASSIGN = f"{IDENTITIES}/assign/action"
ROLE_IDS = {role.name: role.id for role in BUILT_IN_ROLES}
# Tables a refused request must leave alone (the audit log records the refusal; tokens may be
# issued while a test runs).
UNTOUCHED = [t for t in Base.metadata.sorted_tables if t.name not in ("audit_events",)]


# ------------------------------------------------------------------------------------ helpers


def short() -> str:
    return uuid.uuid4().hex[:8]


def bump(connection: Connection, name: str) -> None:
    """Move a store generation, as every write does, so decision indexes reload."""
    moved = connection.execute(
        update(StoreState).where(StoreState.name == name).values(value=StoreState.value + 1)
    )
    if moved.rowcount == 0:
        connection.execute(insert(StoreState).values(name=name, value=1))


@dataclass
class Principal:
    name: str
    app_id: str
    oid: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Env:
    server: KeylessServer
    http: httpx.Client
    engine: Engine
    admin_token: str

    @property
    def sub(self) -> str:
        return self.server.subscription_id

    @property
    def sub_id(self) -> str:
        return f"/subscriptions/{self.sub}"

    @property
    def tenant(self) -> str:
        return self.server.tenant_id

    def rg_id(self, group: str) -> str:
        return f"{self.sub_id}/resourceGroups/{group}"

    def rid(self, group: str, type_: str, name: str) -> str:
        return f"{self.rg_id(group)}/providers/{type_}/{name}"

    def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        as_: Principal | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        token = as_.token if as_ is not None else self.admin_token
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["json"] = body
        return self.http.request(method, url, headers=headers, **kwargs)

    def ok(self, method: str, url: str, body: Any = None, as_: Principal | None = None) -> Any:
        response = self.call(method, url, body, as_)
        assert 200 <= response.status_code < 300, f"{method} {url}: {response.text}"
        return response.json() if response.content else None

    def new_rg(self, prefix: str = "rg") -> str:
        name = f"{prefix}-{short()}"
        self.ok("PUT", self.rg_id(name), {"location": "local"})
        return name

    def put_app(self, group: str, name: str, identity: Any = None, **extra: Any) -> Any:
        body: dict[str, Any] = {"properties": {"command": ["python", "-m", "app"]}, **extra}
        if identity is not None:
            body["identity"] = identity
        return self.ok("PUT", self.rid(group, APPS, name), body)

    def new_identity(self, group: str) -> dict[str, Any]:
        return dict(self.ok("PUT", self.rid(group, IDENTITIES, f"id-{short()}"), {}))

    def assign(self, scope: str, principal_id: str, role: str, as_: Principal | None = None) -> str:
        name = str(uuid.uuid4())
        prefix = "" if scope == "/" else scope
        self.ok(
            "PUT",
            f"{prefix}{AUTHZ}/roleAssignments/{name}",
            {"properties": {"roleDefinitionId": role, "principalId": principal_id}},
            as_,
        )
        return name

    def principal(self, prefix: str) -> Principal:
        name = f"{prefix}-{short()}"
        created = self.server.cli_json("ad", "sp", "create-for-rbac", "--name", name, "--secret")
        token = self.token(created["appId"], created["password"])
        oid = jwt.decode(token, options={"verify_signature": False})["oid"]
        return Principal(name, created["appId"], oid, token)

    def token(self, app_id: str, secret: str, scope: str = MANAGEMENT) -> str:
        response = self.http.post(
            self.server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": app_id,
                "client_secret": secret,
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def check_access(
        self, scope: str, principal_id: str, actions: list[str], as_: Principal | None = None
    ) -> dict[str, Any]:
        prefix = "" if scope == "/" else scope
        return dict(
            self.ok(
                "POST",
                f"{prefix}{AUTHZ}/checkAccess",
                {"principalId": principal_id, "actions": actions},
                as_,
            )
        )

    def sp_exists(self, object_id: str) -> bool:
        result = self.server.cli("ad", "sp", "show", "--id", object_id, check=False)
        if result.returncode == 0:
            return True
        assert "Traceback" not in result.stderr
        return False

    def count(self, model: Any, *where: Any) -> int:
        with Session(self.engine) as session:
            query = select(func.count()).select_from(model)
            if where:
                query = query.where(*where)
            return int(session.scalar(query) or 0)

    def assignments_of(self, principal_id: str) -> int:
        return self.count(RoleAssignment, RoleAssignment.principal_id == principal_id)

    def snapshot(self) -> dict[str, Any]:
        """Row counts of every table (but the audit log) and the generation counters."""
        with self.engine.connect() as connection:
            counts: dict[str, Any] = {
                table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for table in UNTOUCHED
            }
            counts["generations"] = {
                name: value
                for name, value in connection.execute(select(StoreState.name, StoreState.value))
            }
        return counts


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("resources") / "data"
    with running_server(data_dir) as server, server.http() as http:
        engine = open_engine(default_store_url(data_dir))
        try:
            yield Env(server, http, engine, server.admin_token())
        finally:
            engine.dispose()


@contextlib.contextmanager
def unchanged(env: Env) -> Iterator[None]:
    """The block must not change the store (but for the audit log)."""
    before = env.snapshot()
    yield
    assert env.snapshot() == before, "a refused request changed the store"


def refused(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """A clear ARM error: the status, a code, and a message that says what is wrong."""
    assert response.status_code == status, f"expected {status}: {response.text[:500]}"
    error = response.json()["error"]
    assert error["code"] and error["message"], error
    for fragment in fragments:
        assert fragment.lower() in (error["code"] + " " + error["message"]).lower(), error
    return dict(error)


# ------------------------------------------------------------------------- managed identities


def test_system_assigned_identity_lives_and_dies_with_its_app(env: Env) -> None:
    group = env.new_rg()
    name = f"web-{short()}"
    app = env.put_app(group, name, {"type": "SystemAssigned"})
    identity = app["identity"]
    assert identity["type"] == "SystemAssigned"
    assert identity["tenantId"] == env.tenant
    principal_id = identity["principalId"]
    uuid.UUID(principal_id)

    sp = env.server.cli_json("ad", "sp", "show", "--id", principal_id)
    assert sp["id"] == principal_id
    assert sp["servicePrincipalType"] == "ManagedIdentity"
    assert sp["alternativeNames"] == [env.rid(group, APPS, name)]
    # A managed identity is not deleted through the directory: its resource owns it.
    assert env.server.cli("ad", "sp", "delete", "--id", principal_id, check=False).returncode != 0

    # A second PUT with the same identity keeps the same principal.
    again = env.put_app(group, name, {"type": "SystemAssigned"})
    assert again["identity"]["principalId"] == principal_id
    shown = env.ok("GET", env.rid(group, APPS, name))
    assert shown["identity"]["principalId"] == principal_id

    here = env.assign(env.rg_id(group), principal_id, "Reader")
    env.assign(env.sub_id, principal_id, "Contributor")
    assert env.assignments_of(principal_id) == 2

    env.ok("DELETE", env.rid(group, APPS, name))
    assert env.call("GET", env.rid(group, APPS, name)).status_code == 404
    assert not env.sp_exists(principal_id)
    assert env.count(ServicePrincipal, ServicePrincipal.object_id == principal_id) == 0
    assert env.assignments_of(principal_id) == 0
    gone = env.call("GET", f"{env.rg_id(group)}{AUTHZ}/roleAssignments/{here}")
    refused(gone, 404, "RoleAssignmentNotFound")


def test_removing_system_assigned_deletes_the_principal_and_its_assignments(env: Env) -> None:
    group = env.new_rg()
    ids = {}
    for how in ("patch", "put"):
        app = env.put_app(group, f"{how}-{short()}", {"type": "SystemAssigned"})
        ids[how] = (app["id"], app["identity"]["principalId"])
        env.assign(env.rg_id(group), ids[how][1], "Reader")
        env.assign(app["id"], ids[how][1], "Contributor")

    patched = env.ok("PATCH", ids["patch"][0], {"identity": {"type": "None"}})
    assert "principalId" not in patched.get("identity", {})
    # PUT replaces the whole resource: no identity block means no identity.
    put = env.ok("PUT", ids["put"][0], {"properties": {"command": ["true"]}})
    assert "principalId" not in (put.get("identity") or {})
    for resource_id, principal_id in ids.values():
        assert not env.sp_exists(principal_id), resource_id
        assert env.assignments_of(principal_id) == 0
        assert env.ok("GET", resource_id)["id"] == resource_id  # the app itself stays

    # Turning it on again makes a new principal, with none of the old grants.
    back = env.ok("PATCH", ids["patch"][0], {"identity": {"type": "SystemAssigned"}})
    fresh = back["identity"]["principalId"]
    assert fresh != ids["patch"][1]
    assert env.sp_exists(fresh)
    assert env.assignments_of(fresh) == 0


def test_deleting_a_service_principal_deletes_its_role_assignments(env: Env) -> None:
    sp = env.principal("sp-gone")
    env.assign(env.rg_id(env.new_rg()), sp.oid, "Reader")
    assert env.assignments_of(sp.oid) == 1
    env.server.cli("ad", "sp", "delete", "--id", sp.app_id)
    assert env.assignments_of(sp.oid) == 0
    assert not env.sp_exists(sp.oid)


def test_user_assigned_identity_shared_by_two_apps_survives_either(env: Env) -> None:
    identities_rg, apps_rg = env.new_rg("ids"), env.new_rg("apps")
    identity = env.new_identity(identities_rg)
    props = identity["properties"]
    assert {"clientId", "principalId", "tenantId"} <= set(props)
    assert props["tenantId"] == env.tenant
    sp = env.server.cli_json("ad", "sp", "show", "--id", props["principalId"])
    assert sp["servicePrincipalType"] == "ManagedIdentity"
    assert sp["appId"] == props["clientId"]
    grant = env.assign(env.rg_id(apps_rg), props["principalId"], "Reader")

    block = {"type": "UserAssigned", "userAssignedIdentities": {identity["id"]: {}}}
    first = env.put_app(apps_rg, f"a-{short()}", block)
    second = env.put_app(
        apps_rg,
        f"b-{short()}",
        {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {identity["id"]: {}}},
    )
    for app in (first, second):
        attached = app["identity"]["userAssignedIdentities"][identity["id"]]
        assert attached == {"principalId": props["principalId"], "clientId": props["clientId"]}
    assert second["identity"]["type"] == "SystemAssigned, UserAssigned"
    system_principal = second["identity"]["principalId"]
    assert system_principal != props["principalId"]

    env.ok("DELETE", first["id"])
    assert env.ok("GET", identity["id"])["properties"] == props
    assert env.sp_exists(props["principalId"])
    still = env.ok("GET", second["id"])["identity"]
    assert identity["id"] in still["userAssignedIdentities"]
    assert env.ok("GET", f"{env.rg_id(apps_rg)}{AUTHZ}/roleAssignments/{grant}")

    env.ok("DELETE", second["id"])
    assert not env.sp_exists(system_principal)  # the app's own identity went with it
    assert env.ok("GET", identity["id"])["properties"] == props
    assert env.sp_exists(props["principalId"])
    assert env.assignments_of(props["principalId"]) == 1


def test_deleting_a_user_assigned_identity_detaches_it_everywhere(env: Env) -> None:
    group = env.new_rg()
    doomed, kept = env.new_identity(group), env.new_identity(group)
    doomed_principal = doomed["properties"]["principalId"]
    env.assign(env.rg_id(group), doomed_principal, "Reader")
    env.assign(env.sub_id, doomed_principal, "Reader")
    only = env.put_app(
        group,
        f"only-{short()}",
        {"type": "UserAssigned", "userAssignedIdentities": {doomed["id"]: {}}},
    )
    both = env.put_app(
        group,
        f"both-{short()}",
        {
            "type": "SystemAssigned, UserAssigned",
            "userAssignedIdentities": {doomed["id"]: {}, kept["id"]: {}},
        },
    )
    doomed_key = doomed["id"].lower()
    assert env.count(IdentityAttachment, IdentityAttachment.identity_key == doomed_key) == 2

    env.ok("DELETE", doomed["id"])
    assert env.call("GET", doomed["id"]).status_code == 404
    assert not env.sp_exists(doomed_principal)
    assert env.assignments_of(doomed_principal) == 0
    assert env.count(IdentityAttachment, IdentityAttachment.identity_key == doomed_key) == 0
    after_only = env.ok("GET", only["id"]).get("identity") or {}
    assert doomed["id"] not in (after_only.get("userAssignedIdentities") or {})
    assert after_only.get("type", "None") == "None"
    after_both = env.ok("GET", both["id"])["identity"]
    assert after_both["type"] == "SystemAssigned, UserAssigned"
    assert list(after_both["userAssignedIdentities"]) == [kept["id"]]
    assert after_both["principalId"] == both["identity"]["principalId"]


def test_attaching_a_user_assigned_identity_needs_the_assign_action(env: Env) -> None:
    apps_rg, identities_rg = env.new_rg("apps"), env.new_rg("ids")
    identity = env.new_identity(identities_rg)
    developer = env.principal("developer")
    env.assign(env.rg_id(apps_rg), developer.oid, "Contributor")  # the apps' group only
    app_id = env.rid(apps_rg, APPS, f"web-{short()}")
    body = {
        "properties": {"command": ["true"]},
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {identity["id"]: {}}},
    }
    with unchanged(env):
        error = refused(env.call("PUT", app_id, body, developer), 403, "LinkedAuthorizationFailed")
    assert ASSIGN in error["message"] and identity["id"] in error["message"]
    assert env.call("GET", app_id).status_code == 404
    denials = env.ok("GET", f"/admin/v1/audit?result=denied&actor={developer.oid}")["value"]
    assert any(d["target"] == app_id for d in denials), denials

    # Without the identity, the Contributor may create the app.
    plain = env.call("PUT", app_id, {"properties": {"command": ["true"]}}, developer)
    assert plain.status_code == 201, plain.text
    # Managed Identity Operator on the identity itself grants exactly the assign action.
    env.assign(identity["id"], developer.oid, "Managed Identity Operator")
    attached = env.call("PUT", app_id, body, developer)
    assert attached.status_code == 200, attached.text
    assert identity["id"] in attached.json()["identity"]["userAssignedIdentities"]
    # ... and nothing else on it.
    refused(env.call("DELETE", identity["id"], as_=developer), 403, f"{IDENTITIES}/delete")


# ------------------------------------------------------------------------------ access control


def test_assignment_at_resource_group_scope_grants_at_the_app_below(env: Env) -> None:
    granted_rg, other_rg = env.new_rg(), env.new_rg()
    app = env.put_app(granted_rg, f"web-{short()}")
    elsewhere = env.put_app(other_rg, f"web-{short()}")
    reader = env.principal("reader")
    assignment = env.assign(env.rg_id(granted_rg), reader.oid, "Reader")

    answer = env.check_access(app["id"], reader.oid, [f"{APPS}/read", f"{APPS}/write"])
    read, write = answer["results"]
    assert read["allowed"] and assignment in read["reason"] and "Reader" in read["reason"]
    assert not write["allowed"]
    assert [r["assignmentId"] for r in answer["roles"]] == [assignment]
    assert answer["roles"][0]["scope"] == env.rg_id(granted_rg)

    shown = env.call("GET", app["id"], as_=reader)
    assert shown.status_code == 200 and shown.json()["id"] == app["id"]
    refused(env.call("GET", elsewhere["id"], as_=reader), 403, f"{APPS}/read")
    refused(env.call("PATCH", app["id"], {"tags": {"a": "b"}}, reader), 403, f"{APPS}/write")
    outside = env.check_access(elsewhere["id"], reader.oid, [f"{APPS}/read"])
    assert not outside["results"][0]["allowed"] and outside["roles"] == []


def test_group_and_nested_group_grants(env: Env) -> None:
    group = env.new_rg()
    outer = env.server.cli_json("ad", "group", "create", "--display-name", f"outer-{short()}")
    inner = env.server.cli_json("ad", "group", "create", "--display-name", f"inner-{short()}")
    env.server.cli(
        "ad", "group", "member", "add", "--group", outer["id"], "--member-id", inner["id"]
    )
    direct, nested, outsider = (env.principal(p) for p in ("direct", "nested", "outsider"))
    env.server.cli(
        "ad", "group", "member", "add", "--group", outer["id"], "--member-id", direct.oid
    )
    env.server.cli(
        "ad", "group", "member", "add", "--group", inner["id"], "--member-id", nested.oid
    )
    assignment = env.assign(env.rg_id(group), outer["id"], "Contributor")

    for who in (direct, nested):
        created = env.call("PUT", env.rid(group, APPS, f"{who.name}-app"), {"properties": {}}, who)
        assert created.status_code == 201, (who.name, created.text)
        answer = env.check_access(env.rg_id(group), who.oid, [f"{APPS}/delete"])
        assert answer["results"][0]["allowed"]
        assert outer["id"] in answer["results"][0]["reason"]
        assert answer["roles"][0]["viaGroup"] == outer["id"]
        assert answer["roles"][0]["assignmentId"] == assignment
        # A group grant is still bounded by its role: no role assignments for a Contributor.
        refused(
            env.call(
                "PUT",
                f"{env.rg_id(group)}{AUTHZ}/roleAssignments/{uuid.uuid4()}",
                {"properties": {"roleDefinitionId": "Reader", "principalId": who.oid}},
                who,
            ),
            403,
            "Keyless.Authorization/roleAssignments/write",
        )
    refused(
        env.call("PUT", env.rid(group, APPS, "outsider-app"), {"properties": {}}, outsider),
        403,
        f"{APPS}/write",
    )


def test_not_actions_subtract_from_the_role(env: Env) -> None:
    group = env.new_rg()
    role_id = str(uuid.uuid4())
    role = env.ok(
        "PUT",
        f"{env.rg_id(group)}{AUTHZ}/roleDefinitions/{role_id}",
        {
            "properties": {
                "roleName": f"builder-{short()}",
                "permissions": [{"actions": ["*"], "notActions": [f"{APPS}/delete"]}],
                "assignableScopes": [env.rg_id(group)],
            }
        },
    )
    assert role["properties"]["type"] == "CustomRole"
    builder = env.principal("builder")
    env.assign(env.rg_id(group), builder.oid, role_id)
    app_id = env.rid(group, APPS, f"web-{short()}")
    created = env.call("PUT", app_id, {"properties": {"command": ["true"]}}, builder)
    assert created.status_code == 201, created.text
    patched = env.call("PATCH", app_id, {"tags": {"v": "2"}}, builder)
    assert patched.status_code == 200 and patched.json()["tags"] == {"v": "2"}
    with unchanged(env):
        refused(env.call("DELETE", app_id, as_=builder), 403, f"{APPS}/delete")
    # notActions subtract that one action only: other deletes still work.
    identity = env.new_identity(group)
    assert env.call("DELETE", identity["id"], as_=builder).status_code == 200
    answer = env.check_access(app_id, builder.oid, [f"{APPS}/write", f"{APPS}/delete"])
    assert [r["allowed"] for r in answer["results"]] == [True, False]
    # The role only reaches its own group.
    other = env.new_rg()
    refused(
        env.call("PUT", env.rid(other, APPS, "x"), {"properties": {}}, builder),
        403,
        f"{APPS}/write",
    )


def test_check_access_says_what_a_principal_can_do_and_why(env: Env) -> None:
    group = env.new_rg()
    someone = env.principal("someone")
    broad = env.assign(env.sub_id, someone.oid, "Reader")
    narrow = env.assign(env.rg_id(group), someone.oid, "Contributor")
    actions = [
        f"{APPS}/read",
        f"{APPS}/write",
        "Keyless.Authorization/roleAssignments/write",
        "data:Keyless.Vault/vaults/secrets/getSecret/action",
    ]
    answer = env.check_access(env.rg_id(group), someone.oid, actions)
    assert answer["principalId"] == someone.oid and answer["scope"] == env.rg_id(group)
    by_action = {r["action"]: r for r in answer["results"]}
    assert by_action[f"{APPS}/read"]["allowed"]
    assert by_action[f"{APPS}/write"]["allowed"]
    assert narrow in by_action[f"{APPS}/write"]["reason"]
    assert not by_action["Keyless.Authorization/roleAssignments/write"]["allowed"]
    secret = by_action["Keyless.Vault/vaults/secrets/getSecret/action"]
    assert secret["dataAction"] and not secret["allowed"]
    roles = {r["assignmentId"]: r for r in answer["roles"]}
    assert set(roles) == {broad, narrow}
    assert roles[broad]["roleName"] == "Reader" and roles[broad]["scope"] == env.sub_id
    assert roles[narrow]["roleDefinitionId"] == ROLE_IDS["Contributor"]

    # At the subscription only the Reader assignment applies.
    above = env.check_access(env.sub_id, someone.oid, [f"{APPS}/write"])
    assert not above["results"][0]["allowed"]
    assert [r["assignmentId"] for r in above["roles"]] == [broad]
    # A principal may ask about itself (Reader includes roleAssignments/read).
    own = env.ok(
        "POST",
        f"{env.rg_id(group)}{AUTHZ}/checkAccess",
        {"actions": [f"{APPS}/write"]},
        someone,
    )
    assert own["principalId"] == someone.oid and own["results"][0]["allowed"]
    refused(
        env.call(
            "POST",
            f"{env.rg_id(group)}{AUTHZ}/checkAccess",
            {"principalId": str(uuid.uuid4()), "actions": [f"{APPS}/read"]},
        ),
        400,
        "PrincipalNotFound",
    )


def test_a_contributor_cannot_assign_roles(env: Env) -> None:
    group = env.new_rg()
    contributor, other = env.principal("contributor"), env.principal("other")
    env.assign(env.sub_id, contributor.oid, "Contributor")
    existing = env.assign(env.rg_id(group), other.oid, "Reader")
    with unchanged(env):
        refused(
            env.call(
                "PUT",
                f"{env.rg_id(group)}{AUTHZ}/roleAssignments/{uuid.uuid4()}",
                {"properties": {"roleDefinitionId": "Owner", "principalId": contributor.oid}},
                contributor,
            ),
            403,
            "AuthorizationFailed",
            "Keyless.Authorization/roleAssignments/write",
        )
        refused(
            env.call(
                "DELETE", f"{env.rg_id(group)}{AUTHZ}/roleAssignments/{existing}", as_=contributor
            ),
            403,
            "Keyless.Authorization/roleAssignments/delete",
        )
        refused(
            env.call(
                "PUT",
                f"{env.rg_id(group)}{AUTHZ}/roleDefinitions/{uuid.uuid4()}",
                {
                    "properties": {
                        "roleName": f"sneaky-{short()}",
                        "permissions": [{"actions": ["*"]}],
                        "assignableScopes": [env.rg_id(group)],
                    }
                },
                contributor,
            ),
            403,
            "Keyless.Authorization/roleDefinitions/write",
        )
    # Reading them is fine.
    listed = env.ok("GET", f"{env.rg_id(group)}{AUTHZ}/roleAssignments", as_=contributor)
    assert existing in {a["name"] for a in listed["value"]}


def test_another_tenants_subscription_is_invisible(env: Env) -> None:
    other_tenant, other_sub, other_role = (str(uuid.uuid4()) for _ in range(3))
    with Session(env.engine) as session, session.begin():
        now = time.time()
        session.add(
            Tenant(
                id=other_tenant,
                display_name="Other",
                domain=f"other-{short()}.example",
                created_at=now,
            )
        )
        session.flush()
        session.add(
            Subscription(
                id=other_sub,
                tenant_id=other_tenant,
                display_name="Theirs",
                is_default=True,
                created_at=now,
            )
        )
        session.add(
            RoleDefinition(
                id=other_role,
                tenant_id=other_tenant,
                role_name=f"their-role-{short()}",
                description="",
                permissions={"actions": ["*"]},
                assignable_scopes=["/"],
                created_at=now,
            )
        )
        bump(session.connection(), ACCESS_GENERATION)
    theirs = f"/subscriptions/{other_sub}"
    someone = env.ok("POST", "/admin/v1/groups", {"displayName": f"g-{short()}"})
    with unchanged(env):
        refused(env.call("GET", theirs), 404, "SubscriptionNotFound")
        refused(env.call("PUT", f"{theirs}/resourceGroups/mine", {}), 404, "SubscriptionNotFound")
        refused(env.call("GET", f"{theirs}/resourceGroups"), 404)
        refused(env.call("GET", f"{theirs}/resources"), 404)
        refused(
            env.call(
                "PUT",
                f"{theirs}{AUTHZ}/roleAssignments/{uuid.uuid4()}",
                {"properties": {"roleDefinitionId": "Reader", "principalId": str(uuid.uuid4())}},
            ),
            404,
        )
        refused(
            env.call("POST", f"{theirs}{AUTHZ}/checkAccess", {"actions": [f"{APPS}/read"]}), 404
        )
        refused(env.call("GET", f"/subscriptions/{uuid.uuid4()}"), 404, "SubscriptionNotFound")
        # Their custom role is neither listed nor usable here.
        listed = env.ok("GET", f"{AUTHZ}/roleDefinitions")["value"]
        assert other_role not in {r["name"] for r in listed}
        refused(env.call("GET", f"{AUTHZ}/roleDefinitions/{other_role}"), 404)
    subscriptions = env.ok("GET", "/subscriptions")["value"]
    assert other_sub not in {s["subscriptionId"] for s in subscriptions}
    refused(
        env.call(
            "PUT",
            f"{env.sub_id}{AUTHZ}/roleAssignments/{uuid.uuid4()}",
            {"properties": {"roleDefinitionId": other_role, "principalId": someone["id"]}},
        ),
        404,
        "RoleDefinitionDoesNotExist",
    )


# ------------------------------------------------------------------- resource group deletion


def _populated_group(env: Env) -> dict[str, Any]:
    """A group with an app (system- and user-assigned identities), an identity attached also to
    an app elsewhere, and grants at, within and outside the group."""
    doomed, kept = env.new_rg("doomed"), env.new_rg("kept")
    identity = env.new_identity(doomed)
    users = {identity["id"]: {}}
    app = env.put_app(
        doomed,
        f"web-{short()}",
        {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": users},
    )
    outside_app = env.put_app(
        kept, f"web-{short()}", {"type": "UserAssigned", "userAssignedIdentities": users}
    )
    watcher = env.principal("watcher")
    principals = [app["identity"]["principalId"], identity["properties"]["principalId"]]
    within = [
        env.assign(env.rg_id(doomed), watcher.oid, "Reader"),
        env.assign(app["id"], watcher.oid, "Contributor"),
    ]
    held_outside = [
        env.assign(env.rg_id(kept), principals[0], "Reader"),
        env.assign(env.sub_id, principals[1], "Reader"),
    ]
    survivor = env.assign(env.rg_id(kept), watcher.oid, "Reader")
    return {
        "doomed": doomed,
        "kept": kept,
        "identity": identity,
        "app": app,
        "outside_app": outside_app,
        "watcher": watcher,
        "principals": principals,
        "within": within,
        "held_outside": held_outside,
        "survivor": survivor,
    }


def test_deleting_a_resource_group_removes_everything_under_it(env: Env) -> None:
    world = _populated_group(env)
    doomed_key = env.rg_id(world["doomed"]).lower()
    before = env.snapshot()
    result = env.ok("DELETE", env.rg_id(world["doomed"]))
    assert result["deletedResources"] == 2
    after = env.snapshot()
    assert before["resource_groups"] - after["resource_groups"] == 1
    assert before["resources"] - after["resources"] == 2
    assert before["service_principals"] - after["service_principals"] == 2
    assert before["role_assignments"] - after["role_assignments"] == 4
    assert before["identity_attachments"] - after["identity_attachments"] == 2

    refused(env.call("GET", env.rg_id(world["doomed"])), 404, "ResourceGroupNotFound")
    assert env.count(Resource, Resource.group_key == doomed_key) == 0
    for principal_id in world["principals"]:
        assert not env.sp_exists(principal_id)
        assert env.assignments_of(principal_id) == 0
    assert (
        env.count(
            RoleAssignment,
            RoleAssignment.scope_key.startswith(doomed_key + "/")
            | (RoleAssignment.scope_key == doomed_key),
        )
        == 0
    )
    kept_grant = env.ok(
        "GET", f"{env.rg_id(world['kept'])}{AUTHZ}/roleAssignments/{world['survivor']}"
    )
    assert kept_grant["properties"]["principalId"] == world["watcher"].oid
    outside = env.ok("GET", world["outside_app"]["id"]).get("identity") or {}
    assert world["identity"]["id"] not in (outside.get("userAssignedIdentities") or {})
    # The name is free again, and empty.
    env.ok("PUT", env.rg_id(world["doomed"]), {})
    assert env.ok("GET", f"{env.rg_id(world['doomed'])}/resources")["value"] == []


def test_a_resource_group_deletion_that_fails_midway_removes_nothing(env: Env) -> None:
    """A real failure inside the delete: a trigger makes the store refuse the group's own row,
    which goes last, after the resources, principals and assignments were deleted."""
    world = _populated_group(env)
    doomed = world["doomed"]
    trigger = "keyless_test_refuse_group_delete"
    with env.engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE TRIGGER {trigger} BEFORE DELETE ON resource_groups "
                f"WHEN OLD.name = '{doomed}' BEGIN SELECT RAISE(ABORT, 'provoked'); END"
            )
        )
    try:
        before = env.snapshot()
        failed = env.call("DELETE", env.rg_id(doomed))
        assert failed.status_code == 500, failed.text
        # An answer, not a dropped connection: the error says where the details are.
        error = failed.json()["error"]
        assert error["code"] == "InternalServerError"
        assert failed.headers["x-ms-correlation-request-id"] in error["message"]
        assert env.snapshot() == before
    finally:
        with env.engine.begin() as connection:
            connection.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
    assert env.ok("GET", world["app"]["id"])["identity"] == world["app"]["identity"]
    assert env.ok("GET", world["identity"]["id"])["id"] == world["identity"]["id"]
    for principal_id in world["principals"]:
        assert env.sp_exists(principal_id)
    assert env.assignments_of(world["watcher"].oid) == 3
    outside = env.ok("GET", world["outside_app"]["id"])["identity"]
    assert world["identity"]["id"] in outside["userAssignedIdentities"]
    # The grants still work: the watcher reads the app through the group's assignment.
    assert env.call("GET", world["app"]["id"], as_=world["watcher"]).status_code == 200

    assert env.ok("DELETE", env.rg_id(doomed))["deletedResources"] == 2
    assert env.call("GET", world["app"]["id"], as_=world["watcher"]).status_code in (403, 404)


# --------------------------------------------------------------------------------- bad input


def test_malformed_resource_ids_are_refused(env: Env) -> None:
    group = env.new_rg()
    app = {"properties": {"command": ["true"]}}
    long_name = "a" * 91
    identity = env.new_identity(group)
    broken_identity = identity["id"].replace("/resourceGroups/", "/resourceGroups//")
    with unchanged(env):
        refused(env.call("PUT", "/subscriptions/not-a-guid/resourceGroups/x", {}), 400, "GUID")
        refused(env.call("PUT", f"/subscriptions/{env.sub[:-1]}/resourceGroups/x", {}), 400, "GUID")
        refused(env.call("PUT", env.rg_id("a*b"), {}), 400, "a*b")
        refused(env.call("PUT", env.rg_id(long_name), {}), 400, "90")
        refused(env.call("PUT", env.rg_id("-leading"), {}), 400, "name")
        refused(env.call("PUT", env.rg_id("has space"), {}), 400, "name")
        refused(env.call("PUT", env.rid(group, APPS, "a*b"), app), 400, "a*b")
        refused(env.call("PUT", env.rid(group, APPS, long_name), app), 400, "90")
        refused(env.call("PUT", env.rid(group, APPS, "a%3Bb"), app), 400, "name")
        # A type without a name is the type's list, which takes no PUT.
        refused(env.call("PUT", env.rid(group, "Keyless.Web", "x"), app), 405)
        # '//' in the path: no route has an empty segment; in a scope it is named.
        empty = env.call("PUT", f"{env.rg_id(group)}//providers/{APPS}/x", app)
        assert empty.status_code in (400, 404) and "error" in empty.json()
        refused(
            env.call(
                "PUT",
                f"{env.sub_id}//resourceGroups/{group}{AUTHZ}/roleAssignments/{uuid.uuid4()}",
                {"properties": {"roleDefinitionId": "Reader", "principalId": str(uuid.uuid4())}},
            ),
            400,
            "empty segment",
        )
        refused(
            env.call(
                "PUT",
                env.rid(group, APPS, "web"),
                {
                    **app,
                    "identity": {
                        "type": "UserAssigned",
                        "userAssignedIdentities": {broken_identity: {}},
                    },
                },
            ),
            400,
            "empty segment",
        )
        refused(
            env.call(
                "PUT",
                env.rid(group, APPS, "web"),
                {
                    **app,
                    "identity": {
                        "type": "UserAssigned",
                        "userAssignedIdentities": {env.rg_id(group): {}},
                    },
                },
            ),
            400,
            "userAssignedIdentities",
        )
        refused(
            env.call(
                "PUT",
                env.rid(group, APPS, "web"),
                {
                    **app,
                    "identity": {
                        "type": "UserAssigned",
                        "userAssignedIdentities": {
                            env.rid(group, IDENTITIES, "does-not-exist"): {}
                        },
                    },
                },
            ),
            400,
            "does not exist",
        )
    # The longest legal name is accepted.
    ninety = env.rid(group, APPS, "b" * 90)
    assert env.call("PUT", ninety, app).status_code == 201


def test_unknown_resource_types_are_refused(env: Env) -> None:
    group = env.new_rg()
    with unchanged(env):
        for type_ in ("Keyless.Web/widgets", "Keyless.Nope/apps", "Microsoft.Web/sites"):
            error = refused(
                env.call("PUT", env.rid(group, type_, "x"), {}), 400, "InvalidResourceType"
            )
            assert APPS in error["message"]  # it says which types exist
            refused(env.call("GET", env.rid(group, type_, "x")), 400, "InvalidResourceType")
            refused(
                env.call("GET", f"{env.rg_id(group)}/providers/{type_}"), 400, "InvalidResourceType"
            )
        refused(
            env.call("GET", f"{env.sub_id}/resources?resourceType=Keyless.Web/nope"),
            400,
            "InvalidResourceType",
        )
    types = env.ok("GET", "/providers/Keyless.Resources/resourceTypes")["value"]
    assert {APPS, IDENTITIES} <= set(types)


def test_unknown_properties_and_malformed_bodies_are_refused(env: Env) -> None:
    group = env.new_rg()
    existing = env.put_app(group, "existing", {"type": "SystemAssigned"})
    target = env.rid(group, APPS, "new-app")
    json_headers = {"Content-Type": "application/json"}
    with unchanged(env):
        refused(
            env.call("PUT", target, {"properties": {"command": ["x"], "bogus": 1}}),
            400,
            "bogus",
        )
        refused(env.call("PUT", target, {"properties": {}, "extra": True}), 400, "extra")
        refused(env.call("PUT", target, {"properties": []}), 400, "properties")
        refused(env.call("PUT", target, {"properties": {"command": 5}}), 400, "command")
        refused(
            env.call("PUT", target, {"properties": {"appSettings": {"1BAD": "x"}}}), 400, "1BAD"
        )
        refused(env.call("PUT", target, {"properties": {}, "tags": ["a"]}), 400, "tags")
        refused(env.call("PUT", target, {"identity": {"type": "Magic"}}), 400, "identity.type")
        refused(
            env.call("PUT", target, {"identity": {"type": "UserAssigned"}}), 400, "UserAssigned"
        )
        refused(
            env.call("PUT", env.rid(group, IDENTITIES, "id"), {"properties": {"x": 1}}), 400, "x"
        )
        refused(
            env.call(
                "PUT", env.rid(group, IDENTITIES, "id"), {"identity": {"type": "SystemAssigned"}}
            ),
            400,
            "cannot hold",
        )
        refused(env.call("PATCH", existing["id"], {"properties": {"nope": 1}}), 400, "nope")
        for raw in (b"{not json", b"\xff\xfe", b"{'single': 'quotes'}"):
            refused(env.call("PUT", target, content=raw, headers=json_headers), 400, "JSON")
        for raw in (b"[]", b'"text"', b"42", b"null", b"[{}]"):
            refused(env.call("PUT", target, content=raw, headers=json_headers), 400, "object")
            refused(
                env.call("PUT", env.rg_id("new-group"), content=raw, headers=json_headers),
                400,
                "object",
            )
            refused(
                env.call(
                    "PUT",
                    f"{env.rg_id(group)}{AUTHZ}/roleAssignments/{uuid.uuid4()}",
                    content=raw,
                    headers=json_headers,
                ),
                400,
            )
    assert env.ok("GET", existing["id"])["identity"] == existing["identity"]


def test_bad_role_assignments_are_refused(env: Env) -> None:
    group = env.new_rg()
    someone = env.ok("POST", "/admin/v1/groups", {"displayName": f"g-{short()}"})["id"]
    narrow_role = str(uuid.uuid4())
    env.ok(
        "PUT",
        f"{env.rg_id(group)}{AUTHZ}/roleDefinitions/{narrow_role}",
        {
            "properties": {
                "roleName": f"narrow-{short()}",
                "permissions": [{"actions": [f"{APPS}/read"]}],
                "assignableScopes": [env.rg_id(group)],
            }
        },
    )

    def put(scope: str, body: Any, name: str | None = None) -> httpx.Response:
        return env.call("PUT", f"{scope}{AUTHZ}/roleAssignments/{name or uuid.uuid4()}", body)

    def props(role: str, principal: str) -> dict[str, Any]:
        return {"properties": {"roleDefinitionId": role, "principalId": principal}}

    rg = env.rg_id(group)
    other = env.new_rg()
    with unchanged(env):
        refused(put(rg, props("Reader", str(uuid.uuid4()))), 400, "PrincipalNotFound")
        refused(put(rg, props("Reader", "not-a-guid")), 400, "PrincipalNotFound")
        refused(put(rg, props(str(uuid.uuid4()), someone)), 404, "RoleDefinitionDoesNotExist")
        refused(put(rg, props("No Such Role", someone)), 404, "RoleDefinitionDoesNotExist")
        refused(put(env.rg_id("missing-group"), props("Reader", someone)), 404, "ResourceGroup")
        refused(
            put(env.rid(group, APPS, "missing-app"), props("Reader", someone)),
            404,
            "ResourceNotFound",
        )
        refused(put(rg, props("Reader", someone), name="not-a-guid"), 400, "GUID")
        refused(put(rg, {"properties": {"roleDefinitionId": "Reader"}}), 400, "principalId")
        refused(put(rg, {"properties": {"principalId": someone}}), 400, "roleDefinitionId")
        refused(put(rg, {"properties": "Reader"}), 400, "properties")
        refused(put(env.rg_id(other), props(narrow_role, someone)), 400, "assignable")
    assert env.count(RoleAssignment, RoleAssignment.principal_id == someone) == 0
    first = str(uuid.uuid4())
    assert put(rg, props("Reader", someone), first).status_code == 201
    with unchanged(env):
        refused(put(rg, props("Reader", someone)), 409, "RoleAssignmentExists")
        refused(put(rg, props("Owner", someone), first), 409, "cannot be changed")


def test_custom_roles_with_invalid_actions_are_refused(env: Env) -> None:
    group = env.new_rg()
    rg = env.rg_id(group)

    def role(permissions: Any, **extra: Any) -> dict[str, Any]:
        return {
            "properties": {
                "roleName": extra.pop("roleName", f"bad-{short()}"),
                "permissions": permissions,
                "assignableScopes": extra.pop("assignableScopes", [rg]),
                **extra,
            }
        }

    def put(body: Any, role_id: str | None = None) -> httpx.Response:
        return env.call("PUT", f"{rg}{AUTHZ}/roleDefinitions/{role_id or uuid.uuid4()}", body)

    with unchanged(env):
        for actions in (
            ["not an action!"],
            [""],
            ["Keyless.Web/apps/read", "a b"],
            ["Keyless.Web//read"],
            ["/Keyless.Web/apps"],
            [123],
            "Keyless.Web/apps/read",
            ["x" * 300],
        ):
            refused(put(role([{"actions": actions}])), 400)
        refused(put(role([{"actions": ["*"], "notActions": ["bad action"]}])), 400, "notActions")
        refused(put(role([{"dataActions": ["Keyless.Vault/vaults/secrets/$"]}])), 400)
        refused(put(role([{"actions": []}])), 400, "at least one")
        refused(put(role([{"actions": ["*"], "denyActions": ["*"]}])), 400, "denyActions")
        refused(put(role([{"actions": ["*"]}, {"actions": ["*"]}])), 400, "exactly one")
        refused(put(role("everything")), 400, "permissions")
        refused(put(role([{"actions": ["*"]}], roleName="")), 400, "roleName")
        refused(put(role([{"actions": ["*"]}], roleName="Owner")), 409, "already exists")
        refused(put(role([{"actions": ["*"]}], assignableScopes=["not/a/scope"])), 400)
        refused(put(role([{"actions": ["*"]}], assignableScopes=[env.rg_id("nope")])), 404)
        refused(put(role([{"actions": ["*"]}]), "not-a-guid"), 400, "GUID")
        refused(put(role([{"actions": ["*"]}]), ROLE_IDS["Reader"]), 403, "built-in")
        refused(env.call("DELETE", f"{AUTHZ}/roleDefinitions/{ROLE_IDS['Owner']}"), 403, "built-in")


def test_circular_group_membership_is_refused(env: Env) -> None:
    a, b, c = (
        env.server.cli_json("ad", "group", "create", "--display-name", f"{n}-{short()}")["id"]
        for n in "abc"
    )
    env.server.cli("ad", "group", "member", "add", "--group", a, "--member-id", b)
    env.server.cli("ad", "group", "member", "add", "--group", b, "--member-id", c)
    with unchanged(env):
        for group, member in ((c, a), (b, a), (a, a), (c, b)):
            result = env.server.cli(
                "ad", "group", "member", "add", "--group", group, "--member-id", member, check=False
            )
            assert result.returncode != 0, result.stdout
            message = " ".join(result.stderr.split())
            assert message.startswith("error:") and "cycle" in message, message
            assert "Traceback" not in result.stderr
    members = env.server.cli_json("ad", "group", "member", "list", "--group", a)
    assert [m["id"] for m in members] == [b]


def test_oversized_bodies_are_refused(env: Env) -> None:
    group = env.new_rg()
    target = env.rid(group, APPS, "big")
    big = {"properties": {"appSettings": {f"S{i}": "x" * 8000 for i in range(40)}}}  # ~320 KiB
    payload = json.dumps(big).encode()
    assert len(payload) > 256 * 1024

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 16 * 1024):
            yield payload[start : start + 16 * 1024]

    with unchanged(env):
        refused(env.call("PUT", target, big), 413, "256 KiB")
        # Streamed without a Content-Length: the limit holds while reading.
        refused(
            env.call("PUT", target, content=chunks(), headers={"Content-Type": "application/json"}),
            413,
        )
        refused(
            env.call(
                "PUT",
                f"{env.rg_id(group)}{AUTHZ}/roleAssignments/{uuid.uuid4()}",
                content=b" " * (300 * 1024) + b"{}",
                headers={"Content-Type": "application/json"},
            ),
            413,
        )
        refused(env.call("PATCH", env.rg_id(group), {"tags": {"t": "x" * (300 * 1024)}}), 413)
    # Just under the limit is read (and then judged on its merits).
    fits = {"properties": {"appSettings": {f"S{i}": "x" * 8000 for i in range(30)}}}
    assert env.call("PUT", target, fits).status_code == 201


# ---------------------------------------------------------------------------------------- scale


def test_decisions_stay_correct_with_many_assignments_and_groups(tmp_path: Path) -> None:
    """20,000 assignments and 2,000 groups (chains of ten nested groups) written straight into
    an initialised store; the in-process decision engine still answers exactly."""
    report = initialise(tmp_path / "data")
    engine = open_engine(default_store_url(report.data_dir))
    rng = random.Random(7)
    tenant, sub = report.tenant_id, report.subscription_id
    groups = [str(uuid.uuid4()) for _ in range(2000)]
    members = []
    for i, group in enumerate(groups):
        if i % 10 != 9:  # group i is inside group i+1, ten to a chain
            members.append({"group_id": groups[i + 1], "member_id": group, "member_type": "group"})
    alice, bob, carol = (str(uuid.uuid4()) for _ in range(3))
    members.append({"group_id": groups[0], "member_id": alice, "member_type": "servicePrincipal"})
    members.append({"group_id": groups[15], "member_id": carol, "member_type": "servicePrincipal"})
    for row in members:
        row["tenant_id"] = tenant

    def scope_of(i: int) -> str:
        return f"/subscriptions/{sub}/resourceGroups/rg{i % 500}"

    target = scope_of(123)
    assignments: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()  # (principal, role, scope) is unique in the store
    role_ids = [r.id for r in BUILT_IN_ROLES]
    while len(assignments) < 20000:
        grouped = len(assignments) % 4 == 0  # a quarter to groups outside the first chain
        holder = groups[rng.randrange(10, 2000)] if grouped else str(uuid.uuid4())
        scope = scope_of(rng.randrange(500))
        role = rng.choice(role_ids)
        if scope == target or (holder, role, scope) in seen:
            continue  # keep the target group's grants under control
        seen.add((holder, role, scope))
        assignments.append(
            {
                "id": str(uuid.uuid4()),
                "tenant_id": tenant,
                "principal_id": holder,
                "principal_type": "Group" if grouped else "ServicePrincipal",
                "role_definition_id": role,
                "scope": scope,
                "scope_key": scope.lower(),
                "created_at": 0.0,
                "created_by": "bulk",
            }
        )
    # The one that matters: Reader for the top of the first chain, at the target group.
    granting = str(uuid.uuid4())
    assignments.append(
        {
            **assignments[0],
            "id": granting,
            "principal_id": groups[9],
            "scope": target,
            "scope_key": target.lower(),
            "role_definition_id": ROLE_IDS["Reader"],
            "principal_type": "Group",
        }
    )
    with engine.begin() as connection:
        connection.execute(
            insert(Group),
            [
                {"object_id": g, "tenant_id": tenant, "display_name": f"g{i}", "created_at": 0.0}
                for i, g in enumerate(groups)
            ],
        )
        connection.execute(insert(GroupMember), members)
        connection.execute(insert(RoleAssignment), assignments)
        bump(connection, ACCESS_GENERATION)
        bump(connection, GENERATION)
    try:
        access = AccessEngine(engine)
        app = f"{target}/providers/{APPS}/web"
        decision = access.check(alice, f"{APPS}/read", app)
        assert decision.allowed, decision.reason
        assert decision.grant is not None and decision.grant.assignment_id == granting
        assert groups[9] in decision.reason  # granted through the top group of the chain
        assert not access.check(alice, f"{APPS}/write", app).allowed
        assert not access.check(alice, f"{APPS}/read", scope_of(122)).allowed
        assert not access.check(bob, f"{APPS}/read", app).allowed  # in no group at all
        assert not access.check(carol, f"{APPS}/read", app).allowed  # in another chain
        assert len(access.index().principals(alice)) == 11  # herself and ten nested groups
        assert len(access.index().grants) > 10000

        # Leaving the bottom group revokes it, once the directory generation moves.
        with engine.begin() as connection:
            connection.execute(delete(GroupMember).where(GroupMember.member_id == alice))
            bump(connection, GENERATION)
        assert not access.check(alice, f"{APPS}/read", app).allowed
        assert access.check(groups[0], f"{APPS}/read", app).allowed
    finally:
        engine.dispose()
