"""The seed's promise: one unchanged script using azure-identity's `DefaultAzureCredential` gets
the developer's token on the developer's machine (after `keyless login` and
`eval "$(keyless env)"`, through the Azure CLI credential and Keyless's stand-in `az`) and the
app's managed identity token inside `keyless app run`. A real Azure CLI is never shadowed
unless the user asks; the stand-in answers nothing but `az account get-access-token`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import hosts
from tests.support.server import KEYLESS, KeylessServer, running_server

ROOT = Path(__file__).resolve().parents[1]
WHOAMI = ROOT / "examples" / "same-code" / "whoami.py"
BIN = Path(KEYLESS[0]).parent if len(KEYLESS) == 1 else Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> KeylessServer:
    with running_server(tmp_path_factory.mktemp("samecode") / "data") as server:
        yield server  # type: ignore[misc]


def _shell(
    server: KeylessServer, script: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`script` in bash, as a user types it: only KEYLESS_DATA_DIR set, `keyless` on PATH."""
    env = server.env()
    env["PATH"] = path or f"{BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin"
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def _exports(output: str) -> dict[str, str]:
    out = {}
    for line in output.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        out[name] = value.strip("'")
    return out


def test_the_same_script_gets_the_users_token_locally_and_the_apps_inside_app_run(
    server: KeylessServer,
) -> None:
    server.cli("login")
    me = server.cli_json("ad", "signed-in-user", "show")
    server.cli("group", "create", "-n", "same")
    app = server.cli_json("app", "create", "-g", "same", "-n", "web", "--assign-identity")
    app_oid = app["identity"]["principalId"]
    mine = server.cli_json("role", "assignment", "create", "--assignee", "me", "--role", "Reader",
                           "-g", "same")  # fmt: skip
    assert mine["principalId"] == me["id"]  # `me`, as printed fixes say

    local = _shell(server, f'eval "$(keyless env)" && python {WHOAMI}')
    assert local.returncode == 0, local.stderr[-3000:]
    assert json.loads(local.stdout) == {
        "oid": me["id"],
        "idtyp": "user",
        "aud": "api://keyless/postgres",
    }

    deployed = _shell(
        server, f'eval "$(keyless env)" && keyless app run -g same -n web -- python {WHOAMI}'
    )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert json.loads(deployed.stdout) == {
        "oid": app_oid,
        "idtyp": "app",
        "aud": "api://keyless/postgres",
    }
    assert app_oid != me["id"]


def test_env_exports_curl_ca_bundle_and_the_shim_only_where_no_az_is_installed(
    server: KeylessServer, tmp_path: Path
) -> None:
    plain = _exports(_shell(server, "keyless env").stdout)
    assert plain["CURL_CA_BUNDLE"] == str(server.ca_file)
    shim_dir = str(server.data_dir / "bin")
    assert plain["PATH"].split(os.pathsep)[0] == shim_dir

    real = tmp_path / "azure-cli"
    real.mkdir()
    (real / "az").write_text("#!/bin/sh\necho real az\n")
    (real / "az").chmod(0o755)
    path = f"{real}{os.pathsep}{BIN}{os.pathsep}/usr/bin:/bin"
    auto = _shell(server, "keyless env", path)
    assert auto.returncode == 0, auto.stderr
    assert "PATH" not in _exports(auto.stdout)  # left alone: the real az answers
    assert str(real / "az") in auto.stderr and "--az-shim on" in auto.stderr

    on = _shell(server, 'eval "$(keyless env --az-shim on)" && command -v az', path)
    assert on.stdout.strip() == f"{shim_dir}/az"
    off = _shell(
        server,
        'eval "$(keyless env --az-shim on)" && eval "$(keyless env --az-shim off)" '
        "&& command -v az",
        path,
    )
    assert off.stdout.strip() == str(real / "az")
    twice = _shell(server, 'eval "$(keyless env)" && eval "$(keyless env)" && echo "$PATH"')
    assert twice.stdout.split(os.pathsep).count(shim_dir) == 1


def test_the_stand_in_answers_only_get_access_token(server: KeylessServer) -> None:
    server.cli("login")
    az = str(server.data_dir / "bin" / "az")
    _shell(server, "keyless env >/dev/null")
    token = _shell(
        server,
        f"cd /bin && {az} account get-access-token --output json "
        "--resource https://ossrdbms-aad.database.windows.net --tenant "
        f"{server.tenant_id} --subscription {server.subscription_id}",
    )
    assert token.returncode == 0, token.stderr
    answer = json.loads(token.stdout)
    assert answer["accessToken"] and isinstance(answer["expires_on"], int)

    other = _shell(server, f"{az} group list")
    assert other.returncode == 2
    assert "answers only `az account get-access-token`" in other.stderr
    assert "--az-shim off" in other.stderr
    unknown = _shell(server, f"{az} account get-access-token --claims-challenge x")
    assert unknown.returncode == 2 and "--claims-challenge" in unknown.stderr


def test_vault_create_and_env_warn_when_the_vault_host_does_not_resolve(
    server: KeylessServer, tmp_path: Path
) -> None:
    server.cli("login")
    server.cli("group", "create", "-n", "vaults")
    host = "resolve-me.vault.localhost"
    created = server.cli("vault", "create", "-g", "vaults", "-n", "resolve-me")
    env = _shell(server, "keyless env")
    if subprocess.run(["getent", "hosts", host], capture_output=True).returncode == 0:
        assert host not in created.stderr and host not in env.stderr
        pytest.skip(f"{host} resolves on this machine: nothing to warn about")
    for stderr in (created.stderr, env.stderr):
        assert f"{host} does not resolve" in stderr
    fix = env.stderr.split("Fix:\n", 1)[1].splitlines()[0].strip()
    assert fix.startswith(f"echo '127.0.0.1 {host}' | ")

    reason = hosts.skip_reason()
    if reason:
        pytest.skip(reason)
    copy = tmp_path / "hosts"
    copy.write_text(hosts.hosts_text([]))
    # The printed fix, run as printed, inside a namespace whose /etc/hosts is the copy.
    fixed = subprocess.run(
        hosts.with_hosts(["sh", "-c", f"{fix} >/dev/null && getent hosts {host}"], copy),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fixed.returncode == 0 and "127.0.0.1" in fixed.stdout, fixed.stderr
