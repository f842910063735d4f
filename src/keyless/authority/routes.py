"""The OAuth 2.0 / OpenID Connect routes, on Entra ID's paths (docs/design.md, compatibility)."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from keyless.authority import errors
from keyless.authority.context import Authority
from keyless.authority.credential_headers import RepeatedCredentialHeader, single_header
from keyless.authority.errors import OAuthError, invalid_request
from keyless.authority.issuing import BatchIssuer
from keyless.authority.oauth_form import MAX_FORM_BODY, parse_form
from keyless.authority.sessions import DEVICE_CODE_GRANT, REFRESH_GRANT, DeveloperSignIn
from keyless.authority.token_endpoint import TokenEndpoint, parse_basic_auth
from keyless.authority.token_route import TokenRoute
from keyless.base.body import BodyTooLarge, read_limited

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _error(exc: OAuthError, trace_id: str, status: int | None = None) -> JSONResponse:
    return JSONResponse(exc.body(trace_id), status_code=status or exc.status, headers=_NO_STORE)


def _tenant_error(authority: Authority, tenant_id: str, trace_id: str) -> JSONResponse | None:
    if tenant_id in authority.cache.current().tenants:
        return None
    exc = invalid_request(
        f"tenant {tenant_id[:64]!r} was not found; check the tenant ID (`keyless env` prints it)",
        errors.TENANT_NOT_FOUND,
    )
    return _error(exc, trace_id)


def discovery_document(authority: Authority, tenant_id: str) -> dict[str, Any]:
    base = f"{authority.endpoint}/{tenant_id}"
    return {
        "issuer": authority.issuer(tenant_id),
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "token_endpoint": authority.token_endpoint(tenant_id),
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "revocation_endpoint": f"{base}/oauth2/v2.0/revoke",
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_types_supported": ["token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "client_secret_basic",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256"],
        "grant_types_supported": ["client_credentials", DEVICE_CODE_GRANT, REFRESH_GRANT],
        "scopes_supported": ["openid", "profile", "offline_access"],
        "claims_supported": [
            "aud",
            "iss",
            "iat",
            "nbf",
            "exp",
            "sub",
            "oid",
            "tid",
            "appid",
            "azp",
            "idtyp",
            "roles",
            "groups",
            "xms_mirid",
        ],
        "tenant_region_scope": None,
        "cloud_instance_name": "keyless",
    }


_DEVICE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyless device sign-in</title></head>
<body><h1>Approve a device sign-in</h1>
<p>Someone ran <code>keyless login --use-device-code</code> and was given a code such as
<code>BCDF-GHJK</code>. If it was you, run this where you are already signed in to Keyless
(for example on the server's machine, after <code>keyless login</code>):</p>
<pre>keyless login approve BCDF-GHJK</pre>
<p>The device is then signed in as <em>you</em>. Add <code>--deny</code> to refuse it. Never
approve a code that someone else sent you.</p></body></html>
"""


def build_routes(authority: Authority) -> list[Route]:
    endpoint = TokenEndpoint(authority)
    # The embedded SQLite store is a local file: its batches run on the event loop itself.
    on_loop = authority.engine.dialect.name == "sqlite"
    developer = DeveloperSignIn(authority)

    async def openid_configuration(request: Request) -> Response:
        tenant_id = request.path_params["tenant"]
        trace_id = str(uuid.uuid4())
        failure = await run_in_threadpool(_tenant_error, authority, tenant_id, trace_id)
        if failure is not None:
            return failure
        return JSONResponse(discovery_document(authority, tenant_id))

    async def jwks(request: Request) -> Response:
        tenant_id = request.path_params["tenant"]
        trace_id = str(uuid.uuid4())

        def load() -> Response:
            failure = _tenant_error(authority, tenant_id, trace_id)
            if failure is not None:
                return failure
            snapshot = authority.cache.current()
            # Short cache: relying parties see a new `next` key within minutes of a rotation,
            # and no key signs before it has been published this long (keyless.authority.keys).
            return JSONResponse(
                authority.cache.jwks(snapshot, tenant_id),
                headers={"Cache-Control": f"public, max-age={authority.jwks_max_age_s}"},
            )

        return await run_in_threadpool(load)

    async def refuse(
        request: Request, exc: OAuthError, trace_id: str, status: int | None = None
    ) -> Response:
        """Every token request is audited, even one too malformed to say who sent it."""
        client_ip = request.client.host if request.client else ""
        await run_in_threadpool(
            endpoint.record_refusal, request.path_params["tenant"], trace_id, client_ip, exc
        )
        return _error(exc, trace_id, status)

    async def device_authorization(request: Request) -> Response:
        """RFC 8628 3.1: a device code for the Keyless CLI, to be approved by a signed-in user."""
        trace_id = str(uuid.uuid4())
        client_ip = request.client.host if request.client else ""
        try:
            body = await read_limited(request, MAX_FORM_BODY)
        except BodyTooLarge as exc:
            return await refuse(
                request, invalid_request(str(exc), errors.BODY_TOO_LARGE), trace_id, 413
            )
        try:
            form = parse_form(body, request.headers.get("content-type", ""))
        except OAuthError as exc:
            return await refuse(request, exc, trace_id)
        try:
            result = await run_in_threadpool(
                developer.device_authorization,
                request.path_params["tenant"],
                form,
                trace_id,
                client_ip,
            )
        except OAuthError as exc:
            return _error(exc, trace_id)
        return JSONResponse(result, headers=_NO_STORE)

    async def revoke(request: Request) -> Response:
        """RFC 7009: the CLI's `keyless logout` ends its sign-in session here."""
        trace_id = str(uuid.uuid4())
        client_ip = request.client.host if request.client else ""
        try:
            body = await read_limited(request, MAX_FORM_BODY)
        except BodyTooLarge as exc:
            return await refuse(
                request, invalid_request(str(exc), errors.BODY_TOO_LARGE), trace_id, 413
            )
        try:
            form = parse_form(body, request.headers.get("content-type", ""))
            basic = parse_basic_auth(single_header(request.headers, "Authorization"))
        except RepeatedCredentialHeader as exc:
            return await refuse(request, invalid_request(str(exc)), trace_id)
        except OAuthError as exc:
            return await refuse(request, exc, trace_id)
        try:
            await run_in_threadpool(
                developer.revoke, request.path_params["tenant"], form, basic, trace_id, client_ip
            )
        except OAuthError as exc:
            return _error(exc, trace_id)
        return Response(status_code=200, headers=_NO_STORE)

    async def device_page(_request: Request) -> Response:
        return HTMLResponse(_DEVICE_PAGE)

    public = [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration),
        Route("/{tenant}/.well-known/openid-configuration", openid_configuration),
        Route("/{tenant}/discovery/v2.0/keys", jwks),
        # Clients authenticate in the body; that is the token endpoint's whole job.
        # A plain ASGI endpoint: the route every client calls, kept light (token_route.py).
        Route(
            "/{tenant}/oauth2/v2.0/token",
            TokenRoute(endpoint, BatchIssuer(endpoint, authority.grant_log, on_loop)),
            methods=["POST"],
            name="token",
        ),
        # Developer sign-in: public clients, as RFC 8628 and RFC 7009 define them.
        Route("/{tenant}/oauth2/v2.0/devicecode", device_authorization, methods=["POST"]),
        Route("/{tenant}/oauth2/v2.0/revoke", revoke, methods=["POST"]),
        Route("/device", device_page),
    ]
    for route in public:
        route.keyless_authorization = "public"  # type: ignore[attr-defined]
    return public
