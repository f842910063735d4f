"""Developer sign-in: the device code flow (RFC 8628) approved with `keyless login approve`,
refresh tokens that rotate and detect replay, logout and administrator revocation, and
`keyless account get-access-token` in the `az` shape.

A real server over HTTPS; the CLI as real subprocesses. "Another machine" is a CLI with its own
config directory and no data directory, so it cannot reach the local sign-in socket.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import re
import secrets
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import update

from keyless.authority.sessions import CLI_APP_ID, DEVICE_CODE_GRANT, digest
from keyless.store.engine import open_engine
from keyless.store.location import default_store_url
from keyless.store.models import DeviceCode, RefreshToken
from tests.support.server import KEYLESS, KeylessServer, clean_env, running_server

POSTGRES_AZURE = "https://ossrdbms-aad.database.windows.net"
USER_CODE = re.compile(r"keyless login approve ([A-Z]{4}-[A-Z]{4})")
EXPIRES_ON = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeylessServer]:
    with running_server(tmp_path_factory.mktemp("signin") / "data") as started:
        yield started


@pytest.fixture(scope="module")
def http(server: KeylessServer) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


@pytest.fixture(scope="module")
def admin(server: KeylessServer) -> dict[str, Any]:
    """The administrator's local sign-in (the OS user running the tests)."""
    server.cli("login")
    return dict(json.loads((server.data_dir / "cli" / "token.json").read_text()))


# -------------------------------------------------------------------------------- helpers


def said(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join(result.stderr.split())


class Machine:
    """Another machine: the CLI with its own config directory and no Keyless data directory."""

    def __init__(self, server: KeylessServer, where: Path) -> None:
        self.server = server
        self.config = where / "cli-config"
        self.env = clean_env(
            where / "no-data-dir-here",
            HOME=str(where / "home"),
            KEYLESS_CONFIG_DIR=str(self.config),
        )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KEYLESS, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    @property
    def record(self) -> dict[str, Any]:
        return dict(json.loads((self.config / "token.json").read_text()))

    def login_args(self) -> list[str]:
        s = self.server
        return [
            "login",
            "--use-device-code",
            "--endpoint",
            s.endpoint,
            "--tenant",
            s.tenant_id,
            "--ca-file",
            str(s.ca_file),
        ]

    def sign_in(self, deny: bool = False) -> tuple[subprocess.CompletedProcess[str], str]:
        """`keyless login --use-device-code` here, approved (or denied) by the administrator with
        `keyless login approve CODE` on the server's machine. Returns the login and the code."""
        process = subprocess.Popen(
            [*KEYLESS, *self.login_args()],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        err: list[str] = []
        out: list[str] = []

        def pump_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                err.append(line)
                lines.put(line)

        def pump_stdout() -> None:
            assert process.stdout is not None
            out.extend(process.stdout)

        # Both pipes are drained by threads of their own: `communicate` would race the stderr
        # reader for the last lines (the "denied" message could land in its discarded buffer).
        readers = [threading.Thread(target=f, daemon=True) for f in (pump_stderr, pump_stdout)]
        for reader in readers:
            reader.start()
        try:
            code = None
            deadline = time.monotonic() + 30
            while code is None and time.monotonic() < deadline:
                try:
                    match = USER_CODE.search(lines.get(timeout=1))
                except queue.Empty:
                    assert process.poll() is None, "".join(err)
                    continue
                code = match.group(1) if match else None
            assert code is not None, f"no user code on stderr: {''.join(err)}"
            approve = ["login", "approve", code] + (["--deny"] if deny else [])
            approved = self.server.cli(*approve, check=not deny)
            if not deny:
                assert json.loads(approved.stdout)["status"] == "approved"
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(timeout=10)
        result = subprocess.CompletedProcess(
            process.args, process.returncode, "".join(out), "".join(err)
        )
        return result, code


@pytest.fixture
def machine(server: KeylessServer, tmp_path: Path) -> Machine:
    return Machine(server, tmp_path)


def token_url(server: KeylessServer) -> str:
    return server.token_url()


def start(http: httpx.Client, server: KeylessServer, **form: str) -> dict[str, Any]:
    body = {"client_id": CLI_APP_ID, "scope": "api://keyless/postgres/.default offline_access"}
    response = http.post(f"/{server.tenant_id}/oauth2/v2.0/devicecode", data={**body, **form})
    assert response.status_code == 200, response.text
    return dict(response.json())


def poll(http: httpx.Client, server: KeylessServer, device_code: str, **form: str) -> Any:
    body = {"grant_type": DEVICE_CODE_GRANT, "client_id": CLI_APP_ID, "device_code": device_code}
    return http.post(token_url(server), data={**body, **form})


def refresh(http: httpx.Client, server: KeylessServer, token: str, scope: str = "") -> Any:
    form = {"grant_type": "refresh_token", "client_id": CLI_APP_ID, "refresh_token": token}
    if scope:
        form["scope"] = scope
    return http.post(token_url(server), data=form)


def decide(
    http: httpx.Client, admin: dict[str, Any], code: str, deny: bool = False, token: str = ""
) -> Any:
    return http.post(
        "/admin/v1/deviceCodes/approve",
        json={"userCode": code, "deny": deny},
        headers={"Authorization": f"Bearer {token or admin['accessToken']}"},
    )


def signed_in(http: httpx.Client, server: KeylessServer, admin: dict[str, Any]) -> dict[str, Any]:
    """A device code sign-in over plain HTTP: start, approve, redeem."""
    started = start(http, server)
    assert decide(http, admin, started["user_code"]).status_code == 200
    response = poll(http, server, started["device_code"])
    assert response.status_code == 200, response.text
    return dict(response.json())


def oauth_error(
    response: httpx.Response, error: str, code: int, *mentions: str, hidden: tuple[str, ...] = ()
) -> str:
    """An RFC 6749 error with Keyless's code, a description naming the fault, no secret."""
    assert response.status_code in (400, 429), response.text
    assert response.headers.get("cache-control") == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert body["error_codes"] == [code], body
    assert "access_token" not in body and "refresh_token" not in body
    description = str(body["error_description"])
    for word in mentions:
        assert word.lower() in description.lower(), f"{word!r} not in {description!r}"
    for secret in hidden:
        assert secret not in response.text, "the error echoes a secret"
    return description


def verified(server: KeylessServer, http: httpx.Client, token: str, audience: str) -> Any:
    keys = jwt.PyJWKSet.from_dict(http.get(f"/{server.tenant_id}/discovery/v2.0/keys").json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    return jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=audience,
        issuer=f"{server.endpoint}/{server.tenant_id}/v2.0",
    )


def store_update(server: KeylessServer, statement: Any) -> None:
    """Move a row's clock (an expiry) in the live store: the way to let 15 minutes pass."""
    engine = open_engine(default_store_url(server.data_dir))
    try:
        with engine.begin() as connection:
            connection.execute(statement)
    finally:
        engine.dispose()


def audit(server: KeylessServer, admin: dict[str, Any], http: httpx.Client, **q: str) -> Any:
    response = http.get(
        "/admin/v1/audit",
        params={"limit": "1000", **q},
        headers={"Authorization": f"Bearer {admin['accessToken']}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["value"]


# ------------------------------------------------------------------------------ end to end


def test_device_code_sign_in_from_another_machine(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any], machine: Machine
) -> None:
    login, _code = machine.sign_in()
    assert login.returncode == 0, login.stderr
    [account] = json.loads(login.stdout)
    assert account["user"]["name"] == admin["user"]["name"]
    assert account["user"]["id"] == admin["user"]["id"]
    assert account["tenantId"] == server.tenant_id
    assert account["id"] == server.subscription_id
    assert "Traceback" not in login.stderr

    # Cached for this user only; secrets never printed.
    token_file = machine.config / "token.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(machine.config.stat().st_mode) == 0o700
    record = machine.record
    assert record["signIn"] == "deviceCode" and record["endpoint"] == server.endpoint
    assert record["refreshToken"] not in login.stdout + login.stderr
    assert record["accessToken"] not in login.stdout + login.stderr

    result = machine.cli("account", "get-access-token", "--resource", POSTGRES_AZURE)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {
        "accessToken",
        "expiresOn",
        "expires_on",
        "subscription",
        "tenant",
        "tokenType",
    }
    assert printed["tokenType"] == "Bearer"
    assert printed["tenant"] == server.tenant_id
    assert printed["subscription"] == server.subscription_id
    assert isinstance(printed["expires_on"], int) and printed["expires_on"] > time.time() + 60
    assert EXPIRES_ON.match(printed["expiresOn"])
    local = dt.datetime.fromtimestamp(printed["expires_on"]).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert printed["expiresOn"] == local
    claims = verified(server, http, printed["accessToken"], "api://keyless/postgres")
    assert claims["idtyp"] == "user" and claims["scp"] == "user_impersonation"
    assert claims["upn"] == admin["user"]["name"] and claims["oid"] == admin["user"]["id"]
    assert claims["tid"] == server.tenant_id and claims["appid"] == CLI_APP_ID
    assert claims["amr"] == ["device_code"] and claims["sid"]

    # The refresh token rotated; a second call is served from the cache, not the server.
    rotated = machine.record["refreshToken"]
    assert rotated != record["refreshToken"]
    again = json.loads(
        machine.cli("account", "get-access-token", "--resource", POSTGRES_AZURE).stdout
    )
    assert again["accessToken"] == printed["accessToken"]
    assert machine.record["refreshToken"] == rotated

    # --scope, the default (management) token, and the management API from that machine.
    vault = machine.cli("account", "get-access-token", "--scope", "api://keyless/vault/.default")
    assert vault.returncode == 0, vault.stderr
    assert jwt.decode(json.loads(vault.stdout)["accessToken"], options={"verify_signature": False})[
        "aud"
    ] == ("api://keyless/vault")
    management = json.loads(machine.cli("account", "get-access-token").stdout)
    verified(server, http, management["accessToken"], "api://keyless/management")
    shown = json.loads(machine.cli("account", "show").stdout)
    assert shown["user"]["name"] == admin["user"]["name"]
    subscriptions = machine.cli("account", "list")
    assert subscriptions.returncode == 0, subscriptions.stderr
    assert server.subscription_id in {s["id"] for s in json.loads(subscriptions.stdout)}

    # Several processes at once refresh one at a time: no false replay alarm.
    with ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(
                lambda _: machine.cli(
                    "account", "get-access-token", "--resource", "https://storage.azure.com"
                ),
                range(4),
            )
        )
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert len({json.loads(r.stdout)["accessToken"] for r in runs}) == 1
    assert machine.cli("account", "get-access-token", "--resource", POSTGRES_AZURE).returncode == 0

    # Bad input to the command itself.
    both = machine.cli("account", "get-access-token", "--resource", "x", "--scope", "y/.default")
    assert both.returncode != 0 and "not both" in said(both)
    unknown = machine.cli("account", "get-access-token", "--resource", "https://nowhere.example")
    assert unknown.returncode != 0 and "keyless ad api list" in said(unknown)
    assert "Traceback" not in unknown.stderr


def test_denied_sign_in(server: KeylessServer, machine: Machine) -> None:
    login, code = machine.sign_in(deny=True)
    assert login.returncode != 0
    assert "denied" in said(login) and "Traceback" not in login.stderr
    assert not (machine.config / "token.json").exists()
    # A decided code cannot be decided again.
    again = server.cli("login", "approve", code, check=False)
    assert again.returncode != 0 and "already denied" in said(again)


def test_device_code_login_needs_an_endpoint_and_tenant(machine: Machine) -> None:
    result = machine.cli("login", "--use-device-code")
    assert result.returncode != 0 and "--endpoint" in said(result)
    result = machine.cli("login", "--use-device-code", "--endpoint", "http://localhost:1")
    assert result.returncode != 0 and "https" in said(result)
    result = machine.cli("login", "--use-device-code", "--endpoint", "https://localhost:1")
    assert result.returncode != 0 and "--tenant" in said(result)
    # No sign-in and no server on this machine: say how to sign in.
    result = machine.cli("account", "get-access-token")
    assert result.returncode != 0 and "--use-device-code" in said(result)
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------- the grant


def test_device_authorization_response(server: KeylessServer, http: httpx.Client) -> None:
    started = start(http, server)
    assert set(started) == {
        "device_code",
        "user_code",
        "verification_uri",
        "expires_in",
        "interval",
        "message",
    }
    assert len(started["device_code"]) >= 43  # 256 bits, base64url
    assert re.fullmatch(
        r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", started["user_code"]
    )
    assert started["expires_in"] == 900 and started["interval"] == 5
    assert started["verification_uri"] == f"{server.endpoint}/device"
    assert f"keyless login approve {started['user_code']}" in started["message"]
    page = http.get("/device")
    assert page.status_code == 200 and "keyless login approve" in page.text
    discovery = http.get(f"/{server.tenant_id}/v2.0/.well-known/openid-configuration").json()
    assert discovery["device_authorization_endpoint"].endswith("/oauth2/v2.0/devicecode")
    assert discovery["revocation_endpoint"].endswith("/oauth2/v2.0/revoke")
    assert {DEVICE_CODE_GRANT, "refresh_token"} <= set(discovery["grant_types_supported"])
    # Neither code is stored in clear.
    store = b"".join(
        p.read_bytes() for p in server.data_dir.iterdir() if p.name.startswith("keyless.db")
    )
    assert started["device_code"].encode() not in store
    assert started["user_code"].replace("-", "").encode() not in store


def test_polling_pending_then_slow_down(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    started = start(http, server)
    device_code = started["device_code"]
    oauth_error(
        poll(http, server, device_code),
        "authorization_pending",
        70016,
        "not been approved",
        hidden=(device_code,),
    )
    oauth_error(
        poll(http, server, device_code), "slow_down", 810001, "10 seconds", hidden=(device_code,)
    )
    oauth_error(poll(http, server, device_code), "slow_down", 810001, "15 seconds")
    # Once approved the next poll succeeds, however soon it comes.
    assert decide(http, admin, started["user_code"]).status_code == 200
    granted = poll(http, server, device_code)
    assert granted.status_code == 200, granted.text


def test_approved_code_works_once(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    started = start(http, server)
    # Approval accepts the code as typed: lower case, no hyphen.
    approved = decide(http, admin, started["user_code"].replace("-", "").lower())
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "approved" and body["user"] == admin["user"]["name"]
    assert body["userCode"] == started["user_code"] and body["requestedFrom"] == "127.0.0.1"
    response = poll(http, server, started["device_code"])
    assert response.status_code == 200, response.text
    assert response.headers.get("cache-control") == "no-store"
    grant = response.json()
    assert grant["token_type"] == "Bearer" and grant["expires_in"] > 0
    assert grant["scope"] == "api://keyless/postgres/.default offline_access"
    assert len(grant["refresh_token"]) >= 43
    claims = verified(server, http, grant["access_token"], "api://keyless/postgres")
    assert claims["oid"] == admin["user"]["id"] and claims["idtyp"] == "user"

    oauth_error(
        poll(http, server, started["device_code"]),
        "invalid_grant",
        810002,
        "already used",
        hidden=(started["device_code"],),
    )
    again = decide(http, admin, started["user_code"])
    assert again.status_code == 409, again.text
    assert "already used" in again.json()["error"]["message"]


def test_expired_device_code(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    started = start(http, server)
    store_update(
        server,
        update(DeviceCode)
        .where(DeviceCode.user_code_sha256 == digest(started["user_code"].replace("-", "")))
        .values(expires_at=time.time() - 1),
    )
    oauth_error(poll(http, server, started["device_code"]), "expired_token", 70019, "expired")
    late = decide(http, admin, started["user_code"])
    assert late.status_code == 410, late.text
    assert "expired" in late.json()["error"]["message"]


def test_denied_code_over_http(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    started = start(http, server)
    denied = decide(http, admin, started["user_code"], deny=True)
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    oauth_error(poll(http, server, started["device_code"]), "access_denied", 65004, "denied")
    oauth_error(poll(http, server, started["device_code"]), "access_denied", 65004, "denied")


def test_unknown_and_malformed_device_codes(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    made_up = secrets.token_urlsafe(32)
    oauth_error(
        poll(http, server, made_up),
        "invalid_grant",
        70000,
        "device code is not valid",
        hidden=(made_up,),
    )
    oauth_error(poll(http, server, "x" * 5000), "invalid_grant", 70000, "not valid")
    no_code = http.post(
        token_url(server), data={"grant_type": DEVICE_CODE_GRANT, "client_id": CLI_APP_ID}
    )
    oauth_error(no_code, "invalid_request", 90014, "no device_code")
    started = start(http, server)
    code = started["device_code"]
    oauth_error(
        poll(http, server, code, client_id=str(uuid.uuid4())),
        "unauthorized_client",
        810004,
        "Keyless CLI",
        hidden=(code,),
    )
    oauth_error(
        poll(http, server, code, client_secret="not-for-a-public-client"),
        "invalid_request",
        90014,
        "public client",
        hidden=(code, "not-for-a-public-client"),
    )
    # The attempt is audited, without the code.
    records = audit(server, admin, http, action="token.issue", result="unauthorized_client")
    assert records and code not in json.dumps(records)

    # Approvals of codes that are not waiting, or are not codes at all.
    for bad, status in (("BCDF-GHJK", 404), ("hello", 400), ("AEIO-UAEI", 400), ("", 400)):
        response = decide(http, admin, bad)
        assert response.status_code == status, (bad, response.text)
    response = http.post(
        "/admin/v1/deviceCodes/approve",
        json={"userCode": started["user_code"], "userId": str(uuid.uuid4())},
        headers={"Authorization": f"Bearer {admin['accessToken']}"},
    )
    assert response.status_code == 400 and "unknown fields" in response.text
    assert http.post("/admin/v1/deviceCodes/approve", json={}).status_code == 401


def test_device_authorization_bad_input(server: KeylessServer, http: httpx.Client) -> None:
    url = f"/{server.tenant_id}/oauth2/v2.0/devicecode"
    oauth_error(http.post(url, data={"scope": "openid"}), "invalid_request", 90014, "client_id")
    oauth_error(
        http.post(url, data={"client_id": str(uuid.uuid4())}),
        "unauthorized_client",
        810004,
        "Keyless CLI",
    )
    oauth_error(
        http.post(url, data={"client_id": CLI_APP_ID, "scope": "api://keyless/postgres"}),
        "invalid_scope",
        70011,
        "/.default",
    )
    oauth_error(
        http.post(url, data={"client_id": CLI_APP_ID, "scope": "https://nowhere.example/.default"}),
        "invalid_scope",
        500011,
        "keyless ad api list",
    )
    oauth_error(
        http.post(
            url,
            data={
                "client_id": CLI_APP_ID,
                "scope": "api://keyless/postgres/.default api://keyless/vault/.default",
            },
        ),
        "invalid_scope",
        70011,
        "one resource",
    )
    response = http.post(url, json={"client_id": CLI_APP_ID})
    oauth_error(response, "invalid_request", 90014, "form-encoded")
    oauth_error(
        http.post(f"/{uuid.uuid4()}/oauth2/v2.0/devicecode", data={"client_id": CLI_APP_ID}),
        "invalid_request",
        90002,
        "not found",
    )


def test_only_users_approve(server: KeylessServer, http: httpx.Client) -> None:
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", f"approver-{uuid.uuid4().hex[:6]}", "--secret"
    )
    app_token = http.post(
        token_url(server),
        data={
            "grant_type": "client_credentials",
            "client_id": created["appId"],
            "client_secret": created["password"],
            "scope": "api://keyless/management/.default",
        },
    ).json()["access_token"]
    started = start(http, server)
    refused = decide(http, {}, started["user_code"], token=app_token)
    assert refused.status_code == 403, refused.text
    assert "signed-in user" in refused.json()["error"]["message"]
    oauth_error(poll(http, server, started["device_code"]), "authorization_pending", 70016)


# ------------------------------------------------------------------------- refresh tokens


def test_refresh_rotates_and_a_replay_revokes_the_family(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    first = signed_in(http, server, admin)["refresh_token"]
    response = refresh(http, server, first, "https://vault.azure.net/.default")
    assert response.status_code == 200, response.text
    grant = response.json()
    second = grant["refresh_token"]
    assert second != first
    claims = verified(server, http, grant["access_token"], "api://keyless/vault")
    assert claims["upn"] == admin["user"]["name"]
    # No scope: the management API. The new token works once more.
    third_response = refresh(http, server, second)
    assert third_response.status_code == 200, third_response.text
    third = third_response.json()["refresh_token"]
    verified(server, http, third_response.json()["access_token"], "api://keyless/management")
    session_id = claims["sid"]

    # The first one again: a copy is in someone's hands. The whole family is revoked.
    oauth_error(
        refresh(http, server, first),
        "invalid_grant",
        810003,
        "already used",
        "revoked",
        "sign in again",
        hidden=(first, third),
    )
    oauth_error(
        refresh(http, server, third),
        "invalid_grant",
        50173,
        "revoked",
        "used twice",
        "keyless login",
        hidden=(third,),
    )
    records = audit(server, admin, http, action="session.revoke", result="replay-detected")
    assert any(r["target"] == session_id for r in records)
    assert admin["user"]["id"] in {r["actor"] for r in records}
    assert first not in json.dumps(records)


def test_refresh_token_expiry(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    token = signed_in(http, server, admin)["refresh_token"]
    store_update(
        server,
        update(RefreshToken)
        .where(RefreshToken.token_sha256 == digest(token))
        .values(expires_at=time.time() - 1),
    )
    oauth_error(refresh(http, server, token), "invalid_grant", 700082, "14 days", "sign in again")


def test_refresh_grant_bad_input(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    token = signed_in(http, server, admin)["refresh_token"]
    made_up = secrets.token_urlsafe(32)
    oauth_error(
        refresh(http, server, made_up),
        "invalid_grant",
        70000,
        "refresh token is not valid",
        "sign in again",
        hidden=(made_up,),
    )
    missing = http.post(
        token_url(server), data={"grant_type": "refresh_token", "client_id": CLI_APP_ID}
    )
    oauth_error(missing, "invalid_request", 90014, "no refresh_token")
    oauth_error(
        refresh(http, server, token, "https://nowhere.example/.default"),
        "invalid_scope",
        500011,
        "no resource API",
        hidden=(token,),
    )
    oauth_error(
        refresh(
            http, server, token, "api://keyless/postgres/.default api://keyless/vault/.default"
        ),
        "invalid_scope",
        70011,
        "one resource",
    )
    wrong_client = http.post(
        token_url(server),
        data={
            "grant_type": "refresh_token",
            "client_id": str(uuid.uuid4()),
            "refresh_token": token,
        },
    )
    oauth_error(wrong_client, "unauthorized_client", 810004, "Keyless CLI", hidden=(token,))
    # None of those refusals used the token up: it still works.
    assert refresh(http, server, token).status_code == 200
    other_tenant = http.post(
        f"/{uuid.uuid4()}/oauth2/v2.0/token",
        data={"grant_type": "refresh_token", "client_id": CLI_APP_ID, "refresh_token": token},
    )
    oauth_error(other_tenant, "invalid_request", 90002, "not found", hidden=(token,))


def test_revocation_endpoint(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any]
) -> None:
    url = f"/{server.tenant_id}/oauth2/v2.0/revoke"
    token = signed_in(http, server, admin)["refresh_token"]
    oauth_error(http.post(url, data={"client_id": CLI_APP_ID}), "invalid_request", 90014, "token")
    oauth_error(
        http.post(
            url, data={"client_id": CLI_APP_ID, "token": "x", "token_type_hint": "access_token"}
        ),
        "unsupported_token_type",
        810007,
        "refresh token",
    )
    oauth_error(
        http.post(url, data={"client_id": str(uuid.uuid4()), "token": token}),
        "unauthorized_client",
        810004,
        "Keyless CLI",
        hidden=(token,),
    )
    # RFC 7009: an unknown token is not an error.
    assert http.post(url, data={"client_id": CLI_APP_ID, "token": "unknown"}).status_code == 200
    revoked = http.post(url, data={"client_id": CLI_APP_ID, "token": token})
    assert revoked.status_code == 200, revoked.text
    assert not revoked.content
    oauth_error(refresh(http, server, token), "invalid_grant", 50173, "signed out")
    # Revoking again changes nothing and is still not an error.
    assert http.post(url, data={"client_id": CLI_APP_ID, "token": token}).status_code == 200


# ------------------------------------------------------------------ logout and revocation


def test_logout_revokes_the_session_on_the_server(
    server: KeylessServer, http: httpx.Client, machine: Machine
) -> None:
    login, _ = machine.sign_in()
    assert login.returncode == 0, login.stderr
    refresh_token = machine.record["refreshToken"]
    logout = machine.cli("logout")
    assert logout.returncode == 0, logout.stderr
    assert "signed out" in said(logout)
    assert not (machine.config / "token.json").exists()
    oauth_error(
        refresh(http, server, refresh_token),
        "invalid_grant",
        50173,
        "signed out",
        "sign in again",
        hidden=(refresh_token,),
    )
    after = machine.cli("account", "get-access-token")
    assert after.returncode != 0 and "not signed in" in said(after)
    assert "you were not signed in" in said(machine.cli("logout"))


def test_local_login_gets_tokens_for_any_resource_and_logs_out(
    server: KeylessServer, http: httpx.Client
) -> None:
    server.cli("login")
    token_file = server.data_dir / "cli" / "token.json"
    record = json.loads(token_file.read_text())
    assert record["signIn"] == "local" and record["refreshToken"]
    result = server.cli("account", "get-access-token", "--resource", POSTGRES_AZURE)
    printed = json.loads(result.stdout)
    claims = verified(server, http, printed["accessToken"], "api://keyless/postgres")
    assert claims["amr"] == ["local"] and claims["upn"] == record["user"]["name"]
    assert printed["subscription"] == server.subscription_id
    # account show is unchanged.
    shown = server.cli_json("account", "show")
    assert shown["tenantId"] == server.tenant_id and shown["user"] == record["user"]

    rotated = json.loads(token_file.read_text())["refreshToken"]
    assert server.cli("logout").returncode == 0
    assert not token_file.exists()
    oauth_error(refresh(http, server, rotated), "invalid_grant", 50173, "signed out")
    # The local path signs in again by itself, with no password.
    again = server.cli("account", "get-access-token", "--resource", POSTGRES_AZURE)
    assert json.loads(again.stdout)["accessToken"]


def test_admin_revokes_a_users_sessions(
    server: KeylessServer, http: httpx.Client, admin: dict[str, Any], machine: Machine
) -> None:
    login, _ = machine.sign_in()
    assert login.returncode == 0, login.stderr
    held = machine.record["refreshToken"]
    upn = admin["user"]["name"]
    revoked = server.cli_json("ad", "user", "revoke-sessions", "--id", upn)
    assert revoked["userId"] == admin["user"]["id"] and revoked["revokedSessions"] >= 1

    result = machine.cli("account", "get-access-token", "--resource", POSTGRES_AZURE)
    assert result.returncode != 0
    message = said(result)
    assert "no longer valid" in message and "administrator revoked" in message
    assert "sign in again" in message and "--use-device-code" in message
    assert held not in result.stderr + result.stdout and "Traceback" not in result.stderr

    # The access tokens already issued stop too, at Keyless's own resources (issue #11).
    refused = http.get(
        "/admin/v1/audit", headers={"Authorization": f"Bearer {admin['accessToken']}"}
    )
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    server.cli("login")  # a new sign-in session, for this test and the ones after it
    admin.update(json.loads((server.data_dir / "cli" / "token.json").read_text()))

    missing = server.cli("ad", "user", "revoke-sessions", "--id", "nobody@nowhere", check=False)
    assert missing.returncode != 0 and "no user" in said(missing)
    records = audit(server, admin, http, action="session.revoke", result="revoked")
    assert any(r["details"].get("reason") == "admin" for r in records)
