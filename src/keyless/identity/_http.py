"""HTTP for credentials: TLS trust from the environment, token requests with retries, and
parsing of token answers (OAuth token endpoint, App Service and IMDS managed identity).

Trust: REQUESTS_CA_BUNDLE, else SSL_CERT_FILE (what `eval "$(keyless env)"` sets), else the
system store. Error messages name the endpoint and the server's error, and never contain a
secret, an assertion or a token.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# httpx imports its transport (httpcore, h11, anyio) when the first client is built; importing
# it here moves ~30 ms from an app's first token request, often inside its first user request,
# to its start-up, where azure-identity also pays for its transport (requests).
import httpcore  # noqa: F401
import httpx

from ._cache import CachedToken
from ._config import ENV_HINT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, env
from ._errors import ClientAuthenticationError
from ._retry import RETRY_STATUSES, Retry, retry_after
from ._steps import Pause, Send, Steps

_LOG = logging.getLogger("keyless.identity")

RequestHook = Callable[[httpx.Request], None]
AsyncRequestHook = Callable[[httpx.Request], None] | Callable[[httpx.Request], Awaitable[None]]

USER_AGENT = "keyless-identity/0.1"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass(frozen=True)
class TokenRequest:
    """One token request. `secrets` are values that must never appear in an error message."""

    method: str
    url: str
    params: dict[str, str] | None = None
    form: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()


class Answer(Protocol):
    """What retries and parsing read of an answer: an httpx.Response, or the loopback
    exchange's lighter one (keyless.identity._loopback)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def is_success(self) -> bool: ...

    def json(self) -> Any: ...

    def close(self) -> None: ...


# Sends one token request and returns the answer, or raises an httpx.TransportError.
Exchange = Callable[[TokenRequest], Answer]


# ------------------------------------------------------------------------------------- TLS trust


def ssl_context() -> ssl.SSLContext:
    for name in (REQUESTS_CA_BUNDLE, SSL_CERT_FILE):
        path = env(name)
        if path:
            return _context(name, path)
    return _context(None, None)


@functools.lru_cache(maxsize=8)
def _context(name: str | None, path: str | None) -> ssl.SSLContext:
    if path is None:
        return ssl.create_default_context()
    if not os.path.exists(path):
        raise ClientAuthenticationError(
            f"{name} is {path!r}, which does not exist. Point it at the Keyless CA certificate "
            f"({ENV_HINT}) or unset it to use the system's trusted CAs"
        )
    try:
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ClientAuthenticationError(
            f"{name} is {path!r}, which is not a PEM file of CA certificates ({exc}). "
            f"Point it at the Keyless CA certificate ({ENV_HINT})"
        ) from exc


@functools.lru_cache(maxsize=1)
def _trusting_nothing() -> ssl.SSLContext:
    """For a client that only ever speaks plain http to a loopback endpoint: verification on,
    no CA loaded, so a TLS connection it were ever sent to fails closed. Loading the CA bundle
    for nothing cost up to 30 ms of a managed identity's first token."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _client_settings(trust_env: bool, plain_http: bool) -> dict[str, Any]:
    """What every credential's httpx client has: the trust, the timeouts, no redirects."""
    return {
        "verify": _trusting_nothing() if plain_http else ssl_context(),
        "timeout": TIMEOUT,
        "trust_env": trust_env,
        "follow_redirects": False,
        "headers": {"User-Agent": USER_AGENT},
    }


def new_client(
    hook: RequestHook | None, *, trust_env: bool = True, plain_http: bool = False
) -> httpx.Client:
    hooks = {"request": [hook]} if hook is not None else None
    return httpx.Client(**_client_settings(trust_env, plain_http), event_hooks=hooks)


def new_async_client(
    hook: AsyncRequestHook | None, *, trust_env: bool = True, plain_http: bool = False
) -> httpx.AsyncClient:
    hooks: list[Callable[[httpx.Request], Awaitable[None]]] = []
    if hook is not None:
        call = hook

        async def run_hook(request: httpx.Request) -> None:
            result = call(request)
            if asyncio.iscoroutine(result):
                await result

        hooks.append(run_hook)
    settings = _client_settings(trust_env, plain_http)
    return httpx.AsyncClient(**settings, event_hooks={"request": hooks} if hooks else None)


# ---------------------------------------------------------------------------------- sending


def build(client: httpx.Client | httpx.AsyncClient, request: TokenRequest) -> httpx.Request:
    return client.build_request(
        request.method,
        request.url,
        params=request.params,
        data=request.form,
        headers=request.headers,
    )


def through(client: httpx.Client) -> Exchange:
    """The exchange that sends token requests with an httpx client."""
    return lambda request: client.send(build(client, request))


def _unreachable(who: str, request: TokenRequest, error: httpx.TransportError, tries: int) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    message = f"{who}: could not reach {request.url}: {text}"
    if "CERTIFICATE_VERIFY_FAILED" in str(error):
        message += (
            ". The server's certificate is not trusted: set REQUESTS_CA_BUNDLE to the Keyless "
            f"CA certificate ({ENV_HINT})"
        )
    elif tries > 1:
        message += f" (tried {tries} times)"
    return _redact(message, request.secrets)


def _retryable(error: httpx.TransportError) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" not in str(error)


def send_steps(request: TokenRequest, who: str) -> Steps[Answer]:
    """Send with retries; the last answer is returned whatever its status (the parser turns an
    error status into a ClientAuthenticationError). Raises when no answer came at all."""
    retry = Retry()
    while True:
        retry.attempts += 1
        try:
            response: Answer = yield Send(request)
        except httpx.TransportError as exc:
            delay = retry.next_delay(None) if _retryable(exc) else None
            if delay is None:
                message = _unreachable(who, request, exc, retry.attempts)
                raise ClientAuthenticationError(message) from None
            _LOG.info("%s: %s unreachable (%s); retrying in %.2fs", who, request.url, exc, delay)
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            delay = retry.next_delay(response.headers)
            if delay is None:
                return response
            _LOG.info("%s: HTTP %d; retrying in %.2fs", who, response.status_code, delay)
        yield Pause(delay)


def fetch_steps(
    request: TokenRequest,
    who: str,
    scope: str,
    hint: Callable[[str | None, int], str | None] | None = None,
) -> Steps[CachedToken]:
    """One token: send `request` (with retries) and parse the answer."""
    sent_at = time.time()
    response = yield from send_steps(request, who)
    token = parse_token_response(response, request, who, sent_at, hint)
    _LOG.info("%s: got a token for %s", who, scope)
    return token


# ---------------------------------------------------------------------------------- parsing


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "****")
    return text


def _number(value: Any) -> float | None:
    """JSON numbers and digit strings (IMDS sends strings) as float; anything else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """(error, description) from any of the shapes token services use."""
    if not isinstance(body, dict):
        return None, None
    error: Any = body.get("error")
    description: Any = body.get("error_description")
    if isinstance(error, dict):  # {"error": {"code", "message"}}
        error, description = error.get("code"), error.get("message")
    if description is None:
        description = body.get("message")  # App Service: {"statusCode", "message"}
    return (
        str(error) if error is not None else None,
        str(description) if description is not None else None,
    )


def parse_token_response(
    response: Answer,
    request: TokenRequest,
    who: str,
    received_at: float,
    hint: Callable[[str | None, int], str | None] | None = None,
) -> CachedToken:
    """A token from a 2xx answer, or a ClientAuthenticationError carrying the server's
    `error`/`error_description`. `hint(error, status)` may add what the user should check."""
    where = f"{request.url} (HTTP {response.status_code})"
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if response.is_success:
        fields: dict[str, Any] = body if isinstance(body, dict) else {}
        token = fields.get("access_token")
        expires_on = _number(fields.get("expires_on"))
        expires_in = _number(fields.get("expires_in"))
        if not isinstance(token, str) or not token or (expires_on is None and expires_in is None):
            raise ClientAuthenticationError(
                f"{who}: the answer from {where} is not a token response "
                "(it needs access_token and expires_in or expires_on)",
                status_code=response.status_code,
            )
        token_type = fields.get("token_type")
        return CachedToken.build(
            token,
            received_at=received_at,
            expires_on=int(expires_on) if expires_on is not None else None,
            expires_in=expires_in,
            refresh_in=_number(fields.get("refresh_in")),
            token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        )

    error, description = _error_fields(body)
    if error is None and description is None:
        content_type = response.headers.get("content-type", "no content type")
        detail = f"an answer that is not a token service error ({content_type})"
    else:
        detail = ": ".join(part for part in (error, description) if part)
    message = f"{who}: {where}: {detail}"
    if response.status_code in RETRY_STATUSES:
        asked = retry_after(response.headers)
        message += " (still failing after retries"
        message += f"; the server asked to retry after {asked:.0f}s)" if asked else ")"
    extra = hint(error, response.status_code) if hint is not None else None
    if extra:
        message += f"\n{extra}"
    raise ClientAuthenticationError(
        _redact(message, request.secrets),
        error=error,
        error_description=_redact(description, request.secrets) if description else None,
        status_code=response.status_code,
    )
