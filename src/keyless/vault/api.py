"""The Key Vault secrets data plane, served on each vault's own host name.

`VaultHosts` sits in front of the server's routes: a request whose Host header is
`{vault}.vault.{public host}` goes to the vault, everything else to the usual routes. Every
operation declares the data action it needs (`Keyless.Vault/vaults/secrets/...`), checked by
`keyless.access`'s decision function at the secret's scope (so an assignment at the vault, its
group, subscription or root, or on one secret, grants it). Every access is audited, granted or
not; the value never is.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.access.engine import AccessEngine, Decision
from keyless.authority.context import Authority
from keyless.authority.validation import InvalidToken, TokenClaims, validate_access_token
from keyless.server.body import BodyTooLarge, read_limited
from keyless.store import audit
from keyless.store.grant_log import GrantLogError
from keyless.store.models import Vault, VaultSecret, VaultSecretVersion
from keyless.vault.crypto import VaultKeys, open_value, seal_value
from keyless.vault.domain import VaultDomain
from keyless.vault.reads import Lookup, Lookups, ReadRefused, VaultRecord, secret_bundle

ACTION = "Keyless.Vault/vaults/secrets/"
GET_SECRET = ACTION + "getSecret/action"
READ_METADATA = ACTION + "readMetadata/action"
SET_SECRET = ACTION + "setSecret/action"
UPDATE = ACTION + "update/action"
DELETE = ACTION + "delete"
RECOVER = ACTION + "recover/action"
PURGE = ACTION + "purge/action"

API_VERSIONS = frozenset(
    {"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2016-10-01", "2025-07-01", "2026-04-01"}
)
MAX_VALUE_BYTES = 25 * 1024  # Key Vault's limit for a secret value
MAX_BODY = 64 * 1024
MAX_TAGS = 15
_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION = re.compile(r"^[0-9A-Fa-f]{32}$")
RECOVERY_LEVEL = "Recoverable+Purgeable"


class VaultError(Exception):
    """A Key Vault-shaped error: `{"error": {"code", "message", "innererror"?}}`."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner


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


def _bad(message: str) -> VaultError:
    return VaultError(400, "BadParameter", message)


def _secret_name(name: str) -> str:
    if not _SECRET_NAME.match(name):
        raise _bad(
            f"the secret name {name[:60]!r} is not valid: use 1-127 letters, digits and hyphens"
        )
    return name


def _not_found(name: str, version: str | None = None) -> VaultError:
    what = f"{name}/{version}" if version else name
    return VaultError(
        404, "SecretNotFound", f"a secret with (name/id) {what} was not found in this key vault"
    )


# ------------------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Operation:
    action: str
    secret: str | None  # the secret's name, when the operation is on one
    version: str | None
    run: Callable[[Context], Any]
    writes: bool


@dataclass
class Context:
    session: Session
    vault: Vault
    base: str  # https://{vault}.vault.{host}:{port}
    op: Operation
    body: dict[str, Any]
    keys: VaultKeys
    claims: TokenClaims


def _int_time(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"attributes.{field} must be a time in seconds since 1970 (UTC)")
    return int(value)


def _attributes(ctx: Context, version: VaultSecretVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "enabled": version.enabled,
        "created": int(version.created_at),
        "updated": int(version.updated_at),
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": ctx.vault.retention_days,
    }
    if version.not_before is not None:
        out["nbf"] = version.not_before
    if version.expires is not None:
        out["exp"] = version.expires
    return out


def _properties(
    ctx: Context, secret: VaultSecret, version: VaultSecretVersion, item_id: str
) -> Any:
    out: dict[str, Any] = {
        "id": item_id,
        "attributes": _attributes(ctx, version),
        "tags": version.tags or None,
    }
    if version.content_type is not None:
        out["contentType"] = version.content_type
    return out


def _bundle(ctx: Context, secret: VaultSecret, version: VaultSecretVersion) -> Any:
    return _properties(ctx, secret, version, f"{ctx.base}/secrets/{secret.name}/{version.version}")


def _deleted(ctx: Context, secret: VaultSecret, version: VaultSecretVersion) -> Any:
    out = _bundle(ctx, secret, version)
    out["recoveryId"] = f"{ctx.base}/deletedsecrets/{secret.name}"
    out["deletedDate"] = int(secret.deleted_at or 0)
    out["scheduledPurgeDate"] = int(secret.purge_at or 0)
    return out


def _secret(ctx: Context, name: str, deleted: bool = False) -> VaultSecret:
    secret = ctx.session.get(VaultSecret, (ctx.vault.name, name.lower()))
    if secret is not None and secret.purge_at is not None and secret.purge_at <= time.time():
        if ctx.op.writes:  # past its retention: purged now, as the sweep would have
            ctx.session.delete(secret)
            ctx.session.flush()
        secret = None
    if secret is None or (secret.deleted_at is not None) != deleted:
        if deleted:
            raise VaultError(
                404, "SecretNotFound", f"deleted secret {name} was not found in this key vault"
            )
        raise _not_found(name)
    return secret


def _version(ctx: Context, secret: VaultSecret, version: str | None) -> VaultSecretVersion:
    wanted = secret.latest_version if not version else version.lower()
    if version and not _VERSION.match(version):
        raise _not_found(secret.name, version)
    row = ctx.session.get(VaultSecretVersion, (ctx.vault.name, secret.name_key, wanted))
    if row is None:
        raise _not_found(secret.name, version)
    return row


def _tags(body: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    tags = body.get("tags", default)
    if tags is None:
        return {}
    if (
        not isinstance(tags, dict)
        or len(tags) > MAX_TAGS
        or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 512 and len(v) <= 256
            for k, v in tags.items()
        )
    ):
        raise _bad(f"tags must be an object of at most {MAX_TAGS} string pairs (names <= 512)")
    return dict(tags)


def _content_type(body: dict[str, Any], default: str | None) -> str | None:
    value = body.get("contentType", default)
    if value is not None and (not isinstance(value, str) or len(value) > 255):
        raise _bad("contentType must be text of at most 255 characters")
    return value


def _apply_attributes(body: dict[str, Any], row: VaultSecretVersion) -> None:
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise _bad("attributes must be an object with enabled, nbf and exp")
    if "enabled" in attributes:
        if not isinstance(attributes["enabled"], bool):
            raise _bad("attributes.enabled must be true or false")
        row.enabled = attributes["enabled"]
    if "nbf" in attributes:
        row.not_before = _int_time(attributes["nbf"], "nbf")
    if "exp" in attributes:
        row.expires = _int_time(attributes["exp"], "exp")
    if row.not_before is not None and row.expires is not None and row.expires <= row.not_before:
        raise _bad("attributes.exp must be later than attributes.nbf")


def set_secret(ctx: Context) -> Any:
    name = ctx.op.secret or ""
    value = ctx.body.get("value")
    if not isinstance(value, str):
        raise _bad("the request needs a 'value' string: the secret's value")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise _bad(
            f"the secret value is {len(value.encode())} bytes; a secret value may be at most "
            f"{MAX_VALUE_BYTES} bytes"
        )
    existing = ctx.session.get(VaultSecret, (ctx.vault.name, name.lower()))
    if existing is not None and existing.deleted_at is not None:
        if existing.purge_at is not None and existing.purge_at <= time.time():
            ctx.session.delete(existing)
            ctx.session.flush()
            existing = None
        else:
            raise VaultError(
                409,
                "Conflict",
                f"secret {name} is currently in a deleted but recoverable state, and its name "
                "cannot be reused; recover it or purge it first",
                "ObjectIsDeletedButRecoverable",
            )
    now = time.time()
    version = uuid.uuid4().hex
    row = VaultSecretVersion(
        vault_name=ctx.vault.name,
        name_key=name.lower(),
        version=version,
        sealed_value=b"",
        content_type=_content_type(ctx.body, None),
        enabled=True,
        not_before=None,
        expires=None,
        tags=_tags(ctx.body, {}),
        created_at=now,
        updated_at=now,
    )
    _apply_attributes(ctx.body, row)
    aead = ctx.keys.for_write(ctx.session, ctx.vault)
    row.sealed_value = seal_value(aead, value, ctx.vault.name, name.lower(), version)
    if existing is None:
        existing = VaultSecret(
            vault_name=ctx.vault.name, name_key=name.lower(), name=name, latest_version=version
        )
        ctx.session.add(existing)
        ctx.session.flush()
    else:
        existing.latest_version = version
    ctx.session.add(row)
    ctx.session.flush()
    out = _bundle(ctx, existing, row)
    out["value"] = value
    return out


def get_secret(ctx: Context) -> Any:
    secret = _secret(ctx, ctx.op.secret or "")
    row = _version(ctx, secret, ctx.op.version)
    now = time.time()
    if not row.enabled:
        raise VaultError(
            403,
            "Forbidden",
            f"operation get is not allowed on a disabled secret ({secret.name}); enable it "
            "with an update of attributes.enabled",
            "SecretDisabled",
        )
    if row.expires is not None and row.expires <= now:
        raise VaultError(
            403,
            "Forbidden",
            f"secret {secret.name} expired; set a new version or extend attributes.exp",
            "SecretExpired",
        )
    if row.not_before is not None and row.not_before > now:
        raise VaultError(
            403,
            "Forbidden",
            f"secret {secret.name} is not valid yet (attributes.nbf is in the future)",
            "SecretNotYetValid",
        )
    aead = ctx.keys.for_read(ctx.vault)
    if aead is None:
        raise _not_found(secret.name, ctx.op.version)
    out = _bundle(ctx, secret, row)
    out["value"] = open_value(aead, row.sealed_value, ctx.vault.name, secret.name_key, row.version)
    return out


def update_secret(ctx: Context) -> Any:
    secret = _secret(ctx, ctx.op.secret or "")
    row = _version(ctx, secret, ctx.op.version)
    if "value" in ctx.body:
        raise _bad("an update cannot change the value; set the secret to make a new version")
    row.content_type = _content_type(ctx.body, row.content_type)
    row.tags = _tags(ctx.body, row.tags)
    _apply_attributes(ctx.body, row)
    row.updated_at = time.time()
    ctx.session.flush()
    return _bundle(ctx, secret, row)


def list_secrets(ctx: Context) -> Any:
    secrets = ctx.session.scalars(
        select(VaultSecret)
        .where(VaultSecret.vault_name == ctx.vault.name, VaultSecret.deleted_at.is_(None))
        .order_by(VaultSecret.name_key)
    ).all()
    items = []
    for secret in secrets:
        row = _version(ctx, secret, None)
        items.append(_properties(ctx, secret, row, f"{ctx.base}/secrets/{secret.name}"))
    return {"value": items, "nextLink": None}


def list_versions(ctx: Context) -> Any:
    secret = _secret(ctx, ctx.op.secret or "")
    rows = ctx.session.scalars(
        select(VaultSecretVersion)
        .where(
            VaultSecretVersion.vault_name == ctx.vault.name,
            VaultSecretVersion.name_key == secret.name_key,
        )
        .order_by(VaultSecretVersion.created_at)
    ).all()
    return {"value": [_bundle(ctx, secret, r) for r in rows], "nextLink": None}


def delete_secret(ctx: Context) -> Any:
    secret = _secret(ctx, ctx.op.secret or "")
    now = time.time()
    secret.deleted_at = now
    secret.purge_at = now + ctx.vault.retention_days * 86400
    ctx.session.flush()
    return _deleted(ctx, secret, _version(ctx, secret, None))


def get_deleted(ctx: Context) -> Any:
    secret = _secret(ctx, ctx.op.secret or "", deleted=True)
    return _deleted(ctx, secret, _version(ctx, secret, None))


def list_deleted(ctx: Context) -> Any:
    now = time.time()
    secrets = ctx.session.scalars(
        select(VaultSecret)
        .where(VaultSecret.vault_name == ctx.vault.name, VaultSecret.deleted_at.is_not(None))
        .order_by(VaultSecret.name_key)
    ).all()
    items = []
    for secret in secrets:
        if secret.purge_at is not None and secret.purge_at <= now:
            continue
        item = _deleted(ctx, secret, _version(ctx, secret, None))
        item["id"] = f"{ctx.base}/secrets/{secret.name}"
        items.append(item)
    return {"value": items, "nextLink": None}


def recover_secret(ctx: Context) -> Any:
    secret = _secret(ctx, ctx.op.secret or "", deleted=True)
    secret.deleted_at = None
    secret.purge_at = None
    ctx.session.flush()
    return _bundle(ctx, secret, _version(ctx, secret, None))


def purge_secret(ctx: Context) -> Any:
    secret = _secret(ctx, ctx.op.secret or "", deleted=True)
    ctx.session.delete(secret)
    ctx.session.flush()
    return None


def resolve(method: str, path: str) -> Operation:
    """The operation a method and path name; a trailing slash means the latest version."""
    parts = path.split("/")[1:]
    if parts and parts[-1] == "" and len(parts) == 3:  # /secrets/{name}/
        parts = parts[:-1]
    collection = parts[0] if parts else ""
    rest = parts[1:]
    if collection == "secrets":
        if not rest and method == "GET":
            return Operation(READ_METADATA, None, None, list_secrets, False)
        if len(rest) == 1 and rest[0]:
            name = _secret_name(rest[0])
            if method == "PUT":
                return Operation(SET_SECRET, name, None, set_secret, True)
            if method == "GET":
                return Operation(GET_SECRET, name, None, get_secret, False)
            if method == "PATCH":
                return Operation(UPDATE, name, None, update_secret, True)
            if method == "DELETE":
                return Operation(DELETE, name, None, delete_secret, True)
        if len(rest) == 2 and rest[0]:
            name = _secret_name(rest[0])
            if rest[1] == "versions" and method == "GET":
                return Operation(READ_METADATA, name, None, list_versions, False)
            if method == "GET":
                return Operation(GET_SECRET, name, rest[1], get_secret, False)
            if method == "PATCH":
                return Operation(UPDATE, name, rest[1], update_secret, True)
    elif collection == "deletedsecrets":
        if not rest and method == "GET":
            return Operation(READ_METADATA, None, None, list_deleted, False)
        if len(rest) == 1 and rest[0]:
            name = _secret_name(rest[0])
            if method == "GET":
                return Operation(READ_METADATA, name, None, get_deleted, False)
            if method == "DELETE":
                return Operation(PURGE, name, None, purge_secret, True)
        if len(rest) == 2 and rest[1] == "recover" and method == "POST":
            return Operation(RECOVER, _secret_name(rest[0]), None, recover_secret, True)
    raise VaultError(
        404,
        "NotFound",
        f"this vault has no {method} {path[:200]}; Keyless vaults serve /secrets and "
        "/deletedsecrets as Azure Key Vault does",
    )


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
            op: Operation | None = resolve(request.method, request.scope["path"])
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
        header = request.headers.get("authorization", "")
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
        try:
            raw = await read_limited(request, MAX_BODY) if op.writes else b""
        except BodyTooLarge as exc:
            return kv_error(413, "RequestEntityTooLarge", str(exc))
        # None: a cache to rebuild first, which is not done on the event loop.
        authorized = self._authorize(found, token, op, trace_id, True) if self._inline else None
        if authorized is None:
            authorized = await run_in_threadpool(self._authorize, found, token, op, trace_id, False)
        assert authorized is not None
        if isinstance(authorized, Denied):
            return await self._answer_after_audit(authorized.record, authorized.response)
        claims, decision = authorized
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
        except ReadRefused as exc:
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
        try:
            with Session(self.authority.engine) as session, session.begin():
                attached = session.get(Vault, vault.name)
                if attached is None or attached.tenant_id != vault.tenant_id:
                    raise VaultError(
                        404,
                        "VaultNotFound",
                        f"vault {vault.name} was deleted while this request ran; create it "
                        "again with `keyless vault create` if it is still needed",
                    )
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
