"""Vault backup and restore, list paging and the purge sweep, with the official `SecretClient`
unchanged against a real `keyless serve` (the set-up is test_vault.py's)."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from keyless.authority.config import DataDir, ServerConfig
from keyless.authority.context import Authority
from keyless.authority.masterkey import MasterKey
from keyless.server.maintenance import run_once
from keyless.store.engine import open_engine
from keyless.vault.backup import MAX_RESTORE_BODY, open_backup, seal_backup
from tests.support.server import KeylessServer, running_server
from tests.test_vault import (
    GROUP,
    Principal,
    _arm,
    _client,
    _principal,
    environment,  # noqa: F401 (the autouse fixture: vault hosts resolve to loopback)
)

ROLES = ("Vault Secrets Officer", "Vault Secrets User", "Vault Administrator")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeylessServer]:
    with running_server(tmp_path_factory.mktemp("keyless-vault-more") / "data") as server:
        sub = f"/subscriptions/{server.subscription_id}"
        assert _arm(server, "PUT", f"{sub}/resourceGroups/{GROUP}", {}).status_code == 201
        yield server


def _vault(server: KeylessServer, name: str) -> dict[str, Any]:
    path = (
        f"/subscriptions/{server.subscription_id}/resourceGroups/{GROUP}"
        f"/providers/Keyless.Vault/vaults/{name}"
    )
    created = _arm(server, "PUT", path, {"properties": {"softDeleteRetentionInDays": 7}})
    assert created.status_code == 201, created.text
    return dict(created.json())


@pytest.fixture(scope="module")
def principals(server: KeylessServer) -> dict[str, Principal]:
    """One principal per role; the roles are given on each vault as it is made."""
    first = _vault(server, "first-vault")
    return {role: _principal(server, first, role) for role in ROLES}


def _grant(server: KeylessServer, vault: dict[str, Any], who: Principal, role: str) -> None:
    server.cli(
        "role", "assignment", "create", "--assignee", who.app_id, "--role", role,
        "--scope", vault["id"],
    )  # fmt: skip


def _new_vault(
    server: KeylessServer, principals: dict[str, Principal], name: str
) -> dict[str, Any]:
    vault = _vault(server, name)
    for role in ROLES:
        _grant(server, vault, principals[role], role)
    return vault


def _raw(
    server: KeylessServer,
    vault: dict[str, Any],
    who: SecretClient,
    method: str,
    url: str,
    **kw: Any,
) -> httpx.Response:
    """A request to the vault as `who`'s credential, for what the SDK never sends."""
    token = who._client._config.credential.get_token(
        f"https://vault.localhost:{server.port}/.default"
    ).token
    context = ssl.create_default_context(cafile=str(server.ca_file))
    if not url.startswith("https://"):
        url = vault["properties"]["vaultUri"].rstrip("/") + url
    with httpx.Client(verify=context, timeout=30) as http:
        return http.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kw)


# ------------------------------------------------------------------------ backup and restore


def test_backup_restores_every_version_into_another_vault_of_the_tenant(
    server: KeylessServer, principals: dict[str, Principal]
) -> None:
    source = _new_vault(server, principals, "backup-src")
    target = _new_vault(server, principals, "backup-dst")
    officer = _client(server, source, principals["Vault Secrets Officer"])
    values = [f"backup-value-{i}-{uuid.uuid4().hex}" for i in range(3)]
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC).replace(microsecond=0)
    first = officer.set_secret("db-pass", values[0], content_type="text/plain", tags={"env": "a"})
    officer.update_secret_properties("db-pass", first.properties.version, enabled=False)
    second = officer.set_secret(
        "db-pass", values[1], expires_on=now + timedelta(days=30), not_before=now
    )
    third = officer.set_secret("db-pass", values[2], tags={"env": "c"})

    blob = officer.backup_secret("db-pass")
    assert isinstance(blob, bytes) and blob
    for value in values:  # opaque: no value, name or tag in clear
        assert value.encode() not in blob
    assert b"db-pass" not in blob and b"env" not in blob

    restored = _client(server, target, principals["Vault Secrets Officer"]).restore_secret_backup(
        blob
    )
    assert restored.name == "db-pass" and restored.version == third.properties.version
    assert restored.tags == {"env": "c"}
    assert restored.vault_url.rstrip("/") == target["properties"]["vaultUri"].rstrip("/")
    there = _client(server, target, principals["Vault Secrets User"])
    assert there.get_secret("db-pass").value == values[2]
    assert there.get_secret("db-pass", second.properties.version).value == values[1]
    versions = {p.version: p for p in there.list_properties_of_secret_versions("db-pass")}
    assert set(versions) == {first.properties.version, second.properties.version, restored.version}
    old = versions[first.properties.version]
    assert old.enabled is False and old.content_type == "text/plain" and old.tags == {"env": "a"}
    assert old.created_on == first.properties.created_on
    middle = versions[second.properties.version]
    assert middle.expires_on == now + timedelta(days=30) and middle.not_before == now
    with pytest.raises(HttpResponseError) as disabled:  # still disabled after the restore
        there.get_secret("db-pass", first.properties.version)
    assert disabled.value.status_code == 403

    audit = server.audit(action="Keyless.Vault/vaults/secrets/*")
    assert any(e["action"].endswith("/backup/action") and e["result"] == "succeeded" for e in audit)
    restores = [e for e in audit if e["action"].endswith("/restore/action")]
    assert any(e["target"] == f"{target['id']}/secrets/db-pass" for e in restores)
    assert not any(v in str(audit) for v in values)
    assert not any(v.encode() in server.log_path.read_bytes() for v in values)


def test_restore_where_the_name_is_taken_is_a_conflict(
    server: KeylessServer, principals: dict[str, Principal]
) -> None:
    vault = _new_vault(server, principals, "conflict-vault")
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    officer.set_secret("taken", "original")
    blob = officer.backup_secret("taken")
    officer.set_secret("taken", "newer")

    with pytest.raises(HttpResponseError) as live:
        officer.restore_secret_backup(blob)
    assert live.value.status_code == 409 and live.value.error.code == "Conflict"
    assert "already exists" in str(live.value.message)
    officer.begin_delete_secret("taken").result()
    with pytest.raises(HttpResponseError) as deleted:
        officer.restore_secret_backup(blob)
    assert deleted.value.status_code == 409
    assert "ObjectIsDeletedButRecoverable" in deleted.value.response.text()
    # Nothing changed: recovering gives the newer value back.
    _client(server, vault, principals["Vault Administrator"]).purge_deleted_secret("taken")
    assert officer.restore_secret_backup(blob).name == "taken"
    assert officer.get_secret("taken").value == "original"
    assert len(list(officer.list_properties_of_secret_versions("taken"))) == 1


def test_a_tampered_truncated_foreign_or_garbage_blob_is_refused_and_changes_nothing(
    server: KeylessServer, principals: dict[str, Principal]
) -> None:
    vault = _new_vault(server, principals, "tamper-vault")
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    officer.set_secret("tamper-me", "do-not-leak")
    blob = officer.backup_secret("tamper-me")
    admin = _client(server, vault, principals["Vault Administrator"])
    officer.begin_delete_secret("tamper-me").result()
    admin.purge_deleted_secret("tamper-me")

    master = MasterKey.load(DataDir(server.data_dir).master_key)
    plaintext = open_backup(master, server.tenant_id, blob)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x01
    cases = [
        ("damaged", bytes(flipped)),
        ("damaged", blob[:-7]),  # truncated
        ("not a Keyless secret backup", b"hello, not a backup at all"),
        ("another tenant", seal_backup(master, str(uuid.uuid4()), plaintext)),
        ("another Keyless server", seal_backup(MasterKey.generate(), server.tenant_id, plaintext)),
    ]
    for expected, bad in cases:
        with pytest.raises(HttpResponseError) as refused:
            officer.restore_secret_backup(bad)
        assert refused.value.status_code == 400, expected
        assert refused.value.error.code == "BadParameter"
        assert expected in str(refused.value.message), refused.value.message
        assert "do-not-leak" not in refused.value.response.text()
    for body in ({}, {"value": 42}, {"value": "not base64url!"}):
        response = _raw(
            server, vault, officer, "POST", "/secrets/restore?api-version=7.5", json=body
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "BadParameter"
    # Nothing was made, not even a deleted secret.
    with pytest.raises(ResourceNotFoundError):
        officer.get_secret("tamper-me")
    assert [d.name for d in officer.list_deleted_secrets()] == []
    # The good blob still restores.
    assert officer.restore_secret_backup(blob).name == "tamper-me"
    assert officer.get_secret("tamper-me").value == "do-not-leak"


def test_backup_and_restore_need_their_data_actions(
    server: KeylessServer, principals: dict[str, Principal]
) -> None:
    vault = _new_vault(server, principals, "rbac-vault")
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    officer.set_secret("guarded", "g")
    blob = _client(server, vault, principals["Vault Administrator"]).backup_secret("guarded")
    user = _client(server, vault, principals["Vault Secrets User"])
    with pytest.raises(HttpResponseError) as no_backup:
        user.backup_secret("guarded")
    assert no_backup.value.status_code == 403
    assert "Keyless.Vault/vaults/secrets/backup/action" in str(no_backup.value.message)
    with pytest.raises(HttpResponseError) as no_restore:
        user.restore_secret_backup(blob)
    assert no_restore.value.status_code == 403
    assert "Keyless.Vault/vaults/secrets/restore/action" in str(no_restore.value.message)


def test_a_restore_body_is_read_only_for_a_caller_who_may_restore(
    server: KeylessServer, principals: dict[str, Principal]
) -> None:
    """A restore body may be megabytes: an anonymous or unauthorized caller is refused before
    any of it is read, and an authorized one past the limit gets 413."""
    vault = _new_vault(server, principals, "body-vault")
    huge = b'{"value": "' + b"A" * (MAX_RESTORE_BODY + 1) + b'"}'
    url = vault["properties"]["vaultUri"].rstrip("/") + "/secrets/restore?api-version=7.5"
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(verify=context, timeout=60) as http:
        anonymous = http.post(url, content=huge, headers={"Content-Type": "application/json"})
    assert anonymous.status_code == 401
    user = _client(server, vault, principals["Vault Secrets User"])
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    refused = _raw(server, vault, user, "POST", url, content=huge)
    assert refused.status_code == 403
    assert "restore/action" in refused.json()["error"]["message"]
    too_large = _raw(server, vault, officer, "POST", url, content=huge)
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "RequestEntityTooLarge"


# ----------------------------------------------------------------------------------- paging


def _pages(pager: Any) -> list[list[str]]:
    return [[p.name for p in page] for page in pager.by_page()]


def test_lists_come_in_pages_and_every_item_is_seen_once(
    server: KeylessServer, principals: dict[str, Principal]
) -> None:
    vault = _new_vault(server, principals, "paged-vault")
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    names = [f"paged-{i:02d}" for i in range(30)]
    for name in names:
        officer.set_secret(name, "v")

    default = _pages(officer.list_properties_of_secrets())
    assert [len(p) for p in default] == [25, 5]  # Key Vault's default page size
    assert [n for page in default for n in page] == names
    small = _pages(officer.list_properties_of_secrets(max_page_size=7))
    assert [len(p) for p in small] == [7, 7, 7, 7, 2]
    assert [n for page in small for n in page] == names

    # A secret set between two pages: one that sorts after the cursor is seen once, one before
    # it is not, and nothing is repeated (the skiptoken holds a name, not an offset).
    seen: list[str] = []
    for i, page in enumerate(officer.list_properties_of_secrets(max_page_size=7).by_page()):
        seen.extend(p.name for p in page)
        if i == 0:
            officer.set_secret("paged-00a", "early")
            officer.set_secret("zz-late", "late")
    assert seen == [*names, "zz-late"]

    for _ in range(11):  # upper case: the name is compared lower-case, shown as set
        officer.set_secret("Rotating-Key", "next")
    made = [p.version for p in officer.list_properties_of_secret_versions("Rotating-Key")]
    pager = officer.list_properties_of_secret_versions("rotating-key", max_page_size=5)
    pages = [[p.version for p in page] for page in pager.by_page()]
    assert [len(p) for p in pages] == [5, 5, 1]
    assert [v for page in pages for v in page] == made and len(set(made)) == 11

    for name in names[:4]:
        officer.begin_delete_secret(name).result()
    deleted = _pages(officer.list_deleted_secrets(max_page_size=3))
    assert deleted == [names[:3], names[3:4]]


def test_bad_paging_input_gets_bad_parameter(
    server: KeylessServer, principals: dict[str, Principal]
) -> None:
    vault = _new_vault(server, principals, "badpage-vault")
    other = _new_vault(server, principals, "badpage-other")
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    for name in ("a", "b", "c"):
        officer.set_secret(name, "v")
        _client(server, other, principals["Vault Secrets Officer"]).set_secret(name, "v")
    with pytest.raises(HttpResponseError) as too_big:
        list(officer.list_properties_of_secrets(max_page_size=26))
    assert too_big.value.status_code == 400 and too_big.value.error.code == "BadParameter"
    assert "1 to 25" in str(too_big.value.message)
    for bad in ("0", "-1", "x", "2.5"):
        response = _raw(server, vault, officer, "GET", f"/secrets?api-version=7.5&maxresults={bad}")
        assert response.status_code == 400, bad
        assert "maxresults" in response.json()["error"]["message"]

    first = _raw(server, vault, officer, "GET", "/secrets?api-version=7.5&maxresults=1").json()
    assert len(first["value"]) == 1 and first["nextLink"]
    link = urlsplit(first["nextLink"])
    assert link.netloc == urlsplit(vault["properties"]["vaultUri"]).netloc
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert query["maxresults"] == "1"
    token = query["$skiptoken"]
    second = _raw(server, vault, officer, "GET", first["nextLink"]).json()
    assert [i["id"].rsplit("/", 1)[1] for i in second["value"]] == ["b"]

    def with_token(path: str, new: str, base: dict[str, Any] | None = None) -> httpx.Response:
        params = urlencode({"api-version": "7.5", "maxresults": "1", "$skiptoken": new})
        return _raw(server, base or vault, officer, "GET", f"{path}?{params}")

    tampered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    refusals = [
        with_token("/secrets", tampered),  # altered
        with_token("/secrets", token[:-6]),  # truncated
        with_token("/secrets", "not a token!"),  # garbage
        with_token("/deletedsecrets", token),  # another list of the vault
        with_token("/secrets/a/versions", token),  # another list again
        with_token("/secrets", token, other),  # the same list of another vault
    ]
    for response in refusals:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "BadParameter"
        assert "$skiptoken" in response.json()["error"]["message"]
    last = _raw(server, vault, officer, "GET", "/secrets?api-version=7.5").json()
    assert len(last["value"]) == 3 and last["nextLink"] is None


# ------------------------------------------------------------------------------ the sweep


def test_the_maintenance_sweep_purges_deleted_secrets_past_their_date(
    server: KeylessServer, principals: dict[str, Principal]
) -> None:
    """Last in the module: maintenance with a `now` weeks ahead also rotates signing keys."""
    vault = _new_vault(server, principals, "sweep-vault")
    officer = _client(server, vault, principals["Vault Secrets Officer"])
    officer.set_secret("swept", "s1")
    officer.set_secret("swept", "s2")
    officer.set_secret("kept", "k")
    officer.set_secret("recovered", "r")
    for name in ("swept", "recovered"):
        officer.begin_delete_secret(name).result()
    officer.begin_recover_deleted_secret("recovered").result()
    purge_date = officer.get_deleted_secret("swept").scheduled_purge_date
    assert purge_date is not None

    paths = DataDir(server.data_dir)
    engine = open_engine(ServerConfig.load_or_default(paths).effective_store_url(paths))
    authority = Authority.create(engine, MasterKey.load(paths.master_key), server.endpoint, [])
    try:
        run_once(authority, now=purge_date.timestamp() - 3600)  # not due yet: nothing purged
        assert officer.get_deleted_secret("swept").name == "swept"
        run_once(authority, now=purge_date.timestamp() + 60)
    finally:
        engine.dispose()

    with pytest.raises(ResourceNotFoundError):
        officer.get_deleted_secret("swept")
    assert officer.get_secret("kept").value == "k"
    assert officer.get_secret("recovered").value == "r"
    officer.set_secret("swept", "a new secret, with no old versions")
    assert len(list(officer.list_properties_of_secret_versions("swept"))) == 1
    # Deleted secrets of the other tests' vaults were due too; this vault's is audited once.
    purges = [
        e for e in server.audit(actor="keyless:maintenance") if e["target"].startswith(vault["id"])
    ]
    assert [e["target"] for e in purges] == [f"{vault['id']}/secrets/swept"]
    assert purges[0]["action"] == "Keyless.Vault/vaults/secrets/purge/action"
    # Recorded when it happened, not at `now` (the CLI prints times in ISO 8601, as az does).
    assert datetime.fromisoformat(purges[0]["at"]) < purge_date
