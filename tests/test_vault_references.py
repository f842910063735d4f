"""Vault references in app settings, resolved by `keyless app run` with the app's own identity.

Everything is real: the session server (HTTPS over loopback), the `keyless` CLI as
subprocesses, and apps that are small Python children started by `keyless app run`. A child
never prints a value it sees, only its SHA-256, so the values stay out of every output the test
captures; the test then looks for the values themselves in the store's files, the server's log,
the audit log and the CLI's output, and finds none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyless.base.vault_domain import VaultDomain
from keyless.host import references
from keyless.vault.client import vault_request
from tests.support.server import KEYLESS, KeylessServer
from tests.test_host import (
    PYTHON,
    RUN_TIMEOUT_S,
    Background,
    background_run,
    wait_for,
    write_script,
)

GET_SECRET = "Keyless.Vault/vaults/secrets/getSecret/action"

# Prints {setting: sha256 of its value, or null} for the settings named in argv.
HASHES = (
    "import hashlib, json, os, sys; print(json.dumps({n: hashlib.sha256(os.environ[n].encode())"
    ".hexdigest() if n in os.environ else None for n in sys.argv[1:]}))"
)

# Under --watch: writes its pid and the hashes it sees, then runs until SIGTERM (exit 0).
WATCHED_APP = """
import hashlib, signal, time
seen = {n: hashlib.sha256(os.environ[n].encode()).hexdigest() if n in os.environ else None
        for n in ARGS["names"]}
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
emit({"pid": os.getpid(), "seen": seen})
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(99)
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def secret_value() -> str:
    return f"ref-secret-{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------------- helpers


@dataclass
class World:
    server: KeylessServer
    group: str
    vault: dict[str, Any]
    app: dict[str, Any]  # system-assigned identity, Vault Secrets User on the vault
    other: dict[str, Any]  # system-assigned identity, no role on the vault
    values: list[str]  # every secret value set in this module, to look for in the outputs
    outputs: list[str]  # everything the CLI printed in this module

    @property
    def vault_name(self) -> str:
        return str(self.vault["name"])

    @property
    def vault_uri(self) -> str:
        return str(self.vault["properties"]["vaultUri"]).rstrip("/")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.server.cli(*args, check=check, input="")
        self.outputs += [result.stdout, result.stderr]
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def set_secret(self, name: str, value: str) -> str:
        """Set a new version; its version ID."""
        self.values.append(value)
        # `--value -` reads stdin: pass the value there, never on a command line.
        result = self.server.cli(
            "vault", "secret", "set", "--vault-name", self.vault_name, "--name", name,
            "--value", "-", input=value,
        )  # fmt: skip
        self.outputs += [result.stdout, result.stderr]
        return str(json.loads(result.stdout)["id"]).rsplit("/", 1)[1]

    def settings(self, app: str, **settings: str) -> None:
        flags = [arg for k, v in settings.items() for arg in ("--settings", f"{k}={v}")]
        self.cli("app", "config", "appsettings", "set", "-g", self.group, "-n", app, *flags)

    def run(
        self, app: str, names: list[str], *flags: str
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, str | None] | None]:
        """`keyless app run` of a child that prints the hashes of `names`; (the run, the
        hashes, or None when the child did not run)."""
        done = subprocess.run(
            [*KEYLESS, "app", "run", "-g", self.group, "-n", app, *flags, "--", PYTHON, "-c",
             HASHES, *names],
            env=self.server.env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.outputs += [done.stdout, done.stderr]
        assert "Traceback" not in done.stderr, done.stderr
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        return done, (json.loads(lines[-1]) if lines else None)

    def seen(self, app: str, names: list[str], *flags: str) -> dict[str, str | None]:
        done, seen = self.run(app, names, *flags)
        assert done.returncode == 0, done.stderr
        assert seen is not None, done.stdout
        return seen

    def refused(self, app: str, names: list[str], *flags: str) -> str:
        """A run that must not start the app; its error, whitespace squeezed out (the CLI
        wraps long lines, even mid-word)."""
        done, seen = self.run(app, names, *flags)
        assert done.returncode != 0, done.stdout
        assert seen is None, "the app was started"
        assert "error:" in done.stderr, done.stderr
        return squeeze(done.stderr)

    def vault_patch(self, path: str, body: dict[str, Any]) -> None:
        """PATCH a secret's attributes as the signed-in user, on the vault's REST API."""
        token = self.cli_json("account", "get-access-token", "--resource", "api://keyless/vault")[
            "accessToken"
        ]
        domain = VaultDomain.from_endpoint(self.server.endpoint)
        with self.server.http() as http:
            response = vault_request(http, domain, self.vault_name, "PATCH", path, token, body)
        assert response.status_code == 200, response.text


def squeeze(text: str) -> str:
    return "".join(text.split())


def grant(world: World, principal_id: str, role: str = "Vault Secrets User") -> None:
    world.cli(
        "role", "assignment", "create", "--assignee", principal_id, "--role", role,
        "--scope", world.vault["id"],
    )  # fmt: skip


def app_with_identity(world: World, name: str, *identities: str) -> dict[str, Any]:
    args = ["app", "create", "-g", world.group, "-n", name, "--assign-identity", "[system]"]
    return dict(world.cli_json(*args, *identities))


@pytest.fixture(scope="module")
def world(keyless_server: KeylessServer) -> World:
    server = keyless_server
    group = unique("rg-refs")
    w = World(server, group, {}, {}, {}, [], [])
    w.cli("group", "create", "-n", group)
    w.vault = w.cli_json("vault", "create", "-g", group, "-n", unique("refs"))
    me = w.cli_json("account", "show")["user"]["name"]
    grant(w, me, "Vault Secrets Officer")
    w.app = app_with_identity(w, "web")
    grant(w, w.app["identity"]["principalId"])
    w.other = app_with_identity(w, "other")
    return w


def sensitive_outputs(world: World) -> dict[str, bytes]:
    """Every place a value must not be: the store's files, the server's log, the audit log and
    what the CLI printed."""
    found: dict[str, bytes] = {}
    for path in sorted(world.server.data_dir.rglob("*")):
        if path.is_file():
            found[str(path)] = path.read_bytes()
    found["server log"] = world.server.log_path.read_bytes()
    audit = world.server.cli("audit", "list", "--limit", "1000")
    found["audit list"] = audit.stdout.encode()
    found["cli output"] = "\n".join(world.outputs).encode()
    return found


# ------------------------------------------------------------------------------ 0. parsing

DOMAIN = VaultDomain.from_endpoint("https://localhost:8443")
V = "0123456789abcdef0123456789ABCDEF"
KV = "https://kv1.vault.localhost:8443"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"@Keyless.Vault(SecretUri={KV}/secrets/a)", ("kv1", "a", None)),
        ("@Keyless.Vault(SecretUri=https://KV1.vault.localhost:8443/secrets/a/)",
         ("kv1", "a", None)),
        (f"@Keyless.Vault(SecretUri=https://kv1.vault.localhost:8443/secrets/a/{V})",
         ("kv1", "a", V.lower())),
        ("@Microsoft.KeyVault(SecretUri=https://kv1.vault.localhost:8443/secrets/a-b)",
         ("kv1", "a-b", None)),
        ("@Microsoft.KeyVault(VaultName=kv1;SecretName=a)", ("kv1", "a", None)),
        (f"@Microsoft.KeyVault(vaultname=kv1;secretname=a;secretversion={V})",
         ("kv1", "a", V.lower())),
        ("@Keyless.Vault(VaultName=kv1;SecretName=a)", ("kv1", "a", None)),
    ],
)  # fmt: skip
def test_the_forms_parse(text: str, expected: tuple[str, str, str | None]) -> None:
    ref = references.parse("S", text, DOMAIN)
    assert (ref.vault, ref.secret, ref.version) == expected
    assert ref.setting == "S" and ref.text == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (" @Keyless.Vault(VaultName=kv1;SecretName=a)", "spaces around it"),
        ("@keyless.vault(VaultName=kv1;SecretName=a)", "must start with"),
        ("@Keyless.Vault(VaultName=kv1;SecretName=a", "must end with ')'"),
        ("@Keyless.Vault()", "names no secret"),
        ("@Keyless.Vault(VaultName=kv1; SecretName=a)", "must not contain spaces"),
        ("@Keyless.Vault(VaultName=kv1;;SecretName=a)", "'' is not NAME=VALUE"),
        ("@Keyless.Vault(VaultName=kv1;SecretName=a;)", "'' is not NAME=VALUE"),
        ("@Keyless.Vault(VaultName=kv1;SecretName=)", "'SecretName=' is not NAME=VALUE"),
        ("@Keyless.Vault(VaultName=kv1;Secret=a)", "'Secret' is not a parameter"),
        ("@Keyless.Vault(VaultName=kv1;VaultName=kv2;SecretName=a)", "VaultName is given twice"),
        ("@Keyless.Vault(SecretName=a)", "needs SecretUri, or VaultName and SecretName"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.localhost:8443/secrets/a;SecretName=a)",
         "names the secret alone"),
        ("@Keyless.Vault(SecretUri=http://kv1.vault.localhost:8443/secrets/a)", "https://"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.localhost:8443/secrets/a?x=1)", "no user"),
        ("@Keyless.Vault(SecretUri=https://u@kv1.vault.localhost:8443/secrets/a)", "no user"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.localhost/secrets/a)", "no vault of this"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.example.com/secrets/a)", "no vault of this"),
        # An Azure vault host maps to the Keyless vault of its name, on Azure's port only.
        ("@Keyless.Vault(SecretUri=https://kv1.vault.azure.net:8443/secrets/a)", "no vault of"),
        ("@Keyless.Vault(SecretUri=https://a.kv1.vault.azure.net/secrets/a)", "no vault of"),
        ("@Keyless.Vault(SecretUri=https://a.kv1.vault.localhost:8443/secrets/a)", "no vault of"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.localhost:x/secrets/a)", "is not a URL"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.localhost:8443/keys/a)", "path must be"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.localhost:8443/secrets/a/b/c)", "path must"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.localhost:8443/secrets/a%2Fb)", "secret name"),
        ("@Keyless.Vault(SecretUri=https://kv1.vault.localhost:8443/secrets/a/v2)", "the version"),
        ("@Keyless.Vault(VaultName=k;SecretName=a)", "the vault name 'k'"),
        ("@Keyless.Vault(VaultName=a--b;SecretName=a)", "the vault name"),
        ("@Keyless.Vault(VaultName=kv1;SecretName=a_b)", "the secret name 'a_b'"),
        ("@Microsoft.KeyVault(VaultName=kv1;SecretName=a;SecretVersion=latest)", "the version"),
    ],
)  # fmt: skip
def test_malformed_references_are_refused_saying_why(text: str, why: str) -> None:
    assert references.looks_like_reference(text)
    with pytest.raises(references.MalformedReference) as caught:
        references.parse("S", text, DOMAIN)
    assert why in str(caught.value)
    assert "write it as @Keyless.Vault(SecretUri=https://VAULT.vault.localhost:8443" in str(
        caught.value
    )


def test_an_azure_vault_host_names_the_keyless_vault_of_that_name() -> None:
    text = "@Microsoft.KeyVault(SecretUri=https://kv1.vault.azure.net/secrets/a/)"
    ref = references.parse("S", text, DOMAIN)
    assert (ref.vault, ref.secret, ref.version) == ("kv1", "a", None)
    assert references.azure_notices({"S": text}) == [
        "app setting S: its reference names the Azure vault host kv1.vault.azure.net; Keyless "
        "reads it from its own vault kv1"
    ]


def test_other_values_are_not_references() -> None:
    for value in ("", "plain", "@Other(x)", "Keyless.Vault(SecretUri=x)", "email@Keyless.Vault"):
        assert not references.looks_like_reference(value)
    resolution = references.resolve_settings({"A": "plain", "B": "@x"}, DOMAIN, None)
    assert resolution.settings == {"A": "plain", "B": "@x"} and not resolution.unresolved


def test_a_resolved_value_stays_out_of_reprs() -> None:
    ref = references.parse("S", "@Keyless.Vault(VaultName=kv1;SecretName=a)", DOMAIN)
    resolved = references.Resolved(ref, "the-value-itself", "v1")
    assert "the-value-itself" not in repr(resolved)


# ------------------------------------------------------------------------- 1. the three forms


def test_each_form_resolves_and_only_the_reference_is_stored(world: World) -> None:
    value = secret_value()
    version = world.set_secret("db-password", value)
    references = {
        "LATEST_URI": f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/db-password)",
        "LATEST_SLASH": f"@Microsoft.KeyVault(SecretUri={world.vault_uri}/secrets/db-password/)",
        "PINNED_URI": (
            f"@Microsoft.KeyVault(SecretUri={world.vault_uri}/secrets/db-password/{version})"
        ),
        "BY_NAME": f"@Microsoft.KeyVault(VaultName={world.vault_name};SecretName=db-password)",
        "BY_NAME_PINNED": (
            f"@Microsoft.KeyVault(VaultName={world.vault_name};SecretName=db-password;"
            f"SecretVersion={version})"
        ),
    }
    world.settings("web", PLAIN="plain value", **references)
    # Only this test's reads count: other tests' apps read the same secret.
    before = max((int(r["id"]) for r in world.server.audit()), default=0)

    seen = world.seen("web", [*references, "PLAIN"])
    assert seen == {**{name: sha(value) for name in references}, "PLAIN": sha("plain value")}

    # The app resource holds the references, never the value.
    listed = world.cli_json("app", "config", "appsettings", "list", "-g", world.group, "-n", "web")
    assert {s["name"]: s["value"] for s in listed} == {**references, "PLAIN": "plain value"}
    shown = world.cli("app", "show", "-g", world.group, "-n", "web")
    assert "db-password" in shown.stdout

    # The reads were the app's own, and audited without the value.
    reads = [
        r
        for r in world.server.audit(action=GET_SECRET)
        if int(r["id"]) > before
        and (r["target"].endswith("/secrets/db-password") or "/secrets/db-password/" in r["target"])
    ]
    assert reads and {r["actor"] for r in reads} == {world.app["identity"]["principalId"]}
    assert {r["result"] for r in reads} == {"succeeded"}

    for where, content in sensitive_outputs(world).items():
        assert value.encode() not in content, f"the value is in {where}"


# ------------------------------------------------------------------- 2. versions and rotation


def test_a_new_version_reaches_the_next_run_and_a_pinned_one_stays(world: World) -> None:
    first, second = secret_value(), secret_value()
    pinned = world.set_secret("rotated", first)
    world.settings(
        "web",
        ROTATED=f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/rotated)",
        ROTATED_PINNED=f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/rotated/{pinned})",
    )
    names = ["ROTATED", "ROTATED_PINNED"]
    assert world.seen("web", names) == {"ROTATED": sha(first), "ROTATED_PINNED": sha(first)}
    world.set_secret("rotated", second)
    assert world.seen("web", names) == {"ROTATED": sha(second), "ROTATED_PINNED": sha(first)}


@contextlib.contextmanager
def watched_run(
    world: World, tmp_path: Path, names: list[str], app: str = "web"
) -> Iterator[tuple[Background, Path]]:
    script = write_script(tmp_path, WATCHED_APP)
    out = tmp_path / "seen.json"
    command = [PYTHON, str(script), str(out), json.dumps({"names": names})]
    with background_run(world.server, world.group, app, command, "--watch", "1") as run:
        yield run, out


def test_watch_restarts_the_app_when_a_new_version_is_set(world: World, tmp_path: Path) -> None:
    first, second = secret_value(), secret_value()
    pinned = world.set_secret("watched", first)
    world.settings(
        "web",
        WATCHED=f"@Microsoft.KeyVault(VaultName={world.vault_name};SecretName=watched)",
        WATCHED_PINNED=f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/watched/{pinned})",
    )
    names = ["WATCHED", "WATCHED_PINNED"]
    with watched_run(world, tmp_path, names) as (run, out):
        started = wait_for(out, run)
        assert started["seen"] == {"WATCHED": sha(first), "WATCHED_PINNED": sha(first)}
        new_version = world.set_secret("watched", second)
        restarted = wait_for(out, run)  # the restarted app writes the file again
        assert restarted["pid"] != started["pid"]
        assert restarted["seen"] == {"WATCHED": sha(second), "WATCHED_PINNED": sha(first)}
        with contextlib.suppress(ProcessLookupError):
            os.kill(started["pid"], 0)
            raise AssertionError("the first app process is still running")
        run.process.send_signal(signal.SIGTERM)  # forwarded: the app ends, no restart
        stdout, stderr = run.process.communicate(timeout=RUN_TIMEOUT_S)
    world.outputs += [stdout, stderr]
    assert run.process.returncode == 0, stderr
    message = squeeze(stderr)
    watching = message.split(squeeze("watching the vault references of"))[1].split("every")[0]
    assert "WATCHED" in watching.split(",") and "WATCHED_PINNED" not in watching.split(",")
    assert squeeze("every 1s; a new version restarts the app") in message
    assert squeeze(f"app setting WATCHED: the secret watched in {world.vault_name}") in message
    assert squeeze(f"has a new version ({new_version}, was") in message
    assert squeeze("restarting the app: SIGTERM") in message
    assert squeeze(f"the app is running again (pid {restarted['pid']})") in message
    assert first not in stderr and second not in stderr


def test_watch_with_only_pinned_references_has_nothing_to_watch(
    world: World, tmp_path: Path
) -> None:
    value = secret_value()
    version = world.set_secret("pinned-only", value)
    name = unique("pinned")
    app_with_identity(world, name)
    grant(world, world.cli_json("app", "show", "-g", world.group, "-n", name)["identity"][
        "principalId"
    ])  # fmt: skip
    world.settings(
        name, ONLY=f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/pinned-only/{version})"
    )
    done, seen = world.run(name, ["ONLY"], "--watch", "1")
    assert done.returncode == 0, done.stderr
    assert seen == {"ONLY": sha(value)}
    assert squeeze("nothing to watch") in squeeze(done.stderr)


# -------------------------------------------------------------------------------- 3. failures


def test_references_that_cannot_be_resolved_stop_the_start(world: World) -> None:
    good, disabled = secret_value(), secret_value()
    world.set_secret("good", good)
    disabled_version = world.set_secret("switched-off", disabled)
    world.vault_patch(
        f"/secrets/switched-off/{disabled_version}", {"attributes": {"enabled": False}}
    )
    name = unique("broken")
    app = app_with_identity(world, name)
    grant(world, app["identity"]["principalId"])
    missing_vault = unique("nokv")
    port = world.server.port
    bad = {
        "NO_VAULT": f"@Keyless.Vault(SecretUri=https://{missing_vault}.vault.localhost:{port}/secrets/x)",
        "NO_SECRET": f"@Microsoft.KeyVault(VaultName={world.vault_name};SecretName=never-set)",
        "NO_VERSION": (
            f"@Microsoft.KeyVault(VaultName={world.vault_name};SecretName=good;"
            f"SecretVersion={'0' * 32})"
        ),
        "DISABLED": f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/switched-off)",
        "ELSEWHERE": "@Microsoft.KeyVault(SecretUri=https://evil.example.com/secrets/x)",
        "HALF": f"@Microsoft.KeyVault(VaultName={world.vault_name})",
        "UNCLOSED": f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/good",
        "TYPO": f"@Keyless.Vault(SecretUrl={world.vault_uri}/secrets/good)",
        "LOWER": f"@microsoft.keyvault(VaultName={world.vault_name};SecretName=good)",
    }
    world.settings(name, GOOD=f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/good)", **bad)
    names = ["GOOD", *bad]
    message = world.refused(name, names)
    assert squeeze(f"{len(bad)} vault reference(s) cannot be resolved") in message
    expectations = {
        "NO_VAULT": [f"no vault named '{missing_vault}'", "keyless vault list"],
        "NO_SECRET": ["never-set was not found", "SecretNotFound", "keyless vault secret set"],
        "NO_VERSION": ["was not found", "list-versions"],
        "DISABLED": ["disabled secret", "SecretDisabled", "enable that version"],
        "ELSEWHERE": ["evil.example.com, which is no vault of this Keyless server"],
        "HALF": ["it is malformed", "VaultName and SecretName"],
        "UNCLOSED": ["it is malformed", "must end with ')'"],
        "TYPO": ["it is malformed", "'SecretUrl' is not a parameter"],
        "LOWER": ["it is malformed", "must start with @Keyless.Vault( or @Microsoft.KeyVault("],
    }
    for setting, phrases in expectations.items():
        start = message.index(squeeze(f"- app setting {setting}:"))
        end = message.find(squeeze("- app setting"), start + 1)
        part = message[start : end if end > 0 else None]
        assert squeeze(bad[setting]) in part, part  # the reference itself is named
        for phrase in phrases:
            assert squeeze(phrase) in part, part
    assert squeeze("app setting GOOD:") not in message.split(squeeze("cannot be resolved"))[1]
    assert squeeze("--allow-unresolved-references") in message

    # Opting in starts the app: the bad settings keep their literal references, with warnings.
    done, seen = world.run(name, names, "--allow-unresolved-references")
    assert done.returncode == 0, done.stderr
    assert seen == {"GOOD": sha(good), **{k: sha(v) for k, v in bad.items()}}
    warned = squeeze(done.stderr)
    for setting in bad:
        assert squeeze(f"warning: app setting {setting}:") in warned
    assert warned.count(squeeze("the setting keeps the literal reference")) == len(bad)
    for where, content in sensitive_outputs(world).items():
        assert good.encode() not in content and disabled.encode() not in content, where


def test_an_app_without_a_role_is_refused_naming_the_data_action(world: World) -> None:
    value = secret_value()
    world.set_secret("others-cannot", value)
    reference = f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/others-cannot)"
    world.settings("other", SECRET=reference)
    principal = world.other["identity"]["principalId"]
    message = world.refused("other", ["SECRET"])
    for phrase in (
        f"app setting SECRET: the vault reference {reference} cannot be resolved",
        "HTTP 403, ForbiddenByRbac",
        GET_SECRET,
        f"the app's system-assigned identity ({principal})",
        f'keyless role assignment create --assignee {principal} --role "Vault Secrets User" '
        f"--scope {world.vault['id']}",
    ):
        assert squeeze(phrase) in message, message
    denied = world.server.audit(action=GET_SECRET, actor=principal, result="denied")
    assert any(r["target"].endswith("/secrets/others-cannot") for r in denied)
    for where, content in sensitive_outputs(world).items():
        assert value.encode() not in content, where


# ------------------------------------------------------------------------- 4. the identity used


def test_the_apps_own_identity_reads_and_a_user_assigned_one_can_be_chosen(
    world: World,
) -> None:
    value = secret_value()
    world.set_secret("whose", value)
    reference = f"@Microsoft.KeyVault(VaultName={world.vault_name};SecretName=whose)"
    world.settings("web", WHOSE=reference)
    world.settings("other", WHOSE=reference)
    assert world.seen("web", ["WHOSE"]) == {"WHOSE": sha(value)}
    assert "ForbiddenByRbac" in world.refused("other", ["WHOSE"])

    # Another app whose system identity has no role, and a user-assigned identity that has one:
    # the references use the system identity until keyVaultReferenceIdentity names the other.
    readers = world.cli_json("identity", "create", "-g", world.group, "-n", unique("readers"))
    grant(world, readers["principalId"])
    name = unique("uai")
    app_with_identity(world, name, readers["name"])
    world.settings(name, WHOSE=reference)
    assert squeeze("the app's system-assigned identity") in world.refused(name, ["WHOSE"])
    updated = world.cli_json(
        "app", "create", "-g", world.group, "-n", name,
        "--key-vault-reference-identity", readers["name"],
    )  # fmt: skip
    assert updated["properties"]["keyVaultReferenceIdentity"] == readers["id"]
    assert world.seen(name, ["WHOSE"]) == {"WHOSE": sha(value)}
    reads = world.server.audit(action=GET_SECRET, actor=readers["principalId"])
    assert any(r["target"].endswith("/secrets/whose") and r["result"] == "succeeded" for r in reads)

    # An identity the app does not hold cannot be chosen to read them.
    stranger = world.cli_json("identity", "create", "-g", world.group, "-n", unique("stranger"))
    grant(world, stranger["principalId"])
    world.cli(
        "app", "create", "-g", world.group, "-n", name,
        "--key-vault-reference-identity", stranger["id"],
    )  # fmt: skip
    message = world.refused(name, ["WHOSE"])
    assert squeeze("is not assigned to this app") in message
    assert squeeze("keyless app identity assign") in message
    world.cli(
        "app", "create", "-g", world.group, "-n", name, "--key-vault-reference-identity", "[system]"
    )
    shown = world.cli_json("app", "show", "-g", world.group, "-n", name)
    assert shown["properties"]["keyVaultReferenceIdentity"] == "SystemAssigned"
    for where, content in sensitive_outputs(world).items():
        assert value.encode() not in content, where


def test_an_app_without_an_identity_is_told_how_to_get_one(world: World) -> None:
    name = unique("no-identity")
    world.cli("app", "create", "-g", world.group, "-n", name)
    world.settings(name, X=f"@Keyless.Vault(SecretUri={world.vault_uri}/secrets/good)")
    message = world.refused(name, ["X"])
    for phrase in (
        "app setting X:",
        "the app has no system-assigned identity",
        f"keyless app identity assign -g {world.group} -n {name}",
        "--key-vault-reference-identity",
    ):
        assert squeeze(phrase) in message, message


def test_a_bad_reference_identity_is_refused(world: World) -> None:
    with world.server.http() as http:
        response = http.patch(
            world.app["id"],
            json={"properties": {"keyVaultReferenceIdentity": "somebody"}},
            headers={"Authorization": f"Bearer {world.server.admin_token()}"},
        )
    assert response.status_code == 400, response.text
    assert "keyVaultReferenceIdentity must be SystemAssigned" in response.text


def test_no_value_was_ever_printed_or_stored(world: World) -> None:
    # The last look, after every test above: the whole module's values, everywhere.
    assert world.values
    contents = sensitive_outputs(world)
    for value in world.values:
        for where, content in contents.items():
            assert value.encode() not in content, f"a secret value is in {where}"
