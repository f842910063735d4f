"""`POST /{tenant}/oauth2/v2.0/token` as a plain ASGI endpoint.

The token endpoint is the one route every client calls all the time, so it skips Starlette's
request and response objects and its router (`keyless.server.fastpath` dispatches to it). It
reads the few headers it needs from the scope and answers with prebuilt headers.

A client credentials grant goes to `keyless.authority.issuing`, which decides, records and
answers requests in batches, with no thread hand-off per token (on the event loop itself when
the store is the embedded SQLite). What may wait (a federated issuer's keys fetched over HTTPS,
the developer sign-in grants that write in their own transactions) runs on a few other threads,
so it never holds up the batches.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.types import Receive, Scope, Send

from keyless.authority import errors
from keyless.authority.credential_headers import RepeatedCredentialHeader
from keyless.authority.errors import OAuthError, invalid_request
from keyless.authority.federation import FetchNeeded
from keyless.authority.issuing import BatchIssuer
from keyless.authority.oauth_form import MAX_FORM_BODY, parse_form
from keyless.authority.sessions import USER_GRANTS
from keyless.authority.token_endpoint import (
    PendingGrant,
    TokenEndpoint,
    TokenRequest,
    parse_basic_auth,
)
from keyless.base.body import BodyTooLarge, receive_limited
from keyless.store.grant_log import wait_for_commit_async

_NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
_JSON = (b"content-type", b"application/json")
_BASIC_CHALLENGE = (b"www-authenticate", b'Basic realm="keyless"')


def json_body(content: Any) -> bytes:
    """What Starlette's JSONResponse renders, byte for byte."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


async def send_json(
    send: Send,
    status: int,
    content: Any,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json_body(content)
    headers = [*_NO_STORE, (b"content-length", b"%d" % len(body)), _JSON, *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenRoute:
    """The ASGI app of the token route; one per server process."""

    # Threads for requests that may wait on the network or on a write; fetches of one issuer
    # are serialised by IssuerKeys, so a few threads let other issuers' requests through.
    WAITING_THREADS = 4

    def __init__(self, endpoint: TokenEndpoint, issuing: BatchIssuer) -> None:
        self._endpoint = endpoint
        self._issuing = issuing
        self._threads: ThreadPoolExecutor | None = None

    def _waiting(self) -> ThreadPoolExecutor:
        """The threads that may wait, made in the worker process that serves (uvicorn's
        workers are spawned)."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self.WAITING_THREADS, thread_name_prefix="keyless-issue-wait"
            )
        return self._threads

    async def _issue(self, request: TokenRequest) -> dict[str, object]:
        """The token response once its records are committed; raises the refusal."""
        if request.form.get("grant_type") not in USER_GRANTS:
            try:
                return await self._issuing.issue(request)
            except FetchNeeded:
                pass  # nothing was decided or recorded: decide again where it may wait
        loop = asyncio.get_running_loop()
        pending: PendingGrant = await loop.run_in_executor(
            self._waiting(), self._endpoint.decide, request, True
        )
        # The commit is awaited here, not on the thread, which is free meanwhile.
        return self._endpoint.conclude(pending, await wait_for_commit_async(pending.committed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace_id = str(uuid.uuid4())
        tenant_id: str = scope["path_params"]["tenant"]
        client = scope.get("client")
        client_ip = client[0] if client else ""
        content_type = length = authorization = None
        repeated = False
        for name, value in scope["headers"]:  # names are lowercase in ASGI; the first counts
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"content-length" and length is None:
                length = value
            elif name == b"authorization":
                repeated = authorization is not None
                authorization = value
        try:
            body = await receive_limited(receive, length, MAX_FORM_BODY)
        except BodyTooLarge as exc:
            refusal = invalid_request(str(exc), errors.BODY_TOO_LARGE)
            await self._refuse(send, tenant_id, trace_id, client_ip, refusal, 413)
            return
        if body is None:
            return  # the client hung up mid-request: nobody to answer, nothing was issued
        try:
            if repeated:  # keyless.authority.credential_headers: never pick one of several
                raise invalid_request(str(RepeatedCredentialHeader("Authorization")))
            form = parse_form(body, content_type.decode("latin-1") if content_type else "")
            request = TokenRequest(
                tenant_id=tenant_id,
                form=form,
                basic_auth=parse_basic_auth(
                    authorization.decode("latin-1") if authorization else None
                ),
                trace_id=trace_id,
                client_ip=client_ip,
            )
        except OAuthError as exc:
            await self._refuse(send, tenant_id, trace_id, client_ip, exc)
            return
        try:
            result = await self._issue(request)
        except OAuthError as exc:
            # RFC 6749 5.2: answer a failed Basic authentication in its own scheme.
            challenge = exc.status == 401 and request.basic_auth is not None
            await send_json(
                send, exc.status, exc.body(trace_id), [_BASIC_CHALLENGE] if challenge else None
            )
            return
        await send_json(send, 200, result)

    async def _refuse(
        self,
        send: Send,
        tenant_id: str,
        trace_id: str,
        client_ip: str,
        exc: OAuthError,
        status: int | None = None,
    ) -> None:
        """Every token request is audited, even one too malformed to say who sent it."""
        await asyncio.get_running_loop().run_in_executor(
            self._waiting(), self._endpoint.record_refusal, tenant_id, trace_id, client_ip, exc
        )
        await send_json(send, status or exc.status, exc.body(trace_id))
