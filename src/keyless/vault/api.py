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
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.access.engine import AccessEngine, Decision
from keyless.authority.context import Authority
from keyless.authority.credential_headers import RepeatedCredentialHeader, single_header
from keyless.authority.validation import InvalidToken, TokenClaims, validate_access_token
from keyless.base.body import BodyTooLarge, read_limited
from keyless.base.vault_domain import VaultDomain
from keyless.store import audit
from keyless.store.grant_log import GrantLogError
from keyless.store.models import Vault
from keyless.store.transaction import run_write
from keyless.vault.crypto import VaultKeys
from keyless.vault.errors import VaultError
from keyless.vault.operations import GET_SECRET, Context, Operation
from keyless.vault.reads import Lookup, Lookups, VaultRecord, secret_bundle
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
    """Answers vault requests. Each one reads the store once up front (`reads.Lookups`: the
    generations, the vault, and for a secret read the secret's version), then checks the token
    and the caller's data action against caches kept at those generations.

    A secret read, the call every app makes, runs on the event loop when the store is the
    embedded SQLite (an in-process read of microseconds) and the caches are current: the token
    remembered in the authority's snapshot, the access index built. A rebuild of either, or a
    store across the network, runs on a thread instead. The read's audit record goes through
    the grant log's group commit, awaited without holding a thread; the value is answered only
    once the record is committed.
    """

    def __init__(self, authority: Authority, access: AccessEngine, domain: VaultDomain) -> None:
        self.authority = authority
        self.access = access
        self.domain = domain
        self.keys = VaultKeys(authority.master)
        self.lookups = Lookups(authority.engine)
        self._inline = authority.engine.dialect.name == "sqlite"

    def challenge(self, tenant_id: str) -> dict[str, str]:
        return {
            "WWW-Authenticate": (
                f'Bearer authorization="{self.authority.endpoint}/{tenant_id}", '
                f'resource="{self.domain.audience}"'
            )
        }

    async def handle(self, request: Request, vault_name: str) -> Response:
        trace_id = str(uuid.uuid4())
        try:
            op: Operation | None = resolve(
                request.method, request.scope["path"], request.query_params
            )
            refused: VaultError | None = None
        except VaultError as exc:
            op, refused = None, exc
        reads = op is not None and op.action == GET_SECRET
        secret = op.secret if reads and op else None
        version = op.version if reads and op else None
        if self._inline:
            found = self.lookups.on_loop(vault_name, secret, version)
        else:
            found = await run_in_threadpool(self.lookups.on_thread, vault_name, secret, version)
        if found is None:
            return kv_error(
                404,
                "VaultNotFound",
                f"no vault named {vault_name[:24]!r} on this server; create it with "
                "`keyless vault create` (or PUT .../providers/Keyless.Vault/vaults/NAME)",
            )
        vault = found.vault
        try:
            header = single_header(request.headers, "Authorization") or ""
        except RepeatedCredentialHeader as exc:
            return kv_error(400, "BadParameter", str(exc))
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return kv_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer token; get one for "
                f"{self.domain.audience}/.default from the authority in WWW-Authenticate",
                headers=self.challenge(vault.tenant_id),
            )
        api_version = request.query_params.get("api-version")
        if api_version not in API_VERSIONS:
            return kv_error(
                400,
                "BadParameter",
                f"the api-version {str(api_version)[:20]!r} is not supported; use one of "
                f"{', '.join(sorted(API_VERSIONS))}",
            )
        if refused is not None or op is None:
            assert refused is not None
            return kv_error(refused.status, refused.code, refused.message, refused.inner)
        # None: a cache to rebuild first, which is not done on the event loop.
        authorized = self._authorize(found, token, op, trace_id, True) if self._inline else None
        if authorized is None:
            authorized = await run_in_threadpool(self._authorize, found, token, op, trace_id, False)
        assert authorized is not None
        if isinstance(authorized, Denied):
            return await self._answer_after_audit(authorized.record, authorized.response)
        claims, decision = authorized
        # The body is read only for an authorized caller: a restore's may be megabytes.
        try:
            raw = await read_limited(request, op.max_body) if op.writes else b""
        except BodyTooLarge as exc:
            return kv_error(413, "RequestEntityTooLarge", str(exc))
        if reads:
            record, response = self._read(found, claims, op, trace_id, decision)
            return await self._answer_after_audit(record, response)
        return await run_in_threadpool(self._run, vault, claims, decision, op, raw, trace_id)

    async def _answer_after_audit(self, record: audit.AuditRecord, response: Response) -> Response:
        """The response once its audit record is committed (group commit, no thread held)."""
        try:
            await self.authority.grant_log.record_async(record)
        except GrantLogError:
            return kv_error(
                503,
                "ServiceUnavailable",
                "the access could not be recorded in the audit log; try again",
            )
        return response

    def _authorize(
        self, found: Lookup, token: str, op: Operation, trace_id: str, inline: bool
    ) -> tuple[TokenClaims, Decision] | Denied | None:
        """The token's claims and the access decision, or the refusal to audit and answer.
        With `inline`, None when a cache must be rebuilt first (the caller moves to a thread)."""
        directory, _ = found.generations
        if inline:
            snapshot = self.authority.cache.built_at(directory)
            index = self.access.built_at(found.generations)
            if snapshot is None or index is None:
                return None
        else:
            snapshot = self.authority.cache.at(directory)
            index = self.access.index_at(found.generations)
        vault = found.vault
        try:
            claims = validate_access_token(self.authority, token, "vault", snapshot)
        except InvalidToken as exc:
            return Denied(
                self._record(None, vault, op, "denied", trace_id, {"reason": exc.code}),
                kv_error(401, "Unauthorized", str(exc), headers=self.challenge(vault.tenant_id)),
            )
        if claims.tenant_id != vault.tenant_id:
            return Denied(
                self._record(claims, vault, op, "denied", trace_id, {"reason": "wrong_tenant"}),
                kv_error(
                    401,
                    "Unauthorized",
                    "AKV10032: the token is from another tenant than this vault's; get a token "
                    "from the authority in WWW-Authenticate",
                    headers=self.challenge(vault.tenant_id),
                ),
            )
        scope = vault.resource_id + (f"/secrets/{op.secret}" if op.secret else "")
        decision = index.check(claims.object_id, op.action, scope, data=True)
        if not decision.allowed:
            return Denied(
                self._record(claims, vault, op, "denied", trace_id, {"reason": decision.reason}),
                kv_error(
                    403,
                    "Forbidden",
                    f"the caller {claims.object_id} is not authorized to perform data action "
                    f"{op.action} over scope {scope}; ask an Owner or User Access Administrator "
                    "for a role that includes it (Vault Secrets User reads, Vault Secrets "
                    "Officer writes, Vault Administrator purges)",
                    "ForbiddenByRbac",
                ),
            )
        return claims, decision

    def _read(
        self, found: Lookup, claims: TokenClaims, op: Operation, trace_id: str, decision: Decision
    ) -> tuple[audit.AuditRecord, Response]:
        """A granted secret read: the answer and its audit record (succeeded or failed)."""
        vault = found.vault
        try:
            bundle = secret_bundle(
                self.domain.vault_url(vault.name), found, op.secret or "", op.version, self.keys
            )
        except VaultError as exc:
            return (
                self._record(claims, vault, op, f"failed:{exc.inner or exc.code}", trace_id, {}),
                kv_error(exc.status, exc.code, exc.message, exc.inner),
            )
        granted = {"grantedBy": decision.reason}
        return (
            self._record(claims, vault, op, "succeeded", trace_id, granted),
            JSONResponse(bundle, headers={"Cache-Control": "no-store"}),
        )

    def _record(
        self,
        claims: TokenClaims | None,
        vault: VaultRecord,
        op: Operation,
        result: str,
        trace_id: str,
        details: dict[str, Any],
    ) -> audit.AuditRecord:
        target = vault.resource_id + (f"/secrets/{op.secret}" if op.secret else "")
        return audit.AuditRecord(
            actor=claims.object_id if claims else "unknown",
            action=op.action,
            target=target + (f"/{op.version}" if op.version else ""),
            result=result,
            trace_id=trace_id,
            tenant_id=vault.tenant_id,
            details={"appId": claims.app_id if claims else "", **details},
        )

    def _audit(
        self,
        claims: TokenClaims | None,
        vault: VaultRecord,
        op: Operation,
        result: str,
        trace_id: str,
        details: dict[str, Any],
        session: Session | None = None,
    ) -> None:
        record = self._record(claims, vault, op, result, trace_id, details)
        if session is not None:
            audit.write(session.connection(), record)
        else:
            self.authority.grant_log.record(record)

    def _run(
        self,
        vault: VaultRecord,
        claims: TokenClaims,
        decision: Decision,
        op: Operation,
        raw: bytes,
        trace_id: str,
    ) -> Response:
        """Every operation but a secret read, authorized, on a thread."""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._audit(claims, vault, op, "failed:BadParameter", trace_id, {})
            return kv_error(400, "BadParameter", "the request body must be a JSON object")
        base = self.domain.vault_url(vault.name)
        granted = {"grantedBy": decision.reason}

        def transaction(session: Session) -> Any:
            attached = session.get(Vault, vault.name)
            if attached is None or attached.tenant_id != vault.tenant_id:
                raise VaultError(
                    404,
                    "VaultNotFound",
                    f"vault {vault.name} was deleted while this request ran; create it "
                    "again with `keyless vault create` if it is still needed",
                )
            result = op.run(Context(session, attached, base, op, body, self.keys, claims))
            if op.writes:
                self._audit(claims, vault, op, "succeeded", trace_id, granted, session)
            return result

        try:
            # Concurrent first writes of one secret: the losers run again and add a version
            # to the winner's secret, as Key Vault does (keyless.store.transaction).
            result = run_write(self.authority.engine, transaction)
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


@dataclass(frozen=True)
class Denied:
    """A refused request: its audit record, and the answer once that is committed."""

    record: audit.AuditRecord
    response: Response


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
