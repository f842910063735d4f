"""Commands and names as an Azure user types them (issue #13): az's syntax for options, Azure's
spelling of role names and vault hosts, `--resource-type`, `create-for-rbac` run twice, and
help texts that print whole. Everything runs against the session's real server through the real
`keyless` command (subprocesses); names carry a random suffix so nothing depends on other
modules.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from keyless.cli.main import cli
from tests.support.server import KEYLESS, KeylessServer
from tests.test_host import PYTHON, RUN_TIMEOUT_S

WEB = "Keyless.Web/apps"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(server: KeylessServer, line: str, check: bool = True, **kwargs: Any) -> Any:
    return server.cli(*shlex.split(line), check=check, input=kwargs.get("input", ""))


def kl(server: KeylessServer, line: str) -> Any:
    return json.loads(run(server, line).stdout)


def refused(server: KeylessServer, line: str) -> str:
    done = run(server, line, check=False)
    assert done.returncode != 0, f"keyless {line} succeeded: {done.stdout}"
    assert "Traceback" not in done.stderr, done.stderr
    return " ".join(done.stderr.split())


def settings_of(server: KeylessServer, group: str, app: str) -> dict[str, str]:
    shown = kl(server, f"app show -g {group} -n {app}")
    return dict(shown["properties"].get("appSettings") or {})


@pytest.fixture
def group(keyless_server: KeylessServer) -> str:
    name = unique("az")
    kl(keyless_server, f"group create -n {name}")
    return name


# ----------------------------------------------------------------- 3. appsettings, az's way


def test_appsettings_set_and_delete_take_space_separated_values(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    kl(server, f"app create -g {group} -n web")
    kl(server, f"app config appsettings set -g {group} -n web --settings A=1 B=2 C=x=y")
    assert settings_of(server, group, "web") == {"A": "1", "B": "2", "C": "x=y"}
    kl(server, f"app config appsettings delete -g {group} -n web --setting-names A B")
    assert settings_of(server, group, "web") == {"C": "x=y"}
    # A bad item is refused whole: nothing of the command is applied.
    assert "is not NAME=VALUE" in refused(
        server, f"app config appsettings set -g {group} -n web --settings D=4 oops"
    )
    assert settings_of(server, group, "web") == {"C": "x=y"}


# ------------------------------------------------- 1, 2. --user-identity subs-id, other groups


def test_user_identity_takes_azs_subs_id_and_targets_in_another_group(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    sub = server.subscription_id
    other = unique("vaults")
    kl(server, f"group create -n {other}")
    vault = kl(server, f"vault create -g {other} -n {unique('kv')[:20]}")
    identity = kl(server, f"identity create -g {group} -n app-id")
    kl(server, f"app create -g {group} -n web")
    client = identity["clientId"]
    base = f"app connection create keyvault -g {group} -n web"

    # A target in another group, named as it is in this one: the error says how to reach it.
    message = refused(server, f"{base} --vault {vault['name']} --user-identity client-id={client}")
    assert f"no vault {vault['name']!r} in resource group {group!r}" in message
    assert "--target-resource-group" in message and "--target-id" in message
    # subs-id naming another subscription is refused, naming the app's.
    wrong = "00000000-0000-0000-0000-00000000abcd"
    message = refused(
        server,
        f"{base} --vault {vault['name']} --target-resource-group {other} "
        f"--user-identity client-id={client} subs-id={wrong}",
    )
    assert f"subs-id={wrong} is not the app's subscription ({sub})" in message
    assert "connection" not in " ".join(
        r["name"] for r in kl(server, f"app connection list -g {group} -n web")
    )
    assert "neither" in refused(server, f"{base} --vault x --user-identity client-id={client} x=1")

    made = kl(
        server,
        f"{base} --vault {vault['name']} --target-resource-group {other} "
        f"--user-identity client-id={client} subs-id={sub} --connection by_group",
    )
    assert made["properties"]["targetService"]["id"] == vault["id"]
    assert made["properties"]["authInfo"]["clientId"] == client
    # The same target by resource ID (--target-id), for a second connection.
    kl(server, f"app create -g {group} -n api --assign-identity")
    by_id = kl(
        server,
        f"app connection create keyvault -g {group} -n api --target-id {vault['id']} "
        "--system-identity --connection by_id",
    )
    assert by_id["properties"]["targetService"]["id"] == vault["id"]
    assert "--target-id names the target alone" in refused(
        server,
        f"app connection create keyvault -g {group} -n api --vault x --target-id {vault['id']} "
        "--system-identity",
    )
    assert "--client-type springboot is for PostgreSQL connections" in refused(
        server,
        f"app connection create keyvault -g {group} -n api --target-id {vault['id']} "
        "--system-identity --client-type springboot --connection c2",
    )


def test_update_changes_the_client_type_of_a_connection(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    vault = kl(server, f"vault create -g {group} -n {unique('kv')[:20]}")
    kl(server, f"app create -g {group} -n web --assign-identity")
    kl(
        server,
        f"app connection create keyvault -g {group} -n web --vault {vault['name']} "
        "--system-identity --client-type python --connection kv",
    )
    before = settings_of(server, group, "web")
    updated = kl(
        server, f"app connection update -g {group} -n web --connection kv --client-type go"
    )
    assert updated["properties"]["clientType"] == "go"
    assert settings_of(server, group, "web") == before  # the vault's keys are the same for go
    assert "say what to change" in refused(
        server, f"app connection update -g {group} -n web --connection kv"
    )
    assert "not supported" in refused(
        server,
        f"app connection update -g {group} -n web --connection kv --system-identity",
    )
    # repair puts back a key removed by hand.
    kl(
        server,
        f"app config appsettings delete -g {group} -n web --setting-names AZURE_KEYVAULT_SCOPE",
    )
    kl(server, f"app connection repair -g {group} -n web --connection kv")
    assert settings_of(server, group, "web") == before


# ---------------------------------------------------------------- 5. Azure's role names


AZURE_NAMES = {
    "Key Vault Secrets User": "Vault Secrets User",
    "Key Vault Secrets Officer": "Vault Secrets Officer",
    "key vault administrator": "Vault Administrator",
}


def test_azure_role_names_are_aliases_of_the_vault_roles(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    vault = kl(server, f"vault create -g {group} -n {unique('kv')[:20]}")
    sp = kl(server, f"ad sp create-for-rbac -n {unique('reader')}")
    for azure, keyless in AZURE_NAMES.items():
        shown = kl(server, f"role definition show -n {shlex.quote(azure)}")
        assert shown["roleName"] == keyless
        assert [
            r["roleName"] for r in kl(server, f"role definition list -n {shlex.quote(azure)}")
        ] == [keyless]
        made = kl(
            server,
            f"role assignment create --assignee {sp['appId']} --role {shlex.quote(azure)} "
            f"--scope {vault['id']}",
        )
        assert made["roleDefinitionName"] == keyless
        listed = kl(
            server,
            f"role assignment list --assignee {sp['appId']} --role {shlex.quote(azure)} "
            f"--scope {vault['id']}",
        )
        assert [a["name"] for a in listed] == [made["name"]]
        run(
            server,
            f"role assignment delete --assignee {sp['appId']} --role {shlex.quote(azure)} "
            f"--scope {vault['id']}",
        )
    assert kl(server, f"role assignment list --assignee {sp['appId']} --scope {vault['id']}") == []
    assert "no role" in refused(server, "role definition show -n 'Storage Blob Data Reader'")


# ------------------------------------------------- 6. a reference copied from an Azure app


def test_a_reference_to_an_azure_vault_host_reads_the_keyless_vault_of_that_name(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    name = unique("kv")[:20]
    vault = kl(server, f"vault create -g {group} -n {name}")
    me = kl(server, "account show")["user"]["name"]
    kl(
        server,
        f"role assignment create --assignee {me} --role 'Key Vault Secrets Officer' "
        f"--scope {vault['id']}",
    )
    value = f"v-{uuid.uuid4().hex}"
    run(server, f"vault secret set --vault-name {name} --name db-pass --value -", input=value)
    app = kl(server, f"app create -g {group} -n web --assign-identity")
    kl(
        server,
        f"role assignment create --assignee-object-id {app['identity']['principalId']} "
        f"--role 'Key Vault Secrets User' --scope {vault['id']}",
    )
    reference = f"@Microsoft.KeyVault(SecretUri=https://{name}.vault.azure.net/secrets/db-pass/)"
    done = run(
        server,
        f"app config appsettings set -g {group} -n web --settings DB_PASS={shlex.quote(reference)}",
    )
    notice = (
        f"names the Azure vault host {name}.vault.azure.net; Keyless reads it from its own "
        f"vault {name}"
    )
    assert notice in " ".join(done.stderr.split())
    script = "import hashlib, os; print(hashlib.sha256(os.environ['DB_PASS'].encode()).hexdigest())"
    ran = subprocess.run(
        [*KEYLESS, "app", "run", "-g", group, "-n", "web", "--", PYTHON, "-c", script],
        env=server.env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == hashlib.sha256(value.encode()).hexdigest()
    assert " ".join(ran.stderr.split()).count(notice) == 1
    assert value not in ran.stdout + ran.stderr + done.stdout + done.stderr
    # Another port, or a host that is not a vault host, is still malformed.
    bad = f"@Microsoft.KeyVault(SecretUri=https://{name}.vault.azure.net:8443/secrets/db-pass)"
    run(
        server,
        f"app config appsettings set -g {group} -n web --settings DB_PASS={shlex.quote(bad)}",
    )
    failed = subprocess.run(
        [*KEYLESS, "app", "run", "-g", group, "-n", "web", "--", PYTHON, "-c", "pass"],
        env=server.env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert failed.returncode != 0 and "no vault of this Keyless server" in failed.stderr


# -------------------------------------------------------- 7. get-access-token --resource-type


def test_get_access_token_takes_azs_resource_types(keyless_server: KeylessServer) -> None:
    server = keyless_server
    audiences = {"arm": "api://keyless/management", "oss-rdbms": "api://keyless/postgres"}
    for resource_type, audience in audiences.items():
        token = kl(server, f"account get-access-token --resource-type {resource_type}")
        payload = token["accessToken"].split(".")[1]
        claims = json.loads(
            __import__("base64").urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
        assert claims["aud"] == audience
    message = refused(server, "account get-access-token --resource-type ms-graph")
    assert "Keyless has no such API" in message and "arm, oss-rdbms" in message
    assert "not one of az's" in refused(server, "account get-access-token --resource-type sql")
    assert "one of --resource, --resource-type" in refused(
        server, "account get-access-token --resource-type arm --resource https://vault.azure.net"
    )


# ------------------------------------------------------------ 8. create-for-rbac run twice


def test_create_for_rbac_twice_updates_the_app_and_resets_its_secret(
    keyless_server: KeylessServer,
) -> None:
    server = keyless_server
    name = unique("ci")
    first = kl(server, f"ad sp create-for-rbac -n {name} --secret")
    second = run(server, f"ad sp create-for-rbac -n {name} --secret")
    again = json.loads(second.stdout)
    assert again["appId"] == first["appId"]
    assert "Found the existing application" in second.stderr
    assert [s["appId"] for s in kl(server, "ad sp list") if s["displayName"] == name] == [
        first["appId"]
    ]

    def signs_in(secret: str) -> bool:
        with server.http() as http:
            response = http.post(
                server.token_url(),
                data={
                    "grant_type": "client_credentials",
                    "client_id": first["appId"],
                    "client_secret": secret,
                    "scope": "api://keyless/management/.default",
                },
            )
        return response.status_code == 200

    assert signs_in(again["password"]) and not signs_in(first["password"])
    # Without a credential option nothing is changed.
    third = run(server, f"ad sp create-for-rbac -n {name}")
    assert json.loads(third.stdout)["appId"] == first["appId"]
    assert "no credential was changed" in third.stderr
    assert signs_in(again["password"])


# --------------------------------------------------------------- 9. help and times


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        out += _commands(sub, (*path, name))
    return out


def test_every_commands_help_prints_whole_option_names_and_tidy_text() -> None:
    root = cli()
    runner = CliRunner()
    paths = _commands(root)
    assert len(paths) > 80
    for path in paths:
        # The click command `keyless` runs (keyless.cli.main.cli), in this process: a
        # subprocess per command would take minutes; one below checks the installed command.
        with runner.isolation(env={"COLUMNS": "80"}) as (out, _err, _output):
            code = root.main(args=[*path, "-h"], prog_name="keyless", standalone_mode=False)
            text = out.getvalue().decode()
        assert code in (0, None), (path, text)
        assert text.startswith("Usage: keyless"), (path, text)
        command = root
        for name in path:
            command = command.commands[name]
        # A docstring's line breaks are not the reader's: lists show each entry re-flowed.
        for sub in (getattr(command, "commands", None) or {}).values():
            summary = "".join((sub.short_help or "").split())  # wrapping may break at "-"
            assert summary and summary in "".join(text.split()), (path, sub.name)
            assert "\n" not in (sub.short_help or ""), (path, sub.name)
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in text, (path, opt)  # whole, never cut
        for line in text.splitlines():
            body = line.strip()
            # Click's columns are separated by 2+ spaces; inside a sentence there is one.
            words = re.split(r"\s{2,}", body)
            for chunk in words:
                assert not re.search(r" [,.;:](\s|$)", chunk), (path, line)
            assert "…" not in line and "\\[" not in line, (path, line)


def test_help_through_the_installed_command(keyless_server: KeylessServer) -> None:
    done = subprocess.run(
        [*KEYLESS, "app", "run", "-h"], capture_output=True, text=True, timeout=60,
        env={**keyless_server.env(), "COLUMNS": "80"},
    )  # fmt: skip
    assert done.returncode == 0
    assert "--allow-unresolved-references" in done.stdout
    assert "[default: the one you signed in to]" in " ".join(done.stdout.split())


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def test_times_print_in_iso_8601_as_az_prints_them(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    sp = kl(server, f"ad sp create-for-rbac -n {unique('t')}")
    made = kl(server, f"role assignment create --assignee {sp['appId']} --role Reader -g {group}")
    assert ISO.match(made["createdOn"]), made["createdOn"]
    listed = kl(server, f"role assignment list --assignee {sp['appId']} -g {group}")
    assert ISO.match(listed[0]["createdOn"])
    records = kl(server, "audit list --limit 5")
    assert records and all(ISO.match(r["at"]) for r in records)
    keys = kl(server, "keys list")
    assert all(ISO.match(k["activatedAt"]) for k in keys if k.get("activatedAt"))
