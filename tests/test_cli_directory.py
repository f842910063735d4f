"""The `keyless` command as a user types it: init, env, login, and the directory (`keyless ad`),
with the admin API's authorisation and audit behind it.

Every command runs as a real subprocess against a real server over HTTPS and the local sign-in
socket. Names carry a random suffix because the session server is shared with other modules.
"""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import hashlib
import json
import re
import shlex
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyless.store.engine import open_engine
from keyless.store.location import default_store_url
from keyless.store.models import CertificateCredential, ClientSecret, FederatedCredential
from tests.support.server import KEYLESS, KeylessServer, clean_env

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GH_ISSUER = "https://token.actions.githubusercontent.com"
BUILT_IN_APIS = {"management", "postgres", "vault", "messaging", "storage"}


# ------------------------------------------------------------------------------------- helpers


def run_keyless(
    data_dir: Path, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """`keyless ...` for a data directory that has no test server (or a special environment)."""
    return subprocess.run(
        [*KEYLESS, *args],
        env=clean_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def said(result: subprocess.CompletedProcess[str]) -> str:
    """stderr with the console's line wrapping undone, for matching messages."""
    return " ".join(result.stderr.split())


def refused(server: KeylessServer, *args: str) -> str:
    """Run a command that must fail; return its (unwrapped) error message."""
    result = server.cli(*args, check=False)
    assert result.returncode != 0, f"keyless {' '.join(args)} succeeded: {result.stdout}"
    message = said(result)
    assert message.startswith("error:"), message
    assert "Traceback" not in result.stderr
    return message


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def store_bytes(data_dir: Path) -> bytes:
    """The store as it is on disk: the database and the write-ahead log of the live server."""
    return b"".join(
        p.read_bytes() for p in sorted(data_dir.iterdir()) if p.name.startswith("keyless.db")
    )


def token_request(server: KeylessServer, form: dict[str, str]) -> Any:
    with server.http() as http:
        return http.post(server.token_url(), data={"grant_type": "client_credentials", **form})


def secret_token(
    server: KeylessServer, app_id: str, secret: str, audience: str = "api://keyless/postgres"
) -> Any:
    return token_request(
        server, {"client_id": app_id, "client_secret": secret, "scope": f"{audience}/.default"}
    )


def self_signed(bits: int = 2048, days: int = 30) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyless test client")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def certificate_token(
    server: KeylessServer, app_id: str, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> Any:
    """A certificate assertion built as MSAL builds one (x5t = SHA-1 thumbprint)."""
    der = cert.public_bytes(serialization.Encoding.DER)
    x5t = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": app_id,
            "sub": app_id,
            "aud": server.token_url(),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        },
        key,
        algorithm="RS256",
        headers={"x5t": x5t},
    )
    return token_request(
        server,
        {
            "client_id": app_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": "api://keyless/postgres/.default",
        },
    )


def sp_names(server: KeylessServer) -> set[str]:
    return {sp["displayName"] for sp in server.cli_json("ad", "sp", "list")}


def files_snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(p.relative_to(root)): (
            p.stat().st_mtime_ns,
            stat.S_IMODE(p.stat().st_mode),
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def count_rows(data_dir: Path, model: Any, app_id: str) -> int:
    engine = open_engine(default_store_url(data_dir))
    try:
        with Session(engine) as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(model).where(model.app_id == app_id)
                )
                or 0
            )
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------ init and env


def test_init_twice_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "my keyless" / "data"  # a space in the path, as on many laptops
    first = run_keyless(data, "init")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["changed"] is True
    assert "created" in said(first)
    assert report["administrator"] == f"{getpass.getuser()}@keyless.local"
    before = files_snapshot(data)
    assert {"master.key", "ca.pem", "ca-key.pem", "server.pem", "server-key.pem"} <= set(before)

    second = run_keyless(data, "init")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["changed"] is False
    assert "nothing to do" in said(second)
    assert (again["tenant"], again["subscription"]) == (report["tenant"], report["subscription"])
    assert files_snapshot(data) == before, "a second `keyless init` modified files"

    # `keyless env` works without a server, and its exports survive a shell's eval.
    printed = run_keyless(data, "env")
    assert printed.returncode == 0, printed.stderr
    assert_env_evaluates(data, report["tenant"], "https://localhost:8443")


def test_init_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("keep me\n")
    result = run_keyless(target, "init")
    assert result.returncode != 0
    assert "exists and is not a directory" in said(result)
    assert "Traceback" not in result.stderr
    assert target.read_text() == "keep me\n"

    below = run_keyless(target / "data", "init")
    assert below.returncode != 0
    assert "Not a directory" in said(below) and "Traceback" not in below.stderr

    missing = run_keyless(tmp_path / "never-initialised", "env")
    assert missing.returncode != 0
    assert "keyless init" in said(missing)
    assert not (tmp_path / "never-initialised").exists()


def assert_env_evaluates(data_dir: Path, tenant: str, endpoint: str) -> None:
    names = [
        "KEYLESS_ENDPOINT",
        "AZURE_AUTHORITY_HOST",
        "AZURE_TENANT_ID",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
    ]
    printed = run_keyless(data_dir, "env")
    assert printed.returncode == 0, printed.stderr
    exported = {
        m.group(1) for m in re.finditer(r"^export ([A-Z_]+)=", printed.stdout, re.MULTILINE)
    }
    assert set(names) <= exported, printed.stdout

    command = " ".join(shlex.quote(part) for part in KEYLESS) + " env"
    script = f'eval "$({command})"; ' + "; ".join(f'printf "%s\\n" "${n}"' for n in names)
    env = clean_env(data_dir)
    shell = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert shell.returncode == 0, shell.stderr
    values = dict(zip(names, shell.stdout.splitlines(), strict=True))
    ca = str((data_dir / "ca.pem").resolve())
    assert values == {
        "KEYLESS_ENDPOINT": endpoint,
        "AZURE_AUTHORITY_HOST": endpoint,
        "AZURE_TENANT_ID": tenant,
        "REQUESTS_CA_BUNDLE": ca,
        "SSL_CERT_FILE": ca,
    }


def test_env_of_a_running_server(keyless_server: KeylessServer) -> None:
    assert_env_evaluates(keyless_server.data_dir, keyless_server.tenant_id, keyless_server.endpoint)
    tenant = keyless_server.cli("env").stdout
    assert f"export AZURE_TENANT_ID={keyless_server.tenant_id}" in tenant.splitlines()


# ------------------------------------------------------------------------------ login, logout


def test_login_and_logout_over_the_socket(keyless_server: KeylessServer) -> None:
    server = keyless_server
    token_file = server.data_dir / "cli" / "token.json"
    server.cli("logout")
    assert not token_file.exists()
    sock = server.data_dir / "login.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600

    # No password, no prompt; the TCP endpoint is pointed nowhere to show only the socket is used.
    login = subprocess.run(
        [*KEYLESS, "login"],
        env=server.env(KEYLESS_ENDPOINT="https://127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert login.returncode == 0, login.stderr
    [account] = json.loads(login.stdout)
    assert account["tenantId"] == server.tenant_id
    assert account["user"]["name"] == f"{getpass.getuser()}@keyless.local"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    cached = json.loads(token_file.read_text())
    assert cached["tokenType"] == "Bearer"
    claims = jwt.decode(cached["accessToken"], options={"verify_signature": False})
    assert claims["aud"] == "api://keyless/management"
    assert claims["idtyp"] == "user" and claims["tid"] == server.tenant_id
    assert claims["oid"] == account["user"]["id"]
    assert cached["accessToken"] not in login.stdout + login.stderr  # never printed

    logout = server.cli("logout")
    assert "signed out" in said(logout)
    assert not token_file.exists()
    assert "not signed in" in said(server.cli("logout"))
    records = server.audit(action="login.local", actor=account["user"]["id"])
    assert any(r["result"] == "granted" for r in records)


def test_login_without_a_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_keyless(data, "init").returncode == 0
    result = run_keyless(data, "login")
    assert result.returncode != 0
    assert "keyless serve" in said(result) and "Traceback" not in result.stderr
    assert not (data / "cli" / "token.json").exists()

    # A socket left behind by a server that died: still a clear message, not a traceback.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(data / "login.sock"))
    stale.close()
    result = run_keyless(data, "login")
    assert result.returncode != 0
    assert "keyless serve" in said(result) and "Traceback" not in result.stderr
    # Commands that need the server say the same.
    result = run_keyless(data, "ad", "sp", "list")
    assert result.returncode != 0 and "keyless serve" in said(result)


# ------------------------------------------------------------------------ service principals


def test_create_for_rbac_with_secret(keyless_server: KeylessServer) -> None:
    server = keyless_server
    name = unique("rbac-secret")
    result = server.cli("ad", "sp", "create-for-rbac", "--name", name, "--secret")
    created = json.loads(result.stdout)
    assert set(created) == {"appId", "displayName", "tenant", "password"}
    assert created["displayName"] == name and created["tenant"] == server.tenant_id
    password = created["password"]
    assert len(password) >= 43  # 256 random bits, base64url
    assert "shown once" in said(result)

    response = secret_token(server, created["appId"], password)
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["appid"] == created["appId"] and claims["idtyp"] == "app"

    # Shown once: not in the store, nor in anything the CLI shows later.
    assert password.encode() not in store_bytes(server.data_dir)
    shown = server.cli("ad", "sp", "show", "--id", created["appId"]).stdout
    assert password not in shown
    assert password not in server.cli("audit", "list", "--limit", "1000").stdout
    assert name in sp_names(server)


def test_create_for_rbac_with_created_certificate(keyless_server: KeylessServer) -> None:
    server = keyless_server
    name = unique("rbac-cert")
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", name, "--create-cert")
    assert "password" not in created
    path = Path(created["fileWithCertAndPrivateKey"])
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert b"-----BEGIN PRIVATE KEY-----" in pem and b"-----BEGIN CERTIFICATE-----" in pem
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    cert_block = re.search(
        rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.DOTALL
    )
    assert cert_block is not None
    cert = x509.load_pem_x509_certificate(cert_block.group(0))
    der = cert.public_bytes(serialization.Encoding.DER)
    assert created["certificateThumbprint"] == hashlib.sha1(der).hexdigest().upper()
    # The certificate was registered: the key in the file signs an accepted assertion.
    response = certificate_token(server, created["appId"], key, cert)
    assert response.status_code == 200, response.text

    # An existing --cert-file is never overwritten, and then nothing is created.
    existing = path.parent / f"{unique('existing')}.pem"
    existing.write_text("precious\n")
    other = unique("rbac-cert-exists")
    message = refused(
        server,
        "ad",
        "sp",
        "create-for-rbac",
        "--name",
        other,
        "--create-cert",
        "--cert-file",
        str(existing),
    )
    assert "exists" in message
    assert existing.read_text() == "precious\n"
    assert other not in sp_names(server)


def test_create_for_rbac_with_certificate_file(
    keyless_server: KeylessServer, tmp_path: Path
) -> None:
    server = keyless_server
    key, cert = self_signed()
    cert_file = tmp_path / "client-cert.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    name = unique("rbac-certfile")
    created = server.cli_json("ad", "sp", "create-for-rbac", "-n", name, "--cert", f"@{cert_file}")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert created["certificateThumbprint"] == hashlib.sha1(der).hexdigest().upper()
    assert "password" not in created and "fileWithCertAndPrivateKey" not in created
    response = certificate_token(server, created["appId"], key, cert)
    assert response.status_code == 200, response.text
    # Another key, same claims: refused.
    other_key, other_cert = self_signed()
    response = certificate_token(server, created["appId"], other_key, other_cert)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"

    # Certificates that cannot be used are refused with a reason, and nothing is created.
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("hello\n")
    _, weak = self_signed(bits=1024)
    weak_file = tmp_path / "weak.pem"
    weak_file.write_bytes(weak.public_bytes(serialization.Encoding.PEM))
    cases = {
        f"@{tmp_path / 'missing.pem'}": "cannot read",
        f"@{not_pem}": "not a PEM X.509 certificate",
        f"@{weak_file}": "shorter than 2048 bits",
    }
    for value, reason in cases.items():
        bad_name = unique("rbac-badcert")
        message = refused(server, "ad", "sp", "create-for-rbac", "-n", bad_name, "--cert", value)
        assert reason in message, message
        assert bad_name not in sp_names(server)


def test_create_for_rbac_without_credential_and_conflicts(keyless_server: KeylessServer) -> None:
    server = keyless_server
    name = unique("rbac-none")
    result = server.cli("ad", "sp", "create-for-rbac", "--name", name)
    created = json.loads(result.stdout)
    assert set(created) == {"appId", "displayName", "tenant"}
    hint = said(result)
    assert "No credential was created" in hint and "federated-credential" in hint
    response = secret_token(server, created["appId"], "guess")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "has no client secret" in response.json()["error_description"]

    for flags in (["--secret", "--create-cert"], ["--secret", "--cert", "@/nonexistent.pem"]):
        conflicting = unique("rbac-conflict")
        message = refused(server, "ad", "sp", "create-for-rbac", "--name", conflicting, *flags)
        assert "choose one of --create-cert, --cert or --secret" in message
        assert conflicting not in sp_names(server)


def test_sp_list_show_delete(keyless_server: KeylessServer) -> None:
    server = keyless_server
    name = unique("sp-delete")
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", name, "--secret")
    app_id = created["appId"]
    assert secret_token(server, app_id, created["password"]).status_code == 200

    listed = {sp["appId"]: sp for sp in server.cli_json("ad", "sp", "list")}
    assert listed[app_id]["displayName"] == name
    assert listed[app_id]["servicePrincipalType"] == "Application"
    object_id = listed[app_id]["id"]
    table = server.cli("ad", "sp", "list", "--output", "table").stdout
    assert app_id in table
    for ref in (app_id, object_id, name):
        shown = server.cli_json("ad", "sp", "show", "--id", ref)
        assert (shown["appId"], shown["id"]) == (app_id, object_id)

    assert server.cli_json("ad", "sp", "delete", "--id", app_id) == {"deleted": app_id}
    assert "no service principal" in refused(server, "ad", "sp", "show", "--id", app_id)
    assert app_id not in {sp["appId"] for sp in server.cli_json("ad", "sp", "list")}
    assert "no service principal" in refused(server, "ad", "sp", "delete", "--id", app_id)
    # Its credentials went with it: the old secret no longer gets a token.
    response = secret_token(server, app_id, created["password"])
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "unauthorized_client"
    assert count_rows(server.data_dir, ClientSecret, app_id) == 0


def test_sp_credential_reset(keyless_server: KeylessServer, tmp_path: Path) -> None:
    server = keyless_server
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", unique("sp-reset"))
    app_id = created["appId"]
    reset = server.cli("ad", "sp", "credential", "reset", "--id", app_id)
    secret = json.loads(reset.stdout)
    assert secret["appId"] == app_id and secret["tenant"] == server.tenant_id
    assert secret["keyId"] and secret["endDateTime"] > time.time()
    assert secret_token(server, app_id, secret["password"]).status_code == 200
    assert secret["password"].encode() not in store_bytes(server.data_dir)

    key, cert = self_signed()
    cert_file = tmp_path / "reset-cert.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    added = server.cli_json(
        "ad", "sp", "credential", "reset", "--id", app_id, "--cert", f"@{cert_file}"
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert added["thumbprint"] == hashlib.sha1(der).hexdigest().upper()
    assert certificate_token(server, app_id, key, cert).status_code == 200
    assert count_rows(server.data_dir, CertificateCredential, app_id) == 1
    # A reset replaces: the secret from before (think: leaked) stops working at once.
    assert count_rows(server.data_dir, ClientSecret, app_id) == 0
    assert secret_token(server, app_id, secret["password"]).status_code == 401

    appended = server.cli_json("ad", "sp", "credential", "reset", "--id", app_id, "--append")
    assert secret_token(server, app_id, appended["password"]).status_code == 200
    assert certificate_token(server, app_id, key, cert).status_code == 200

    message = refused(
        server, "ad", "sp", "credential", "reset", "--id", app_id, "--create-cert", "--cert", "x"
    )
    assert "not both" in message
    message = refused(server, "ad", "sp", "credential", "reset", "--id", str(uuid.uuid4()))
    assert "no service principal" in message
    message = refused(server, "ad", "sp", "credential", "reset", "--id", app_id, "--years", "5")
    assert "at most 2 years" in message
    # The refused reset changed nothing: both credentials still work.
    assert count_rows(server.data_dir, ClientSecret, app_id) == 1
    assert count_rows(server.data_dir, CertificateCredential, app_id) == 1
    assert secret_token(server, app_id, appended["password"]).status_code == 200


# ------------------------------------------------------------------ federated credentials


def test_federated_credentials(keyless_server: KeylessServer, tmp_path: Path) -> None:
    server = keyless_server
    app_id = server.cli_json("ad", "sp", "create-for-rbac", "--name", unique("fic"))["appId"]
    fic = ["ad", "app", "federated-credential"]

    def listed() -> list[dict[str, Any]]:
        return list(server.cli_json(*fic, "list", "--id", app_id))

    subject = "repo:keyless/app:ref:refs/heads/main"
    made = server.cli_json(
        *fic,
        "create",
        "--id",
        app_id,
        "--name",
        "github-main",
        "--issuer",
        GH_ISSUER,
        "--subject",
        subject,
    )
    assert made["name"] == "github-main" and made["issuer"] == GH_ISSUER
    assert made["subject"] == subject and made["audiences"] == ["api://AzureADTokenExchange"]
    params = tmp_path / "fic.json"
    params.write_text(
        json.dumps(
            {
                "name": "kubernetes",
                "issuer": "https://oidc.example.test/cluster",
                "subject": "system:serviceaccount:shop:web",
                "audiences": ["api://AzureADTokenExchange"],
                "description": "the shop's web pods",
            }
        )
    )
    server.cli_json(*fic, "create", "--id", app_id, "--parameters", f"@{params}")
    before = listed()
    assert [f["name"] for f in before] == ["github-main", "kubernetes"]

    good = {"--name": "fresh-name", "--issuer": GH_ISSUER, "--subject": "repo:keyless/app:env:x"}
    bad_inputs: list[tuple[dict[str, str], list[str], str]] = [
        ({"--issuer": "http://token.actions.githubusercontent.com"}, [], "https URL"),
        ({"--issuer": "https://issuer.example.test/?x=1"}, [], "without query"),
        ({"--name": "x"}, [], "3 to 120 letters"),
        ({"--name": "bad name!"}, [], "3 to 120 letters"),
        ({"--subject": ""}, [], "subject must be 1 to 600"),
        ({"--name": "github-main"}, [], "named 'github-main' exists"),
        ({"--subject": subject}, [], "issuer and subject exists"),
        (
            {},
            ["--audiences", "api://AzureADTokenExchange", "--audiences", "api://other"],
            "exactly one audience",
        ),
    ]
    for changes, extra, reason in bad_inputs:
        args = good_args({**good, **changes})
        message = refused(server, *fic, "create", "--id", app_id, *args, *extra)
        assert reason in message, (changes, extra, message)
    # The unknown application and bad JSON are refused too.
    message = refused(server, *fic, "create", "--id", str(uuid.uuid4()), *good_args(good))
    assert "no service principal" in message
    assert "not valid JSON" in refused(server, *fic, "create", "--id", app_id, "--parameters", "{")
    assert listed() == before, "a refused request wrote something"

    assert server.cli_json(
        *fic, "delete", "--id", app_id, "--federated-credential-id", "kubernetes"
    )
    after = listed()
    assert [f["name"] for f in after] == ["github-main"]
    message = refused(
        server, *fic, "delete", "--id", app_id, "--federated-credential-id", "kubernetes"
    )
    assert "no federated credential" in message
    assert count_rows(server.data_dir, FederatedCredential, app_id) == 1


def good_args(options: dict[str, str]) -> list[str]:
    return [arg for pair in options.items() for arg in pair]


# --------------------------------------------------------------------- users, groups, APIs


def test_users_and_resource_apis(keyless_server: KeylessServer) -> None:
    users = by_field(keyless_server.cli_json("ad", "user", "list"), "userPrincipalName")
    admin = users[f"{getpass.getuser()}@keyless.local"]
    assert admin["tenantAdministrator"] is True and admin["displayName"] == getpass.getuser()

    apis = by_field(keyless_server.cli_json("ad", "api", "list"), "name")
    assert set(apis) >= BUILT_IN_APIS
    for name in BUILT_IN_APIS:
        assert apis[name]["builtIn"] is True
        assert apis[name]["audience"] == f"api://keyless/{name}"
        assert apis[name]["identifierUris"][0] == apis[name]["audience"]
    assert "https://management.azure.com" in apis["management"]["identifierUris"]
    assert "https://vault.azure.net" in apis["vault"]["identifierUris"]
    assert "https://ossrdbms-aad.database.windows.net" in apis["postgres"]["identifierUris"]
    table = keyless_server.cli("ad", "api", "list", "--output", "table").stdout
    assert all(name in table for name in BUILT_IN_APIS)


def by_field(rows: list[dict[str, Any]], field: str) -> dict[str, dict[str, Any]]:
    return {row[field]: row for row in rows}


def test_groups_and_members(keyless_server: KeylessServer) -> None:
    server = keyless_server
    admin_id = server.cli_json("ad", "user", "list")[0]["id"]
    sp_app = server.cli_json("ad", "sp", "create-for-rbac", "--name", unique("member"))["appId"]
    sp_id = server.cli_json("ad", "sp", "show", "--id", sp_app)["id"]
    outer_name, inner_name = unique("grp-outer"), unique("grp-inner")
    outer = server.cli_json("ad", "group", "create", "--display-name", outer_name)
    inner = server.cli_json("ad", "group", "create", "--display-name", inner_name)
    assert outer["displayName"] == outer_name and uuid.UUID(outer["id"])
    groups = by_field(server.cli_json("ad", "group", "list"), "displayName")
    assert groups[outer_name]["id"] == outer["id"] and groups[inner_name]["id"] == inner["id"]

    member = ["ad", "group", "member"]
    server.cli_json(*member, "add", "--group", outer_name, "--member-id", admin_id)
    server.cli_json(*member, "add", "--group", outer["id"], "--member-id", sp_id)
    server.cli_json(*member, "add", "-g", outer_name, "--member-id", inner["id"])
    server.cli_json(*member, "add", "-g", inner_name, "--member-id", sp_id)
    members = {m["id"]: m["type"] for m in server.cli_json(*member, "list", "-g", outer_name)}
    assert members == {admin_id: "user", sp_id: "servicePrincipal", inner["id"]: "group"}

    # Refusals: each with a reason, none writing anything.
    assert "cycle" in refused(server, *member, "add", "-g", inner_name, "--member-id", outer["id"])
    assert "cycle" in refused(server, *member, "add", "-g", outer_name, "--member-id", outer["id"])
    unknown = str(uuid.uuid4())
    message = refused(server, *member, "add", "-g", outer_name, "--member-id", unknown)
    assert "no user, group or service principal" in message
    assert "GUID" in refused(server, *member, "add", "-g", outer_name, "--member-id", "alice")
    assert "already a member" in refused(
        server, *member, "add", "-g", outer_name, "--member-id", admin_id
    )
    assert "no group" in refused(server, *member, "add", "-g", unique("nope"), "--member-id", sp_id)
    message = refused(server, "ad", "group", "create", "--display-name", outer_name)
    assert "already exists" in message
    assert "missing" in refused(server, "ad", "group", "create", "--display-name", " ")
    after = {m["id"]: m["type"] for m in server.cli_json(*member, "list", "-g", outer_name)}
    assert after == members
    assert [m["id"] for m in server.cli_json(*member, "list", "-g", inner_name)] == [sp_id]
    names = [g["displayName"] for g in server.cli_json("ad", "group", "list")]
    assert names.count(outer_name) == 1

    # Deleting a service principal removes its memberships.
    server.cli("ad", "sp", "delete", "--id", sp_app)
    after = {m["id"] for m in server.cli_json(*member, "list", "-g", outer_name)}
    assert after == {admin_id, inner["id"]}


# ------------------------------------------------------------------ authorisation and audit


def test_admin_api_authorisation(keyless_server: KeylessServer) -> None:
    server = keyless_server
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", unique("intruder"), "--secret"
    )
    sp_id = server.cli_json("ad", "sp", "show", "--id", created["appId"])["id"]
    management = secret_token(
        server, created["appId"], created["password"], "api://keyless/management"
    )
    assert management.status_code == 200, management.text
    postgres = secret_token(server, created["appId"], created["password"], "api://keyless/postgres")
    assert postgres.status_code == 200, postgres.text

    group_name = unique("sp-made")
    with server.http() as http:

        def call(method: str, token: str | None, **kw: Any) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            path = "/admin/v1/groups" if method == "POST" else "/admin/v1/servicePrincipals"
            return http.request(method, path, headers=headers, **kw)

        # A valid management token, but not an administrator's: 403, with the reason.
        denied = call("GET", management.json()["access_token"])
        assert denied.status_code == 403, denied.text
        error = denied.json()["error"]
        assert error["code"] == "AuthorizationFailed"
        assert "only tenant administrators" in error["message"] and sp_id in error["message"]
        write = call("POST", management.json()["access_token"], json={"displayName": group_name})
        assert write.status_code == 403

        # No bearer at all: 401 saying how to authenticate.
        anonymous = call("GET", None)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in anonymous.json()["error"]["message"]

        # A Keyless token for another audience: 401 naming it.
        other = call("GET", postgres.json()["access_token"])
        assert other.status_code == 401
        message = other.json()["error"]["message"]
        assert "api://keyless/postgres" in message and "api://keyless/management" in message

        garbage = call("GET", "not-a-token")
        assert garbage.status_code == 401
        assert "not a JWT" in garbage.json()["error"]["message"]

    assert group_name not in {g["displayName"] for g in server.cli_json("ad", "group", "list")}
    records = server.audit(actor=sp_id, result="denied")
    actions = {r["action"] for r in records}
    assert {"directory.servicePrincipals.list", "directory.groups.create"} <= actions
    assert all(r["details"]["appId"] == created["appId"] for r in records)


def test_directory_writes_are_audited(keyless_server: KeylessServer) -> None:
    server = keyless_server
    admin_id = server.cli_json("ad", "user", "list")[0]["id"]
    group_name = unique("audited")
    group = server.cli_json("ad", "group", "create", "--display-name", group_name)
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", unique("audited"), "--secret"
    )
    refused(server, "ad", "group", "create", "--display-name", group_name)

    listing = server.cli("audit", "list", "--action", "directory.*", "--limit", "1000")
    records = json.loads(listing.stdout)
    assert created["password"] not in listing.stdout
    assert records and all(r["action"].startswith("directory.") for r in records)
    ours = [r for r in records if r["actor"] == admin_id]
    outcomes = {(r["action"], r["result"]) for r in ours}
    assert ("directory.groups.create", "succeeded") in outcomes
    assert ("directory.servicePrincipals.create", "succeeded") in outcomes
    assert ("directory.groups.create", "failed:Conflict") in outcomes
    assert any(r["target"] == "/admin/v1/groups" for r in ours)
    # Newest first, with time and trace.
    stamps = [r["at"] for r in records]
    assert stamps == sorted(stamps, reverse=True)
    assert all(r["traceId"] and r["tenantId"] == server.tenant_id for r in records)
    assert group["id"]
    table = server.cli("audit", "list", "--action", "directory.groups.*", "--output", "table")
    assert "directory.groups.create" in table.stdout


def test_tenant_update_refuses_bad_values(keyless_server: KeylessServer) -> None:
    before = keyless_server.cli_json("tenant", "show")
    update = ["tenant", "update"]
    assert "not a duration" in refused(keyless_server, *update, "--token-lifetime", "soon")
    message = refused(keyless_server, *update, "--key-rotation-interval", "1s")
    assert "whole number of seconds" in message
    assert "nothing to change" in refused(keyless_server, *update)
    assert keyless_server.cli_json("tenant", "show") == before
