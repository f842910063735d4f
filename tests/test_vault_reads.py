"""The vault's read path keeps no stale answer: what it remembers between requests (a token's
claims, the access index) is dropped when the store's generations move, and the secret, its
attributes and the vault are read afresh for every request.

Each test first reads successfully (so the token is remembered and the index built), then
changes something with the CLI or the management API, and checks the very next read.
Requests go to the server's loopback address with the vault's name in SNI and Host.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from keyless.authority import keys
from keyless.authority.config import DataDir, ServerConfig
from keyless.store.engine import open_engine
from tests.support.postgres import PostgresServer
from tests.support.server import KeylessServer, running_server

GET_SECRET = "Keyless.Vault/vaults/secrets/getSecret/action"


@dataclass(frozen=True)
class Reader:
    app_id: str
    object_id: str
    secret: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeylessServer]:
    with running_server(tmp_path_factory.mktemp("keyless-vault-reads") / "data") as server:
        server.cli("group", "create", "-n", "reads-rg")
        yield server


def _vault(server: KeylessServer, name: str, group: str = "reads-rg") -> dict[str, Any]:
    created = server.cli_json("vault", "create", "-g", group, "-n", name, "--retention-days", "7")
    me = server.cli_json("account", "show")["user"]["name"]
    server.cli(
        "role", "assignment", "create", "--assignee", me, "--role", "Vault Secrets Officer",
        "--scope", created["id"],
    )  # fmt: skip
    return dict(created)


def _set(server: KeylessServer, vault: str, name: str, value: str) -> None:
    at = ["--vault-name", vault, "--name", name]
    server.cli("vault", "secret", "set", *at, "--value", "-", input=value)


def _reader(server: KeylessServer, scope: str) -> Reader:
    sp = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", f"reader-{uuid.uuid4().hex[:8]}", "--secret"
    )
    server.cli(
        "role", "assignment", "create", "--assignee", sp["appId"], "--role",
        "Vault Secrets User", "--scope", scope,
    )  # fmt: skip
    object_id = str(server.cli_json("ad", "sp", "show", "--id", sp["appId"])["id"])
    return Reader(sp["appId"], object_id, sp["password"])


def _token(server: KeylessServer, reader: Reader, scope: str | None = None) -> str:
    with server.http() as http:
        response = http.post(
            server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": reader.app_id,
                "client_secret": reader.secret,
                "scope": scope or f"https://vault.localhost:{server.port}/.default",
            },
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _get(server: KeylessServer, vault: str, path: str, token: str) -> httpx.Response:
    host = f"{vault}.vault.localhost"
    with server.http() as http:
        return http.get(
            f"https://127.0.0.1:{server.port}{path}",
            params={"api-version": "7.5"},
            headers={"Host": f"{host}:{server.port}", "Authorization": f"Bearer {token}"},
            extensions={"sni_hostname": host},
        )


def _error(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], (error.get("innererror") or {}).get("code", "")


def test_removing_the_role_refuses_the_next_read(server: KeylessServer) -> None:
    vault = _vault(server, "reads-role")
    _set(server, "reads-role", "db", "role-value")
    reader = _reader(server, vault["id"])
    token = _token(server, reader)
    for _ in range(3):
        read = _get(server, "reads-role", "/secrets/db", token)
        assert read.status_code == 200 and read.json()["value"] == "role-value"
    granted = server.audit(actor=reader.object_id, result="succeeded")
    assert len([e for e in granted if e["action"] == GET_SECRET]) == 3, "a read not audited"

    server.cli(
        "role", "assignment", "delete", "--assignee", reader.app_id, "--role",
        "Vault Secrets User", "--scope", vault["id"],
    )  # fmt: skip
    refused = _get(server, "reads-role", "/secrets/db", token)
    assert _error(refused) == (403, "Forbidden", "ForbiddenByRbac")
    assert GET_SECRET in refused.json()["error"]["message"]
    assert "role-value" not in refused.text
    denied = server.audit(actor=reader.object_id, result="denied")
    assert any(e["action"] == GET_SECRET for e in denied)

    # And back, from an assignment further up: the vault's resource group.
    group = vault["id"].split("/providers/")[0]
    server.cli(
        "role", "assignment", "create", "--assignee", reader.app_id, "--role",
        "Vault Secrets User", "--scope", group,
    )  # fmt: skip
    assert _get(server, "reads-role", "/secrets/db", token).json()["value"] == "role-value"


def test_disabling_expiring_or_rotating_a_secret_shows_on_the_next_read(
    server: KeylessServer,
) -> None:
    vault = _vault(server, "reads-attrs")
    _set(server, "reads-attrs", "api-key", "first")
    officer = server.cli_json(
        "account", "get-access-token", "--resource", f"https://vault.localhost:{server.port}"
    )["accessToken"]
    reader = _reader(server, vault["id"])
    token = _token(server, reader)
    first = _get(server, "reads-attrs", "/secrets/api-key", token).json()
    assert first["value"] == "first"
    version = first["id"].rsplit("/", 1)[1]

    def patch(attributes: dict[str, Any]) -> None:
        host = "reads-attrs.vault.localhost"
        with server.http() as http:
            response = http.patch(
                f"https://127.0.0.1:{server.port}/secrets/api-key/{version}",
                params={"api-version": "7.5"},
                json={"attributes": attributes},
                headers={"Host": f"{host}:{server.port}", "Authorization": f"Bearer {officer}"},
                extensions={"sni_hostname": host},
            )
        assert response.status_code == 200, response.text

    patch({"enabled": False})
    refused = _get(server, "reads-attrs", "/secrets/api-key", token)
    assert _error(refused) == (403, "Forbidden", "SecretDisabled")
    patch({"enabled": True, "exp": int(time.time()) - 10})
    assert _error(_get(server, "reads-attrs", "/secrets/api-key", token))[2] == "SecretExpired"
    patch({"exp": int(time.time()) + 3600})
    assert _get(server, "reads-attrs", "/secrets/api-key", token).json()["value"] == "first"

    _set(server, "reads-attrs", "api-key", "second")
    assert _get(server, "reads-attrs", "/secrets/api-key", token).json()["value"] == "second"
    old = _get(server, "reads-attrs", f"/secrets/api-key/{version}", token)
    assert old.json()["value"] == "first"
    unknown = _get(server, "reads-attrs", f"/secrets/api-key/{'0' * 32}", token)
    assert _error(unknown)[:2] == (404, "SecretNotFound")
    server.cli("vault", "secret", "delete", "--vault-name", "reads-attrs", "--name", "api-key")
    assert _error(_get(server, "reads-attrs", "/secrets/api-key", token))[:2] == (
        404,
        "SecretNotFound",
    )


def test_a_deleted_vault_is_gone_and_its_name_is_someone_elses(server: KeylessServer) -> None:
    vault = _vault(server, "reads-gone")
    _set(server, "reads-gone", "s", "old-vault-value")
    reader = _reader(server, vault["id"])
    token = _token(server, reader)
    assert _get(server, "reads-gone", "/secrets/s", token).status_code == 200

    server.cli("vault", "delete", "-g", "reads-rg", "-n", "reads-gone")
    assert _error(_get(server, "reads-gone", "/secrets/s", token))[:2] == (404, "VaultNotFound")

    # The same name in another group is another vault: nothing of the old one carries over.
    server.cli("group", "create", "-n", "reads-other-rg")
    _vault(server, "reads-gone", group="reads-other-rg")
    _set(server, "reads-gone", "s", "new-vault-value")
    refused = _get(server, "reads-gone", "/secrets/s", token)
    assert _error(refused) == (403, "Forbidden", "ForbiddenByRbac")
    assert "reads-other-rg" in refused.json()["error"]["message"]
    assert "vault-value" not in refused.text


def test_a_remembered_token_opens_only_the_api_it_was_issued_for(server: KeylessServer) -> None:
    vault = _vault(server, "reads-aud")
    _set(server, "reads-aud", "s", "aud-value")
    reader = _reader(server, vault["id"])
    vault_token = _token(server, reader)
    assert _get(server, "reads-aud", "/secrets/s", vault_token).status_code == 200
    with server.http() as http:
        management = http.get(
            f"/subscriptions/{server.subscription_id}/resourceGroups",
            params={"api-version": "2022-09-01"},
            headers={"Authorization": f"Bearer {vault_token}"},
        )
    assert management.status_code == 401
    management_token = _token(server, reader, "api://keyless/management/.default")
    refused = _get(server, "reads-aud", "/secrets/s", management_token)
    assert _error(refused)[:2] == (401, "Unauthorized")
    assert "not api://keyless/vault" in refused.json()["error"]["message"]
    assert "WWW-Authenticate" in refused.headers
    assert _get(server, "reads-aud", "/secrets/s", vault_token).status_code == 200


def test_a_remembered_token_is_refused_once_its_signing_key_has_expired(
    server: KeylessServer,
) -> None:
    """After the other tests on the module's server: it expires every retired key."""
    vault = _vault(server, "reads-keys")
    _set(server, "reads-keys", "s", "keys-value")
    reader = _reader(server, vault["id"])
    token = _token(server, reader)
    assert _get(server, "reads-keys", "/secrets/s", token).status_code == 200
    server.cli("keys", "rotate")
    server.cli("keys", "rotate")
    # Retired, still published until the tokens it signed expire: the token still works.
    assert _get(server, "reads-keys", "/secrets/s", token).status_code == 200

    paths = DataDir(server.data_dir)
    engine = open_engine(ServerConfig.load_or_default(paths).effective_store_url(paths))
    try:
        with Session(engine) as session, session.begin():
            assert keys.expire_retired(session, time.time() + 10 * 365 * 86400) >= 1
    finally:
        engine.dispose()
    refused = _get(server, "reads-keys", "/secrets/s", token)
    assert _error(refused)[:2] == (401, "Unauthorized")
    assert "key this tenant does not publish" in refused.json()["error"]["message"]
    assert _get(server, "reads-keys", "/secrets/s", _token(server, reader)).status_code == 200


def test_reads_on_a_postgresql_store(tmp_path: Path, postgres_server: PostgresServer) -> None:
    """With PostgreSQL the store is across a network: the same reads run on a thread, and
    the lookup's JSON, boolean and numeric columns come back as on SQLite."""
    name = f"vault_reads_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name)
    url = postgres_server.admin_url().rsplit("/", 1)[0] + f"/{name}"
    with running_server(tmp_path / "data", store_url=url) as server:
        server.cli("group", "create", "-n", "reads-rg")
        vault = _vault(server, "reads-pg")
        _set(server, "reads-pg", "db", "pg-value")
        reader = _reader(server, vault["id"])
        token = _token(server, reader)
        for _ in range(2):
            read = _get(server, "reads-pg", "/secrets/db", token)
            assert read.status_code == 200, read.text
            assert read.json()["value"] == "pg-value"
            assert read.json()["attributes"]["enabled"] is True and read.json()["tags"] is None
        granted = server.audit(actor=reader.object_id, result="succeeded")
        assert len([e for e in granted if e["action"] == GET_SECRET]) == 2
        server.cli(
            "role", "assignment", "delete", "--assignee", reader.app_id, "--role",
            "Vault Secrets User", "--scope", vault["id"],
        )  # fmt: skip
        assert _error(_get(server, "reads-pg", "/secrets/db", token))[2] == "ForbiddenByRbac"
