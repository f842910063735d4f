"""The Key Vault secrets data plane, served on each vault's own host name.

`VaultHosts` sits in front of the server's routes: a request whose Host header is
`{vault}.vault.{public host}` goes to the vault, everything else to the usual routes. Every
operation declares the data action it needs (`Keyless.Vault/vaults/secrets/...`), checked by
`keyless.access`'s decision function at the secret's scope (so an assignment at the vault, its
group, subscription or root, or on one secret, grants it). Every access is audited, granted or
not; the value never is. The operations themselves are in `keyless.vault.operations`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.access.engine import AccessEngine
from keyless.authority.context import Authority
from keyless.authority.validation import InvalidToken, TokenClaims, validate_access_token
from keyless.server.body import BodyTooLarge, read_limited
from keyless.store import audit
from keyless.store.grant_log import GrantLogError
from keyless.store.models import Vault
from keyless.vault.crypto import VaultKeys
from keyless.vault.domain import VaultDomain
from keyless.vault.operations import Context, Operation, VaultError
from keyless.vault.routes import resolve

API_VERSIONS = frozenset(
    {"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2016-10-01", "2025-07-01", "2026-04-01"}
)


def kv_error(
    status: int,
    code: str,
    message: str,
    inner: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return JSONResponse({"error": error}, status, headers=headers)


# ----------------------------------------------------------------------------- the service


class VaultService:
    def __init__(self, authority: Authority, access: AccessEngine, domain: VaultDomain) -> None:
        self.authority = authority
        self.access = access
        self.domain = domain
        self.keys = VaultKeys(authority.master)

    def challenge(self, tenant_id: str) -> dict[str, str]:
        return {
            "WWW-Authenticate": (
                f'Bearer authorization="{self.authority.endpoint}/{tenant_id}", '
                f'resource="{self.domain.audience}"'
            )
        }

    def _vault(self, name: str) -> Vault | None:
        with Session(self.authority.engine) as session:
            vault = session.get(Vault, name)
            if vault is not None:
                session.expunge(vault)
            return vault

    async def handle(self, request: Request, vault_name: str) -> Response:
        trace_id = str(uuid.uuid4())
        vault = await run_in_threadpool(self._vault, vault_name)
        if vault is None:
            return kv_error(
                404,
                "VaultNotFound",
                f"no vault named {vault_name[:24]!r} on this server; create it with "
                "`keyless vault create` (or PUT .../providers/Keyless.Vault/vaults/NAME)",
            )
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return kv_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer token; get one for "
                f"{self.domain.audience}/.default from the authority in WWW-Authenticate",
                headers=self.challenge(vault.tenant_id),
            )
        version = request.query_params.get("api-version")
        if version not in API_VERSIONS:
            return kv_error(
                400,
                "BadParameter",
                f"the api-version {str(version)[:20]!r} is not supported; use one of "
                f"{', '.join(sorted(API_VERSIONS))}",
            )
        try:
            op = resolve(request.method, request.url.path, request.query_params)
            raw = await read_limited(request, op.max_body) if op.writes else b""
        except VaultError as exc:
            return kv_error(exc.status, exc.code, exc.message, exc.inner)
        except BodyTooLarge as exc:
            return kv_error(413, "RequestEntityTooLarge", str(exc))
        return await run_in_threadpool(self._run, vault, token.strip(), op, raw, trace_id)

    def _audit(
        self,
        claims: TokenClaims | None,
        vault: Vault,
        op: Operation,
        result: str,
        trace_id: str,
        details: dict[str, Any],
        session: Session | None = None,
    ) -> None:
        target = vault.resource_id + (f"/secrets/{op.secret}" if op.secret else "")
        record = audit.AuditRecord(
            actor=claims.object_id if claims else "unknown",
            action=op.action,
            target=target + (f"/{op.version}" if op.version else ""),
            result=result,
            trace_id=trace_id,
            tenant_id=vault.tenant_id,
            details={"appId": claims.app_id if claims else "", **details},
        )
        if session is not None:
            audit.write(session.connection(), record)
        else:
            self.authority.grant_log.record(record)

    def _run(self, vault: Vault, token: str, op: Operation, raw: bytes, trace_id: str) -> Response:
        try:
            claims = validate_access_token(self.authority, token, "vault")
        except InvalidToken as exc:
            self._audit(None, vault, op, "denied", trace_id, {"reason": exc.code})
            return kv_error(401, "Unauthorized", str(exc), headers=self.challenge(vault.tenant_id))
        if claims.tenant_id != vault.tenant_id:
            self._audit(claims, vault, op, "denied", trace_id, {"reason": "wrong_tenant"})
            return kv_error(
                401,
                "Unauthorized",
                "AKV10032: the token is from another tenant than this vault's; get a token "
                "from the authority in WWW-Authenticate",
                headers=self.challenge(vault.tenant_id),
            )
        scope = vault.resource_id + (f"/secrets/{op.secret}" if op.secret else "")
        decision = self.access.check(claims.object_id, op.action, scope, data=True)
        if not decision.allowed:
            self._audit(claims, vault, op, "denied", trace_id, {"reason": decision.reason})
            return kv_error(
                403,
                "Forbidden",
                f"the caller {claims.object_id} is not authorized to perform data action "
                f"{op.action} over scope {scope}; ask an Owner or User Access Administrator for "
                "a role that includes it (Vault Secrets User reads, Vault Secrets Officer "
                "writes, Vault Administrator purges)",
                "ForbiddenByRbac",
            )
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._audit(claims, vault, op, "failed:BadParameter", trace_id, {})
            return kv_error(400, "BadParameter", "the request body must be a JSON object")
        base = self.domain.vault_url(vault.name)
        granted = {"grantedBy": decision.reason}
        try:
            with Session(self.authority.engine) as session, session.begin():
                attached = session.merge(vault, load=False)
                ctx = Context(session, attached, base, op, body, self.keys, claims)
                result = op.run(ctx)
                if op.writes:
                    self._audit(claims, vault, op, "succeeded", trace_id, granted, session)
        except VaultError as exc:
            self._audit(claims, vault, op, f"failed:{exc.inner or exc.code}", trace_id, {})
            return kv_error(exc.status, exc.code, exc.message, exc.inner)
        if not op.writes:
            try:
                self._audit(claims, vault, op, "succeeded", trace_id, granted)
            except GrantLogError:
                return kv_error(
                    503,
                    "ServiceUnavailable",
                    "the access could not be recorded in the audit log; try again",
                )
        if result is None:
            return Response(status_code=204)
        return JSONResponse(result, headers={"Cache-Control": "no-store"})


class VaultHosts:
    """Sends requests for `{vault}.vault.{host}` to the vault, all others to the app."""

    def __init__(self, app: ASGIApp, service: VaultService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
            vault_name = self.service.domain.vault_of(host)
            if vault_name is not None:
                request = Request(scope, receive)
                response = await self.service.handle(request, vault_name)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
