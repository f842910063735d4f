"""The lean exchange keyless.identity uses for a managed identity endpoint on a loopback IP
address (keyless.identity._loopback), against real sockets on loopback.

The peers are the scripted HTTP servers of test_identity_transport (test doubles of the
`keyless app run` endpoint that can fail on demand; the real endpoint is exercised by
test_host and test_identity_credentials), and raw sockets that answer what no HTTP server
would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from keyless.identity import (
    ClientAuthenticationError,
    DefaultCredential,
    ManagedIdentityCredential,
    _loopback,
)
from tests.test_identity_transport import (
    IDENTITY_HEADER,
    RESOURCE,
    SCOPE,
    LocalHttpServer,
    Reply,
    isolated,  # noqa: F401 - the autouse fixture: nothing from this machine's environment
    scripted,
    token_reply,
)


@pytest.fixture
def endpoint_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    yield


def _use(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8081/msi/token", ("127.0.0.1", 8081)),
        ("http://127.9.8.7/msi/token", ("127.9.8.7", 80)),
        ("http://[::1]:8081/msi/token", ("::1", 8081)),
        ("http://localhost:8081/msi/token", None),  # a name to resolve: the httpx client
        ("https://127.0.0.1:8081/msi/token", None),  # TLS: the httpx client
        ("http://10.1.2.3:8081/msi/token", None),  # not loopback
        ("http://127.0.0.1:99999/msi/token", None),  # not a port
    ],
)
def test_which_endpoints_get_the_lean_exchange(url: str, expected: object) -> None:
    assert _loopback.loopback_address(url) == expected


@pytest.mark.usefixtures("endpoint_env")
def test_the_lean_exchange_speaks_the_app_service_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same request as through httpx (path, query, header), no httpx client made, one
    connection that the client asks to close; the token is cached as any other."""
    with LocalHttpServer(scripted(token_reply("lean-token"))) as peer:
        _use(monkeypatch, f"{peer.url}/msi/token")
        credential = DefaultCredential()
        info = credential.get_token_info(SCOPE)
        assert credential.get_token(SCOPE).token == "lean-token"
    assert info.token == "lean-token" and info.token_type == "Bearer"
    (seen,) = peer.seen
    assert (seen.method, seen.path) == ("GET", "/msi/token")
    assert seen.query == {"api-version": "2019-08-01", "resource": RESOURCE}
    assert seen.headers["x-identity-header"] == IDENTITY_HEADER
    assert seen.headers["host"] == f"127.0.0.1:{peer.port}"
    assert seen.headers["connection"] == "close"
    assert seen.headers["user-agent"].startswith("keyless-identity/")
    selected = credential.selected
    assert isinstance(selected, ManagedIdentityCredential)
    assert selected._client is None  # no httpx client was built


@pytest.mark.usefixtures("endpoint_env")
def test_a_request_hook_still_sees_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook is called with an httpx.Request: with one, the httpx client is used."""
    seen_by_hook: list[httpx.Request] = []
    with LocalHttpServer(scripted(token_reply("hooked"))) as peer:
        _use(monkeypatch, f"{peer.url}/msi/token")
        credential = ManagedIdentityCredential(request_hook=seen_by_hook.append)
        assert credential.get_token(SCOPE).token == "hooked"
    (request,) = seen_by_hook
    assert request.url.params["resource"] == RESOURCE


@pytest.mark.usefixtures("endpoint_env")
def test_errors_and_retries_are_those_of_every_token_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 503 is retried after the Retry-After it names, then the token; a refusal carries the
    endpoint's message, never the header secret."""
    unavailable: Reply = (
        503,
        {"Retry-After": "1"},
        {"statusCode": 503, "message": "the authority is away"},
    )
    with LocalHttpServer(scripted(unavailable, token_reply("after-retry"))) as peer:
        _use(monkeypatch, f"{peer.url}/msi/token")
        assert ManagedIdentityCredential().get_token(SCOPE).token == "after-retry"
    first, second = peer.seen
    assert second.at - first.at >= 1.0  # the server's wait, not the sub-second first backoff

    refused: Reply = (403, {}, {"statusCode": 403, "message": "refused: not the app's process"})
    with LocalHttpServer(scripted(refused)) as peer:
        _use(monkeypatch, f"{peer.url}/msi/token")
        with pytest.raises(ClientAuthenticationError) as caught:
            ManagedIdentityCredential().get_token(SCOPE)
    assert caught.value.status_code == 403
    assert "refused: not the app's process" in str(caught.value)
    assert "keyless app run" in str(caught.value)  # the hint
    assert IDENTITY_HEADER not in str(caught.value)


@pytest.mark.usefixtures("endpoint_env")
def test_an_endpoint_that_is_not_listening_is_retried_then_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    _use(monkeypatch, f"http://127.0.0.1:{port}/msi/token")
    with pytest.raises(ClientAuthenticationError) as caught:
        ManagedIdentityCredential().get_token(SCOPE)
    message = str(caught.value)
    assert f"could not reach http://127.0.0.1:{port}/msi/token: ConnectError" in message
    assert "tried 4 times" in message
    assert IDENTITY_HEADER not in message


class RawPeer:
    """A loopback socket server that answers every connection with `answer` (then closes),
    or keeps silent for `silence` seconds."""

    def __init__(self, answer: bytes, silence: float = 0.0) -> None:
        self.answer, self.silence = answer, silence
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/msi/token"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.recv(65536)
                if self.silence:
                    self._stop.wait(self.silence)
                with contextlib.suppress(OSError):  # the client may have given up first
                    conn.sendall(self.answer)

    def __enter__(self) -> RawPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._server.close()


@pytest.mark.usefixtures("endpoint_env")
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"hello, this is not HTTP\r\n\r\n", "not valid HTTP/1.1"),
        (b"", "closed the connection unanswered"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2000000\r\n\r\n"
            + b" " * 2_000_000,
            "larger than 1048576 bytes",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}", "not valid HTTP/1.1"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\n\r\n{}",
            "compressed (gzip), unasked",
        ),
    ],
    ids=["not-http", "closed", "too-large", "cut-short", "compressed"],
)
def test_an_answer_that_is_not_a_token_answer_is_an_error(
    monkeypatch: pytest.MonkeyPatch, answer: bytes, expected: str
) -> None:
    with RawPeer(answer) as peer:
        _use(monkeypatch, peer.url)
        with pytest.raises(ClientAuthenticationError) as caught:
            ManagedIdentityCredential().get_token(SCOPE)
    message = str(caught.value)
    assert f"could not reach {peer.url}" in message
    assert expected in message
    assert peer.connections == 4  # a transport failure: retried as any other
    assert IDENTITY_HEADER not in message


@pytest.mark.usefixtures("endpoint_env")
def test_a_silent_endpoint_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_loopback, "READ_TIMEOUT_S", 0.2)
    with RawPeer(b"", silence=2.0) as peer:
        _use(monkeypatch, peer.url)
        with pytest.raises(ClientAuthenticationError) as caught:
            ManagedIdentityCredential().get_token(SCOPE)
    assert "ReadTimeout: timed out waiting for the answer" in str(caught.value)
