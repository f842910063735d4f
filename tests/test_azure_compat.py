"""The official Azure client packages get Keyless tokens with configuration only.

`azure-identity` and `msal` run unchanged: the only settings are the authority host and trust
in the Keyless CA (docs/design.md, "The compatibility contract"). Every token is checked for the
claims Azure-written code and resources rely on, and verified the way a resource would, from
the discovery document alone. Federated credentials are exercised against a real OIDC issuer
(tests/support/oidc_issuer.py) over HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import jwt
import msal
import pytest
import requests
from azure.core.pipeline import PipelineRequest
from azure.identity import (
    CertificateCredential,
    ClientAssertionCredential,
    ClientSecretCredential,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.support.oidc_issuer import OidcIssuer, running_issuer
from tests.support.server import KeylessServer, clean_env, running_server

MANAGEMENT_SCOPE = "https://management.azure.com/.default"
MANAGEMENT_AUDIENCE = "api://keyless/management"
POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
POSTGRES_AUDIENCE = "api://keyless/postgres"
AZURE_SCOPES = [
    pytest.param(MANAGEMENT_SCOPE, MANAGEMENT_AUDIENCE, id="management"),
    pytest.param(POSTGRES_SCOPE, POSTGRES_AUDIENCE, id="postgres"),
]
WORKLOAD_SUBJECT = "system:serviceaccount:default:workload"
TOKEN_LIFETIME_S = 3600  # the tenant default
# Keyless refetches an issuer's JWKS for an unknown kid at most this often
# (keyless.authority.federation._REFETCH_AFTER_S).
ISSUER_REFETCH_INTERVAL_S = 5


@dataclass(frozen=True)
class App:
    app_id: str
    object_id: str
    cert_file: Path | None = None
    secret: str | None = None


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIssuer]:
    with running_issuer(tmp_path_factory.mktemp("oidc-issuer")) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, issuer: OidcIssuer) -> Iterator[KeylessServer]:
    """A server of our own: it must trust the test issuer's CA from the start."""
    data_dir = tmp_path_factory.mktemp("keyless-compat") / "data"
    with running_server(data_dir, extra_args=["--federation-ca", str(issuer.ca_file)]) as server:
        yield server


@pytest.fixture(autouse=True)
def trust_only_keyless_ca(monkeypatch: pytest.MonkeyPatch, server: KeylessServer) -> None:
    """What `keyless env` sets. This machine points the CA variables at the system bundle,
    which does not hold the Keyless CA; Azure variables from outside must not leak in."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,::1")
    for name in [n for n in os.environ if n.startswith("AZURE_")]:
        monkeypatch.delenv(name)


def _object_id(server: KeylessServer, app_id: str) -> str:
    return str(server.cli_json("ad", "sp", "show", "--id", app_id)["id"])


@pytest.fixture(scope="module")
def cert_app(server: KeylessServer) -> App:
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", "compat-cert", "--create-cert"
    )
    return App(
        created["appId"],
        _object_id(server, created["appId"]),
        cert_file=Path(created["fileWithCertAndPrivateKey"]),
    )


@pytest.fixture(scope="module")
def secret_app(server: KeylessServer) -> App:
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", "compat-secret", "--secret")
    return App(created["appId"], _object_id(server, created["appId"]), secret=created["password"])


@pytest.fixture(scope="module")
def federated_app(server: KeylessServer, issuer: OidcIssuer) -> App:
    """No secret and no certificate: it trusts the test issuer's service-account token."""
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", "compat-workload")
    server.cli_json(
        "ad",
        "app",
        "federated-credential",
        "create",
        "--id",
        created["appId"],
        "--name",
        "test-issuer-workload",
        "--issuer",
        issuer.issuer,
        "--subject",
        WORKLOAD_SUBJECT,
    )
    return App(created["appId"], _object_id(server, created["appId"]))


# ------------------------------------------------------------------------------------- helpers


def discovery(server: KeylessServer) -> dict[str, Any]:
    with server.http() as http:
        response = http.get(f"/{server.tenant_id}/v2.0/.well-known/openid-configuration")
    response.raise_for_status()
    return dict(response.json())


def published_keys(server: KeylessServer) -> dict[str, Any]:
    """The JWKS, reached only through the discovery document's jwks_uri."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    response = httpx.get(discovery(server)["jwks_uri"], verify=context, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def assert_app_token(server: KeylessServer, token: str, app: App, audience: str) -> dict[str, Any]:
    """The token verifies with the published keys and carries the claims of an app token."""
    key_id = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(published_keys(server))[key_id]
    claims = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=audience,
        issuer=f"{server.endpoint}/{server.tenant_id}/v2.0",
    )
    assert claims["aud"] == audience
    assert claims["appid"] == app.app_id
    assert claims["tid"] == server.tenant_id
    assert claims["idtyp"] == "app"
    assert claims["oid"] == app.object_id
    assert claims["exp"] - claims["iat"] == TOKEN_LIFETIME_S
    return claims


def token_request(server: KeylessServer, **form: str) -> httpx.Response:
    with server.http() as http:
        return http.post(server.token_url(), data={"grant_type": "client_credentials", **form})


def federated_grant(server: KeylessServer, app: App, federated_token: str) -> httpx.Response:
    return token_request(
        server,
        client_id=app.app_id,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=federated_token,
        scope=MANAGEMENT_SCOPE,
    )


class FormRecorder:
    """An azure-core `raw_request_hook`: keeps the token requests' forms to look at what the
    package sent (the package itself is untouched)."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []

    def __call__(self, request: PipelineRequest[Any]) -> None:
        content = request.http_request.content
        if isinstance(content, dict) and "grant_type" in content:
            # MSAL hands the assertion over as bytes.
            self.forms.append(
                {k: v.decode() if isinstance(v, bytes) else v for k, v in content.items()}
            )

    def assertion_header(self) -> dict[str, Any]:
        (form,) = self.forms
        return dict(jwt.get_unverified_header(form["client_assertion"]))


class RecordingSession(requests.Session):
    """The `http_client` MSAL accepts: a requests session trusting the Keyless CA, keeping
    the token requests' forms."""

    def __init__(self, ca_file: Path) -> None:
        super().__init__()
        self.verify = str(ca_file)
        self.forms: list[dict[str, str]] = []

    def post(self, url: Any, data: Any = None, **kwargs: Any) -> requests.Response:
        if isinstance(data, dict):
            self.forms.append(dict(data))
        return super().post(url, data=data, **kwargs)


# ------------------------------------------------------------------------------ azure-identity


@pytest.mark.parametrize("send_certificate_chain", [False, True], ids=["thumbprint", "chain"])
def test_certificate_credential_gets_app_token(
    server: KeylessServer, cert_app: App, send_certificate_chain: bool
) -> None:
    recorder = FormRecorder()
    with CertificateCredential(
        server.tenant_id,
        cert_app.app_id,
        certificate_path=str(cert_app.cert_file),
        send_certificate_chain=send_certificate_chain,
        authority=server.endpoint,
        disable_instance_discovery=True,
        raw_request_hook=recorder,
    ) as credential:
        token = credential.get_token(MANAGEMENT_SCOPE)
    claims = assert_app_token(server, token.token, cert_app, MANAGEMENT_AUDIENCE)
    # The credential counts expires_in from its own clock when it sent the request.
    assert 0 <= claims["exp"] - token.expires_on <= 60
    assert ("x5c" in recorder.assertion_header()) is send_certificate_chain


ASYNC_CERTIFICATE_APP = """
import asyncio, json, sys
from azure.identity.aio import CertificateCredential

forms = []

def record(request):
    content = request.http_request.content
    if isinstance(content, dict) and "grant_type" in content:
        forms.append({k: v.decode() if isinstance(v, bytes) else v for k, v in content.items()})

async def main():
    tenant, client_id, cert, authority, scope = sys.argv[1:]
    async with CertificateCredential(
        tenant, client_id, certificate_path=cert, authority=authority, raw_request_hook=record
    ) as credential:
        token = await credential.get_token(scope)
    print(json.dumps({"token": token.token, "assertion": forms[0]["client_assertion"]}))

asyncio.run(main())
"""


def test_async_certificate_credential_padded_ps256_assertion_is_accepted(
    server: KeylessServer, cert_app: App
) -> None:
    """The aio credential signs PS256 and base64url-encodes with '=' padding.

    It runs as an app of its own: aiohttp builds its default TLS context when first imported,
    so trust has to be in the environment when the process starts, as it is for a real app.
    """
    env = clean_env(server.data_dir, SSL_CERT_FILE=str(server.ca_file))
    args = [server.tenant_id, cert_app.app_id, str(cert_app.cert_file), server.endpoint]
    result = subprocess.run(
        [sys.executable, "-c", ASYNC_CERTIFICATE_APP, *args, POSTGRES_SCOPE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sent = json.loads(result.stdout)
    assert_app_token(server, sent["token"], cert_app, POSTGRES_AUDIENCE)
    assert jwt.get_unverified_header(sent["assertion"])["alg"] == "PS256"
    assert "=" in sent["assertion"]


@pytest.mark.parametrize(("scope", "audience"), AZURE_SCOPES)
def test_client_secret_credential_gets_app_token(
    server: KeylessServer, secret_app: App, scope: str, audience: str
) -> None:
    with ClientSecretCredential(
        server.tenant_id,
        secret_app.app_id,
        str(secret_app.secret),
        authority=server.endpoint,
        disable_instance_discovery=True,
    ) as credential:
        token = credential.get_token(scope)
    assert_app_token(server, token.token, secret_app, audience)


def test_client_assertion_credential_exchanges_federated_token(
    server: KeylessServer, issuer: OidcIssuer, federated_app: App
) -> None:
    with ClientAssertionCredential(
        server.tenant_id,
        federated_app.app_id,
        lambda: issuer.issue(WORKLOAD_SUBJECT),
        authority=server.endpoint,
    ) as credential:
        token = credential.get_token(MANAGEMENT_SCOPE)
    assert_app_token(server, token.token, federated_app, MANAGEMENT_AUDIENCE)


_CHILD = """
import json, sys
import azure.identity
credential = getattr(azure.identity, sys.argv[1])()
print(json.dumps({"token": credential.get_token(sys.argv[2]).token}))
"""


@pytest.mark.parametrize("credential", ["WorkloadIdentityCredential", "DefaultAzureCredential"])
def test_workload_identity_from_environment_only(
    server: KeylessServer,
    issuer: OidcIssuer,
    federated_app: App,
    tmp_path: Path,
    credential: str,
) -> None:
    """A child process with only the variables `keyless env` and a Kubernetes-style
    projected token give it; the credential takes no arguments."""
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(issuer.issue(WORKLOAD_SUBJECT))
    env = server.azure_env(
        AZURE_CLIENT_ID=federated_app.app_id, AZURE_FEDERATED_TOKEN_FILE=str(token_file)
    )
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, credential, POSTGRES_SCOPE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    token = json.loads(child.stdout)["token"]
    assert_app_token(server, token, federated_app, POSTGRES_AUDIENCE)


# --------------------------------------------------------------------------------------- msal


def _certificate_parts(cert_file: Path) -> tuple[str, str, str]:
    """(private key PEM, certificate PEM, SHA-1 thumbprint hex) from a --create-cert file."""
    pem = cert_file.read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    private_key = serialization.load_pem_private_key(pem, password=None)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    der = certificate.public_bytes(serialization.Encoding.DER)
    return key_pem, cert_pem, hashlib.sha1(der).hexdigest().upper()


def msal_client_credentials(
    server: KeylessServer, app: App, credential: Any, scope: str
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """MSAL's answer and the forms it posted. A fresh app per case: MSAL caches identical
    error answers per instance."""
    with RecordingSession(server.ca_file) as session:
        client = msal.ConfidentialClientApplication(
            app.app_id,
            client_credential=credential,
            authority=f"{server.endpoint}/{server.tenant_id}",
            instance_discovery=False,
            http_client=session,
        )
        return client.acquire_token_for_client(scopes=[scope]), session.forms


def test_msal_client_secret(server: KeylessServer, secret_app: App) -> None:
    result, forms = msal_client_credentials(server, secret_app, secret_app.secret, MANAGEMENT_SCOPE)
    assert "access_token" in result, result.get("error_description")
    assert_app_token(server, result["access_token"], secret_app, MANAGEMENT_AUDIENCE)
    assert forms[-1]["client_secret"] == secret_app.secret


@pytest.mark.parametrize(
    ("form", "alg", "key_header"),
    [("thumbprint", "RS256", "x5t"), ("public_certificate", "PS256", "x5t#S256")],
)
def test_msal_certificate(
    server: KeylessServer, cert_app: App, form: str, alg: str, key_header: str
) -> None:
    assert cert_app.cert_file is not None
    key_pem, cert_pem, thumbprint = _certificate_parts(cert_app.cert_file)
    credential = {"private_key": key_pem}
    credential[form] = thumbprint if form == "thumbprint" else cert_pem
    result, forms = msal_client_credentials(server, cert_app, credential, POSTGRES_SCOPE)
    assert "access_token" in result, result.get("error_description")
    assert_app_token(server, result["access_token"], cert_app, POSTGRES_AUDIENCE)
    header = jwt.get_unverified_header(forms[-1]["client_assertion"])
    assert header["alg"] == alg
    assert key_header in header


# --------------------------------------------------------------------- verification and shape


def test_discovery_document_has_what_clients_need(server: KeylessServer) -> None:
    document = discovery(server)
    assert document["issuer"] == f"{server.endpoint}/{server.tenant_id}/v2.0"
    for field in (
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "device_authorization_endpoint",
    ):
        url = urlparse(document[field])
        assert url.scheme == "https", field
        assert url.path.strip("/"), field
    assert document["token_endpoint"] == server.token_url()


def test_token_verifies_from_discovery_with_pyjwt_and_joserfc(
    server: KeylessServer, secret_app: App
) -> None:
    """What a resource does: nothing but the discovery document and its jwks_uri."""
    response = token_request(
        server,
        client_id=secret_app.app_id,
        client_secret=str(secret_app.secret),
        scope=MANAGEMENT_SCOPE,
    )
    response.raise_for_status()
    token = response.json()["access_token"]
    document = discovery(server)
    jwks = published_keys(server)

    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=MANAGEMENT_AUDIENCE,
        issuer=document["issuer"],
        options={"require": ["exp", "iat", "iss", "aud"]},
    )
    assert claims["exp"] > time.time()

    verified = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": document["issuer"]},
        aud={"essential": True, "value": MANAGEMENT_AUDIENCE},
        exp={"essential": True},
    ).validate(verified.claims)
    assert verified.claims == claims

    header, payload, signature = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged["appid"] = "00000000-0000-0000-0000-000000000000"
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{header}.{forged_payload}.{signature}", key, algorithms=["RS256"])


def test_token_response_shape(server: KeylessServer, secret_app: App) -> None:
    before = int(time.time())
    response = token_request(
        server,
        client_id=secret_app.app_id,
        client_secret=str(secret_app.secret),
        scope=POSTGRES_SCOPE,
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["access_token"], str)
    for field in ("expires_in", "ext_expires_in", "expires_on", "refresh_in"):
        assert type(body[field]) is int, field
    assert body["expires_in"] == TOKEN_LIFETIME_S
    assert body["refresh_in"] == body["expires_in"] // 2
    assert before + body["expires_in"] <= body["expires_on"] <= time.time() + body["expires_in"]


# ---------------------------------------------------------------------------------- federation


def test_federated_issuer_key_rotation_is_followed(
    server: KeylessServer, issuer: OidcIssuer, federated_app: App
) -> None:
    """A token signed with a kid Keyless has not seen makes it fetch the issuer's JWKS again."""
    response = federated_grant(server, federated_app, issuer.issue(WORKLOAD_SUBJECT))
    assert response.status_code == 200, response.text
    old_kid = issuer.kid
    jwks_fetches = issuer.requests.count("/jwks")

    new_kid = issuer.rotate_key()
    assert new_kid != old_kid
    time.sleep(ISSUER_REFETCH_INTERVAL_S + 0.5)
    response = federated_grant(server, federated_app, issuer.issue(WORKLOAD_SUBJECT))
    assert response.status_code == 200, response.text
    assert issuer.requests.count("/jwks") == jwks_fetches + 1
    assert_app_token(server, response.json()["access_token"], federated_app, MANAGEMENT_AUDIENCE)


# --------------------------------------------------------------------------------------- audit


def test_every_grant_is_audited_without_credentials(
    server: KeylessServer, issuer: OidcIssuer, secret_app: App, cert_app: App, federated_app: App
) -> None:
    secret_response = token_request(
        server,
        client_id=secret_app.app_id,
        client_secret=str(secret_app.secret),
        scope=MANAGEMENT_SCOPE,
    )
    recorder = FormRecorder()
    with CertificateCredential(
        server.tenant_id,
        cert_app.app_id,
        certificate_path=str(cert_app.cert_file),
        authority=server.endpoint,
        disable_instance_discovery=True,
        raw_request_hook=recorder,
    ) as credential:
        certificate_token = credential.get_token(POSTGRES_SCOPE)
    federated_token = issuer.issue(WORKLOAD_SUBJECT)
    federated_response = federated_grant(server, federated_app, federated_token)
    assert secret_response.status_code == federated_response.status_code == 200

    grants = [
        (secret_response.json()["access_token"], secret_app, MANAGEMENT_AUDIENCE, "client_secret"),
        (certificate_token.token, cert_app, POSTGRES_AUDIENCE, "certificate"),
        (
            federated_response.json()["access_token"],
            federated_app,
            MANAGEMENT_AUDIENCE,
            "federated",
        ),
    ]
    records = server.audit(action="token.issue")
    for token, app, audience, method in grants:
        token_id = jwt.decode(token, options={"verify_signature": False})["jti"]
        (record,) = [r for r in records if r["details"].get("tokenId") == token_id]
        assert record["result"] == "granted"
        assert record["actor"] == app.app_id
        assert record["target"] == audience
        assert record["details"]["method"] == method
        assert record["details"]["objectId"] == app.object_id

    everything = json.dumps(server.audit()) + server.log_path.read_text()
    credentials: list[str] = [str(secret_app.secret), federated_token]
    credentials += [form["client_assertion"] for form in recorder.forms]
    for token, *_ in grants:
        credentials += [token, token.rsplit(".", 1)[1]]
    for value in credentials:
        assert value not in everything
