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


@pytest.fixture
def vault(keyless_server: KeylessServer) -> dict[str, Any]:
    server = keyless_server
    group = unique("rg")
    kl(server, f"group create -n {group}")
    created = kl(server, f"vault create -g {group} -n {unique('kv')} --retention-days 7")
    me = kl(server, "account show")["user"]["name"]
    kl(
        server,
        f"role assignment create --assignee {q(me)} --role 'Vault Administrator' "
        f"--scope {q(created['id'])}",
    )
    return created


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
