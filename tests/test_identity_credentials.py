"""keyless.identity against a real Keyless server (tests/support/server.py) over HTTPS.

Every token is verified the way a resource would verify it (the discovery document's JWKS).
Federated credentials use the real OIDC issuer of tests/support/oidc_issuer.py, so the server
is started with `--federation-ca`. Requests are counted with the credentials' `request_hook`
(an httpx event hook on the credential's own client), and the server's audit log confirms how
many tokens were really issued.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import pytest
from azure.core.pipeline import AsyncPipeline, Pipeline
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    BearerTokenCredentialPolicy,
)
from azure.core.pipeline.transport import AioHttpTransport, RequestsTransport
from azure.core.rest import HttpRequest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyless.identity import (
    AccessToken,
    CertificateCredential,
    ChainedCredential,
    ClientAuthenticationError,
    ClientSecretCredential,
    CredentialUnavailableError,
    DefaultCredential,
    DeveloperCredential,
    EnvironmentCredential,
    WorkloadIdentityCredential,
    clear_token_cache,
)
from keyless.identity import aio as identity_aio
from tests.support.oidc_issuer import OidcIssuer, running_issuer
from tests.support.server import KEYLESS, KeylessServer, running_server
from tests.test_identity_transport import LocalHttpServer, Seen

MANAGEMENT_SCOPE = "https://management.azure.com/.default"
MANAGEMENT_AUDIENCE = "api://keyless/management"
POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
POSTGRES_AUDIENCE = "api://keyless/postgres"
WORKLOAD_SUBJECT = "system:serviceaccount:default:identity-tests"
SHORT_LIFETIME_S = 10


@dataclass(frozen=True)
class App:
    app_id: str
    object_id: str
    cert_file: Path | None = None
    secret: str | None = None


class Requests:
    """A `request_hook`: records each HTTP request a credential sends."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> None:
        with self._lock:
            self.sent.append(request)

    def __len__(self) -> int:
        return len(self.sent)

    def forms(self) -> list[dict[str, str]]:
        return [dict(parse_qsl(r.content.decode())) for r in self.sent]


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIssuer]:
    with running_issuer(tmp_path_factory.mktemp("identity-issuer")) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, issuer: OidcIssuer) -> Iterator[KeylessServer]:
    data_dir = tmp_path_factory.mktemp("identity") / "data"
    with running_server(data_dir, extra_args=["--federation-ca", str(issuer.ca_file)]) as server:
        yield server


@pytest.fixture(scope="module")
def short_server(
    tmp_path_factory: pytest.TempPathFactory, issuer: OidcIssuer
) -> Iterator[KeylessServer]:
    """A server of our own whose tokens live 10 s (refresh_in 5 s), to watch refreshes."""
    data_dir = tmp_path_factory.mktemp("identity-short") / "data"
    with running_server(data_dir, extra_args=["--federation-ca", str(issuer.ca_file)]) as server:
        server.cli("tenant", "update", "--token-lifetime", f"{SHORT_LIFETIME_S}s")
        yield server


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Only what a test sets decides which credential applies; PATH has no `keyless`."""
    for name in list(os.environ):
        if (
            name.startswith(("AZURE_", "IDENTITY_", "MSI_", "KEYLESS_"))
            or name
            in (
                "REQUESTS_CA_BUNDLE",
                "SSL_CERT_FILE",
                "CURL_CA_BUNDLE",
            )
            or "proxy" in name.lower()
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,::1")
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", f"{empty_bin}:/usr/bin:/bin")
    clear_token_cache()
    yield
    clear_token_cache()


def keyless_env(monkeypatch: pytest.MonkeyPatch, server: KeylessServer) -> None:
    """What `eval "$(keyless env)"` exports."""
    for name, value in server.azure_env().items():
        if name.startswith(("AZURE_", "KEYLESS_")) or name in (
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
        ):
            monkeypatch.setenv(name, value)


@pytest.fixture
def trust_keyless(monkeypatch: pytest.MonkeyPatch, server: KeylessServer) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))


def _object_id(server: KeylessServer, app_id: str) -> str:
    return str(server.cli_json("ad", "sp", "show", "--id", app_id)["id"])


def make_secret_app(server: KeylessServer, name: str) -> App:
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", name, "--secret")
    return App(created["appId"], _object_id(server, created["appId"]), secret=created["password"])


def make_federated_app(server: KeylessServer, issuer: OidcIssuer, name: str) -> App:
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", name)
    server.cli_json(
        "ad",
        "app",
        "federated-credential",
        "create",
        "--id",
        created["appId"],
        "--name",
        "identity-tests",
        "--issuer",
        issuer.issuer,
        "--subject",
        WORKLOAD_SUBJECT,
    )
    return App(created["appId"], _object_id(server, created["appId"]))


@pytest.fixture(scope="module")
def secret_app(server: KeylessServer) -> App:
    return make_secret_app(server, "identity-secret")


@pytest.fixture(scope="module")
def cert_app(server: KeylessServer) -> App:
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", "identity-cert", "--create-cert"
    )
    return App(
        created["appId"],
        _object_id(server, created["appId"]),
        cert_file=Path(created["fileWithCertAndPrivateKey"]),
    )


@pytest.fixture(scope="module")
def federated_app(server: KeylessServer, issuer: OidcIssuer) -> App:
    return make_federated_app(server, issuer, "identity-workload")


# ------------------------------------------------------------------------------------ helpers


def verify(server: KeylessServer, token: str, audience: str) -> dict[str, Any]:
    """As a resource does: keys from the discovery document's jwks_uri."""
    with server.http() as http:
        document = http.get(f"/{server.tenant_id}/v2.0/.well-known/openid-configuration").json()
        keys = http.get(document["jwks_uri"]).json()
    key = jwt.PyJWKSet.from_dict(keys)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer=document["issuer"]
    )
    return claims


def assert_app_token(server: KeylessServer, token: str, app: App, audience: str) -> None:
    claims = verify(server, token, audience)
    assert claims["appid"] == app.app_id
    assert claims["oid"] == app.object_id
    assert claims["idtyp"] == "app"


def secret_credential(server: KeylessServer, app: App, **kwargs: Any) -> ClientSecretCredential:
    return ClientSecretCredential(
        server.tenant_id, app.app_id, str(app.secret), authority=server.endpoint, **kwargs
    )


def issued_tokens(server: KeylessServer, app: App) -> int:
    return len(server.audit(action="token.issue", actor=app.app_id))


# ----------------------------------------------------------------------- secret / certificate


@pytest.mark.usefixtures("trust_keyless")
@pytest.mark.parametrize(
    ("scope", "audience"),
    [(MANAGEMENT_SCOPE, MANAGEMENT_AUDIENCE), (POSTGRES_SCOPE, POSTGRES_AUDIENCE)],
)
def test_client_secret_credential(
    server: KeylessServer, secret_app: App, scope: str, audience: str
) -> None:
    sent = Requests()
    with secret_credential(server, secret_app, request_hook=sent) as credential:
        info = credential.get_token_info(scope)
        token = credential.get_token(scope)
    assert_app_token(server, info.token, secret_app, audience)
    assert token == AccessToken(info.token, info.expires_on)
    claims = verify(server, info.token, audience)
    assert info.expires_on == claims["exp"]
    assert info.refresh_on is not None
    assert abs(info.refresh_on - (claims["iat"] + (claims["exp"] - claims["iat"]) / 2)) <= 2
    (form,) = sent.forms()
    assert sent.sent[0].url == server.token_url()
    assert form == {
        "grant_type": "client_credentials",
        "client_id": secret_app.app_id,
        "client_secret": str(secret_app.secret),
        "scope": scope,
    }


@pytest.mark.usefixtures("trust_keyless")
def test_certificate_credential_assertion(server: KeylessServer, cert_app: App) -> None:
    assert cert_app.cert_file is not None
    sent = Requests()
    with CertificateCredential(
        server.tenant_id,
        cert_app.app_id,
        str(cert_app.cert_file),
        authority=server.endpoint,
        request_hook=sent,
    ) as credential:
        first = credential.get_token(POSTGRES_SCOPE)
        second = credential.get_token(MANAGEMENT_SCOPE)
    assert_app_token(server, first.token, cert_app, POSTGRES_AUDIENCE)
    assert_app_token(server, second.token, cert_app, MANAGEMENT_AUDIENCE)

    certificate = x509.load_pem_x509_certificate(cert_app.cert_file.read_bytes())
    der = certificate.public_bytes(serialization.Encoding.DER)
    x5t = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    assertions = [form["client_assertion"] for form in sent.forms()]
    assert len(assertions) == 2
    for form in sent.forms():
        assert form["client_assertion_type"] == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        )
        assert "client_secret" not in form
    jtis = set()
    for assertion in assertions:
        header = jwt.get_unverified_header(assertion)
        assert header["alg"] == "RS256"
        assert header["x5t"] == x5t
        claims = jwt.decode(
            assertion,
            certificate.public_key(),  # type: ignore[arg-type]
            algorithms=["RS256"],
            audience=server.token_url(),
        )
        assert claims["iss"] == claims["sub"] == cert_app.app_id
        assert 0 < claims["exp"] - claims["iat"] <= 600
        jtis.add(claims["jti"])
    assert len(jtis) == 2


@pytest.mark.usefixtures("trust_keyless")
def test_certificate_from_bytes_and_bad_files(
    server: KeylessServer, cert_app: App, tmp_path: Path
) -> None:
    assert cert_app.cert_file is not None
    pem = cert_app.cert_file.read_bytes()
    credential = CertificateCredential(
        server.tenant_id, cert_app.app_id, certificate_data=pem, authority=server.endpoint
    )
    assert_app_token(
        server, credential.get_token(MANAGEMENT_SCOPE).token, cert_app, MANAGEMENT_AUDIENCE
    )

    cert_only = tmp_path / "cert-only.pem"
    cert_only.write_bytes(
        pem[pem.index(b"-----BEGIN CERTIFICATE") :].split(b"-----END CERTIFICATE-----")[0]
        + b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(ValueError, match="has no private key"):
        CertificateCredential(
            server.tenant_id, cert_app.app_id, str(cert_only), authority=server.endpoint
        )
    with pytest.raises(ValueError, match="cannot read certificate_path"):
        CertificateCredential(
            server.tenant_id,
            cert_app.app_id,
            str(tmp_path / "missing.pem"),
            authority=server.endpoint,
        )


def test_async_secret_and_certificate(
    server: KeylessServer, secret_app: App, cert_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyless_env(monkeypatch, server)  # authority from AZURE_AUTHORITY_HOST this time

    async def main() -> tuple[str, str]:
        async with (
            identity_aio.ClientSecretCredential(
                server.tenant_id, secret_app.app_id, str(secret_app.secret)
            ) as secret_credential,
            identity_aio.CertificateCredential(
                server.tenant_id, cert_app.app_id, str(cert_app.cert_file)
            ) as cert_credential,
        ):
            secret_token = await secret_credential.get_token(MANAGEMENT_SCOPE)
            cert_info = await cert_credential.get_token_info(POSTGRES_SCOPE)
            return secret_token.token, cert_info.token

    secret_token, cert_token = asyncio.run(main())
    assert_app_token(server, secret_token, secret_app, MANAGEMENT_AUDIENCE)
    assert_app_token(server, cert_token, cert_app, POSTGRES_AUDIENCE)


@pytest.mark.usefixtures("trust_keyless")
def test_wrong_secret_error_carries_server_error_not_the_secret(
    server: KeylessServer, secret_app: App
) -> None:
    wrong = "wrong-" + str(secret_app.secret)
    credential = ClientSecretCredential(
        server.tenant_id, secret_app.app_id, wrong, authority=server.endpoint
    )
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token(MANAGEMENT_SCOPE)
    error = caught.value
    assert not isinstance(error, CredentialUnavailableError)
    assert error.error == "invalid_client"
    assert error.error_description
    assert error.status_code in (400, 401)
    assert error.error_description in str(error)
    assert "ClientSecretCredential" in str(error)
    assert secret_app.app_id in str(error)  # which client, so the user can check it
    for text in (str(error), repr(error), str(error.error_description)):
        assert wrong not in text
        assert str(secret_app.secret) not in text


def test_authority_must_be_https(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="not https") as caught:
        ClientSecretCredential("tenant", "client", "secret", authority="http://localhost:8443")
    assert "keyless env" in str(caught.value)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://localhost:8443")
    with pytest.raises(ValueError, match="AZURE_AUTHORITY_HOST is 'http://localhost:8443'"):
        ClientSecretCredential("tenant", "client", "secret")
    monkeypatch.delenv("AZURE_AUTHORITY_HOST")
    with pytest.raises(ValueError, match="set AZURE_AUTHORITY_HOST"):
        ClientSecretCredential("tenant", "client", "secret")
    with pytest.raises(ValueError, match="is not a tenant ID"):
        ClientSecretCredential("../evil", "client", "secret", authority="https://localhost")


# -------------------------------------------------------------------------- workload identity


def test_workload_identity_from_environment(
    server: KeylessServer,
    issuer: OidcIssuer,
    federated_app: App,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(issuer.issue(WORKLOAD_SUBJECT))
    keyless_env(monkeypatch, server)
    monkeypatch.setenv("AZURE_CLIENT_ID", federated_app.app_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    sent = Requests()
    credential = WorkloadIdentityCredential(request_hook=sent)
    token = credential.get_token(POSTGRES_SCOPE)
    assert_app_token(server, token.token, federated_app, POSTGRES_AUDIENCE)
    assert sent.forms()[0]["client_assertion"] == token_file.read_text()

    # The file is read for each token request: a rotated file is what goes out next.
    rotated = issuer.issue(WORKLOAD_SUBJECT)
    token_file.write_text(rotated + "\n")
    clear_token_cache()
    assert_app_token(
        server, credential.get_token(POSTGRES_SCOPE).token, federated_app, POSTGRES_AUDIENCE
    )
    assert sent.forms()[1]["client_assertion"] == rotated


def test_workload_identity_async(
    server: KeylessServer,
    issuer: OidcIssuer,
    federated_app: App,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(issuer.issue(WORKLOAD_SUBJECT))
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))  # the other trust variable

    async def main() -> str:
        async with identity_aio.WorkloadIdentityCredential(
            server.tenant_id, federated_app.app_id, str(token_file), authority=server.endpoint
        ) as credential:
            return (await credential.get_token(MANAGEMENT_SCOPE)).token

    assert_app_token(server, asyncio.run(main()), federated_app, MANAGEMENT_AUDIENCE)


def test_workload_identity_errors(
    server: KeylessServer,
    issuer: OidcIssuer,
    federated_app: App,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="set AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE"):
        WorkloadIdentityCredential(tenant_id=server.tenant_id, authority=server.endpoint)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    expired = issuer.issue(WORKLOAD_SUBJECT, lifetime=-900, iat=int(time.time()) - 1000)
    token_file = tmp_path / "token"
    token_file.write_text(expired)
    credential = WorkloadIdentityCredential(
        server.tenant_id, federated_app.app_id, str(token_file), authority=server.endpoint
    )
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token(MANAGEMENT_SCOPE)
    assert caught.value.error == "invalid_client"
    assert "federated credential" in str(caught.value)
    assert expired not in str(caught.value)
    token_file.unlink()
    with pytest.raises(ClientAuthenticationError, match="cannot read the federated token file"):
        credential.get_token(MANAGEMENT_SCOPE)


# ------------------------------------------------------------------------------------ caching


@pytest.mark.usefixtures("trust_keyless")
def test_cache_hit_makes_no_request_and_is_shared(server: KeylessServer, secret_app: App) -> None:
    sent = Requests()
    credential = secret_credential(server, secret_app, request_hook=sent)
    first = credential.get_token(MANAGEMENT_SCOPE)
    assert len(sent) == 1
    assert credential.get_token(MANAGEMENT_SCOPE) == first
    assert credential.get_token_info(MANAGEMENT_SCOPE).token == first.token
    assert len(sent) == 1
    # Another credential for the same identity shares the process-wide cache.
    other_sent = Requests()
    assert (
        secret_credential(server, secret_app, request_hook=other_sent).get_token(MANAGEMENT_SCOPE)
        == first
    )
    assert len(other_sent) == 0
    # Another scope is another token.
    credential.get_token(POSTGRES_SCOPE)
    assert len(sent) == 2
    # claims (a CAE challenge) always goes to the server.
    challenged = credential.get_token(MANAGEMENT_SCOPE, claims='{"access_token":{}}')
    assert len(sent) == 3
    assert sent.forms()[-1]["claims"] == '{"access_token":{}}'
    assert_app_token(server, challenged.token, secret_app, MANAGEMENT_AUDIENCE)


@pytest.mark.usefixtures("trust_keyless")
def test_warm_get_token_is_cheap(server: KeylessServer, secret_app: App) -> None:
    credential = secret_credential(server, secret_app)
    credential.get_token(MANAGEMENT_SCOPE)
    rounds = 20_000
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            credential.get_token(MANAGEMENT_SCOPE)
        best = min(best, (time.perf_counter() - started) / rounds)
    # Target < 10 µs; the bound here is loose because benchmarks may share this machine.
    assert best < 50e-6, f"warm get_token took {best * 1e6:.1f} µs"


@pytest.mark.usefixtures("trust_keyless")
def test_fifty_threads_cause_one_request(server: KeylessServer) -> None:
    app = make_secret_app(server, "identity-threads")
    issued_before = issued_tokens(server, app)
    sent = Requests()
    credential = secret_credential(server, app, request_hook=sent)
    barrier = threading.Barrier(50)
    tokens: list[str] = []

    def ask() -> None:
        barrier.wait(10)
        tokens.append(credential.get_token(MANAGEMENT_SCOPE).token)

    threads = [threading.Thread(target=ask) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(tokens) == 50
    assert len(set(tokens)) == 1
    assert len(sent) == 1
    assert issued_tokens(server, app) == issued_before + 1


def test_fifty_tasks_cause_one_request(
    server: KeylessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_secret_app(server, "identity-tasks")
    sent = Requests()

    async def main() -> list[AccessToken]:
        async with identity_aio.ClientSecretCredential(
            server.tenant_id,
            app.app_id,
            str(app.secret),
            authority=server.endpoint,
            request_hook=sent,
        ) as credential:
            return await asyncio.gather(
                *(credential.get_token(MANAGEMENT_SCOPE) for _ in range(50))
            )

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    tokens = asyncio.run(main())
    assert len({t.token for t in tokens}) == 1
    assert len(sent) == 1


def test_token_is_refreshed_when_refresh_on_passes(
    short_server: KeylessServer,
    issuer: OidcIssuer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Tokens of 10 s (refresh_in 5 s): a call after refresh_on gets a new token, and the
    workload identity credential re-reads its (rotated) federated token file to get it."""
    server = short_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    secret_app = make_secret_app(server, "refresh-secret")
    federated_app = make_federated_app(server, issuer, "refresh-workload")
    token_file = tmp_path / "token"
    token_file.write_text(issuer.issue(WORKLOAD_SUBJECT))
    secret_sent, workload_sent = Requests(), Requests()
    secret = secret_credential(server, secret_app, request_hook=secret_sent)
    workload = WorkloadIdentityCredential(
        server.tenant_id,
        federated_app.app_id,
        str(token_file),
        authority=server.endpoint,
        request_hook=workload_sent,
    )

    first_secret = secret.get_token_info(MANAGEMENT_SCOPE)
    first_workload = workload.get_token_info(MANAGEMENT_SCOPE)
    for info in (first_secret, first_workload):
        assert info.refresh_on is not None
        assert info.expires_on - info.refresh_on == pytest.approx(SHORT_LIFETIME_S / 2, abs=2)
    rotated = issuer.issue(WORKLOAD_SUBJECT)
    token_file.write_text(rotated)

    assert secret.get_token(MANAGEMENT_SCOPE).token == first_secret.token  # not yet due
    assert len(secret_sent) == 1
    assert first_secret.refresh_on is not None
    time.sleep(max(0.0, first_secret.refresh_on + 1.2 - time.time()))

    second_secret = secret.get_token(MANAGEMENT_SCOPE)
    second_workload = workload.get_token(MANAGEMENT_SCOPE)
    assert second_secret.token != first_secret.token
    assert second_workload.token != first_workload.token
    assert len(secret_sent) == len(workload_sent) == 2
    assert workload_sent.forms()[1]["client_assertion"] == rotated
    assert_app_token(server, second_secret.token, secret_app, MANAGEMENT_AUDIENCE)
    assert_app_token(server, second_workload.token, federated_app, MANAGEMENT_AUDIENCE)
    assert secret.get_token(MANAGEMENT_SCOPE) == second_secret
    assert len(secret_sent) == 2


# -------------------------------------------------------------------------- DefaultCredential


def test_default_credential_picks_environment_secret(
    server: KeylessServer, secret_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyless_env(monkeypatch, server)
    monkeypatch.setenv("AZURE_CLIENT_ID", secret_app.app_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", str(secret_app.secret))
    credential = DefaultCredential()
    assert_app_token(
        server, credential.get_token(MANAGEMENT_SCOPE).token, secret_app, MANAGEMENT_AUDIENCE
    )
    assert isinstance(credential.selected, EnvironmentCredential)


def test_default_credential_picks_environment_certificate_over_workload(
    server: KeylessServer,
    issuer: OidcIssuer,
    cert_app: App,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(issuer.issue(WORKLOAD_SUBJECT))
    keyless_env(monkeypatch, server)
    monkeypatch.setenv("AZURE_CLIENT_ID", cert_app.app_id)
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(cert_app.cert_file))
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    credential = DefaultCredential()
    assert_app_token(
        server, credential.get_token(POSTGRES_SCOPE).token, cert_app, POSTGRES_AUDIENCE
    )
    assert isinstance(credential.selected, EnvironmentCredential)


def test_default_credential_picks_workload_identity(
    server: KeylessServer,
    issuer: OidcIssuer,
    federated_app: App,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(issuer.issue(WORKLOAD_SUBJECT))
    keyless_env(monkeypatch, server)
    monkeypatch.setenv("AZURE_CLIENT_ID", federated_app.app_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    credential = DefaultCredential()
    token = credential.get_token(MANAGEMENT_SCOPE)
    assert_app_token(server, token.token, federated_app, MANAGEMENT_AUDIENCE)
    assert isinstance(credential.selected, WorkloadIdentityCredential)
    assert credential.get_token(MANAGEMENT_SCOPE) == token  # remembered and cached

    async def main() -> str:
        async with identity_aio.DefaultCredential() as async_credential:
            info = await async_credential.get_token_info(POSTGRES_SCOPE)
            assert isinstance(async_credential.selected, identity_aio.WorkloadIdentityCredential)
            return info.token

    assert_app_token(server, asyncio.run(main()), federated_app, POSTGRES_AUDIENCE)


class NoNetwork:
    """Records any attempt to open a connection or start a process, and refuses it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        real_connect = socket.socket.connect

        def connect(sock: socket.socket, address: Any) -> None:
            if sock.family == socket.AF_UNIX:
                return real_connect(sock, address)
            self.attempts.append(f"connect {address}")
            raise AssertionError(f"a connection to {address} was attempted")

        def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            self.attempts.append(f"create_connection {address}")
            raise AssertionError(f"a connection to {address} was attempted")

        def popen(*args: Any, **kwargs: Any) -> Any:
            self.attempts.append(f"process {args[:1]}")
            raise AssertionError("a process was started")

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "create_connection", create_connection)
        monkeypatch.setattr(subprocess, "Popen", popen)


def test_default_credential_with_nothing_configured_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    network = NoNetwork(monkeypatch)
    sent = Requests()
    credential = DefaultCredential(request_hook=sent)
    with pytest.raises(CredentialUnavailableError) as caught:
        credential.get_token(MANAGEMENT_SCOPE)
    message = str(caught.value)
    # No probe of any kind: no request, no socket, no process.
    assert len(sent) == 0
    assert network.attempts == []
    lines = message.splitlines()
    assert lines[0] == f"DefaultCredential could not get a token for {MANAGEMENT_SCOPE!r}:"
    expected = {
        "EnvironmentCredential": [
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_CERTIFICATE_PATH",
        ],
        "WorkloadIdentityCredential": ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID"],
        "ManagedIdentityCredential": [
            "IDENTITY_ENDPOINT",
            "keyless app run",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        ],
        "DeveloperCredential": ["not on PATH", "keyless login"],
    }
    assert [line.strip().split(":")[0] for line in lines[1:]] == list(expected)
    for line, (name, hints) in zip(lines[1:], expected.items(), strict=True):
        for hint in hints:
            assert hint in line, (name, hint)

    async def main() -> str:
        async with identity_aio.DefaultCredential(request_hook=sent) as async_credential:
            with pytest.raises(CredentialUnavailableError) as caught:
                await async_credential.get_token_info(MANAGEMENT_SCOPE)
        return str(caught.value)

    assert asyncio.run(main()) == message
    assert network.attempts == []


def test_default_credential_stops_at_a_configured_credential_that_fails(
    server: KeylessServer, secret_app: App, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A wrong secret must not fall through to the developer's own identity."""
    standin = developer_standin(tmp_path, "ok", "unused")
    monkeypatch.setenv("PATH", f"{standin.parent}:{os.environ['PATH']}")
    keyless_env(monkeypatch, server)
    wrong = "not-the-secret-" + str(secret_app.secret)[:12]
    monkeypatch.setenv("AZURE_CLIENT_ID", secret_app.app_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", wrong)
    with pytest.raises(ClientAuthenticationError) as caught:
        DefaultCredential().get_token(MANAGEMENT_SCOPE)
    error = caught.value
    assert not isinstance(error, CredentialUnavailableError)
    assert error.error == "invalid_client"
    message = str(error)
    assert "EnvironmentCredential: ClientSecretCredential:" in message
    assert (
        "WorkloadIdentityCredential, ManagedIdentityCredential, DeveloperCredential: not tried, "
        "because EnvironmentCredential applies here and failed"
    ) in message
    assert wrong not in message
    assert not (tmp_path / "standin-calls.jsonl").exists()


def test_chained_credential_accepts_any_token_credential(
    server: KeylessServer, secret_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keyless credentials and azure-identity ones mix in one chain (duck-typed protocol)."""
    from azure.identity import ClientSecretCredential as AzureClientSecretCredential

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    azure = AzureClientSecretCredential(
        server.tenant_id,
        secret_app.app_id,
        str(secret_app.secret),
        authority=server.endpoint,
        disable_instance_discovery=True,
    )
    chain = ChainedCredential(EnvironmentCredential(), azure)
    info = chain.get_token_info(MANAGEMENT_SCOPE)
    assert chain.selected is azure
    assert_app_token(server, info.token, secret_app, MANAGEMENT_AUDIENCE)


# ------------------------------------------------------------------ azure-core pipeline


def test_azure_core_bearer_policy_uses_the_credential(
    server: KeylessServer, secret_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any Azure SDK client takes a Keyless credential: its BearerTokenCredentialPolicy
    authorises requests to a local HTTP server (run here) that records the header."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    sent = Requests()
    credential = secret_credential(server, secret_app, request_hook=sent)

    def ok(_: Seen) -> tuple[int, dict[str, str], Any]:
        return 200, {}, {"value": "ok"}

    with LocalHttpServer(ok) as resource:
        policy = BearerTokenCredentialPolicy(credential, MANAGEMENT_SCOPE)  # type: ignore[arg-type]
        with Pipeline(transport=RequestsTransport(), policies=[policy]) as pipeline:
            for _ in range(3):
                request = HttpRequest("GET", f"{resource.url}/items")
                response = pipeline.run(request, enforce_https=False).http_response
                assert response.status_code == 200

        async def run_async() -> None:
            async with identity_aio.ClientSecretCredential(
                server.tenant_id,
                secret_app.app_id,
                str(secret_app.secret),
                authority=server.endpoint,
                request_hook=sent,
            ) as async_credential:
                policy = AsyncBearerTokenCredentialPolicy(
                    async_credential,  # type: ignore[arg-type]
                    MANAGEMENT_SCOPE,
                )
                async with AsyncPipeline(
                    transport=AioHttpTransport(), policies=[policy]
                ) as pipeline:
                    request = HttpRequest("GET", f"{resource.url}/items")
                    result = await pipeline.run(request, enforce_https=False)
                    assert result.http_response.status_code == 200

        asyncio.run(run_async())
        headers = [seen.headers["authorization"] for seen in resource.seen]
    token = credential.get_token(MANAGEMENT_SCOPE).token
    assert headers == [f"Bearer {token}"] * 4
    assert len(sent) == 1  # three sync requests and one async: one token request in all
    assert_app_token(server, token, secret_app, MANAGEMENT_AUDIENCE)


# ------------------------------------------------------------------------ DeveloperCredential

_STANDIN = '''#!{python}
"""A stand-in for the real `keyless` CLI, which is being built: it answers
`keyless account get-access-token --resource R --output json` with the az-shaped JSON."""
import json, sys
with open({calls!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
mode, payload = {mode!r}, {payload!r}
if mode == "ok":
    print(payload)
elif mode == "not-signed-in":
    print("error: you are not signed in; run `keyless login`", file=sys.stderr)
    sys.exit(1)
else:
    print(payload, file=sys.stderr)
    sys.exit(2)
'''


def developer_standin(directory: Path, mode: str, payload: str) -> Path:
    """An executable `keyless` in `directory/bin` that logs its arguments."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "keyless"
    script.write_text(
        _STANDIN.format(
            python=sys.executable,
            calls=str(directory / "standin-calls.jsonl"),
            mode=mode,
            payload=payload,
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def az_shaped(token: str, tenant: str) -> str:
    expires_on = int(jwt.decode(token, options={"verify_signature": False})["exp"])
    return json.dumps(
        {
            "accessToken": token,
            "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires_on)),
            "expires_on": expires_on,
            "subscription": "00000000-0000-0000-0000-000000000000",
            "tenant": tenant,
            "tokenType": "Bearer",
        }
    )


def test_developer_credential_with_a_standin_cli(
    server: KeylessServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The `keyless` on PATH here is a stand-in script (the real `keyless account
    get-access-token` is being built) that prints, in the az shape, a real user token that
    `keyless login` got from the test server."""
    user_token = server.admin_token()
    standin = developer_standin(tmp_path, "ok", az_shaped(user_token, server.tenant_id))
    monkeypatch.setenv("PATH", f"{standin.parent}:{os.environ['PATH']}")
    credential = DeveloperCredential()
    token = credential.get_token(MANAGEMENT_SCOPE)
    assert token.token == user_token
    claims = verify(server, token.token, MANAGEMENT_AUDIENCE)
    assert claims["idtyp"] == "user"
    assert token.expires_on == claims["exp"]
    assert credential.get_token(MANAGEMENT_SCOPE) == token  # cached: the CLI ran once

    async def main() -> AccessToken:
        async with identity_aio.DeveloperCredential() as async_credential:
            return await async_credential.get_token(POSTGRES_SCOPE)

    assert asyncio.run(main()).token == user_token
    calls = [
        json.loads(line) for line in (tmp_path / "standin-calls.jsonl").read_text().splitlines()
    ]
    assert calls == [
        [
            "account",
            "get-access-token",
            "--resource",
            "https://management.azure.com",
            "--output",
            "json",
        ],
        [
            "account",
            "get-access-token",
            "--resource",
            "https://ossrdbms-aad.database.windows.net",
            "--output",
            "json",
        ],
    ]

    # And DefaultCredential falls through to it when nothing else is configured.
    clear_token_cache()
    default = DefaultCredential()
    assert default.get_token(MANAGEMENT_SCOPE).token == user_token
    assert isinstance(default.selected, DeveloperCredential)


def test_developer_credential_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(CredentialUnavailableError, match="`keyless` command is not on PATH"):
        DeveloperCredential().get_token(MANAGEMENT_SCOPE)

    not_signed_in = developer_standin(tmp_path / "a", "not-signed-in", "")
    monkeypatch.setenv("PATH", f"{not_signed_in.parent}:/usr/bin:/bin")
    with pytest.raises(
        CredentialUnavailableError, match="you are not signed in: run `keyless login`"
    ):
        DeveloperCredential().get_token(MANAGEMENT_SCOPE)

    leaked = '{"accessToken": "eyJ.leaked.token", "oops": true}'
    broken = developer_standin(tmp_path / "b", "fail", "boom " + leaked)
    monkeypatch.setenv("PATH", f"{broken.parent}:/usr/bin:/bin")
    with pytest.raises(ClientAuthenticationError) as caught:
        DeveloperCredential().get_token(MANAGEMENT_SCOPE)
    assert "exit status 2" in str(caught.value)
    assert "eyJ.leaked.token" not in str(caught.value)

    garbage = developer_standin(tmp_path / "c", "ok", "not json, but eyJ.another.token")
    monkeypatch.setenv("PATH", f"{garbage.parent}:/usr/bin:/bin")
    with pytest.raises(ClientAuthenticationError, match="unexpected output"):
        DeveloperCredential().get_token(MANAGEMENT_SCOPE)


def test_developer_credential_with_the_real_cli(
    server: KeylessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the real `keyless account get-access-token`, in the signed-in user's tenant and,
    refused with a clear message, in another."""
    if len(KEYLESS) != 1:
        pytest.skip("the `keyless` console script is not installed in this environment")
    server.cli("login")
    monkeypatch.setenv("KEYLESS_DATA_DIR", str(server.data_dir))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    monkeypatch.setenv("PATH", f"{Path(KEYLESS[0]).parent}:{os.environ['PATH']}")
    token = DeveloperCredential().get_token(MANAGEMENT_SCOPE)
    claims = verify(server, token.token, MANAGEMENT_AUDIENCE)
    assert claims["idtyp"] == "user"
    assert token.expires_on == claims["exp"]

    same = DeveloperCredential(tenant_id=server.tenant_id).get_token(MANAGEMENT_SCOPE)
    assert verify(server, same.token, MANAGEMENT_AUDIENCE)["tid"] == server.tenant_id
    other = str(uuid.uuid4())
    with pytest.raises(ClientAuthenticationError) as refused:
        DeveloperCredential(tenant_id=other).get_token(MANAGEMENT_SCOPE)
    assert other in str(refused.value) and "keyless login" in str(refused.value)


def test_async_context_managers_close(server: KeylessServer, secret_app: App) -> None:
    async def main() -> None:
        credential = identity_aio.ClientSecretCredential(
            server.tenant_id, secret_app.app_id, str(secret_app.secret), authority=server.endpoint
        )
        async with credential:
            pass
        await credential.close()  # twice is fine

    asyncio.run(main())
