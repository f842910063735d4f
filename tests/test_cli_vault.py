"""`keyless vault` and `keyless vault secret` as a user types them, against a real server.

The secret commands reach `{vault}.vault.localhost` by connecting to the server's address and
naming the vault in SNI and Host, so no resolver entry is needed. Values must never reach stdout
or stderr unless `--show-value` asks for them.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import KeylessServer
from tests.test_cli_resources import kl, q, refused, run, unique

VALUE = f"s3cret-{uuid.uuid4().hex}"


def _quiet(result: Any, *values: str) -> None:
    for value in values:
        assert value not in result.stdout and value not in result.stderr


def _administered_vault(server: KeylessServer, group: str) -> dict[str, Any]:
    """A new vault in `group` on which the signed-in user is Vault Administrator."""
    created = kl(server, f"vault create -g {group} -n {unique('kv')} --retention-days 7")
    me = kl(server, "account show")["user"]["name"]
    kl(
        server,
        f"role assignment create --assignee {q(me)} --role 'Vault Administrator' "
        f"--scope {q(created['id'])}",
    )
    return created


@pytest.fixture
def vault(keyless_server: KeylessServer) -> dict[str, Any]:
    group = unique("rg")
    kl(keyless_server, f"group create -n {group}")
    return _administered_vault(keyless_server, group)


def test_vault_create_list_show_delete(keyless_server: KeylessServer) -> None:
    server = keyless_server
    group, name = unique("rg"), unique("kv")
    kl(server, f"group create -n {group}")
    created = kl(server, f"vault create -g {group} -n {name} --tags env=dev")
    assert created["name"] == name and created["type"] == "Keyless.Vault/vaults"
    assert created["resourceGroup"] == group and created["tags"] == {"env": "dev"}
    assert created["properties"]["vaultUri"] == f"https://{name}.vault.localhost:{server.port}/"
    assert created["properties"]["softDeleteRetentionInDays"] == 90
    assert [v["name"] for v in kl(server, f"vault list -g {group}")] == [name]
    assert name in [v["name"] for v in kl(server, "vault list")]
    assert kl(server, f"vault show -g {group} -n {name}")["id"] == created["id"]
    assert "vaultUri" in str(run(server, f"vault list -g {group} -o table").stdout)
    run(server, f"vault delete -g {group} -n {name}")
    assert "was not found" in refused(server, f"vault show -g {group} -n {name}")
    assert "not valid" in refused(server, f"vault create -g {group} -n a--b")


def test_secret_lifecycle_never_prints_the_value_unasked(
    keyless_server: KeylessServer, vault: dict[str, Any], tmp_path: Path
) -> None:
    server, name = keyless_server, vault["name"]
    value_file = tmp_path / "value.txt"
    value_file.write_text(VALUE)
    at = f"--vault-name {name} --name db-password"

    result = run(server, f"vault secret set {at} --file {q(str(value_file))}")
    _quiet(result, VALUE)
    first = json.loads(result.stdout)
    assert first["name"] == "db-password" and "value" not in first
    assert first["id"].startswith(f"https://{name}.vault.localhost:{server.port}/secrets/")
    assert first["attributes"]["enabled"] is True and "T" in first["attributes"]["created"]

    result = run(server, f"vault secret show {at}")
    _quiet(result, VALUE)
    shown = json.loads(result.stdout)
    assert "value" not in shown and shown["id"] == first["id"]
    _quiet(run(server, f"vault secret show {at} -o table"), VALUE)
    assert kl(server, f"vault secret show {at} --show-value")["value"] == VALUE

    # From stdin with `--value -`: one trailing newline is dropped, and nothing is echoed.
    second = server.cli(*f"vault secret set {at} --value -".split(), input="v2-secret\n")
    _quiet(second, "v2-secret")
    assert kl(server, f"vault secret show {at} --show-value")["value"] == "v2-secret"
    version = first["id"].rsplit("/", 1)[1]
    old = kl(server, f"vault secret show {at} --version {version} --show-value")
    assert old["value"] == VALUE

    listed = run(server, f"vault secret list --vault-name {name}")
    _quiet(listed, VALUE, "v2-secret")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["db-password"]
    versions = run(server, f"vault secret list-versions {at}")
    _quiet(versions, VALUE, "v2-secret")
    assert len(json.loads(versions.stdout)) == 2
    assert first["id"] in [v["id"] for v in json.loads(versions.stdout)]

    deleted = kl(server, f"vault secret delete {at}")
    assert deleted["recoveryId"].endswith("/deletedsecrets/db-password")
    assert "value" not in deleted
    assert kl(server, f"vault secret list --vault-name {name}") == []
    assert "was not found" in refused(server, f"vault secret show {at}")
    assert "deleted but recoverable" in refused(server, f"vault secret set {at} --value x")

    recovered = run(server, f"vault secret recover {at}")
    _quiet(recovered, VALUE, "v2-secret")
    assert kl(server, f"vault secret show {at} --show-value")["value"] == "v2-secret"

    kl(server, f"vault secret delete {at}")
    purged = run(server, f"vault secret purge {at}")
    assert purged.returncode == 0 and purged.stdout == ""
    assert "was not found" in refused(server, f"vault secret recover {at}")


def test_bad_input_is_refused_clearly(
    keyless_server: KeylessServer, vault: dict[str, Any], tmp_path: Path
) -> None:
    server, name = keyless_server, vault["name"]
    missing = unique("nokv")
    assert "no vault named" in refused(server, f"vault secret show --vault-name {missing} --name x")
    assert "vault name" in refused(server, "vault secret list --vault-name a/b")
    assert "vault name" in refused(server, "vault secret list --vault-name x.evil.com")
    assert "secret name" in refused(server, f"vault secret show --vault-name {name} -n a_b")
    assert "secret name" in refused(server, f"vault secret show --vault-name {name} -n ../x")
    assert "version" in refused(
        server, f"vault secret show --vault-name {name} -n a --version ../../x"
    )
    assert "--file" in refused(server, f"vault secret set --vault-name {name} -n a")
    assert "--file" in refused(
        server, f"vault secret set --vault-name {name} -n a --value x --file /dev/null"
    )
    assert "cannot read --file" in refused(
        server, f"vault secret set --vault-name {name} -n a --file {tmp_path / 'nope'}"
    )
    assert "was not found" in refused(server, f"vault secret purge --vault-name {name} -n gone")


def test_secret_set_attributes(keyless_server: KeylessServer, vault: dict[str, Any]) -> None:
    server, name = keyless_server, vault["name"]
    at = f"--vault-name {name} --name api-token"
    first = kl(server, f"vault secret set {at} --value first")
    kl(server, f"vault secret set {at} --value second")

    disabled = kl(server, f"vault secret set-attributes {at} --enabled false")
    assert disabled["attributes"]["enabled"] is False and "value" not in disabled
    assert "disabled" in refused(server, f"vault secret show {at}")
    changed = kl(
        server,
        f"vault secret set-attributes {at} --enabled TRUE --expires 2030-01-31T00:00:00Z "
        "--not-before 2020-01-01T12:00:00 --content-type text/plain --tags env=prod team=web",
    )
    assert changed["attributes"]["enabled"] is True
    assert changed["attributes"]["exp"] == "2030-01-31T00:00:00+00:00"
    assert changed["attributes"]["nbf"] == "2020-01-01T12:00:00+00:00"  # no zone: UTC
    assert changed["contentType"] == "text/plain"
    assert changed["tags"] == {"env": "prod", "team": "web"}
    assert kl(server, f"vault secret show {at} --show-value")["value"] == "second"

    version = first["id"].rsplit("/", 1)[1]
    old = kl(server, f"vault secret set-attributes {at} --version {version} --tags old=yes")
    assert old["id"] == first["id"] and old["tags"] == {"old": "yes"}
    tags = {v["id"]: v["tags"] for v in kl(server, f"vault secret list-versions {at}")}
    assert tags[first["id"]] == {"old": "yes"} and {"env": "prod", "team": "web"} in tags.values()
    cleared = kl(server, f"vault secret set-attributes {at} --version {version} --tags ''")
    assert not cleared["tags"]


def test_secret_backup_to_a_0600_file_and_restore_into_another_vault(
    keyless_server: KeylessServer, vault: dict[str, Any], tmp_path: Path
) -> None:
    server, name = keyless_server, vault["name"]
    at = f"--vault-name {name} --name backed-up"
    kl(server, f"vault secret set {at} --value {VALUE}")
    kl(server, f"vault secret set {at} --value {VALUE}-2")
    backup = tmp_path / "backed-up.blob"

    result = run(server, f"vault secret backup {at} --file {q(str(backup))}")
    _quiet(result, VALUE)
    assert result.stdout == "" and "backed up the secret backed-up" in result.stderr
    assert backup.stat().st_mode & 0o777 == 0o600
    assert VALUE.encode() not in backup.read_bytes() and b"backed-up" not in backup.read_bytes()
    assert "exists" in refused(server, f"vault secret backup {at} --file {q(str(backup))}")

    other = _administered_vault(server, vault["resourceGroup"])["name"]  # same tenant
    restored = run(server, f"vault secret restore --vault-name {other} --file {q(str(backup))}")
    _quiet(restored, VALUE)
    shown = json.loads(restored.stdout)
    assert shown["name"] == "backed-up" and "value" not in shown
    assert shown["id"].startswith(f"https://{other}.vault.localhost:{server.port}/secrets/")
    there = f"--vault-name {other} --name backed-up"
    assert kl(server, f"vault secret show {there} --show-value")["value"] == f"{VALUE}-2"
    assert len(kl(server, f"vault secret list-versions {there}")) == 2
    # Taken names are a conflict, in the source vault as in the one restored into.
    for target in (name, other):
        message = refused(server, f"vault secret restore --vault-name {target} --file {backup}")
        assert "already exists" in message and "409" in message


def test_list_follows_every_page(keyless_server: KeylessServer, vault: dict[str, Any]) -> None:
    """More secrets than a page holds (25): `secret list` shows them all, each once."""
    from keyless.base.vault_domain import VaultDomain
    from keyless.vault.client import vault_request

    server, name = keyless_server, vault["name"]
    token = kl(server, "account get-access-token --resource api://keyless/vault")["accessToken"]
    domain = VaultDomain.from_endpoint(server.endpoint)
    names = sorted(f"many-{i:02d}" for i in range(27))
    with server.http() as http:
        for secret in names:  # straight to the data plane: 27 CLI runs would be slow
            response = vault_request(
                http, domain, name, "PUT", f"/secrets/{secret}", token, {"value": "v"}
            )
            assert response.status_code == 200, response.text
    listed = [s["name"] for s in kl(server, f"vault secret list --vault-name {name}")]
    assert sorted(listed) == names and len(listed) == len(set(listed))


def test_attribute_backup_and_restore_bad_input_is_refused_clearly(
    keyless_server: KeylessServer, vault: dict[str, Any], tmp_path: Path
) -> None:
    server, name = keyless_server, vault["name"]
    kl(server, f"vault secret set --vault-name {name} --name kept --value {VALUE}")
    at = f"--vault-name {name} --name kept"
    missing = unique("nokv")
    assert "no vault named" in refused(
        server, f"vault secret set-attributes --vault-name {missing} --name kept --enabled false"
    )
    assert "is not a time" in refused(server, f"vault secret set-attributes {at} --expires soon")
    assert "is not a time" in refused(
        server, f"vault secret set-attributes {at} --not-before 2027-13-01"
    )
    assert "is not a tag" in refused(server, f"vault secret set-attributes {at} --tags =v")
    assert "true or false" in refused(server, f"vault secret set-attributes {at} --enabled yes")
    assert "nothing to change" in refused(server, f"vault secret set-attributes {at}")
    assert "exp must be later" in refused(
        server,
        f"vault secret set-attributes {at} --expires 2020-01-01T00:00:00Z "
        "--not-before 2021-01-01T00:00:00Z",
    )
    assert "was not found" in refused(server, f"vault secret set-attributes {at}x --enabled true")
    assert kl(server, f"vault secret show {at}")["attributes"]["enabled"] is True  # unchanged

    blob = tmp_path / "blob"
    assert "was not found" in refused(
        server, f"vault secret backup --vault-name {name} --name gone --file {blob}"
    )
    assert not blob.exists()  # no file for a failed backup
    assert "no vault named" in refused(
        server, f"vault secret backup --vault-name {missing} --name kept --file {blob}"
    )
    assert "cannot write --file" in refused(
        server, f"vault secret backup {at} --file {tmp_path / 'no-such-dir' / 'blob'}"
    )
    assert "cannot read --file" in refused(
        server, f"vault secret restore --vault-name {name} --file {tmp_path / 'nope'}"
    )
    (tmp_path / "empty").write_bytes(b"")
    assert "is empty" in refused(
        server, f"vault secret restore --vault-name {name} --file {tmp_path / 'empty'}"
    )
    (tmp_path / "garbage").write_bytes(b"this is not a backup")
    message = refused(
        server, f"vault secret restore --vault-name {name} --file {tmp_path / 'garbage'}"
    )
    assert "not a Keyless secret backup" in message and "400" in message
