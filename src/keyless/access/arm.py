"""The management API's request pipeline, shared by every ARM-shaped route.

Each route declares the action it needs and where its scope comes from; the pipeline checks
the bearer token, asks `keyless.access` whether the caller may perform the action at that
scope, runs the handler in one transaction, and audits every write and every refusal. A route
can only be built through `ArmApi.route`, which is how the authorization test knows that no
route goes unchecked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.access.engine import AccessEngine, AccessIndex, Decision
from keyless.authority import refusals
from keyless.authority.caller_audit import audit_caller
from keyless.authority.context import Authority
from keyless.authority.credential_headers import RepeatedCredentialHeader, single_header
from keyless.authority.validation import InvalidToken, TokenClaims, validate_access_token
from keyless.base.body import BodyTooLarge, read_limited
from keyless.base.errors import ResourceError, arm_error
from keyless.base.scopes import ScopeError, parse_scope
from keyless.store.models import Subscription
from keyless.store.transaction import run_write

MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Caller:
    """Who is calling, and how to ask whether they may perform an action at a scope."""

    tenant_id: str
    principal_id: str
    check: Callable[[str, str], Decision]


@dataclass
class Call:
    """What a handler gets: the caller, the parsed body, the request, and the store session."""

    session: Session
    caller: Caller
    claims: TokenClaims
    request: Request
    body: dict[str, Any]
    scope: str

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])


Handler = Callable[[Call], Any]
ScopeOf = Callable[[Request], str]
# An action may depend on the request (the resource type in the path): action_of(request).
ActionOf = Callable[[Request], str]


class _Denied(Exception):
    pass


class ArmApi:
    def __init__(self, authority: Authority, access: AccessEngine) -> None:
        self.authority = authority
        self.access = access

    def route(
        self,
        path: str,
        method: str,
        action: str | ActionOf,
        scope_of: ScopeOf,
        handler: Handler,
        *,
        status: int = 200,
        name: str | None = None,
        filtered: bool = False,
    ) -> Route:
        """`filtered` routes list things: instead of one check at the listed scope, the handler
        checks `action` on every item and returns only those the caller may read."""
        writes = method in ("PUT", "PATCH", "POST", "DELETE")
        action_of: ActionOf = (lambda _r: action) if isinstance(action, str) else action

        async def endpoint(request: Request) -> Response:
            trace_id = str(uuid.uuid4())
            try:
                header = single_header(request.headers, "Authorization") or ""
            except RepeatedCredentialHeader as exc:
                await self._refused(request, None, "repeated_authorization_header", 400, trace_id)
                return arm_error(400, "InvalidAuthenticationHeader", str(exc))
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                await self._refused(request, None, "no_token", 401, trace_id)
                return arm_error(
                    401,
                    "AuthenticationFailed",
                    "this API needs `Authorization: Bearer <token>` for api://keyless/management "
                    "(`keyless login`, or a token for https://management.azure.com/.default)",
                )
            try:
                raw = await read_limited(request, MAX_BODY) if writes else b""
            except BodyTooLarge as exc:
                return arm_error(413, "RequestEntityTooLarge", str(exc))
            return await run_in_threadpool(
                self._run,
                request,
                token.strip(),
                raw,
                action_of,
                scope_of,
                handler,
                writes,
                status,
                trace_id,
                filtered,
            )

        route = Route(path, endpoint, methods=[method], name=name or handler.__name__)
        route.keyless_authorization = "rbac-filtered" if filtered else "rbac"  # type: ignore[attr-defined]
        route.keyless_action = (  # type: ignore[attr-defined]
            action if isinstance(action, str) else getattr(action, "template", "per-request")
        )
        return route

    @staticmethod
    def _kind(request: Request) -> str:
        """The route's declared action: what a refusal is folded by, never the raw path."""
        route = request.scope.get("route")
        return str(getattr(route, "keyless_action", "management"))

    async def _refused(
        self, request: Request, token: str | None, reason: str, status: int, trace_id: str
    ) -> None:
        await refusals.recorded_async(self._token_refused(request, token, reason, status, trace_id))

    def _token_refused(
        self, request: Request, token: str | None, reason: str, status: int, trace_id: str
    ) -> Future[bool] | None:
        kind = self._kind(request)
        return refusals.token_refused(
            self.authority, request, token, reason, status, kind, trace_id
        )

    def _run(
        self,
        request: Request,
        token: str,
        raw: bytes,
        action_of: ActionOf,
        scope_of: ScopeOf,
        handler: Handler,
        writes: bool,
        status: int,
        trace_id: str,
        filtered: bool,
    ) -> Response:
        try:
            claims = validate_access_token(self.authority, token, "management")
        except InvalidToken as exc:
            refusals.recorded(self._token_refused(request, token, exc.code, 401, trace_id))
            return arm_error(401, "InvalidAuthenticationToken", str(exc))
        try:
            action = action_of(request)
            scope = scope_of(request)
            parsed = parse_scope(scope)
        except ScopeError as exc:
            return arm_error(400, "InvalidResourceId", str(exc))
        except ResourceError as exc:
            return arm_error(exc.status, exc.code, exc.message)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return arm_error(400, "InvalidRequestContent", "the request body is not valid JSON")
        if not isinstance(body, dict):
            return arm_error(400, "InvalidRequestContent", "the request body must be an object")

        index: AccessIndex | None = None

        def check(wanted: str, at: str) -> Decision:
            # One index per request: a list filtered item by item reads the generations once,
            # and every decision of the request is made against the same assignments.
            nonlocal index
            if index is None:
                index = self.access.index()
            return index.check(claims.object_id, wanted, at)

        caller = Caller(claims.tenant_id, claims.object_id, check)
        denied: Decision | None = None

        def transaction(session: Session) -> tuple[Decision, Any]:
            nonlocal denied
            if parsed.subscription is not None:
                subscription = session.get(Subscription, parsed.subscription)
                if subscription is None or subscription.tenant_id != claims.tenant_id:
                    # Another tenant's subscription is as invisible as a missing one.
                    raise ResourceError(
                        404,
                        "SubscriptionNotFound",
                        f"the subscription {parsed.subscription} was not found in your tenant",
                    )
            decision = check(action, parsed.id())
            if not decision.allowed and not filtered:
                denied = decision
                raise _Denied
            return decision, handler(Call(session, caller, claims, request, body, parsed.id()))

        try:
            # Run again if a concurrent writer wins a unique key (keyless.store.transaction).
            decision, result = run_write(self.authority.engine, transaction)
        except _Denied:
            assert denied is not None
            refusals.recorded(
                refusals.caller_refused(
                    self.authority, claims, action, parsed.id(), trace_id, reason=denied.reason
                )
            )
            return arm_error(
                403,
                "AuthorizationFailed",
                f"the client {claims.object_id} does not have authorization to perform "
                f"action {action} over scope {parsed.id()}; ask an Owner or User Access "
                "Administrator for a role that includes it",
            )
        except ResourceError as exc:
            if writes or exc.status == 403:
                self._audit(
                    claims,
                    action,
                    parsed.id(),
                    # A refusal found by the handler (a linked check) is a denial too.
                    "denied" if exc.status == 403 else f"failed:{exc.code}",
                    trace_id,
                    {"code": exc.code, "message": exc.message},
                )
            return arm_error(exc.status, exc.code, exc.message)
        if writes:
            self._audit(
                claims, action, parsed.id(), "succeeded", trace_id, {"grantedBy": decision.reason}
            )
        if isinstance(result, tuple):
            result, created = result
            return JSONResponse(result, status_code=201 if created else 200)
        if result is None:
            return Response(status_code=204)
        return JSONResponse(result, status_code=status)

    def _audit(
        self,
        claims: TokenClaims,
        action: str,
        target: str,
        result: str,
        trace_id: str,
        details: dict[str, Any],
    ) -> None:
        audit_caller(self.authority, claims, action, target, result, trace_id, details)
