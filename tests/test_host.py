"""`keyless app run` and its managed identity endpoint, as an app sees them.

Every app here is a small Python script started by the real `keyless app run` (a subprocess of
the real CLI, against a real server over loopback HTTPS). The scripts use the official
`azure-identity` package unchanged, `keyless.identity`, or raw httpx, and write what they saw as
JSON to a file the test reads (the newer ones write decoded claims, never a token). The
session server is shared with other modules, so every name carries a random suffix, and audit
records are counted per identity.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from keyless.host import peer
from tests.support.server import KEYLESS, KeylessServer

PYTHON = sys.executable  # the venv's interpreter: the child imports azure-identity and httpx
POSTGRES_AZURE = "https://ossrdbms-aad.database.windows.net"
POSTGRES = "api://keyless/postgres"
MANAGEMENT = "api://keyless/management/.default"
IDENTITY_TYPE = "Keyless.ManagedIdentity/userAssignedIdentities"
ACTION = "Keyless.Web/apps/identityToken/action"
RUN_TIMEOUT_S = 120  # an upper bound so nothing hangs, never a performance assertion
WAIT_S = 60

# What the operator's shell may hold and the app must never inherit.
PARENT_SECRETS = {
    "AZURE_CLIENT_SECRET": "parent-client-secret-value",
    "AZURE_CLIENT_ID": "00000000-0000-0000-0000-00000000c1d0",
    "AZURE_USERNAME": "operator@example.com",
    "AZURE_PASSWORD": "parent-password-value",
    "AZURE_CLIENT_CERTIFICATE_PATH": "/nonexistent/operator.pem",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD": "parent-cert-password",
    "AZURE_FEDERATED_TOKEN_FILE": "/nonexistent/token",
    "IDENTITY_ENDPOINT": "http://127.0.0.1:9/parent",
    "IDENTITY_HEADER": "parent-identity-header",
    "MSI_ENDPOINT": "http://127.0.0.1:9/parent-msi",
    "MSI_SECRET": "parent-msi-secret",
    "KEYLESS_PARENT_ONLY": "operator-session",
}
STRIPPED = {
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_ID",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "KEYLESS_PARENT_ONLY",
    "KEYLESS_DATA_DIR",
}

# ------------------------------------------------------------------------------- child scripts

# Every child gets its result file as argv[1] and writes one JSON document there.
PRELUDE = """
import json, os, sys
from pathlib import Path
OUT = Path(sys.argv[1])
ARGS = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
def emit(result):
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(OUT)
"""

AZURE_IDENTITY_APP = """
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
result = {"env": dict(os.environ)}
system = ManagedIdentityCredential().get_token(SCOPE)
result["system"] = {"token": system.token, "expires_on": system.expires_on}
user = ManagedIdentityCredential(client_id=ARGS["user_client_id"]).get_token(SCOPE)
result["user"] = {"token": user.token, "expires_on": user.expires_on}
info = DefaultAzureCredential().get_token_info(SCOPE)
result["default"] = {"token": info.token, "expires_on": info.expires_on,
                     "refresh_on": info.refresh_on}
try:
    ManagedIdentityCredential(client_id=ARGS["detached_client_id"]).get_token(SCOPE)
    result["detached"] = {"refused": False}
except Exception as exc:
    result["detached"] = {"refused": True, "type": type(exc).__name__, "message": str(exc)}
emit(result)
"""

RAW_REQUESTS_APP = """
import httpx, jwt
# Each case: [path (relative to the endpoint's origin, or null for IDENTITY_ENDPOINT),
#             query params, headers]; "$HEADER" stands for this run's IDENTITY_HEADER.
# With ARGS["claims_only"], a token is replaced by its decoded claims before it is written.
endpoint = httpx.URL(os.environ["IDENTITY_ENDPOINT"])
results = {}
with httpx.Client(timeout=30) as http:
    for name, (path, params, headers) in ARGS["cases"].items():
        # A list of [name, value] pairs may repeat a header; a dict may not.
        pairs = headers if isinstance(headers, list) else list(headers.items())
        headers = [(k, v.replace("$HEADER", os.environ["IDENTITY_HEADER"])) for k, v in pairs]
        url = endpoint if path is None else endpoint.copy_with(path=path)
        response = http.get(url, params=params, headers=headers)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if ARGS.get("claims_only") and isinstance(body, dict) and "access_token" in body:
            token = body.pop("access_token")
            body["claims"] = jwt.decode(token, options={"verify_signature": False})
        results[name] = {"status": response.status_code, "body": body}
emit(results)
"""

# keyless.identity (sync and async) inside the app. Only decoded claims are written, never a
# token; the refusals keep their messages (which never hold a token either).
KEYLESS_IDENTITY_APP = """
import asyncio, jwt
from keyless.identity import (
    ClientAuthenticationError, CredentialUnavailableError, DefaultCredential,
    ManagedIdentityCredential, aio, clear_token_cache,
)
SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
CLAIMS = ("oid", "appid", "xms_mirid", "aud", "tid", "idtyp", "exp", "jti")

def seen(token):
    claims = jwt.decode(token.token, options={"verify_signature": False})
    return {"claims": {k: claims.get(k) for k in CLAIMS}, "expires_on": token.expires_on,
            "refresh_on": getattr(token, "refresh_on", None)}

def refused(exc):
    return {"refused": True, "type": type(exc).__name__, "message": str(exc),
            "unavailable": isinstance(exc, CredentialUnavailableError),
            "status": exc.status_code if isinstance(exc, ClientAuthenticationError) else None}

SELECTED = {
    "user": {"client_id": ARGS["user_client_id"]},
    "user_by_resource_id": {"resource_id": ARGS["user_resource_id"]},
    "user_by_object_id": {"object_id": ARGS["user_object_id"]},
}

def sync_run():
    result = {"available": ManagedIdentityCredential().available}
    result["system"] = seen(ManagedIdentityCredential().get_token(SCOPE))
    for name, selector in SELECTED.items():
        result[name] = seen(ManagedIdentityCredential(**selector).get_token(SCOPE))
    result["default"] = seen(DefaultCredential().get_token_info(SCOPE))
    for name, make in (
        ("detached", lambda: ManagedIdentityCredential(client_id=ARGS["detached_client_id"])),
        ("default_detached",
         lambda: DefaultCredential(managed_identity_client_id=ARGS["detached_client_id"])),
    ):
        try:
            make().get_token(SCOPE)
            result[name] = {"refused": False}
        except Exception as exc:
            result[name] = refused(exc)
    return result

async def async_run():
    result = {}
    async with aio.ManagedIdentityCredential() as credential:
        result["available"] = credential.available
        result["system"] = seen(await credential.get_token(SCOPE))
    for name, selector in SELECTED.items():
        async with aio.ManagedIdentityCredential(**selector) as credential:
            result[name] = seen(await credential.get_token(SCOPE))
    async with aio.DefaultCredential() as credential:
        result["default"] = seen(await credential.get_token_info(SCOPE))
    for name, make in (
        ("detached", lambda: aio.ManagedIdentityCredential(client_id=ARGS["detached_client_id"])),
        ("default_detached",
         lambda: aio.DefaultCredential(managed_identity_client_id=ARGS["detached_client_id"])),
    ):
        try:
            async with make() as credential:
                await credential.get_token(SCOPE)
            result[name] = {"refused": False}
        except Exception as exc:
            result[name] = refused(exc)
    return result

sync = sync_run()
clear_token_cache()  # so the async credentials ask the endpoint themselves
emit({"sync": sync, "async": asyncio.run(async_run())})
"""

# One app's code, run unchanged in `keyless app run` and on a developer's machine: it prints
# only the claims that say whose token it got, never the token.
SAME_EVERYWHERE_APP = """\
import json

import jwt

from keyless.identity import DefaultCredential

token = DefaultCredential().get_token("https://ossrdbms-aad.database.windows.net/.default")
claims = jwt.decode(token.token, options={"verify_signature": False})
print(json.dumps({name: claims.get(name) for name in ("oid", "idtyp", "xms_mirid")}))
"""

CONCURRENT_APP = """
import threading, time
from concurrent.futures import ThreadPoolExecutor
import httpx
N = ARGS["n"]
barrier = threading.Barrier(N)
params = {"api-version": "2019-08-01", "resource": ARGS["resource"]}
headers = {"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]}
def one(_):
    with httpx.Client(timeout=60) as http:
        barrier.wait(timeout=60)
        response = http.get(os.environ["IDENTITY_ENDPOINT"], params=params, headers=headers)
        return {"status": response.status_code, "text": response.text, "at": time.time()}
with ThreadPoolExecutor(N) as pool:
    answers = list(pool.map(one, range(N)))
time.sleep(2)  # the later answer comes from the cache, its relative times two seconds less
with httpx.Client(timeout=60) as http:
    later = http.get(os.environ["IDENTITY_ENDPOINT"], params=params, headers=headers)
at = time.time()
emit({"concurrent": answers, "later": {"status": later.status_code, "text": later.text, "at": at}})
"""

# Leaks its endpoint variables to a file, shows that it and a grandchild are served, then waits
# (bounded) for the test to say stop.
LEAKING_APP = """
import subprocess, time, httpx
def ask():
    response = httpx.get(
        os.environ["IDENTITY_ENDPOINT"],
        params={"api-version": "2019-08-01", "resource": ARGS["resource"]},
        headers={"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]},
        timeout=30,
    )
    return response.status_code
if ARGS.get("grandchild"):
    print(ask())
    sys.exit(0)
grandchild = subprocess.run(
    [sys.executable, __file__, str(OUT) + ".grandchild", json.dumps({**ARGS, "grandchild": 1})],
    capture_output=True, text=True, timeout=60,
)
emit({
    "pid": os.getpid(),
    "IDENTITY_ENDPOINT": os.environ["IDENTITY_ENDPOINT"],
    "IDENTITY_HEADER": os.environ["IDENTITY_HEADER"],
    "own": ask(),
    "grandchild": grandchild.stdout.strip(),
})
stop = Path(ARGS["stop"])
deadline = time.monotonic() + 60
while not stop.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""

# Says where its endpoint is, waits (bounded) for the test to say stop, then asks the IMDS path
# itself, with its header, and writes what it got (claims only) to ARGS["after"].
WAITING_APP = """
import time, httpx, jwt
emit({"pid": os.getpid(), "IDENTITY_ENDPOINT": os.environ["IDENTITY_ENDPOINT"]})
stop = Path(ARGS["stop"])
deadline = time.monotonic() + 60
while not stop.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
response = httpx.get(
    httpx.URL(os.environ["IDENTITY_ENDPOINT"]).copy_with(path="/metadata/identity/oauth2/token"),
    params={"api-version": "2018-02-01", "resource": ARGS["resource"]},
    headers={"Metadata": "true", "X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]},
    timeout=30,
)
body = response.json()
if "access_token" in body:
    body = {"claims": jwt.decode(body["access_token"], options={"verify_signature": False})}
Path(ARGS["after"]).write_text(json.dumps({"status": response.status_code, "body": body}))
"""

SIGNAL_APP = """
import signal, time
def on_term(signum, frame):
    Path(ARGS["marker"]).write_text(f"got signal {signum}")
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
emit({"ready": True, "pid": os.getpid()})
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(99)  # never reached when the signal is forwarded
"""

ENV_APP = """
emit({"env": dict(os.environ), "cwd": os.getcwd()})
"""


# ------------------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def kl(server: KeylessServer, *args: str) -> Any:
    return server.cli_json(*args)


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def run_command(
    server: KeylessServer,
    group: str,
    name: str,
    command: list[str] | None,
    *flags: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`keyless app run -g G -n N [flags] [-- command]` to its end."""
    args = [*KEYLESS, "app", "run", "-g", group, "-n", name, *flags]
    if command is not None:
        args += ["--", *command]
    return subprocess.run(
        args,
        env=server.env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def write_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / f"app_{uuid.uuid4().hex[:8]}.py"
    script.write_text(PRELUDE + body)
    return script


@dataclass
class ChildRun:
    process: subprocess.CompletedProcess[str]
    result: Any


def run_script(
    server: KeylessServer,
    tmp_path: Path,
    group: str,
    name: str,
    body: str,
    args: dict[str, Any] | None = None,
    *flags: str,
    env: dict[str, str] | None = None,
) -> ChildRun:
    script = write_script(tmp_path, body)
    out = tmp_path / f"{script.stem}.json"
    process = run_command(
        server,
        group,
        name,
        [PYTHON, str(script), str(out), json.dumps(args or {})],
        *flags,
        env=env,
    )
    assert process.returncode == 0, f"exit {process.returncode}\n{process.stderr}"
    assert "Traceback" not in process.stderr, process.stderr
    return ChildRun(process, read_once(out))


def read_once(path: Path) -> Any:
    """A child's result, removed once read: some hold tokens or the identity header, which
    must not outlive the test in files (pytest keeps the last runs' temporary directories)."""
    try:
        return json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)


@dataclass
class Background:
    process: subprocess.Popen[str]
    children: list[int]  # app processes that said their pid: ended too, whatever happens


def wait_for(path: Path, run: Background) -> Any:
    """The JSON the child writes to `path`, waiting (bounded) while `keyless app run` lives."""
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if run.process.poll() is not None:
            _, err = run.process.communicate()
            raise AssertionError(f"keyless app run exited {run.process.returncode}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {WAIT_S}s")
        time.sleep(0.05)
    result = read_once(path)
    if isinstance(result, dict) and isinstance(result.get("pid"), int):
        run.children.append(result["pid"])
    return result


@contextlib.contextmanager
def background_run(
    server: KeylessServer,
    group: str,
    name: str,
    command: list[str],
    *flags: str,
) -> Iterator[Background]:
    """`keyless app run` in the background; it and the app's process (by their own pids) are
    always ended and reaped. `command` is [python, script, result file, args]."""
    process = subprocess.Popen(
        [*KEYLESS, "app", "run", "-g", group, "-n", name, *flags, "--", *command],
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    run = Background(process, [])
    try:
        yield run
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=RUN_TIMEOUT_S)
        for pid in run.children:  # in its own session: not reached by the kill above
            _end_if_ours(pid, command[-3])


def _end_if_ours(pid: int, script: str) -> None:
    """SIGKILL `pid` only while it is still the app process running `script` (a pid can be
    reused once the app has ended)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return  # gone (or no /proc: the app's own deadline ends it)
    if script in cmdline.split("\0"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def assert_system_identity(world: World, claims: dict[str, Any]) -> None:
    """A postgres token of the app's system-assigned identity."""
    assert claims["oid"] == world.app["identity"]["principalId"]
    assert claims["appid"] == world.system_client_id
    assert claims["xms_mirid"] == world.app["id"]
    assert claims["aud"] == POSTGRES  # the Azure name maps to the canonical audience
    assert claims["tid"] == world.server.tenant_id
    assert claims["idtyp"] == "app"


def assert_user_identity(world: World, claims: dict[str, Any]) -> None:
    """A postgres token of the user-assigned identity attached to the app."""
    assert claims["appid"] == world.user["clientId"]
    assert claims["oid"] == world.user["principalId"]
    assert claims["xms_mirid"] == world.user["id"]
    assert claims["xms_mirid"].endswith(f"/providers/{IDENTITY_TYPE}/attached")
    assert claims["aud"] == POSTGRES
    assert claims["tid"] == world.server.tenant_id


def published_keys(server: KeylessServer) -> dict[str, Any]:
    with server.http() as http:
        config = http.get(f"/{server.tenant_id}/v2.0/.well-known/openid-configuration")
        config.raise_for_status()
    context = ssl.create_default_context(cafile=str(server.ca_file))
    response = httpx.get(config.json()["jwks_uri"], verify=context, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def verified(server: KeylessServer, token: str, audience: str = POSTGRES) -> dict[str, Any]:
    key = jwt.PyJWKSet.from_dict(published_keys(server))[jwt.get_unverified_header(token)["kid"]]
    return dict(
        jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=audience,
            issuer=f"{server.endpoint}/{server.tenant_id}/v2.0",
        )
    )


def issuances(server: KeylessServer, client_id: str) -> list[dict[str, Any]]:
    """The managed identity token.issue records whose actor is `client_id`, newest first."""
    records = kl(
        server,
        "audit", "list", "--action", "token.issue", "--actor", client_id, "--limit", "1000",
    )  # fmt: skip
    return [r for r in records if (r.get("details") or {}).get("grant") == "managed_identity"]


def client_token(server: KeylessServer, app_id: str, secret: str) -> str:
    with server.http() as http:
        response = http.post(
            server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": app_id,
                "client_secret": secret,
                "scope": MANAGEMENT,
            },
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


# ------------------------------------------------------------------------------------ fixtures


@dataclass
class World:
    server: KeylessServer
    group: str
    app: dict[str, Any]  # system-assigned + `user`
    user: dict[str, Any]  # user-assigned, attached to `app`
    detached: dict[str, Any]  # user-assigned, in the same group, attached to nothing
    other_app: dict[str, Any]  # system-assigned + `other_user`
    other_user: dict[str, Any]
    system_client_id: str  # the app's system-assigned identity's clientId (the audit actor)
    admin_oid: str  # who runs the apps: the host principal

    @property
    def name(self) -> str:
        return str(self.app["name"])


@pytest.fixture(scope="module")
def world(keyless_server: KeylessServer) -> World:
    server = keyless_server
    group = unique("rg-host")
    kl(server, "group", "create", "-n", group)
    user = kl(server, "identity", "create", "-g", group, "-n", "attached")
    detached = kl(server, "identity", "create", "-g", group, "-n", "detached")
    other_user = kl(server, "identity", "create", "-g", group, "-n", "others")
    app = kl(server, "app", "create", "-g", group, "-n", "web", "--assign-identity", "[system]",
             "attached")  # fmt: skip
    other_app = kl(server, "app", "create", "-g", group, "-n", "other", "--assign-identity",
                   "[system]", "others")  # fmt: skip
    system_sp = kl(server, "ad", "sp", "show", "--id", app["identity"]["principalId"])
    return World(
        server=server,
        group=group,
        app=app,
        user=user,
        detached=detached,
        other_app=other_app,
        other_user=other_user,
        system_client_id=system_sp["appId"],
        admin_oid=claims_of(server.admin_token())["oid"],
    )


@pytest.fixture(scope="module")
def azure_run(world: World, tmp_path_factory: pytest.TempPathFactory) -> ChildRun:
    """One run of an app using the official azure-identity package, with the operator's
    credentials in the parent environment."""
    return run_script(
        world.server,
        tmp_path_factory.mktemp("azure-identity-app"),
        world.group,
        world.name,
        AZURE_IDENTITY_APP,
        {
            "user_client_id": world.user["clientId"],
            "detached_client_id": world.detached["clientId"],
        },
        env={**PARENT_SECRETS, "AZURE_TENANT_ID": world.server.tenant_id},
    )


# --------------------------------------------------------------------- 1. azure-identity as is


def test_azure_identity_gets_the_apps_identities_unchanged(
    world: World, azure_run: ChildRun
) -> None:
    result = azure_run.result

    system = claims_of(result["system"]["token"])
    assert_system_identity(world, system)
    assert result["system"]["expires_on"] == system["exp"]

    user = claims_of(result["user"]["token"])
    assert_user_identity(world, user)
    assert result["user"]["expires_on"] == user["exp"]

    # DefaultAzureCredential: the operator's AZURE_CLIENT_SECRET & co. were stripped, so the
    # chain reaches the managed identity (with them it would stop at EnvironmentCredential).
    default = claims_of(result["default"]["token"])
    assert_system_identity(world, default)
    assert result["default"]["expires_on"] == default["exp"]
    # (refresh_on stays None: MSAL's App Service client keeps only access_token and expires_on
    # from the answer, and derives refresh_in itself only for lifetimes of 2 hours or more.)

    detached = result["detached"]
    assert detached["refused"] is True, detached
    assert "is not assigned to this app" in detached["message"], detached
    assert world.detached["clientId"] in detached["message"]


def test_child_environment_holds_no_operator_credentials(world: World, azure_run: ChildRun) -> None:
    env = azure_run.result["env"]
    assert not STRIPPED & set(env), sorted(STRIPPED & set(env))
    assert not [k for k in env if k.startswith("KEYLESS_")]
    for value in PARENT_SECRETS.values():
        assert value not in env.values()
    # Fresh endpoint variables, not the parent's: a loopback URL and a random header.
    assert env["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
    assert env["IDENTITY_ENDPOINT"].endswith("/msi/token")
    assert env["MSI_ENDPOINT"] == env["IDENTITY_ENDPOINT"]
    assert env["MSI_SECRET"] == env["IDENTITY_HEADER"]
    assert len(env["IDENTITY_HEADER"]) >= 32
    assert env["AZURE_TENANT_ID"] == world.server.tenant_id  # not a credential: kept
    # The header is never shown by the CLI itself.
    assert env["IDENTITY_HEADER"] not in azure_run.process.stderr
    assert env["IDENTITY_HEADER"] not in azure_run.process.stdout


def test_identity_header_is_new_each_run(world: World, tmp_path: Path) -> None:
    headers = {
        run_script(world.server, tmp_path, world.group, world.name, ENV_APP).result["env"][
            "IDENTITY_HEADER"
        ]
        for _ in range(2)
    }
    assert len(headers) == 2


# ----------------------------------------------------------------------------------- 2. JWKS


def test_tokens_verify_against_the_published_keys(world: World, azure_run: ChildRun) -> None:
    server = world.server
    for which, expected_oid in (
        ("system", world.app["identity"]["principalId"]),
        ("user", world.user["principalId"]),
        ("default", world.app["identity"]["principalId"]),
    ):
        claims = verified(server, azure_run.result[which]["token"])
        assert claims["oid"] == expected_oid
        assert claims["sub"] == expected_oid
        assert claims["iss"] == f"{server.endpoint}/{server.tenant_id}/v2.0"
        assert claims["nbf"] <= claims["iat"] < claims["exp"]
    # A token for another audience does not pass as a postgres token.
    with pytest.raises(jwt.InvalidAudienceError):
        verified(server, azure_run.result["system"]["token"], audience="api://keyless/vault")


# ------------------------------------------------------------------- 3. binding to the process


@pytest.mark.skipif(not peer.supported(), reason="process binding needs Linux /proc")
def test_a_stolen_header_is_refused_outside_the_apps_process_tree(
    world: World, tmp_path: Path
) -> None:
    server = world.server
    script = write_script(tmp_path, LEAKING_APP)

    def steal(flags: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, httpx.Response]]:
        """Run the leaking app; from this (foreign) process, use what it leaked on the App
        Service path and on the IMDS path (with and without the header)."""
        out, stop = tmp_path / f"leak-{len(flags)}.json", tmp_path / f"stop-{len(flags)}"
        args = {"resource": POSTGRES_AZURE, "stop": str(stop)}
        command = [PYTHON, str(script), str(out), json.dumps(args)]
        with background_run(server, world.group, world.name, command, *flags) as run:
            leaked = wait_for(out, run)
            process = run.process
            params = {"api-version": "2019-08-01", "resource": POSTGRES_AZURE}
            header = {"X-IDENTITY-HEADER": leaked["IDENTITY_HEADER"]}
            imds_url = httpx.URL(leaked["IDENTITY_ENDPOINT"]).copy_with(
                path="/metadata/identity/oauth2/token"
            )
            imds_params = {**params, "api-version": "2018-02-01"}
            # This test process is not in the app's tree: it uses the leaked values.
            responses = {
                "app service": httpx.get(
                    leaked["IDENTITY_ENDPOINT"], params=params, headers=header, timeout=30
                ),
                "imds": httpx.get(
                    imds_url, params=imds_params, headers={"Metadata": "true", **header}, timeout=30
                ),
                "imds without header": httpx.get(
                    imds_url, params=imds_params, headers={"Metadata": "true"}, timeout=30
                ),
            }
            stop.write_text("stop")
            _, err = process.communicate(timeout=RUN_TIMEOUT_S)
            assert process.returncode == 0, err
        return leaked, responses

    leaked, stolen = steal(())
    assert leaked["own"] == 200  # the app itself is served...
    assert leaked["grandchild"] == "200"  # ...and so is any process it starts
    for response in (stolen["app service"], stolen["imds"]):
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["statusCode"] == 403
        assert "not part of the app started by `keyless app run`" in body["message"]
        assert "access_token" not in body
    assert stolen["imds without header"].status_code == 401, stolen["imds without header"].text

    # Once the run is over, the leaked values point at nothing.
    with pytest.raises(httpx.TransportError):
        httpx.get(leaked["IDENTITY_ENDPOINT"], timeout=5)

    # Without the binding the very same theft works: the process check is what refused it.
    # The IMDS path still needs the leaked header: knowing the port is not enough.
    leaked, stolen = steal(("--no-process-binding",))
    assert leaked["own"] == 200
    for name in ("app service", "imds"):
        assert stolen[name].status_code == 200, (name, stolen[name].text)
        claims = claims_of(stolen[name].json()["access_token"])
        assert claims["oid"] == world.app["identity"]["principalId"], name
    assert stolen["imds without header"].status_code == 401, stolen["imds without header"].text
    assert "access_token" not in stolen["imds without header"].json()


def test_without_process_binding_the_imds_path_still_needs_the_header(
    world: World, tmp_path: Path
) -> None:
    """`--no-process-binding` (and any OS where binding cannot apply) leaves the port open to
    every local process, which can find it by scanning loopback: `Metadata: true` alone must
    not get the app's token there."""
    server = world.server
    script = write_script(tmp_path, WAITING_APP)
    out, stop, after = tmp_path / "endpoint.json", tmp_path / "stop", tmp_path / "after.json"
    management = "https://management.azure.com"  # asked for by no other test of this app
    args = {"resource": management, "stop": str(stop), "after": str(after)}
    command = [PYTHON, str(script), str(out), json.dumps(args)]
    with background_run(server, world.group, world.name, command, "--no-process-binding") as run:
        endpoint = wait_for(out, run)["IDENTITY_ENDPOINT"]
        before = {r["id"] for r in issuances(server, world.system_client_id)}
        url = httpx.URL(endpoint).copy_with(path="/metadata/identity/oauth2/token")
        params = {"api-version": "2018-02-01", "resource": management}
        # This test process is a stranger to the app: it knows the port, not the header.
        strangers = {
            "no header": httpx.get(url, params=params, headers={"Metadata": "true"}, timeout=30),
            "guessed header": httpx.get(
                url,
                params=params,
                headers={"Metadata": "true", "X-IDENTITY-HEADER": "guessed"},
                timeout=30,
            ),
        }
        between = issuances(server, world.system_client_id)
        stop.write_text("stop")
        _, err = run.process.communicate(timeout=RUN_TIMEOUT_S)
        assert run.process.returncode == 0, err

    for name, phrases in (
        ("no header", ("no X-IDENTITY-HEADER", "IDENTITY_HEADER", "keyless app serve-imds")),
        ("guessed header", ("does not match",)),
    ):
        response = strangers[name]
        assert response.status_code == 401, (name, response.text)
        body = response.json()
        assert body["statusCode"] == 401, name
        assert "access_token" not in body, name
        message = " ".join(body["message"].split())
        for phrase in phrases:
            assert phrase in message, (name, message)
    assert [r for r in between if r["id"] not in before] == []  # nothing was issued for them

    # The app itself, with its header, is served on the same path: one issuance, its own.
    app_asked = read_once(after)
    assert app_asked["status"] == 200, app_asked
    assert app_asked["body"]["claims"]["oid"] == world.app["identity"]["principalId"]
    new = [r for r in issuances(server, world.system_client_id) if r["id"] not in before]
    assert len(new) == 1, new
    assert new[0]["details"]["tokenId"] == app_asked["body"]["claims"]["jti"]


# ------------------------------------------------------------------------------- 4. bad input


def test_bad_requests_to_the_endpoint_get_clear_errors(world: World, tmp_path: Path) -> None:
    ok_params = {"api-version": "2019-08-01", "resource": POSTGRES_AZURE}
    header = {"X-IDENTITY-HEADER": "$HEADER"}
    imds_path = "/metadata/identity/oauth2/token"
    imds_params = {"api-version": "2018-02-01", "resource": POSTGRES_AZURE}
    other_system_oid = world.other_app["identity"]["principalId"]
    cases: dict[str, tuple[str | None, dict[str, str], dict[str, str] | list[list[str]]]] = {
        "ok": (None, ok_params, header),
        "two headers": (
            None,
            ok_params,
            [["X-IDENTITY-HEADER", "$HEADER"], ["X-IDENTITY-HEADER", "not-the-header"]],
        ),
        "missing header": (None, ok_params, {}),
        "wrong header": (None, ok_params, {"X-IDENTITY-HEADER": "not-the-header"}),
        "empty header": (None, ok_params, {"X-IDENTITY-HEADER": ""}),
        "unknown resource": (
            None,
            {**ok_params, "resource": "https://no-such-api.example"},
            header,
        ),
        "missing resource": (None, {"api-version": "2019-08-01"}, header),
        "wrong api-version": (None, {**ok_params, "api-version": "2017-09-01"}, header),
        "missing api-version": (None, {"resource": POSTGRES_AZURE}, header),
        "two selectors": (
            None,
            {
                **ok_params,
                "client_id": world.user["clientId"],
                "object_id": world.user["principalId"],
            },
            header,
        ),
        "other app's client_id": (
            None,
            {**ok_params, "client_id": world.other_user["clientId"]},
            header,
        ),
        "other app's object_id": (
            None,
            {**ok_params, "object_id": world.other_user["principalId"]},
            header,
        ),
        "other app's mi_res_id": (
            None,
            {**ok_params, "mi_res_id": world.other_user["id"]},
            header,
        ),
        "other app's system identity": (
            None,
            {**ok_params, "object_id": other_system_oid},
            header,
        ),
        "own user-assigned by mi_res_id": (
            None,
            {**ok_params, "mi_res_id": world.user["id"]},
            header,
        ),
        "own user-assigned by object_id": (
            None,
            {**ok_params, "object_id": world.user["principalId"]},
            header,
        ),
        "imds without Metadata": (imds_path, imds_params, header),
        "imds without header": (imds_path, imds_params, {"Metadata": "true"}),
        "imds wrong header": (
            imds_path,
            imds_params,
            {"Metadata": "true", "X-IDENTITY-HEADER": "not-the-header"},
        ),
        "imds with Metadata and header": (imds_path, imds_params, {"Metadata": "true", **header}),
        "imds wrong api-version": (
            imds_path,
            {**imds_params, "api-version": "1999-01-01"},
            {"Metadata": "true", **header},
        ),
    }
    results = run_script(
        world.server,
        tmp_path,
        world.group,
        world.name,
        RAW_REQUESTS_APP,
        {"cases": cases, "claims_only": True},
    ).result

    def refused(name: str, status: int, *phrases: str) -> None:
        got = results[name]
        assert got["status"] == status, (name, got)
        body = got["body"]
        assert isinstance(body, dict) and body["statusCode"] == status, (name, got)
        assert "access_token" not in body
        for phrase in phrases:
            assert phrase in body["message"], (name, body["message"])

    assert results["ok"]["status"] == 200, results["ok"]
    refused("missing header", 401, "no X-IDENTITY-HEADER", "IDENTITY_HEADER")
    refused("wrong header", 401, "does not match")
    refused("empty header", 401, "no X-IDENTITY-HEADER")
    refused("two headers", 400, "more than one X-IDENTITY-HEADER header", "exactly one")
    refused("unknown resource", 400, "https://no-such-api.example", "keyless ad api list")
    refused("missing resource", 400, "resource=")
    refused("wrong api-version", 400, "api-version", "2019-08-01")
    refused("missing api-version", 400, "api-version", "2019-08-01")
    refused("two selectors", 400, "only one of client_id, object_id, mi_res_id")
    refused("other app's client_id", 400, "not assigned to this app", world.other_user["clientId"])
    refused("other app's object_id", 400, "not assigned to this app")
    refused("other app's mi_res_id", 400, "not assigned to this app")
    refused("other app's system identity", 400, "not assigned to this app")
    refused("imds without Metadata", 400, "Metadata: true")
    # Under `keyless app run` the IMDS path needs the header secret as well (Metadata: true is
    # no secret), and the refusal says where the identity is served instead.
    refused("imds without header", 401, "X-IDENTITY-HEADER", "IDENTITY_HEADER", "serve-imds")
    refused("imds wrong header", 401, "does not match")
    refused("imds wrong api-version", 400, "api-version")

    for name in ("own user-assigned by mi_res_id", "own user-assigned by object_id"):
        assert results[name]["status"] == 200, (name, results[name])
        claims = results[name]["body"]["claims"]
        assert claims["oid"] == world.user["principalId"], name
        assert results[name]["body"]["client_id"] == world.user["clientId"]

    imds = results["imds with Metadata and header"]
    assert imds["status"] == 200, imds
    assert imds["body"]["claims"]["oid"] == world.app["identity"]["principalId"]
    assert imds["body"]["resource"] == POSTGRES_AZURE


# ---------------------------------------------------------------------------------- 5. caching


def test_concurrent_requests_cause_one_issuance(world: World, tmp_path: Path) -> None:
    server = world.server
    resource = "https://vault.azure.net"
    before = issuances(server, world.system_client_id)
    n = 20
    result = run_script(
        server,
        tmp_path,
        world.group,
        world.name,
        CONCURRENT_APP,
        {"n": n, "resource": resource},
    ).result
    after = issuances(server, world.system_client_id)

    answers = [*result["concurrent"], result["later"]]
    assert len(answers) == n + 1
    assert all(a["status"] == 200 for a in answers), answers
    bodies = [json.loads(a["text"]) for a in answers]
    answered_at = [a["at"] for a in answers]
    assert len({b["access_token"] for b in bodies}) == 1  # all served from one issuance

    new = [r for r in after if r["id"] not in {b["id"] for b in before}]
    assert len(new) == 1, new
    assert new[0]["target"] == "api://keyless/vault"
    assert new[0]["details"]["tokenId"] == claims_of(bodies[0]["access_token"])["jti"]

    for body, at in zip(bodies, answered_at, strict=True):
        for key in ("expires_on", "expires_in", "refresh_in"):
            assert type(body[key]) is int, (key, body[key])  # a JSON integer, not "123"
        assert 0 < body["refresh_in"] < body["expires_in"]
        # Relative times count from the answer, not from the issuance it was cached from.
        assert abs(body["expires_on"] - body["expires_in"] - at) <= 2
        assert body["token_type"] == "Bearer"
        assert body["resource"] == resource
        assert body["client_id"] == world.system_client_id
        assert body["expires_on"] == claims_of(body["access_token"])["exp"]
    # Every answer is the one cached token, so the same expiry throughout.
    assert len({b["expires_on"] for b in bodies}) == 1
    assert bodies[-1]["expires_in"] < bodies[0]["expires_in"]


# ----------------------------------------------------------------------- 6. exit code, signals


def test_the_childs_exit_code_is_returned(world: World) -> None:
    done = run_command(
        world.server, world.group, world.name, [PYTHON, "-c", "import sys; sys.exit(7)"]
    )
    assert done.returncode == 7, done.stderr
    fine = run_command(world.server, world.group, world.name, [PYTHON, "-c", "print('hi')"])
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout.strip() == "hi"  # the child's output is the app's output


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler installed for `signum` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_sigterm_is_forwarded_and_a_killed_child_gives_128_plus_n(
    world: World, tmp_path: Path
) -> None:
    script = write_script(tmp_path, SIGNAL_APP)
    out, marker = tmp_path / "ready.json", tmp_path / "marker"
    command = [PYTHON, str(script), str(out), json.dumps({"marker": str(marker)})]
    with background_run(world.server, world.group, world.name, command) as run:
        ready = wait_for(out, run)
        process = run.process
        assert ready["ready"] is True
        if Path("/proc").is_dir():  # be sure the runner's forwarding handler is in place
            deadline = time.monotonic() + WAIT_S
            while not _catches(process.pid, signal.SIGTERM):
                assert time.monotonic() < deadline, "keyless app run never handles SIGTERM"
                time.sleep(0.02)
        os.kill(process.pid, signal.SIGTERM)  # the `keyless app run` process only
        _, err = process.communicate(timeout=RUN_TIMEOUT_S)
        assert process.returncode == 3, err
    assert marker.read_text() == f"got signal {int(signal.SIGTERM)}"

    killed = run_command(
        world.server,
        world.group,
        world.name,
        [PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
    )
    assert killed.returncode == 128 + 9, killed.stderr


# -------------------------------------------------------- 7. settings, bad runs, authorization


def test_app_settings_become_environment_variables(world: World, tmp_path: Path) -> None:
    server = world.server
    name = unique("settings")
    script = write_script(tmp_path, ENV_APP)
    out = tmp_path / "env.json"
    kl(server, "app", "create", "-g", world.group, "-n", name, "--assign-identity",
       "[system]", "--command", f"{PYTHON} {script} {out}")  # fmt: skip
    settings = {
        "GREETING": "hello world",
        "DB.NAME": "orders=main",
        "AZURE_CLIENT_ID": world.user["clientId"],  # the app's own choice: kept
        "IDENTITY_HEADER": "a setting cannot replace the endpoint's header",
        "IDENTITY_ENDPOINT": "http://127.0.0.1:9/hijack",
        "GONE": "deleted before the run",
    }
    flags = [arg for k, v in settings.items() for arg in ("--settings", f"{k}={v}")]
    listed = kl(server, "app", "config", "appsettings", "set", "-g", world.group, "-n", name,
                *flags)  # fmt: skip
    assert {s["name"]: s["value"] for s in listed} == settings
    kl(server, "app", "config", "appsettings", "delete", "-g", world.group, "-n", name,
       "--setting-names", "GONE")  # fmt: skip

    # No `--`: the command stored on the app runs. The operator's AZURE_CLIENT_ID is dropped,
    # the app's own setting of the same name is not.
    done = run_command(server, world.group, name, None, env={"AZURE_CLIENT_ID": "operator's"})
    assert done.returncode == 0, done.stderr
    env = read_once(out)["env"]
    assert env["GREETING"] == "hello world"
    assert env["DB.NAME"] == "orders=main"
    assert env["AZURE_CLIENT_ID"] == world.user["clientId"]
    assert "GONE" not in env
    assert env["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")
    assert env["IDENTITY_ENDPOINT"] != settings["IDENTITY_ENDPOINT"]
    assert env["IDENTITY_HEADER"] != settings["IDENTITY_HEADER"]
    assert env["MSI_SECRET"] == env["IDENTITY_HEADER"]


def test_an_app_without_identity_runs_and_its_requests_are_refused(
    world: World, tmp_path: Path
) -> None:
    server = world.server
    name = unique("no-identity")
    kl(server, "app", "create", "-g", world.group, "-n", name)
    params = {"api-version": "2019-08-01", "resource": POSTGRES_AZURE}
    cases = {"system": [None, params, {"X-IDENTITY-HEADER": "$HEADER"}]}
    child = run_script(server, tmp_path, world.group, name, RAW_REQUESTS_APP, {"cases": cases})
    assert "has no managed identity" in " ".join(child.process.stderr.split())
    got = child.result["system"]
    assert got["status"] == 400, got
    assert "no system-assigned identity" in got["body"]["message"]
    assert "keyless app identity assign" in got["body"]["message"]


def test_runs_that_cannot_start_fail_clearly(world: World, tmp_path: Path) -> None:
    server = world.server
    bare = unique("bare")
    kl(server, "app", "create", "-g", world.group, "-n", bare)

    def failed(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr
        message = " ".join(done.stderr.split())
        assert "error:" in message, message  # (after a note, if the app has no identity)
        squeezed = "".join(message.split())  # the CLI wraps long lines, even mid-path
        for phrase in phrases:
            assert "".join(phrase.split()) in squeezed, message

    failed(run_command(server, world.group, bare, None), "has no command", "--command", "--")
    missing = unique("missing")
    failed(run_command(server, world.group, missing, [PYTHON, "-c", "0"]), missing, "not found")
    failed(
        run_command(server, unique("no-group"), world.name, [PYTHON, "-c", "0"]),
        "could not be found",
    )
    failed(
        run_command(server, world.group, world.name, ["/nonexistent/program-xyz"]),
        "cannot start '/nonexistent/program-xyz'",
        "no such program",
    )
    not_executable = tmp_path / "not-executable.txt"
    not_executable.write_text("just text\n")
    not_executable.chmod(0o755)  # executable bit, but no shebang and not a binary
    failed(
        run_command(server, world.group, world.name, [str(not_executable)]),
        f"cannot start {str(not_executable)!r}",
    )
    elsewhere = unique("elsewhere")
    app = kl(server, "app", "create", "-g", world.group, "-n", elsewhere)
    missing_dir = tmp_path / "no-such-dir"
    with server.http() as http:
        response = http.patch(
            app["id"],
            json={"properties": {"workingDirectory": str(missing_dir)}},
            headers={"Authorization": f"Bearer {server.admin_token()}"},
        )
    assert response.status_code == 200, response.text
    failed(
        run_command(server, world.group, elsewhere, [PYTHON, "-c", "0"]),
        str(missing_dir),
        "no such directory",
    )


def test_a_reader_cannot_get_the_apps_tokens(world: World) -> None:
    server = world.server
    path = f"{world.app['id']}/identityToken"
    principals = {}
    for role in ("Reader", "Contributor"):
        sp = kl(server, "ad", "sp", "create-for-rbac", "-n", unique(role.lower()), "--secret")
        kl(server, "role", "assignment", "create", "--assignee", sp["appId"], "--role", role,
           "--scope", world.app["id"])  # fmt: skip
        principals[role] = (sp["appId"], client_token(server, sp["appId"], sp["password"]))

    _, reader_token = principals["Reader"]
    with server.http() as http:
        shown = http.get(world.app["id"], headers={"Authorization": f"Bearer {reader_token}"})
        assert shown.status_code == 200, shown.text  # a Reader may see the app...
        refused = http.post(
            path,
            json={"resource": POSTGRES_AZURE},
            headers={"Authorization": f"Bearer {reader_token}"},
        )
        # ...but not use its identity.
        assert refused.status_code == 403, refused.text
        assert ACTION in refused.json()["error"]["message"]
        assert "access_token" not in refused.text

        _, contributor_token = principals["Contributor"]
        allowed = http.post(
            path,
            json={"resource": POSTGRES_AZURE, "client_id": world.user["clientId"]},
            headers={"Authorization": f"Bearer {contributor_token}"},
        )
        assert allowed.status_code == 200, allowed.text
        claims = verified(server, allowed.json()["access_token"])
        assert claims["oid"] == world.user["principalId"]
        assert claims["xms_mirid"] == world.user["id"]


# ----------------------------------------------------------------------------------- 8. audit


def test_each_issuance_is_audited_without_the_token(world: World, azure_run: ChildRun) -> None:
    server = world.server
    tokens = {which: azure_run.result[which]["token"] for which in ("system", "user", "default")}
    for which, actor, principal in (
        ("system", world.system_client_id, world.app["identity"]["principalId"]),
        ("user", world.user["clientId"], world.user["principalId"]),
    ):
        jti = claims_of(tokens[which])["jti"]
        records = [r for r in issuances(server, actor) if r["details"].get("tokenId") == jti]
        assert len(records) == 1, (which, records)
        record = records[0]
        assert record["actor"] == actor
        assert record["action"] == "token.issue"
        assert record["result"] == "granted"
        assert record["target"] == POSTGRES
        assert record["tenantId"] == server.tenant_id
        details = record["details"]
        assert details["grant"] == "managed_identity"
        assert details["objectId"] == principal
        assert details["host"] == world.admin_oid  # who ran the app
        assert details["holder"] == world.app["id"]  # the app whose identity it is
        assert details["expiresOn"] == claims_of(tokens[which])["exp"]

    # DefaultAzureCredential's token was the system one, served from the endpoint's cache.
    assert tokens["default"] == tokens["system"]

    everything = json.dumps(
        kl(server, "audit", "list", "--action", "token.issue", "--limit", "1000")
    )
    log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    for token in tokens.values():
        signature = token.rsplit(".", 1)[1]
        assert signature not in everything
        assert signature not in log
        assert signature not in azure_run.process.stdout + azure_run.process.stderr


# ------------------------------------------------------- 9. keyless.identity, in and out of apps


@pytest.fixture(scope="module")
def keyless_identity_run(world: World, tmp_path_factory: pytest.TempPathFactory) -> ChildRun:
    """One run of an app using keyless.identity (sync, then async), with the operator's
    credentials in the parent environment."""
    return run_script(
        world.server,
        tmp_path_factory.mktemp("keyless-identity-app"),
        world.group,
        world.name,
        KEYLESS_IDENTITY_APP,
        {
            "user_client_id": world.user["clientId"],
            "user_resource_id": world.user["id"],
            "user_object_id": world.user["principalId"],
            "detached_client_id": world.detached["clientId"],
        },
        env={**PARENT_SECRETS, "AZURE_TENANT_ID": world.server.tenant_id},
    )


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_keyless_identity_gets_the_apps_identities(
    world: World, keyless_identity_run: ChildRun, flavour: str
) -> None:
    result = keyless_identity_run.result[flavour]
    assert result["available"] is True  # decided from IDENTITY_ENDPOINT/HEADER, no request

    system = result["system"]["claims"]
    assert_system_identity(world, system)
    assert result["system"]["expires_on"] == system["exp"]

    # A user-assigned identity attached to the app, named each of the three ways.
    for name in ("user", "user_by_resource_id", "user_by_object_id"):
        user = result[name]["claims"]
        assert_user_identity(world, user)
        assert result[name]["expires_on"] == user["exp"], name

    # DefaultCredential: the operator's credentials were stripped, so the chain reaches the
    # managed identity, and gets the very token the system credential cached.
    default = result["default"]
    assert_system_identity(world, default["claims"])
    assert default["claims"]["jti"] == system["jti"]
    assert default["expires_on"] == default["claims"]["exp"]
    # Unlike azure-identity's App Service client, the endpoint's refresh_in is kept.
    assert default["refresh_on"] is not None
    assert default["refresh_on"] < default["expires_on"]


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_keyless_identity_refuses_an_identity_not_attached_to_the_app(
    world: World, keyless_identity_run: ChildRun, flavour: str
) -> None:
    result = keyless_identity_run.result[flavour]
    detached_id = world.detached["clientId"]

    detached = result["detached"]
    assert detached["refused"] is True, detached
    assert detached["type"] == "ClientAuthenticationError"
    assert detached["unavailable"] is False  # configured, but refused: not "not here"
    assert detached["status"] == 400
    message = " ".join(detached["message"].split())
    assert "is not assigned to this app" in message, message
    assert detached_id in message
    assert "keyless app identity assign" in message

    # In DefaultCredential the refusal stops the chain: no fall-through to another identity.
    chained = result["default_detached"]
    assert chained["refused"] is True, chained
    assert chained["unavailable"] is False
    assert chained["status"] == 400
    message = " ".join(chained["message"].split())
    assert "is not assigned to this app" in message, message
    assert "DeveloperCredential: not tried" in message


def test_the_same_script_runs_in_the_app_and_on_a_developer_machine(
    world: World, tmp_path: Path
) -> None:
    """One file, never edited: under `keyless app run` it gets the app's identity; run by a
    developer after `keyless login`, the developer's own. Only the environment differs."""
    if len(KEYLESS) != 1:
        pytest.skip("the `keyless` console script is not installed in this environment")
    server = world.server
    script = tmp_path / "app.py"
    script.write_text(SAME_EVERYWHERE_APP)
    written = script.read_bytes()
    # The developer's shell: `eval "$(keyless env)"` (KEYLESS_DATA_DIR comes with server.env)
    # and the `keyless` command on PATH.
    developer = {
        "KEYLESS_ENDPOINT": server.endpoint,
        "AZURE_AUTHORITY_HOST": server.endpoint,
        "AZURE_TENANT_ID": server.tenant_id,
        "REQUESTS_CA_BUNDLE": str(server.ca_file),
        "SSL_CERT_FILE": str(server.ca_file),
        "PATH": f"{Path(KEYLESS[0]).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    login = subprocess.run(
        [*KEYLESS, "login"],
        env=server.env(**developer),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert login.returncode == 0, login.stderr
    signed_in = kl(server, "account", "show")["user"]["id"]
    assert signed_in == world.admin_oid

    # (a) In the app, from the same signed-in shell: the managed identity comes first.
    in_app = run_command(server, world.group, world.name, [PYTHON, str(script)], env=developer)
    assert in_app.returncode == 0, in_app.stderr
    assert json.loads(in_app.stdout.strip().splitlines()[-1]) == {
        "oid": world.app["identity"]["principalId"],
        "idtyp": "app",
        "xms_mirid": world.app["id"],
    }

    # (b) On the developer's machine, as a plain process: the developer's sign-in.
    on_machine = subprocess.run(
        [PYTHON, str(script)],
        env=server.env(**developer),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert on_machine.returncode == 0, on_machine.stderr
    assert json.loads(on_machine.stdout.strip().splitlines()[-1]) == {
        "oid": signed_in,
        "idtyp": "user",
        "xms_mirid": None,
    }

    assert script.read_bytes() == written  # the very same file, unchanged
