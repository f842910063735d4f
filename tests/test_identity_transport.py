"""keyless.identity on the wire, against real HTTP peers that this test runs on loopback.

Test doubles, said plainly: the peers here are small HTTP servers (`LocalHttpServer`) that
answer with scripted responses, so that retries, Retry-After, failed refreshes and the managed
identity wire formats can be driven exactly. They stand in for:
- a token endpoint that throttles or fails (the real Keyless server does not on demand);
- the managed identity endpoint of `keyless app run` (App Service protocol) and an IMDS-style
  endpoint, which are being built alongside this library. These doubles only check the wire
  format of docs/design.md "The compatibility contract"; the end-to-end tests against the real
  host come with it.
The credentials themselves run unmodified, over real sockets (and real TLS where the
credential requires https).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from keyless.identity import (
    AccessToken,
    AccessTokenInfo,
    ClientAuthenticationError,
    ClientSecretCredential,
    CredentialUnavailableError,
    DefaultCredential,
    ManagedIdentityCredential,
    clear_token_cache,
)
from keyless.identity import aio as identity_aio
from tests.support.oidc_issuer import _write_tls_files

TENANT = "00000000-0000-0000-0000-0000000000aa"
CLIENT = "00000000-0000-0000-0000-0000000000bb"
SECRET = "s3cr3t-value-that-must-never-leak-0123456789"
IDENTITY_HEADER = "identity-header-value-that-must-never-leak"
SCOPE = "api://keyless/management/.default"
RESOURCE = "api://keyless/management"
STOP_TIMEOUT_S = 10


# --------------------------------------------------------------------------- the local peer


@dataclass
class Seen:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    form: dict[str, str]


Reply = tuple[int, dict[str, str], Any]  # status, headers, JSON body (or bytes)


def token_reply(
    token: str = "token-1",  # noqa: S107 - a fake token value
    expires_in: int = 3600,
    refresh_in: int | None = None,
    **extra: Any,
) -> Reply:
    body: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "expires_on": int(time.time()) + expires_in,
        **extra,
    }
    if refresh_in is not None:
        body["refresh_in"] = refresh_in
    return 200, {}, body


@dataclass
class LocalHttpServer:
    """A real HTTP(S) server on 127.0.0.1 that records requests and answers from `respond`."""

    respond: Callable[[Seen], Reply]
    tls: tuple[Path, Path] | None = None  # (certificate, key)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    time.monotonic(),
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    dict(parse_qsl(body.decode())) if body else {},
                )
                owner.seen.append(seen)
                status, headers, payload = owner.respond(seen)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                headers = {"content-type": "application/json", **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        scheme = "https" if self.tls else "http"
        host = "localhost" if self.tls else "127.0.0.1"
        self.url = f"{scheme}://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT_S)


def scripted(*replies: Reply) -> Callable[[Seen], Reply]:
    """Answer with `replies` in order, then repeat the last one."""
    queue = list(replies)
    lock = threading.Lock()

    def respond(_: Seen) -> Reply:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return respond


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing from this machine's environment decides which credential applies."""
    import os

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
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) for a `localhost` test peer."""
    return _write_tls_files(tmp_path_factory.mktemp("peer-tls"))


@pytest.fixture
def trust_peer(monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path, Path]) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files[0]))


def secret_credential(url: str, **kwargs: Any) -> ClientSecretCredential:
    return ClientSecretCredential(TENANT, CLIENT, SECRET, authority=url, **kwargs)


# ------------------------------------------------------------------------------------ retries


@pytest.mark.usefixtures("trust_peer")
def test_retry_honours_retry_after(tls_files: tuple[Path, Path, Path]) -> None:
    throttled: Reply = (429, {"Retry-After": "2"}, {"error": "temporarily_unavailable"})
    with LocalHttpServer(scripted(throttled, token_reply("after-wait")), tls_files[1:]) as peer:
        token = secret_credential(peer.url).get_token(SCOPE)
    assert token.token == "after-wait"
    first, second = peer.seen
    # The client waited what the server asked, not its own (sub-second) first backoff.
    assert second.at - first.at >= 2.0
    assert first.path == second.path == f"/{TENANT}/oauth2/v2.0/token"
    assert first.form == second.form
    assert first.form["client_secret"] == SECRET


@pytest.mark.usefixtures("trust_peer")
def test_retries_are_bounded_and_reported(tls_files: tuple[Path, Path, Path]) -> None:
    failing: Reply = (503, {}, {"error": "server_error", "error_description": "try later"})
    with (
        LocalHttpServer(scripted(failing), tls_files[1:]) as peer,
        pytest.raises(ClientAuthenticationError) as caught,
    ):
        secret_credential(peer.url).get_token(SCOPE)
    assert len(peer.seen) == 4  # the request and 3 retries
    assert caught.value.status_code == 503
    assert caught.value.error == "server_error"
    assert "still failing after retries" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.usefixtures("trust_peer")
def test_retry_after_beyond_the_budget_is_not_waited_for(
    tls_files: tuple[Path, Path, Path],
) -> None:
    throttled: Reply = (429, {"Retry-After": "120"}, {"error": "throttled"})
    with (
        LocalHttpServer(scripted(throttled), tls_files[1:]) as peer,
        pytest.raises(ClientAuthenticationError) as caught,
    ):
        secret_credential(peer.url).get_token(SCOPE)
    assert len(peer.seen) == 1
    assert "retry after 120s" in str(caught.value)


def test_unreachable_endpoint_is_retried_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attempts: list[httpx.Request] = []
    credential = secret_credential(f"https://127.0.0.1:{port}", request_hook=attempts.append)
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token(SCOPE)
    assert len(attempts) == 4
    assert f"could not reach https://127.0.0.1:{port}/{TENANT}/oauth2/v2.0/token" in str(
        caught.value
    )
    assert "tried 4 times" in str(caught.value)


def test_untrusted_certificate_says_what_to_set(tls_files: tuple[Path, Path, Path]) -> None:
    """Without REQUESTS_CA_BUNDLE the system store is used, which lacks the test CA."""
    with (
        LocalHttpServer(scripted(token_reply()), tls_files[1:]) as peer,
        pytest.raises(ClientAuthenticationError) as caught,
    ):
        secret_credential(peer.url).get_token(SCOPE)
    assert "REQUESTS_CA_BUNDLE" in str(caught.value)
    assert "keyless env" in str(caught.value)
    assert peer.seen == []  # not retried: TLS trust does not fix itself


def test_missing_ca_bundle_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nope.pem"))
    with pytest.raises(ClientAuthenticationError, match=r"REQUESTS_CA_BUNDLE is .*does not exist"):
        secret_credential("https://127.0.0.1:9").get_token(SCOPE)


# ------------------------------------------------------------------- refresh and concurrency


@pytest.mark.usefixtures("trust_peer")
def test_old_token_is_served_while_refresh_fails(tls_files: tuple[Path, Path, Path]) -> None:
    failing: Reply = (500, {}, {"error": "server_error"})
    respond = scripted(token_reply("first", expires_in=3600, refresh_in=1), failing)
    with LocalHttpServer(respond, tls_files[1:]) as peer:
        credential = secret_credential(peer.url)
        first = credential.get_token_info(SCOPE)
        assert first.refresh_on is not None
        assert first.refresh_on <= time.time() + 1
        time.sleep(1.1)
        again = credential.get_token(SCOPE)  # refresh due: tried, failed, old one served
        assert again.token == "first"
        tried = len(peer.seen)
        assert tried == 1 + 4  # the refresh really was attempted (with its retries)
        assert credential.get_token(SCOPE).token == "first"
        assert len(peer.seen) == tried  # and it is not retried on every call


@pytest.mark.usefixtures("trust_peer")
def test_refresh_is_done_by_one_caller_while_others_use_the_old_token(
    tls_files: tuple[Path, Path, Path],
) -> None:
    release = threading.Event()

    def respond(seen: Seen) -> Reply:
        if len(peer.seen) == 1:
            return token_reply("first", refresh_in=1)
        release.wait(10)
        return token_reply("second")

    with LocalHttpServer(respond, tls_files[1:]) as peer:
        credential = secret_credential(peer.url)
        assert credential.get_token(SCOPE).token == "first"
        time.sleep(1.1)
        refresher = threading.Thread(target=credential.get_token, args=(SCOPE,))
        refresher.start()
        while len(peer.seen) < 2:
            time.sleep(0.01)
        # The refresh is in flight (the peer holds it): others get the old token at once.
        tokens = {credential.get_token(SCOPE).token for _ in range(20)}
        assert tokens == {"first"}
        release.set()
        refresher.join(10)
        assert credential.get_token(SCOPE).token == "second"
    assert len(peer.seen) == 2


@pytest.mark.usefixtures("trust_peer")
def test_concurrent_failures_cause_one_request(tls_files: tuple[Path, Path, Path]) -> None:
    """50 threads and a failing endpoint: one request (with its retries), not 50."""
    denied: Reply = (401, {}, {"error": "invalid_client", "error_description": "bad secret"})
    gate = threading.Event()

    def respond(seen: Seen) -> Reply:
        gate.wait(10)
        return denied

    with LocalHttpServer(respond, tls_files[1:]) as peer:
        credential = secret_credential(peer.url)
        errors: list[BaseException] = []
        barrier = threading.Barrier(50)

        def ask() -> None:
            barrier.wait(10)
            try:
                credential.get_token(SCOPE)
            except ClientAuthenticationError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(50)]
        for thread in threads:
            thread.start()
        while not peer.seen:
            time.sleep(0.01)
        time.sleep(0.2)  # let every thread reach the lock
        gate.set()
        for thread in threads:
            thread.join(20)
    assert len(errors) == 50
    assert {e.error for e in errors if isinstance(e, ClientAuthenticationError)} == {
        "invalid_client"
    }
    assert len(peer.seen) == 1


# --------------------------------------------------------------------------- managed identity


@pytest.fixture
def app_service_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHttpServer]:
    """Test double of the App Service managed identity endpoint (wire format only)."""

    def respond(seen: Seen) -> Reply:
        if seen.headers.get("x-identity-header") != IDENTITY_HEADER:
            return 401, {}, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}
        if seen.query.get("client_id") == "not-attached":
            return 400, {}, {"statusCode": 400, "message": "the app has no identity not-attached"}
        expires_in = 3600
        return (
            200,
            {},
            {
                "access_token": f"mi-token-for-{seen.query.get('resource')}",
                "expires_on": int(time.time()) + expires_in,
                "expires_in": expires_in,
                "resource": seen.query.get("resource"),
                "token_type": "Bearer",
                "client_id": seen.query.get("client_id", "system-assigned-client"),
            },
        )

    with LocalHttpServer(respond) as peer:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{peer.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
        yield peer


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, {}),
        ({"client_id": "c-1"}, {"client_id": "c-1"}),
        ({"object_id": "o-1"}, {"object_id": "o-1"}),
        ({"resource_id": "/subscriptions/s/x"}, {"mi_res_id": "/subscriptions/s/x"}),
    ],
)
def test_managed_identity_app_service_wire_format(
    app_service_endpoint: LocalHttpServer, arguments: dict[str, Any], expected: dict[str, str]
) -> None:
    credential = ManagedIdentityCredential(**arguments)
    assert credential.available
    info = credential.get_token_info(SCOPE)
    assert info.token == f"mi-token-for-{RESOURCE}"
    assert info.token_type == "Bearer"
    assert info.expires_on > time.time() + 3500
    assert info.refresh_on is not None
    assert abs(info.refresh_on - (time.time() + 1800)) < 5
    (seen,) = app_service_endpoint.seen
    assert seen.method == "GET"
    assert seen.path == "/msi/token"
    assert seen.query == {"api-version": "2019-08-01", "resource": RESOURCE, **expected}
    assert seen.headers["x-identity-header"] == IDENTITY_HEADER
    assert credential.get_token(SCOPE).token == info.token
    assert len(app_service_endpoint.seen) == 1  # cached


def test_managed_identity_async(app_service_endpoint: LocalHttpServer) -> None:
    async def main() -> AccessToken:
        async with identity_aio.ManagedIdentityCredential(client_id="c-2") as credential:
            first = await credential.get_token(SCOPE)
            assert await credential.get_token(SCOPE) == first
            return first

    token = asyncio.run(main())
    assert token.token == f"mi-token-for-{RESOURCE}"
    (seen,) = app_service_endpoint.seen
    assert seen.query["client_id"] == "c-2"


def test_managed_identity_errors_carry_the_message_not_the_header(
    app_service_endpoint: LocalHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ClientAuthenticationError) as caught:
        ManagedIdentityCredential(client_id="not-attached").get_token(SCOPE)
    assert "the app has no identity not-attached" in str(caught.value)
    assert "client_id 'not-attached'" in str(caught.value)
    assert caught.value.status_code == 400
    assert not isinstance(caught.value, CredentialUnavailableError)

    monkeypatch.setenv("IDENTITY_HEADER", "stolen-" + IDENTITY_HEADER)
    with pytest.raises(ClientAuthenticationError) as caught:
        ManagedIdentityCredential().get_token(SCOPE)
    assert "keyless app run" in str(caught.value)
    assert IDENTITY_HEADER not in str(caught.value)


def test_managed_identity_imds_wire_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test double of an IMDS-style endpoint: it sends expires_in/expires_on as strings."""

    def respond(seen: Seen) -> Reply:
        if seen.headers.get("metadata") != "true":
            return 400, {}, {"error": "invalid_request", "error_description": "Metadata header"}
        now = int(time.time())
        body = {
            "access_token": "imds-token",
            "expires_in": "3600",
            "expires_on": str(now + 3600),
            "resource": seen.query["resource"],
            "token_type": "Bearer",
        }
        return 200, {}, body

    with LocalHttpServer(respond) as peer:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", peer.url)
        token = ManagedIdentityCredential(resource_id="/subscriptions/s/vm").get_token(SCOPE)
    assert token.token == "imds-token"
    (seen,) = peer.seen
    assert seen.path == "/metadata/identity/oauth2/token"
    assert seen.query == {
        "api-version": "2018-02-01",
        "resource": RESOURCE,
        "msi_res_id": "/subscriptions/s/vm",
    }


def test_managed_identity_refuses_plain_http_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://10.1.2.3:8081/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    credential = ManagedIdentityCredential()
    assert not credential.available
    with pytest.raises(CredentialUnavailableError, match="only accepted on the loopback"):
        credential.get_token(SCOPE)


def test_managed_identity_half_configured_says_which_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")
    with pytest.raises(CredentialUnavailableError, match="IDENTITY_HEADER is not"):
        ManagedIdentityCredential().get_token(SCOPE)


def test_managed_identity_takes_one_selector() -> None:
    with pytest.raises(ValueError, match="at most one of client_id, object_id and resource_id"):
        ManagedIdentityCredential(client_id="a", object_id="b")


def test_default_credential_picks_managed_identity(app_service_endpoint: LocalHttpServer) -> None:
    credential = DefaultCredential()
    token = credential.get_token(SCOPE)
    assert token.token == f"mi-token-for-{RESOURCE}"
    assert type(credential.selected).__name__ == "ManagedIdentityCredential"


def test_default_credential_uses_azure_client_id_for_managed_identity(
    app_service_endpoint: LocalHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As azure-identity: AZURE_CLIENT_ID selects the user-assigned identity."""
    monkeypatch.setenv("AZURE_CLIENT_ID", "user-assigned-1")
    DefaultCredential().get_token(SCOPE)
    (seen,) = app_service_endpoint.seen
    assert seen.query["client_id"] == "user-assigned-1"


# ------------------------------------------------------------------------------- token types


def test_token_types_do_not_show_the_token() -> None:
    token = AccessToken("eyJsecret.token.value", 123)
    info = AccessTokenInfo("eyJsecret.token.value", 123, refresh_on=100)
    assert "eyJsecret" not in repr(token) + repr(info) + str(token) + str(info)
    assert token == ("eyJsecret.token.value", 123)
    assert (info.token, info.expires_on, info.token_type, info.refresh_on) == (
        "eyJsecret.token.value",
        123,
        "Bearer",
        100,
    )


def test_scope_errors_say_what_to_pass() -> None:
    credential = secret_credential("https://127.0.0.1:9")
    with pytest.raises(ValueError, match="needs a scope"):
        credential.get_token()
    with pytest.raises(ValueError, match="one scope"):
        credential.get_token(SCOPE, "api://other/.default")
    with pytest.raises(ValueError, match="not a valid scope"):
        credential.get_token("api://x y/.default")
