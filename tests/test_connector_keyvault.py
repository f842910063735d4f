"""The keyvault connection target (issue #6, Connector): `keyless app connection create
keyvault` gives the identity `Vault Secrets User` at the vault's scope and writes
AZURE_KEYVAULT_RESOURCEENDPOINT and AZURE_KEYVAULT_SCOPE (+ CLIENTID); `validate` checks it,
`delete` removes the assignment it made and nothing else.

Real parts: a Keyless server and the `keyless` CLI as subprocesses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import KeylessServer, running_server

GROUP = "kvconn"
READ = "data:Keyless.Vault/vaults/secrets/getSecret/action"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeylessServer]:
    with running_server(tmp_path_factory.mktemp("kvconn") / "data") as server:
        server.cli("login")
        server.cli("group", "create", "-n", GROUP)
        server.cli("vault", "create", "-g", GROUP, "-n", "conn-vault")
        yield server


def _said(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join(result.stderr.split())


def _may_read(server: KeylessServer, principal: str, vault_id: str) -> bool:
    out = server.cli_json(
        "role", "assignment", "check", "--assignee", principal, "--action", READ,
        "--scope", vault_id,
    )  # fmt: skip
    return bool(out["results"][0]["allowed"])


def _settings(server: KeylessServer, app: str) -> dict[str, str]:
    rows = server.cli_json("app", "config", "appsettings", "list", "-g", GROUP, "-n", app)
    return {r["name"]: r["value"] for r in rows}


def _app(server: KeylessServer, name: str, *identity: str) -> dict[str, Any]:
    return dict(server.cli_json("app", "create", "-g", GROUP, "-n", name, *identity))


def test_system_identity_connection_reads_validates_and_reverts(server: KeylessServer) -> None:
    app = _app(server, "kv-web", "--assign-identity")
    principal = app["identity"]["principalId"]
    vault = server.cli_json("vault", "show", "-g", GROUP, "-n", "conn-vault")
    assert not _may_read(server, principal, vault["id"])

    server.cli(
        "app", "connection", "create", "keyvault", "-g", GROUP, "-n", "kv-web",
        "--vault", "conn-vault", "--system-identity", "--client-type", "python",
    )  # fmt: skip
    assert _may_read(server, principal, vault["id"])
    config = server.cli_json(
        "app", "connection", "list-configuration", "-g", GROUP, "-n", "kv-web",
        "--connection", "keyvault_kv_web",
    )["configurations"]  # fmt: skip
    assert {c["name"]: c["value"] for c in config} == {
        "AZURE_KEYVAULT_RESOURCEENDPOINT": vault["properties"]["vaultUri"],
        "AZURE_KEYVAULT_SCOPE": "https://vault.azure.net/.default",
    }
    # The table shows the target's type and the auth type (its columns were once empty).
    table = server.cli(
        "app", "connection", "list", "-g", GROUP, "-n", "kv-web", "-o", "table"
    ).stdout  # fmt: skip
    row = next(line for line in table.splitlines() if "keyvault_kv_web" in line)
    assert "keyvault" in row.replace("keyvault_kv_web", "") and "systemAssignedIdentity" in row
    valid = server.cli_json(
        "app", "connection", "validate", "-g", GROUP, "-n", "kv-web",
        "--connection", "keyvault_kv_web", "-o", "json",
    )  # fmt: skip
    assert valid["valid"], valid

    server.cli(
        "app", "connection", "delete", "-g", GROUP, "-n", "kv-web", "--connection",
        "keyvault_kv_web",
    )  # fmt: skip
    assert not _may_read(server, principal, vault["id"])
    assert _settings(server, "kv-web") == {}
    assert server.cli_json("app", "connection", "list", "-g", GROUP, "-n", "kv-web") == []


def test_user_identity_and_an_assignment_that_existed_before(server: KeylessServer) -> None:
    identity = server.cli_json("identity", "create", "-g", GROUP, "-n", "kv-id")
    principal, client_id = identity["principalId"], identity["clientId"]
    vault = server.cli_json("vault", "show", "-g", GROUP, "-n", "conn-vault")
    _app(server, "kv-worker", "--assign-identity", identity["id"])
    # Someone gave the identity the role before: the connection must leave it in place.
    server.cli(
        "role", "assignment", "create", "--assignee", principal, "--role", "Vault Secrets User",
        "--scope", vault["id"],
    )  # fmt: skip
    server.cli(
        "app", "connection", "create", "keyvault", "-g", GROUP, "-n", "kv-worker",
        "--vault", "conn-vault", "--user-identity", f"client-id={client_id}",
    )  # fmt: skip
    settings = _settings(server, "kv-worker")
    assert settings["AZURE_KEYVAULT_CLIENTID"] == client_id
    server.cli(
        "app", "connection", "delete", "-g", GROUP, "-n", "kv-worker", "--connection",
        "keyvault_kv_worker",
    )  # fmt: skip
    assert _may_read(server, principal, vault["id"])  # the earlier assignment stays


def test_validate_pinpoints_a_removed_role_assignment(server: KeylessServer) -> None:
    app = _app(server, "kv-broken", "--assign-identity")
    principal = app["identity"]["principalId"]
    vault = server.cli_json("vault", "show", "-g", GROUP, "-n", "conn-vault")
    server.cli(
        "app", "connection", "create", "keyvault", "-g", GROUP, "-n", "kv-broken",
        "--vault", "conn-vault", "--system-identity",
    )  # fmt: skip
    server.cli(
        "role", "assignment", "delete", "--assignee", principal, "--role", "Vault Secrets User",
        "--scope", vault["id"],
    )  # fmt: skip
    result = server.cli(
        "app", "connection", "validate", "-g", GROUP, "-n", "kv-broken", "--connection",
        "keyvault_kv_broken", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines() if ":" in line}
    assert lines["PASS  token"] and lines["FAIL  role"]
    assert "Vault Secrets User" in result.stdout


def test_bad_input_changes_nothing(server: KeylessServer) -> None:
    principal = _app(server, "kv-bad", "--assign-identity")["identity"]["principalId"]
    vault_id = server.cli_json("vault", "show", "-g", GROUP, "-n", "conn-vault")["id"]
    cases = [
        (
            ["--vault", "no-such-vault", "--system-identity"],
            f"no vault 'no-such-vault' in resource group '{GROUP}'; for one in another",
        ),
        (["--vault", "conn-vault"], "choose one of"),
        (["--vault", "conn-vault", "--user-identity", "oops"], "client-id="),
        (["--vault", "conn-vault", "--system-identity", "--client-type", "cobol"], "client-type"),
        (
            ["--vault", "conn-vault", "--system-identity", "--customized-keys", "NOPE=X"],
            "does not write",
        ),
        (["--vault", "conn-vault", "--system-identity", "--connection", "bad name!"], "name"),
    ]
    for args, expected in cases:
        result = server.cli(
            "app", "connection", "create", "keyvault", "-g", GROUP, "-n", "kv-bad", *args,
            check=False,
        )  # fmt: skip
        assert result.returncode != 0, args
        assert expected in _said(result), (args, result.stderr)
        assert _settings(server, "kv-bad") == {}, args
        assert server.cli_json("app", "connection", "list", "-g", GROUP, "-n", "kv-bad") == []
        assert not _may_read(server, principal, vault_id), args  # the assignment was undone
