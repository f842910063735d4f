"""Revocation reaches Keyless's own resources (issue #11, "Security defects").

A deleted service principal, and a user whose sessions an administrator revoked, hold access
tokens that are still signed, unexpired and for the right audience. Third-party resources accept
them until they expire; Keyless's own resources (the management API, the vault, the token
gateway) refuse them from the next request on, in every process: the server that made the change,
its embedded gateway, and a gateway replica in this test process that shares only the store.

A real server over HTTPS, the real CLI, real LDAP binds (ldap3). Tokens are never printed.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyless.authority.config import DataDir, ServerConfig
from keyless.authority.context import Authority
from keyless.authority.masterkey import MasterKey
from keyless.authority.sessions import CLI_APP_ID, user_principal
from keyless.authority.tokens import mint
from keyless.gateway.names import bind_dn
from keyless.gateway.settings import GatewaySettings
from keyless.store.engine import open_engine
from keyless.store.models import DatabaseRoleMapping, User
from tests.support.gateway import GatewayThread
from tests.support.server import KeylessServer, running_server
from tests.test_gateway import bind_records, last_audit_id, ldap3_bind
from tests.test_vault import _loopback_vault_hosts

VAULT = "revoke-vault"
GROUP = "revoke-rg"
PG_SERVER = "revokedb"
API = "api-version=2022-12-01"


@dataclass
class World:
    server: KeylessServer
    http: httpx.Client
    authority: Authority  # this process's own view of the store: a second replica
    replica: GatewayThread
    vault_url: str
    pg_server_id: str

    def arm(self, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
        sep = "&" if "?" in path else "?"
        return self.http.request(
            method, f"{path}{sep}{API}", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    def vault_read(self, token: str) -> httpx.Response:
        return self.http.get(
            f"{self.vault_url}secrets/missing?api-version=7.4",
            headers={"Authorization": f"Bearer {token}"},
        )

    def client_token(self, app_id: str, secret: str, scope: str) -> str:
        response = self.http.post(
            self.server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": app_id,
                "client_secret": secret,
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.json().get("error_description")
        return str(response.json()["access_token"])

    def map_role(self, role: str, principal_id: str) -> None:
        admin = self.server.admin_token()
        put = self.arm(
            "PUT",
            f"{self.pg_server_id}/roleMappings/{role}",
            admin,
            {"properties": {"principalId": principal_id}},
        )
        assert put.status_code in (200, 201), put.text

    def binds(self, role: str, token: str) -> list[int]:
        """The LDAP result of binding as `role` with `token` at the server's embedded gateway
        and at the replica in this process."""
        dn = bind_dn(role, PG_SERVER)
        return [
            int(ldap3_bind(port, dn, token)["result"])
            for port in (self.server.gateway_port, self.replica.port)
        ]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch_module.setattr(socket, "getaddrinfo", _loopback_vault_hosts)
    with running_server(tmp_path_factory.mktemp("revocation") / "data") as server:
        paths = DataDir(server.data_dir)
        engine = open_engine(ServerConfig.load_or_default(paths).effective_store_url(paths))
        authority = Authority.create(engine, MasterKey.load(paths.master_key), server.endpoint, [])
        http = httpx.Client(
            base_url=server.endpoint,
            verify=ssl.create_default_context(cafile=str(server.ca_file)),
            timeout=30,
        )
        try:
            with GatewayThread(authority, GatewaySettings(port=0)) as replica:
                world = World(server, http, authority, replica, "", "")
                admin = server.admin_token()
                rg = f"/subscriptions/{server.subscription_id}/resourceGroups/{GROUP}"
                assert world.arm("PUT", rg, admin, {}).status_code == 201
                vault = world.arm("PUT", f"{rg}/providers/Keyless.Vault/vaults/{VAULT}", admin, {})
                assert vault.status_code == 201, vault.text
                world.vault_url = vault.json()["properties"]["vaultUri"]
                pg = world.arm(
                    "PUT",
                    f"{rg}/providers/Keyless.Database/postgresServers/{PG_SERVER}",
                    admin,
                    {"properties": {"host": "127.0.0.1", "port": 5432}},
                )
                assert pg.status_code == 201, pg.text
                world.pg_server_id = pg.json()["id"]
                yield world
        finally:
            http.close()
            authority.issuer_keys.close()
            engine.dispose()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _refused(response: httpx.Response, reason: str) -> str:
    """The 401 body's message, checked to name the reason and echo no token."""
    assert response.status_code == 401, (response.status_code, response.text[:300])
    message = str(response.json()["error"]["message"])
    assert reason in message, message
    return message


def test_a_deleted_service_principals_tokens_stop_at_all_three_resources(world: World) -> None:
    server = world.server
    name = f"revoked-{uuid.uuid4().hex[:8]}"
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", name, "--secret")
    app_id, secret = created["appId"], created["password"]
    object_id = server.cli_json("ad", "sp", "show", "--id", app_id)["id"]
    vault_id = world.vault_url  # the role is given at the vault resource
    rg = f"/subscriptions/{server.subscription_id}/resourceGroups/{GROUP}"
    server.cli(
        "role", "assignment", "create", "--assignee", app_id, "--role", "Reader",
        "--scope", rg,
    )  # fmt: skip
    server.cli(
        "role", "assignment", "create", "--assignee", app_id, "--role", "Vault Secrets User",
        "--scope", f"{rg}/providers/Keyless.Vault/vaults/{VAULT}",
    )  # fmt: skip
    world.map_role("revoked_app", object_id)
    management = world.client_token(app_id, secret, "api://keyless/management/.default")
    vault = world.client_token(app_id, secret, "api://keyless/vault/.default")
    postgres = world.client_token(app_id, secret, "api://keyless/postgres/.default")
    mapping = f"{world.pg_server_id}/roleMappings/revoked_app"

    # Before: every resource takes the tokens.
    assert world.arm("GET", rg, management).status_code == 200
    assert world.vault_read(vault).status_code == 404, vault_id  # authorized: no such secret
    assert world.binds("revoked_app", postgres) == [0, 0]
    assert world.arm("GET", mapping, server.admin_token()).status_code == 200

    server.cli("ad", "sp", "delete", "--id", app_id)

    # After: refused as tokens (401), not merely unauthorized, everywhere, from the next call.
    _refused(world.arm("GET", rg, management), "does not exist")
    _refused(world.vault_read(vault), "does not exist")
    before = last_audit_id(world.authority.engine)
    assert world.binds("revoked_app", postgres) == [49, 49]
    refusals = [r["result"] for r in bind_records(world.authority.engine, before)]
    assert refusals == ["principal_deleted", "principal_deleted"]
    # Its database role mapping went with it (audited), so nobody may log in as that role.
    assert world.arm("GET", mapping, server.admin_token()).status_code == 404
    with Session(world.authority.engine) as session:
        left = session.scalars(
            select(DatabaseRoleMapping).where(DatabaseRoleMapping.principal_id == object_id)
        ).all()
    assert left == []
    removed = server.audit(action="gateway.mapping.remove")
    assert any(r["details"]["principalId"] == object_id for r in removed)


def _user_token(authority: Authority, user_id: str, resource: str, sid: str | None) -> str:
    """A user token exactly as the authority mints one (`sid` None: a sign-in without a
    session, as a local `keyless login` without a refresh token gives)."""
    snapshot = authority.cache.current()
    with Session(authority.engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        principal = user_principal(user, "local", sid)
    tenant_id = user.tenant_id
    api = next(r for r in snapshot.resources[tenant_id].values() if r.name == resource)
    return mint(
        signer=authority.cache.signer(snapshot, tenant_id),
        issuer=authority.issuer(tenant_id),
        tenant=snapshot.tenants[tenant_id],
        principal=principal,
        resource=api,
        auth_method="local",
    ).access_token


def test_revoked_sessions_stop_user_tokens_at_all_three_resources(world: World) -> None:
    server = world.server
    server.cli("login")
    record = json.loads((server.data_dir / "cli" / "token.json").read_text())
    management = str(record["accessToken"])
    claims = jwt.decode(management, options={"verify_signature": False})
    user_id, upn = claims["oid"], claims["upn"]
    assert claims["appid"] == CLI_APP_ID and claims.get("sid")
    vault = server.cli_json(
        "account", "get-access-token", "--scope", "api://keyless/vault/.default"
    )
    postgres = server.cli_json(
        "account", "get-access-token", "--scope", "api://keyless/postgres/.default"
    )
    sessionless = _user_token(world.authority, user_id, "management", None)
    world.map_role("revoked_user", user_id)
    rg = f"/subscriptions/{server.subscription_id}/resourceGroups/{GROUP}"

    assert world.arm("GET", rg, management).status_code == 200
    assert world.arm("GET", rg, sessionless).status_code == 200
    assert world.vault_read(vault["accessToken"]).status_code in (403, 404)  # token accepted
    assert world.binds("revoked_user", postgres["accessToken"]) == [0, 0]

    revoked = server.cli_json("ad", "user", "revoke-sessions", "--id", upn)
    assert revoked["revokedSessions"] >= 1

    _refused(world.arm("GET", rg, management), "revoked")
    _refused(world.arm("GET", rg, sessionless), "revoked")
    _refused(world.vault_read(vault["accessToken"]), "revoked")
    before = last_audit_id(world.authority.engine)
    assert world.binds("revoked_user", postgres["accessToken"]) == [49, 49]
    refusals = [r["result"] for r in bind_records(world.authority.engine, before)]
    assert refusals == ["session_revoked", "session_revoked"]

    # Signing in again starts a new session, whose tokens work at once (even in the same
    # second as the revocation: a session's tokens are judged by their session).
    server.cli("login")
    fresh = json.loads((server.data_dir / "cli" / "token.json").read_text())["accessToken"]
    assert world.arm("GET", rg, fresh).status_code == 200
    postgres_again = server.cli_json(
        "account", "get-access-token", "--scope", "api://keyless/postgres/.default"
    )
    assert world.binds("revoked_user", postgres_again["accessToken"]) == [0, 0]


def test_deleting_managed_identities_removes_their_database_role_mappings(world: World) -> None:
    """A user-assigned identity and an app's system-assigned identity go with their resource
    group; the roles mapped to them go too (they are deleted through the same hook)."""
    server = world.server
    group = f"mi-{uuid.uuid4().hex[:8]}"
    server.cli("group", "create", "-n", group)
    uai = server.cli_json("identity", "create", "-g", group, "-n", "worker-id")
    app = server.cli_json(
        "app", "create", "-g", group, "-n", "web", "--assign-identity", "[system]"
    )
    mapped = {"uai_role": uai["principalId"], "app_role": app["identity"]["principalId"]}
    admin = server.admin_token()
    for role, principal in mapped.items():
        world.map_role(role, principal)
        assert (
            world.arm("GET", f"{world.pg_server_id}/roleMappings/{role}", admin).status_code == 200
        )

    server.cli("group", "delete", "-n", group, "--yes")

    admin = server.admin_token()
    for role in mapped:
        gone = world.arm("GET", f"{world.pg_server_id}/roleMappings/{role}", admin)
        assert gone.status_code == 404, gone.text
    listed = world.arm("GET", f"{world.pg_server_id}/roleMappings", admin).json()["value"]
    assert not {m["name"] for m in listed} & set(mapped)


def test_a_disabled_service_principal_gets_no_token_and_its_tokens_stop(world: World) -> None:
    server = world.server
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", f"off-{uuid.uuid4().hex[:8]}", "--secret"
    )
    app_id, secret = created["appId"], created["password"]
    object_id = server.cli_json("ad", "sp", "show", "--id", app_id)["id"]
    rg = f"/subscriptions/{server.subscription_id}/resourceGroups/{GROUP}"
    server.cli(
        "role", "assignment", "create", "--assignee", app_id, "--role", "Reader", "--scope", rg
    )
    world.map_role("disabled_app", object_id)
    management = world.client_token(app_id, secret, "api://keyless/management/.default")
    vault = world.client_token(app_id, secret, "api://keyless/vault/.default")
    postgres = world.client_token(app_id, secret, "api://keyless/postgres/.default")
    assert world.arm("GET", rg, management).status_code == 200
    assert world.binds("disabled_app", postgres) == [0, 0]

    shown = server.cli_json("ad", "sp", "update", "--id", app_id, "--set", "accountEnabled=false")
    assert shown["accountEnabled"] is False

    refused = world.http.post(
        server.token_url(),
        data={
            "grant_type": "client_credentials",
            "client_id": app_id,
            "client_secret": secret,
            "scope": "api://keyless/management/.default",
        },
    )
    assert refused.status_code == 400 and refused.json()["error_codes"] == [7000112]
    assert "disabled" in refused.json()["error_description"] and secret not in refused.text
    _refused(world.arm("GET", rg, management), "disabled")
    _refused(world.vault_read(vault), "disabled")
    before = last_audit_id(world.authority.engine)
    assert world.binds("disabled_app", postgres) == [49, 49]
    refusals = [r["result"] for r in bind_records(world.authority.engine, before)]
    assert refusals == ["principal_disabled", "principal_disabled"]

    # Enabled again, it has everything it had: its role, its mapping, its tokens.
    server.cli("ad", "sp", "update", "--id", app_id, "--set", "accountEnabled=true")
    assert world.arm("GET", rg, management).status_code == 200
    assert world.binds("disabled_app", postgres) == [0, 0]
    fresh = world.client_token(app_id, secret, "api://keyless/management/.default")
    assert world.arm("GET", rg, fresh).status_code == 200

    wrong = server.cli("ad", "sp", "update", "--id", app_id, "--set", "displayName=x", check=False)
    assert wrong.returncode != 0 and "only accountEnabled" in wrong.stderr


def test_a_disabled_users_tokens_stop(world: World) -> None:
    server = world.server
    upn = f"off-{uuid.uuid4().hex[:8]}@example.test"
    with Session(world.authority.engine) as session, session.begin():
        tenant = session.get(
            User, jwt.decode(server.admin_token(), options={"verify_signature": False})["oid"]
        )
        assert tenant is not None
        user = User(
            object_id=str(uuid.uuid4()),
            tenant_id=tenant.tenant_id,
            user_principal_name=upn,
            display_name="Off",
            created_at=0.0,
        )
        session.add(user)
        user_id = user.object_id
    token = _user_token(world.authority, user_id, "management", None)
    rg = f"/subscriptions/{server.subscription_id}/resourceGroups/{GROUP}"
    assert world.arm("GET", rg, token).status_code == 403  # accepted, no role

    shown = server.cli_json("ad", "user", "update", "--id", upn, "--account-enabled", "false")
    assert shown["accountEnabled"] is False
    _refused(world.arm("GET", rg, token), "disabled")
    listed = {u["userPrincipalName"]: u for u in server.cli_json("ad", "user", "list")}
    assert listed[upn]["accountEnabled"] is False

    server.cli("ad", "user", "update", "--id", upn, "--account-enabled", "true")
    assert world.arm("GET", rg, token).status_code == 403

    # Nobody disables their own account: there might be nobody left to enable it.
    admin_upn = jwt.decode(server.admin_token(), options={"verify_signature": False})["upn"]
    own = server.cli(
        "ad", "user", "update", "--id", admin_upn, "--account-enabled", "false", check=False
    )
    assert own.returncode != 0 and "your own account" in own.stderr


def test_a_revoked_session_outlives_its_end_until_its_tokens_have_expired(world: World) -> None:
    """The store clean-up keeps a revoked session's row while access tokens it issued may still
    be unexpired, even past the session's own end; otherwise the next directory change would
    make those tokens good again at Keyless's resources."""
    from keyless.authority import sessions
    from keyless.authority.principal_state import load_principal
    from keyless.store.generation import bump_generation
    from keyless.store.models import SignInSession

    admin = jwt.decode(world.server.admin_token(), options={"verify_signature": False})
    now = time.time()
    sid = str(uuid.uuid4())
    with Session(world.authority.engine) as session, session.begin():
        session.add(
            SignInSession(
                id=sid,
                tenant_id=admin["tid"],
                user_object_id=admin["oid"],
                client_id=CLI_APP_ID,
                auth_method="local",
                created_at=now - 90 * 86400,
                last_used_at=now - 600,
                expires_at=now - 60,  # the session's hard end has passed...
                revoked_at=now - 120,  # ...shortly after it was revoked
                revoked_reason="admin",
            )
        )
        bump_generation(session)  # as the revocation did, in its transaction
    with Session(world.authority.engine) as session, session.begin():
        sessions.purge_expired(session, now + sessions.PURGE_INTERVAL_S * 2)
    state = load_principal(world.authority.engine, admin["tid"], admin["oid"])
    assert sid in state.revoked_sessions
    token = _user_token(world.authority, admin["oid"], "management", sid)
    rg = f"/subscriptions/{world.server.subscription_id}/resourceGroups/{GROUP}"
    _refused(world.arm("GET", rg, token), "revoked")
