"""The managed identity endpoint that `keyless app run` serves to its app, on loopback.

It speaks Azure App Service's protocol (`IDENTITY_ENDPOINT` + `X-IDENTITY-HEADER`,
api-version 2019-08-01) and, for the same identities, the IMDS path with `Metadata: true`.
Under `keyless app run` the IMDS path needs the `X-IDENTITY-HEADER` secret too: the port is
reachable by every local process, and without process binding (`--no-process-binding`, or not
Linux) `Metadata: true` alone would hand them the app's tokens. SDKs never need it there (with
IDENTITY_ENDPOINT and IDENTITY_HEADER set they choose the App Service protocol). Only
`keyless app serve-imds`, a machine identity shared by design, serves IMDS without it.
Tokens come from the authority through `TokenSource` and are served from memory until their
refresh time; concurrent requests for the same token cause one issuance.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keyless.authority.credential_headers import RepeatedCredentialHeader, single_header
from keyless.base.errors import KeylessError
from keyless.host.peer import PeerVerdict, check_peer

APP_SERVICE_PATH = "/msi/token"
IMDS_PATH = "/metadata/identity/oauth2/token"
APP_SERVICE_VERSIONS = {"2019-08-01"}
IMDS_VERSIONS = {"2018-02-01", "2019-08-01", "2021-02-01"}
SELECTORS = ("client_id", "object_id", "mi_res_id", "principal_id")


class TokenError(KeylessError):
    """The authority refused (unknown resource, identity not on the app): status + message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class CachedToken:
    response: dict[str, Any]
    refresh_at: float
    expires_on: int

    def as_of(self, now: float) -> dict[str, Any]:
        """The response with its relative times counted from now: a client that times expiry
        from `expires_in` must not keep a token served from cache past its real `exp`."""
        answer = dict(self.response)
        answer["expires_in"] = max(0, self.expires_on - int(now))
        answer["refresh_in"] = max(0, int(self.refresh_at - now))
        return answer


Fetch = Callable[[str, dict[str, str]], dict[str, Any]]


class TokenSource:
    """Tokens per (identity selector, resource), one issuance at a time per key."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._cache: dict[tuple[str, str, str], CachedToken] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self.issued = 0

    async def get(self, resource: str, selector: dict[str, str]) -> dict[str, Any]:
        kind, value = next(iter(selector.items()), ("", ""))
        key = (resource.rstrip("/").lower(), kind, value.lower())
        cached = self._cache.get(key)
        now = time.time()
        if cached is not None and now < cached.refresh_at:
            return cached.as_of(now)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            now = time.time()
            if cached is not None and now < cached.refresh_at:
                return cached.as_of(now)
            try:
                answer = await asyncio.to_thread(self._fetch, resource, selector)
            except TokenError:
                raise
            except Exception:
                if cached is not None and now < cached.expires_on - 60:
                    return cached.as_of(now)  # the authority is away; the token is still good
                raise
            self.issued += 1
            expires_in = int(answer["expires_in"])
            response = {
                "access_token": answer["access_token"],
                "expires_on": int(answer["expires_on"]),
                "expires_in": expires_in,
                "refresh_in": int(answer.get("refresh_in", expires_in // 2)),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": answer["client_id"],
            }
            refresh_at = int(answer["expires_on"]) - expires_in + response["refresh_in"]
            self._cache[key] = CachedToken(response, refresh_at, int(answer["expires_on"]))
            return response


def _error(status: int, message: str) -> JSONResponse:
    # The App Service protocol's error shape (the SDK reads statusCode and message).
    return JSONResponse(
        {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())},
        status_code=status,
    )


def _selector(request: Request) -> dict[str, str] | JSONResponse:
    given = {k: request.query_params[k] for k in SELECTORS if request.query_params.get(k)}
    if len(given) > 1:
        return _error(400, "name the identity with only one of client_id, object_id, mi_res_id")
    if "principal_id" in given:  # IMDS's name for object_id
        given = {"object_id": given["principal_id"]}
    if any(len(v) > 1024 for v in given.values()):
        return _error(400, "the identity selector is too long")
    return given


def create_endpoint_app(
    source: TokenSource, header_secret: str, *, shared_imds: bool = False
) -> Starlette:
    """The endpoint's routes. `shared_imds` serves the IMDS path to any local process with
    `Metadata: true` alone (a machine identity); otherwise it also needs the header secret."""
    expected = header_secret.encode()

    def header_refusal(request: Request, imds: bool) -> JSONResponse | None:
        """401 unless X-IDENTITY-HEADER matches (compared in constant time)."""
        try:
            presented = (single_header(request.headers, "X-IDENTITY-HEADER") or "").encode()
        except RepeatedCredentialHeader as exc:
            return _error(400, str(exc))
        if not presented:
            if imds:
                return _error(
                    401,
                    "the request has no X-IDENTITY-HEADER: under `keyless app run` the IMDS "
                    "path also needs the value of the IDENTITY_HEADER environment variable. "
                    "Use IDENTITY_ENDPOINT (azure-identity and keyless.identity do so when "
                    "IDENTITY_ENDPOINT and IDENTITY_HEADER are set); for a machine identity "
                    "shared by every local process, run `keyless app serve-imds`",
                )
            return _error(
                401,
                "the request has no X-IDENTITY-HEADER; send the value of the "
                "IDENTITY_HEADER environment variable",
            )
        if not hmac.compare_digest(presented, expected):
            return _error(401, "X-IDENTITY-HEADER does not match this app's IDENTITY_HEADER")
        return None

    async def serve(request: Request, versions: set[str]) -> Response:
        verdict: PeerVerdict | None = request.scope.get("extensions", {}).get("keyless.peer")
        if verdict is not None and not verdict.allowed:
            return _error(
                403,
                f"refused: {verdict.reason}; managed identity tokens are only for the app's "
                "own processes",
            )
        version = request.query_params.get("api-version")
        if version not in versions:
            return _error(
                400,
                f"api-version must be one of {', '.join(sorted(versions))}",
            )
        resource = request.query_params.get("resource")
        if not resource or len(resource) > 512:
            return _error(
                400,
                "the query needs resource=<audience>, e.g. "
                "resource=https://ossrdbms-aad.database.windows.net",
            )
        selector = _selector(request)
        if isinstance(selector, JSONResponse):
            return selector
        try:
            return JSONResponse(await source.get(resource, selector))
        except TokenError as exc:
            return _error(exc.status, exc.message)
        except Exception:
            return _error(503, "the Keyless authority could not be reached; try again shortly")

    async def app_service(request: Request) -> Response:
        refusal = header_refusal(request, imds=False)
        if refusal is not None:
            return refusal
        return await serve(request, APP_SERVICE_VERSIONS)

    async def imds(request: Request) -> Response:
        if request.headers.get("metadata", "").lower() != "true":
            # Also what a bare probe gets: an answer, so SDKs know the endpoint exists.
            return _error(400, "the request needs the header Metadata: true")
        if not shared_imds:
            refusal = header_refusal(request, imds=True)
            if refusal is not None:
                return refusal
        return await serve(request, IMDS_VERSIONS)

    return Starlette(
        routes=[
            Route(APP_SERVICE_PATH, app_service),
            Route(IMDS_PATH, imds),
        ]
    )


def peer_checked_protocol(root_pid: Callable[[], int | None]) -> type[HttpToolsProtocol]:
    """A uvicorn protocol that looks up the calling process once per connection (not per
    request) and hands the verdict to the app in the ASGI scope's `extensions`."""

    class PeerCheckedProtocol(HttpToolsProtocol):
        verdict: PeerVerdict

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            pid = root_pid()
            sock: socket.socket | None = transport.get_extra_info("socket")
            if pid is None or sock is None:
                self.verdict = PeerVerdict(False, None, "the app is not running")
            else:
                self.verdict = check_peer(sock, pid)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["extensions"] = {"keyless.peer": self.verdict}  # type: ignore[dict-item]

    return PeerCheckedProtocol
