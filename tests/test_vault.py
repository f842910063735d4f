"""The Keyless vault with the official `azure-keyvault-secrets` client, unchanged.

The client gets its tokens from Keyless through `azure-identity`'s `ClientSecretCredential`
(only the authority host and trust in the Keyless CA are configured); it finds the authority
and audience from the vault's 401 challenge, as against Azure. Vault hosts are
`{vault}.vault.localhost:{port}`; this machine's resolver (glibc with `files dns`) does not
resolve `*.localhost` as systemd-resolved does (RFC 6761), so the test resolves those names to
loopback in-process, as a hosts entry would (docs/architecture.md, "Vault").
"""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from tests.support.server import KeylessServer, running_server

VAULT = "shop-vault"
GROUP = "vault-rg"
_real_getaddrinfo = socket.getaddrinfo


def _loopback_vault_hosts(host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, str) and host.lower().endswith(".vault.localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


@dataclass(frozen=True)
class Principal:
    app_id: str
    object_id: str
    secret: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeylessServer]:
    with running_server(tmp_path_factory.mktemp("keyless-vault") / "data") as server:
        yield server


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, server: KeylessServer) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_vault_hosts)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,::1")
    for name in [n for n in os.environ if n.startswith("AZURE_")]:
        monkeypatch.delenv(name)


def _arm(server: KeylessServer, method: str, path: str, body: Any = None) -> httpx.Response:
    with server.http() as http:
        return http.request(
            method,
            path,
            json=body,
            headers={"Authorization": f"Bearer {server.admin_token()}"},
        )


@pytest.fixture(scope="module")
def vault(server: KeylessServer) -> dict[str, Any]:
    sub = f"/subscriptions/{server.subscription_id}"
    assert _arm(server, "PUT", f"{sub}/resourceGroups/{GROUP}", {}).status_code == 201
    created = _arm(
        server,
        "PUT",
        f"{sub}/resourceGroups/{GROUP}/providers/Keyless.Vault/vaults/{VAULT}",
        {"properties": {"softDeleteRetentionInDays": 7}},
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


def _principal(server: KeylessServer, vault: dict[str, Any], role: str | None) -> Principal:
    sp = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", f"vault-{uuid.uuid4().hex[:8]}", "--secret"
    )
    if role:
        server.cli(
            "role", "assignment", "create", "--assignee", sp["appId"], "--role", role,
            "--scope", vault["id"],
        )  # fmt: skip
    object_id = str(server.cli_json("ad", "sp", "show", "--id", sp["appId"])["id"])
    return Principal(sp["appId"], object_id, sp["password"])


@pytest.fixture(scope="module")
def principals(server: KeylessServer, vault: dict[str, Any]) -> dict[str, Principal]:
    return {
        role: _principal(server, vault, role)
        for role in ("Vault Secrets Officer", "Vault Secrets User", "Vault Administrator")
    } | {"none": _principal(server, vault, None)}


def _client(server: KeylessServer, vault: dict[str, Any], who: Principal) -> SecretClient:
    credential = ClientSecretCredential(
        server.tenant_id,
        who.app_id,
        who.secret,
        authority=server.endpoint,
        disable_instance_discovery=True,
    )
    return SecretClient(vault["properties"]["vaultUri"], credential)


# --------------------------------------------------------------------------------- resource


def test_the_vault_resource_has_its_own_https_url(
    server: KeylessServer, vault: dict[str, Any]
) -> None:
    assert vault["type"] == "Keyless.Vault/vaults"
    assert vault["properties"]["vaultUri"] == f"https://{VAULT}.vault.localhost:{server.port}/"
    assert vault["properties"]["tenantId"] == server.tenant_id
    assert vault["properties"]["softDeleteRetentionInDays"] == 7
    shown = _arm(server, "GET", vault["id"])
    assert shown.status_code == 200 and shown.json()["properties"] == vault["properties"]
    listed = _arm(server, "GET", f"{vault['id'].rsplit('/', 1)[0]}")
    assert [v["name"] for v in listed.json()["value"]] == [VAULT]
    # Vault names are host names: unique on the server, and DNS labels.
    sub = f"/subscriptions/{server.subscription_id}"
    assert _arm(server, "PUT", f"{sub}/resourceGroups/other-rg", {}).status_code == 201
    taken = _arm(
        server, "PUT", f"{sub}/resourceGroups/other-rg/providers/Keyless.Vault/vaults/{VAULT}", {}
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "VaultAlreadyExists"
    bad = _arm(
        server, "PUT", f"{sub}/resourceGroups/other-rg/providers/Keyless.Vault/vaults/a--b", {}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VaultNameNotValid"


def test_an_unauthenticated_request_gets_the_key_vault_challenge(
    server: KeylessServer, vault: dict[str, Any]
) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(verify=context, timeout=30) as http:
        response = http.get(f"{vault['properties']['vaultUri']}secrets?api-version=7.5")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer authorization="{server.endpoint}/{server.tenant_id}", '
        f'resource="https://vault.localhost:{server.port}"'
    )
    assert response.json()["error"]["code"] == "Unauthorized"


def test_an_existing_data_directory_gets_a_certificate_for_vault_hosts(
    server: KeylessServer,
) -> None:
    from keyless.authority.tls import TlsFiles, server_certificate_names

    assert "*.vault.localhost" in server_certificate_names(TlsFiles.in_dir(server.data_dir))


# ------------------------------------------------------------------------------ secrets


def test_secret_lifecycle_with_the_official_client(
    server: KeylessServer, vault: dict[str, Any], principals: dict[str, Principal]
) -> None:
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    value = f"officer-value-{uuid.uuid4().hex}"
    first = officer.set_secret("api-key", value, content_type="text/plain", tags={"env": "test"})
    assert first.value == value and first.properties.content_type == "text/plain"
    assert (
        first.id == f"{vault['properties']['vaultUri']}secrets/api-key/{first.properties.version}"
    )
    second = officer.set_secret("api-key", value + "-2")
    assert second.properties.version != first.properties.version
    assert officer.get_secret("api-key").value == value + "-2"
    assert officer.get_secret("api-key", first.properties.version).value == value
    versions = {p.version for p in officer.list_properties_of_secret_versions("api-key")}
    assert versions == {first.properties.version, second.properties.version}
    officer.set_secret("other", "x")
    assert sorted(p.name for p in officer.list_properties_of_secrets()) == ["api-key", "other"]

    updated = officer.update_secret_properties(
        "api-key", content_type="application/json", tags={"owner": "shop"}
    )
    assert updated.content_type == "application/json" and updated.tags == {"owner": "shop"}

    deleted = officer.begin_delete_secret("api-key").result()
    assert deleted.recovery_id == f"{vault['properties']['vaultUri']}deletedsecrets/api-key"
    assert deleted.scheduled_purge_date is not None
    with pytest.raises(ResourceNotFoundError):
        officer.get_secret("api-key")
    assert [d.name for d in officer.list_deleted_secrets()] == ["api-key"]
    with pytest.raises(HttpResponseError) as conflict:
        officer.set_secret("api-key", "reuse")
    assert conflict.value.status_code == 409

    recovered = officer.begin_recover_deleted_secret("api-key").result()
    assert recovered.name == "api-key"
    assert officer.get_secret("api-key").value == value + "-2"

    # Purge is the administrator's: the officer's role excludes it.
    officer.begin_delete_secret("other").result()
    with pytest.raises(HttpResponseError) as refused:
        officer.purge_deleted_secret("other")
    assert refused.value.status_code == 403
    assert "Keyless.Vault/vaults/secrets/purge/action" in str(refused.value.message)
    admin = _client(server, vault, principals["Vault Administrator"])
    admin.purge_deleted_secret("other")
    with pytest.raises(ResourceNotFoundError):
        admin.get_deleted_secret("other")
    officer.set_secret("other", "a new secret after the purge")


def test_a_secrets_user_reads_but_cannot_write_and_no_role_gets_nothing(
    server: KeylessServer, vault: dict[str, Any], principals: dict[str, Principal]
) -> None:
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    officer.set_secret("readable", "read-me")
    user = _client(server, vault, principals["Vault Secrets User"])
    assert user.get_secret("readable").value == "read-me"
    with pytest.raises(HttpResponseError) as refused:
        user.set_secret("readable", "overwrite")
    assert refused.value.status_code == 403
    assert "Keyless.Vault/vaults/secrets/setSecret/action" in str(refused.value.message)
    nobody = _client(server, vault, principals["none"])
    with pytest.raises(HttpResponseError) as denied:
        nobody.get_secret("readable")
    assert denied.value.status_code == 403
    assert "Keyless.Vault/vaults/secrets/getSecret/action" in str(denied.value.message)
    denials = server.audit(result="denied")
    assert any(
        e["actor"] == principals["none"].object_id
        and e["action"] == "Keyless.Vault/vaults/secrets/getSecret/action"
        for e in denials
    )


def test_an_owner_manages_the_vault_but_cannot_read_its_values(
    server: KeylessServer, vault: dict[str, Any], principals: dict[str, Principal]
) -> None:
    """As in Azure: Owner's `*` covers control actions only; reading a value is a data action
    that needs a Vault Secrets role, even for whoever may delete the vault."""
    _client(server, vault, principals["Vault Secrets Officer"]).set_secret("owned", "not-yours")
    owner = _principal(server, vault, "Owner")
    with pytest.raises(HttpResponseError) as refused:
        _client(server, vault, owner).get_secret("owned")
    assert refused.value.status_code == 403
    assert "Keyless.Vault/vaults/secrets/getSecret/action" in str(refused.value.message)
    assert "not-yours" not in str(refused.value.message)


def test_disabled_expired_and_not_yet_valid_secrets_are_not_served(
    server: KeylessServer, vault: dict[str, Any], principals: dict[str, Principal]
) -> None:
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    officer.set_secret("disabled", "d")
    officer.update_secret_properties("disabled", enabled=False)
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    officer.set_secret("expired", "e", expires_on=now - timedelta(hours=1))
    officer.set_secret("future", "f", not_before=now + timedelta(hours=1))
    for name, inner in (
        ("disabled", "SecretDisabled"),
        ("expired", "SecretExpired"),
        ("future", "SecretNotYetValid"),
    ):
        with pytest.raises(HttpResponseError) as refused:
            officer.get_secret(name)
        assert refused.value.status_code == 403
        assert refused.value.error is not None and refused.value.error.code == "Forbidden"
        assert inner in refused.value.response.text()
    officer.update_secret_properties("disabled", enabled=True)
    assert officer.get_secret("disabled").value == "d"


def test_bad_input_gets_key_vault_errors(
    server: KeylessServer, vault: dict[str, Any], principals: dict[str, Principal]
) -> None:
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    with pytest.raises(HttpResponseError) as bad_name:
        officer.set_secret("no_underscores", "x")
    assert bad_name.value.status_code == 400 and bad_name.value.error.code == "BadParameter"
    with pytest.raises(HttpResponseError) as oversized:
        officer.set_secret("big", "x" * (25 * 1024 + 1))
    assert oversized.value.status_code == 400 and "25600" in str(oversized.value.message)
    officer.set_secret("known", "v")
    with pytest.raises(ResourceNotFoundError):
        officer.get_secret("known", "0" * 32)
    with pytest.raises(ResourceNotFoundError):
        officer.get_secret("never-set")
    wrong_version = SecretClient(
        vault["properties"]["vaultUri"],
        officer._client._config.credential,  # the same credential
        api_version="7.0",
    )
    assert wrong_version.get_secret("known").value == "v"  # an old 7.x still works
    unknown = SecretClient(
        f"https://no-such-vault.vault.localhost:{server.port}/",
        officer._client._config.credential,
    )
    with pytest.raises(HttpResponseError) as missing:
        unknown.get_secret("known")
    assert missing.value.status_code == 404 and missing.value.error.code == "VaultNotFound"
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(verify=context, timeout=30) as http:
        token = officer._client._config.credential.get_token(
            f"https://vault.localhost:{server.port}/.default"
        ).token
        response = http.get(
            f"{vault['properties']['vaultUri']}secrets/known?api-version=1999-01-01",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"
    assert "7.5" in response.json()["error"]["message"]


def test_values_are_never_stored_or_logged_in_clear(
    server: KeylessServer, vault: dict[str, Any], principals: dict[str, Principal]
) -> None:
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    value = f"needle-{uuid.uuid4().hex}"
    officer.set_secret("needle", value)
    assert officer.get_secret("needle").value == value
    needle = value.encode()
    for path in server.data_dir.rglob("*"):
        if path.is_file() and not path.is_socket():
            assert needle not in path.read_bytes(), path
    assert needle not in server.log_path.read_bytes()
    assert value not in str(server.audit())
