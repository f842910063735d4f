"""Acceptance (issue #6): an app started by `keyless app run` uses the official
`azure-keyvault-secrets` `SecretClient` with `azure-identity`'s `ManagedIdentityCredential`, and
with `DefaultAzureCredential`, both unchanged: set, get, list, versions, update, delete and wait
for the poller, recover, purge (Vault Secrets Officer writes, Vault Administrator purges: an
Officer-only app gets 403 on purge); a second app with only `Vault Secrets User` reads and is
refused writes with 403.

Nothing in the app is patched. The vault's host name `{vault}.vault.localhost` resolves through
a hosts line, as docs/vault.md tells users to add one: the run happens in a private mount
namespace whose /etc/hosts is the machine's plus that line (tests/support/hosts.py), so the
machine's own /etc/hosts is never touched. The app trusts the Keyless CA through
`REQUESTS_CA_BUNDLE`, as after `eval "$(keyless env)"`.

The apps get the vault's URL from the keyvault connection (`AZURE_KEYVAULT_RESOURCEENDPOINT`);
their results are written as JSON of pass/fail per step and never hold a value or a token.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.hosts import hosts_text, skip_reason, with_hosts
from tests.support.server import KEYLESS, KeylessServer
from tests.test_host import PYTHON, RUN_TIMEOUT_S, read_once, write_script

SET = "Keyless.Vault/vaults/secrets/setSecret/action"
DELETE = "Keyless.Vault/vaults/secrets/delete"
PURGE = "Keyless.Vault/vaults/secrets/purge/action"

# The app: `ARGS["credential"]` picks the credential, `ARGS["role"]` what it tries.
APP = """
import hashlib, socket, uuid
from urllib.parse import urlsplit
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

checks = {}
def check(name, passed):
    checks[name] = bool(passed)

def refused(call):
    try:
        call()
    except HttpResponseError as exc:
        return {"status": exc.status_code, "message": str(exc.message)}
    return {"status": None, "message": "not refused"}

endpoint = os.environ["AZURE_KEYVAULT_RESOURCEENDPOINT"]
host = urlsplit(endpoint).hostname
check("the vault host resolves to loopback", socket.gethostbyname(host) == "127.0.0.1")
credential = (
    ManagedIdentityCredential() if ARGS["credential"] == "managed" else DefaultAzureCredential()
)
client = SecretClient(endpoint, credential)
result = {"checks": checks}
if ARGS["role"] == "writer":
    name = ARGS["name"]
    first_value, second_value = uuid.uuid4().hex, uuid.uuid4().hex
    first = client.set_secret(name, first_value, content_type="text/plain", tags={"a": "1"})
    check("set returns the value and a version", first.value == first_value
          and first.id == f"{endpoint.rstrip('/')}/secrets/{name}/{first.properties.version}")
    second = client.set_secret(name, second_value)
    check("a second set makes a new version", second.properties.version != first.properties.version)
    check("get returns the latest", client.get_secret(name).value == second_value)
    older = client.get_secret(name, first.properties.version)
    check("get of a version", older.value == first_value)
    check("list names it", name in {p.name for p in client.list_properties_of_secrets()})
    versions = {p.version for p in client.list_properties_of_secret_versions(name)}
    check("versions lists both", versions == {first.properties.version, second.properties.version})
    updated = client.update_secret_properties(name, content_type="application/json",
                                              tags={"owner": "app"})
    check("update", updated.content_type == "application/json" and updated.tags == {"owner": "app"})
    deleted = client.begin_delete_secret(name).result()
    check("delete + wait", deleted.name == name and deleted.scheduled_purge_date is not None
          and deleted.recovery_id == f"{endpoint.rstrip('/')}/deletedsecrets/{name}")
    try:
        client.get_secret(name)
        check("a deleted secret is not served", False)
    except ResourceNotFoundError:
        check("a deleted secret is not served", True)
    check("list deleted names it", name in {d.name for d in client.list_deleted_secrets()})
    recovered = client.begin_recover_deleted_secret(name).result()
    check("recover + wait", recovered.name == name
          and client.get_secret(name).value == second_value)
    client.begin_delete_secret(name).result()
    client.purge_deleted_secret(name)
    try:
        client.get_deleted_secret(name)
        check("purge", False)
    except ResourceNotFoundError:
        check("purge", True)
elif ARGS["role"] == "officer":
    name = ARGS["name"]
    client.set_secret(name, uuid.uuid4().hex)
    client.begin_delete_secret(name).result()
    result["purge"] = refused(lambda: client.purge_deleted_secret(name))
    check("recover after the refused purge", client.begin_recover_deleted_secret(name).result())
else:
    value = client.get_secret(ARGS["name"]).value
    result["read"] = hashlib.sha256(value.encode()).hexdigest()
    result["set"] = refused(lambda: client.set_secret(ARGS["name"], "overwrite"))
    result["delete"] = refused(lambda: client.begin_delete_secret(ARGS["name"]).result())
emit(result)
"""


@pytest.fixture(scope="module")
def hosts_required() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Apps:
    def __init__(self, server: KeylessServer, tmp: Path) -> None:
        self.server = server
        self.group = _unique("rg-kvrun")
        server.cli("login")
        server.cli("group", "create", "-n", self.group)
        self.vault = server.cli_json("vault", "create", "-g", self.group, "-n", _unique("kvrun"))
        self.host = str(self.vault["properties"]["vaultUri"]).split("//")[1].split(":")[0]
        self.hosts = tmp / "hosts"
        self.hosts.write_text(hosts_text([self.host]))
        self.principals: dict[str, str] = {}
        for app in ("writer", "officer", "reader"):
            made = server.cli_json("app", "create", "-g", self.group, "-n", app,
                                   "--assign-identity")  # fmt: skip
            self.principals[app] = made["identity"]["principalId"]
            # Vault Secrets User and AZURE_KEYVAULT_RESOURCEENDPOINT, as a user would wire it.
            server.cli("app", "connection", "create", "keyvault", "-g", self.group, "-n", app,
                       "--vault", self.vault["name"], "--system-identity")  # fmt: skip
        for app, role in (
            ("writer", "Vault Secrets Officer"),
            ("writer", "Vault Administrator"),
            ("officer", "Vault Secrets Officer"),
        ):
            server.cli("role", "assignment", "create", "--assignee", self.principals[app],
                       "--role", role, "--scope", self.vault["id"])  # fmt: skip
        me = server.cli_json("account", "show")["user"]["name"]
        server.cli("role", "assignment", "create", "--assignee", me, "--role",
                   "Vault Secrets Officer", "--scope", self.vault["id"])  # fmt: skip

    def run(self, tmp_path: Path, app: str, args: dict[str, Any]) -> Any:
        script = write_script(tmp_path, APP)
        out = tmp_path / f"{script.stem}.json"
        command = [*KEYLESS, "app", "run", "-g", self.group, "-n", app, "--",
                   PYTHON, str(script), str(out), json.dumps(args)]  # fmt: skip
        done = subprocess.run(
            with_hosts(command, self.hosts),
            env=self.server.env(
                REQUESTS_CA_BUNDLE=str(self.server.ca_file),
                SSL_CERT_FILE=str(self.server.ca_file),
            ),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-4000:]}"
        return read_once(out)


@pytest.fixture(scope="module")
def apps(
    hosts_required: None, keyless_server: KeylessServer, tmp_path_factory: pytest.TempPathFactory
) -> Apps:
    return Apps(keyless_server, tmp_path_factory.mktemp("kvrun"))


def test_the_vault_name_does_not_resolve_outside_the_namespace(apps: Apps) -> None:
    """The premise: this machine's resolver needs the hosts line, and the test's line stays in
    its namespace."""
    found = subprocess.run(["getent", "hosts", apps.host], capture_output=True, text=True)
    assert found.returncode != 0, "the vault host resolves on this machine: nothing is tested"
    assert apps.host not in Path("/etc/hosts").read_text()


@pytest.mark.parametrize("credential", ["managed", "default"])
def test_the_official_client_does_everything_inside_app_run(
    apps: Apps, tmp_path: Path, credential: str
) -> None:
    name = _unique("app-secret")
    result = apps.run(tmp_path, "writer", {"credential": credential, "role": "writer",
                                            "name": name})  # fmt: skip
    assert result["checks"] == {
        key: True
        for key in (
            "the vault host resolves to loopback",
            "set returns the value and a version",
            "a second set makes a new version",
            "get returns the latest",
            "get of a version",
            "list names it",
            "versions lists both",
            "update",
            "delete + wait",
            "a deleted secret is not served",
            "list deleted names it",
            "recover + wait",
            "purge",
        )
    }
    # Every write was the app's own identity's, and audited so.
    writer = apps.principals["writer"]
    for action in (SET, DELETE, PURGE):
        records = apps.server.audit(action=action, actor=writer)
        assert any(
            r["target"].split("/secrets/")[-1].split("/")[0] == name and r["result"] == "succeeded"
            for r in records
        ), action


@pytest.mark.parametrize("credential", ["managed", "default"])
def test_a_secrets_user_app_reads_and_is_refused_writes(
    apps: Apps, tmp_path: Path, credential: str
) -> None:
    name = _unique("readable")
    value = f"readable-{uuid.uuid4().hex}"
    apps.server.cli("vault", "secret", "set", "--vault-name", apps.vault["name"], "--name", name,
                    "--value", "-", input=value)  # fmt: skip
    result = apps.run(tmp_path, "reader", {"credential": credential, "role": "reader",
                                            "name": name})  # fmt: skip
    assert result["checks"] == {"the vault host resolves to loopback": True}
    assert result["read"] == hashlib.sha256(value.encode()).hexdigest()
    assert result["set"]["status"] == 403 and SET in result["set"]["message"]
    assert result["delete"]["status"] == 403 and DELETE in result["delete"]["message"]
    denied = apps.server.audit(action=SET, actor=apps.principals["reader"], result="denied")
    assert any(r["target"].split("/secrets/")[-1].split("/")[0] == name for r in denied)


def test_purge_is_the_administrators_an_officer_app_gets_403(apps: Apps, tmp_path: Path) -> None:
    name = _unique("officers")
    result = apps.run(tmp_path, "officer", {"credential": "managed", "role": "officer",
                                             "name": name})  # fmt: skip
    assert result["purge"]["status"] == 403 and PURGE in result["purge"]["message"]
    assert result["checks"] == {
        "the vault host resolves to loopback": True,
        "recover after the refused purge": True,
    }
