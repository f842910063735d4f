"""Service principal connections with a client secret (issue #6, Connector; docs/design.md: "a
service principal adds _CLIENTID, _TENANTID and, only if the user chose a secret, a vault
reference (never the secret itself)").

`keyless app connection create ... --service-principal client-id=ID --secret @FILE|-` checks the
secret signs the service principal in, keeps it in the vault the user names, gives the app's
reference identity `Vault Secrets User` on that one secret, and writes
`AZURE_<TARGET>_CLIENTSECRET=@Keyless.Vault(SecretUri=...)`; `keyless app run` resolves it.
`delete` and a failed create take all of it back (the secret deleted and purged).

Real parts: a Keyless server of this module's own (so its whole data directory can be searched
for the secret), the `keyless` CLI and `keyless app run` as subprocesses, and an app that uses
azure-identity's ClientSecretCredential with the three settings, unchanged. The app writes only
the secret's SHA-256 and whether it got a token.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from keyless.store.location import default_store_url
from tests.support.server import KeylessServer, running_server
from tests.test_host import PYTHON, read_once, run_command, write_script

GROUP = "spsecret"
VAULT = "sp-vault"
OTHER_VAULT = "sp-no-rights"
GET = "data:Keyless.Vault/vaults/secrets/getSecret/action"

# Uses the connection's three settings as an app written for Azure would.
APP = """
import hashlib
from azure.identity import ClientSecretCredential
prefix = ARGS["prefix"]
secret = os.environ[prefix + "CLIENTSECRET"]
credential = ClientSecretCredential(
    os.environ[prefix + "TENANTID"], os.environ[prefix + "CLIENTID"], secret,
    authority=os.environ["AZURE_AUTHORITY_HOST"], disable_instance_discovery=True,
)
token = credential.get_token("https://vault.azure.net/.default")
emit({"secret": hashlib.sha256(secret.encode()).hexdigest(), "token": bool(token.token)})
"""


class Hidden(str):
    """A secret that pytest's tracebacks (which print call arguments) show as <hidden>."""

    def __repr__(self) -> str:
        return "<hidden>"


@dataclass
class World:
    server: KeylessServer
    tmp: Path
    sp: dict[str, str]  # appId, objectId
    secret: str = field(repr=False)
    token: str = field(repr=False)  # the signed-in user's management token
    outputs: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # pytest prints fixtures: never the secret
        return f"World({self.server.endpoint})"

    def cli(
        self, *args: str, check: bool = True, input: str | None = ""
    ) -> subprocess.CompletedProcess[str]:
        done = self.server.cli(*args, check=False, input=input)
        self.outputs += [done.stdout, done.stderr]
        if check:
            assert done.returncode == 0, f"keyless {' '.join(args)}:\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def connect(
        self, kind: str, app: str, *args: str, input: str | None = "", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.cli("app", "connection", "create", kind, "-g", GROUP, "-n", app, *args,
                        check=check, input=input)  # fmt: skip

    def settings(self, app: str) -> dict[str, str]:
        shown = self.json("app", "show", "-g", GROUP, "-n", app)
        return dict(shown["properties"].get("appSettings") or {})

    def secrets_in(self, vault: str) -> list[str]:
        return sorted(
            s["name"] for s in self.json("vault", "secret", "list", "--vault-name", vault)
        )

    def may_read(self, principal: str, scope: str) -> bool:
        out = self.json("role", "assignment", "check", "--assignee", principal, "--action", GET,
                        "--scope", scope)  # fmt: skip
        return bool(out["results"][0]["allowed"])

    def secret_file(self, value: str | None = None) -> Path:
        path = self.tmp / f"secret-{uuid.uuid4().hex[:8]}"
        path.write_text((self.secret if value is None else value) + "\n")
        path.chmod(0o600)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("spsecret")
    with running_server(base / "data") as server:
        server.cli("login")
        server.cli("group", "create", "-n", GROUP)
        vault = server.cli_json("vault", "create", "-g", GROUP, "-n", VAULT)
        server.cli("vault", "create", "-g", GROUP, "-n", OTHER_VAULT)
        me = server.cli_json("account", "show")["user"]["name"]
        # Erasing the secret on delete purges it: that is the Vault Administrator's.
        server.cli("role", "assignment", "create", "--assignee", me, "--role",
                   "Vault Administrator", "--scope", vault["id"])  # fmt: skip
        created = server.cli_json("ad", "sp", "create-for-rbac", "--name", "sp-conn", "--secret")
        shown = server.cli_json("ad", "sp", "show", "--id", created["appId"])
        sp = {"appId": created["appId"], "objectId": shown["id"]}
        yield World(server, base, sp, Hidden(created["password"]), Hidden(server.admin_token()))


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def flat(text: str) -> str:
    return " ".join(text.split())


def assert_nowhere(world: World) -> None:
    """The secret is in no store file, log, audit record or CLI output."""
    needle = world.secret.encode()
    for path in sorted(world.server.data_dir.rglob("*")):
        if path.is_file() and not path.is_socket():
            assert needle not in path.read_bytes(), f"the secret is in {path}"
    assert needle not in world.server.log_path.read_bytes(), "the secret is in the server log"
    audit = world.server.cli("audit", "list", "--limit", "1000").stdout
    assert world.secret not in audit, "the secret is in the audit log"
    for output in world.outputs:
        assert world.secret not in output, "the secret is in the CLI's output"


def test_the_secret_is_kept_in_the_vault_and_only_referenced(world: World) -> None:
    world.cli("app", "create", "-g", GROUP, "-n", "kv-sp")  # no identity yet
    vault = world.json("vault", "show", "-g", GROUP, "-n", VAULT)
    done = world.connect(
        "keyvault", "kv-sp", "--vault", VAULT,
        "--service-principal", f"client-id={world.sp['appId']}", "--secret", "-",
        input=Hidden(world.secret + "\n"),
    )  # fmt: skip
    record = json.loads(done.stdout)
    store = record["properties"]["secretStore"]
    name = "kv-sp-keyvault-kv-sp-client-secret"
    uri = f"{vault['properties']['vaultUri']}secrets/{name}"
    assert store["secretName"] == name and store["secretUri"] == uri
    settings = world.settings("kv-sp")
    assert settings == {
        "AZURE_KEYVAULT_RESOURCEENDPOINT": vault["properties"]["vaultUri"],
        "AZURE_KEYVAULT_SCOPE": "https://vault.azure.net/.default",
        "AZURE_KEYVAULT_CLIENTID": world.sp["appId"],
        "AZURE_KEYVAULT_TENANTID": world.server.tenant_id,
        "AZURE_KEYVAULT_CLIENTSECRET": f"@Keyless.Vault(SecretUri={uri})",
    }
    # The app had no identity: its system-assigned one was enabled to read the reference, and
    # may read this one secret, not the vault's others.
    app = world.json("app", "show", "-g", GROUP, "-n", "kv-sp")
    reader = app["identity"]["principalId"]
    assert store["readerPrincipalId"] == reader
    assert world.may_read(reader, f"{vault['id']}/secrets/{name}")
    assert not world.may_read(reader, f"{vault['id']}/secrets/another")
    assert "roleAssignmentId" in store

    checks = world.json("app", "connection", "validate", "-g", GROUP, "-n", "kv-sp",
                        "--connection", "keyvault_kv_sp", "-o", "json")  # fmt: skip
    assert checks["valid"], checks
    names = {c["name"]: c["result"] for c in checks["checks"]}
    for check in ("client secret reference", "client secret", "client secret readable by the app"):
        assert names[check] == "pass", checks

    # keyless app run resolves the reference; the app signs in with the three settings.
    script = write_script(world.tmp, APP)
    out = world.tmp / f"{script.stem}.json"
    run = run_command(
        world.server, GROUP, "kv-sp",
        [PYTHON, str(script), str(out),
         json.dumps({"prefix": "AZURE_KEYVAULT_"})],
        env={"AZURE_AUTHORITY_HOST": world.server.endpoint,
             "REQUESTS_CA_BUNDLE": str(world.server.ca_file)},
    )  # fmt: skip
    world.outputs += [run.stdout, run.stderr]
    assert run.returncode == 0, run.stderr[-3000:]
    assert read_once(out) == {"secret": sha(world.secret), "token": True}
    assert_nowhere(world)

    world.cli("app", "connection", "delete", "-g", GROUP, "-n", "kv-sp",
              "--connection", "keyvault_kv_sp")  # fmt: skip
    assert world.settings("kv-sp") == {}
    assert world.json("app", "connection", "list", "-g", GROUP, "-n", "kv-sp") == []
    assert not world.may_read(reader, f"{vault['id']}/secrets/{name}")
    assert name not in world.secrets_in(VAULT)
    # Purged, not only deleted: the name is free and nothing is recoverable.
    gone = world.cli("vault", "secret", "recover", "--vault-name", VAULT, "--name", name,
                     check=False)  # fmt: skip
    assert gone.returncode != 0 and "not found" in flat(gone.stderr).lower()
    assert_nowhere(world)


def _state(world: World, app: str) -> dict[str, Any]:
    """The app, its connections, and from the store itself every role assignment and every
    vault secret, soft-deleted ones included (read in-process: these are checked often)."""
    sub = world.server.subscription_id
    path = f"/subscriptions/{sub}/resourceGroups/{GROUP}/providers/Keyless.Web/apps/{app}"
    headers = {"Authorization": f"Bearer {world.token}"}
    with world.server.http() as http:
        shown = http.get(path, headers=headers).json()
        connections = http.get(f"{path}/connections", headers=headers).json()["value"]
    engine = create_engine(default_store_url(world.server.data_dir))
    try:
        with engine.connect() as conn:
            assignments = conn.execute(text("SELECT id FROM role_assignments")).all()
            secrets = conn.execute(text("SELECT vault_name, name, deleted_at FROM vault_secrets"))
            stored = sorted(tuple(map(str, row)) for row in secrets)
    finally:
        engine.dispose()
    return {
        "settings": shown["properties"].get("appSettings") or {},
        "identity": (shown.get("identity") or {}).get("principalId"),
        "connections": connections,
        "assignments": sorted(str(r[0]) for r in assignments),
        "secrets": stored,
    }


def test_bad_input_gets_a_clear_error_and_changes_nothing(world: World) -> None:
    world.cli("app", "create", "-g", GROUP, "-n", "sp-bad")
    before = _state(world, "sp-bad")
    sp = f"client-id={world.sp['appId']}"
    good = str(world.secret_file())
    pg = ["--server", "no-such-pg", "--database", "db"]
    cases: list[tuple[str, list[str], str | None, str]] = [
        ("postgres", [*pg, "--service-principal", sp, "--secret", f"@{good}"], None,
         "name one with --vault NAME"),
        ("keyvault", ["--vault", "no-such-vault", "--service-principal", sp, "--secret",
                      f"@{good}"], None, "not found"),
        ("keyvault", ["--vault", VAULT, "--system-identity", "--secret", f"@{good}"], None,
         "--secret goes with --service-principal only"),
        ("keyvault", ["--vault", VAULT, "--service-principal", sp, "--secret", "-"], "",
         "the client secret is empty"),
        ("keyvault", ["--vault", VAULT, "--service-principal", sp, "--secret",
                      f"@{world.secret_file('')}"], None, "the client secret is empty"),
        ("keyvault", ["--vault", VAULT, "--service-principal", sp, "secret=-", "--secret", "-"],
         world.secret, "give the secret once"),
        ("keyvault", ["--vault", VAULT, "--service-principal", sp, "--secret", "@/no/such/file"],
         None, "cannot read the client secret from /no/such/file"),
        ("keyvault", ["--vault", VAULT, "--service-principal", sp, "--secret", "-"],
         Hidden("not-" + world.secret), "does not sign in with this secret"),
        ("keyvault", ["--vault", OTHER_VAULT, "--service-principal", sp, "--secret", f"@{good}"],
         None, "Vault Administrator"),
        ("postgres", [*pg, "--vault", VAULT, "--system-identity"], None,
         "--vault keeps a service principal's --secret"),
        ("keyvault", ["--vault", VAULT, "--service-principal", sp, Hidden(f"token={world.secret}")],
         None, "'token' is neither"),
    ]  # fmt: skip
    for kind, args, stdin, expected in cases:
        done = world.connect(kind, "sp-bad", *args, input=stdin, check=False)
        assert done.returncode != 0, args
        assert expected in flat(done.stderr), (args, done.stderr)
        assert _state(world, "sp-bad") == before, args
    assert_nowhere(world)


def test_a_failure_midway_undoes_the_secret_and_the_role(world: World) -> None:
    """The settings write fails (a clashing key): the secret stored before it is deleted and
    purged, the role assignment removed, the system identity enabled for it disabled again."""
    world.cli("app", "create", "-g", GROUP, "-n", "sp-clash")
    world.cli("app", "config", "appsettings", "set", "-g", GROUP, "-n", "sp-clash",
              "--settings", "AZURE_KEYVAULT_CLIENTSECRET=mine")  # fmt: skip
    before = _state(world, "sp-clash")
    done = world.connect(
        "keyvault", "sp-clash", "--vault", VAULT, "--service-principal",
        f"client-id={world.sp['appId']}", "--secret", f"@{world.secret_file()}", check=False,
    )  # fmt: skip
    assert done.returncode != 0
    message = flat(done.stderr)
    for phrase in (
        "already has settings AZURE_KEYVAULT_CLIENTSECRET",
        "deleted and purged the secret 'sp-clash-keyvault-sp-clash-client-secret'",
        "removed the 'Vault Secrets User' assignment on the secret",
        "disabled the system-assigned identity again",
    ):
        assert phrase in message, message
    assert "NOT undone" not in message
    assert _state(world, "sp-clash") == before
    # The name is free again: nothing soft-deleted is left behind.
    recover = world.cli("vault", "secret", "recover", "--vault-name", VAULT, "--name",
                        "sp-clash-keyvault-sp-clash-client-secret", check=False)  # fmt: skip
    assert recover.returncode != 0
    assert_nowhere(world)


def test_validate_pinpoints_what_was_broken_by_hand_and_delete_still_cleans_up(
    world: World,
) -> None:
    world.cli("app", "create", "-g", GROUP, "-n", "sp-broken", "--assign-identity")
    record = json.loads(
        world.connect(
            # az's spelling: the secret inside --service-principal.
            "keyvault", "sp-broken", "--vault", VAULT, "--service-principal",
            f"client-id={world.sp['appId']}", f"secret=@{world.secret_file()}",
        ).stdout
    )  # fmt: skip
    store = record["properties"]["secretStore"]
    validate = ["app", "connection", "validate", "-g", GROUP, "-n", "sp-broken",
                "--connection", "keyvault_sp_broken", "-o", "json"]  # fmt: skip

    def results() -> dict[str, dict[str, str]]:
        done = world.cli(*validate, check=False)
        found = json.loads(done.stdout)
        assert done.returncode == (0 if found["valid"] else 1)
        return {c["name"]: c for c in found["checks"]}

    world.cli("role", "assignment", "delete", "--ids", store["roleAssignmentId"])
    checks = results()
    readable = checks["client secret readable by the app"]
    assert readable["result"] == "fail" and "getSecret" in readable["detail"]
    assert "Vault Secrets User" in readable["fix"]
    assert checks["client secret"]["result"] == "pass"

    world.cli("vault", "secret", "delete", "--vault-name", VAULT, "--name", store["secretName"])
    checks = results()
    assert checks["client secret"]["result"] == "fail"
    assert "is deleted" in checks["client secret"]["detail"]

    done = world.json("app", "connection", "delete", "-g", GROUP, "-n", "sp-broken",
                      "--connection", "keyvault_sp_broken")  # fmt: skip
    assert any("already gone" in line for line in done["reverted"])
    assert any("deleted and purged" in line for line in done["reverted"])
    assert store["secretName"] not in [s[1] for s in _state(world, "sp-broken")["secrets"]]
    assert world.settings("sp-broken") == {}
    assert_nowhere(world)


def test_role_assignments_at_one_secret_need_its_vault_and_a_secret_name(world: World) -> None:
    vault = world.json("vault", "show", "-g", GROUP, "-n", VAULT)
    app = world.json("app", "create", "-g", GROUP, "-n", "one-secret", "--assign-identity")
    principal = app["identity"]["principalId"]
    for scope, phrase in (
        (f"{vault['id']}/secrets/not_a_name", "is not a secret name"),
        (f"{vault['id'].rsplit('/', 1)[0]}/no-such-vault/secrets/x", "was not found"),
    ):
        done = world.cli("role", "assignment", "create", "--assignee", principal, "--role",
                         "Vault Secrets User", "--scope", scope, check=False)  # fmt: skip
        assert done.returncode != 0 and phrase in flat(done.stderr), (scope, done.stderr)
    # A secret that does not exist yet can be a scope: the grant covers it once it is set.
    world.cli("role", "assignment", "create", "--assignee", principal, "--role",
              "Vault Secrets User", "--scope", f"{vault['id']}/secrets/later")  # fmt: skip
    assert world.may_read(principal, f"{vault['id']}/secrets/later")
    assert not world.may_read(principal, vault["id"])
