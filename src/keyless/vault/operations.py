"""The Key Vault secrets operations: what each method and path of a vault does.

`keyless.vault.routes.resolve` names the operation and its data action;
`keyless.vault.api.VaultService` authenticates, authorizes and audits the call, then runs the
operation in one transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from keyless.authority.validation import TokenClaims
from keyless.base.vault_domain import SECRET_NAME as _SECRET_NAME
from keyless.base.vault_domain import VERSION as _VERSION
from keyless.store.models import Vault, VaultSecret, VaultSecretVersion
from keyless.vault import paging
from keyless.vault.crypto import VaultKeys, open_value, seal_value
from keyless.vault.errors import VaultError
from keyless.vault.reads import not_found as _not_found
from keyless.vault.reads import refuse_unservable, secret_properties

ACTION = "Keyless.Vault/vaults/secrets/"
GET_SECRET = ACTION + "getSecret/action"
READ_METADATA = ACTION + "readMetadata/action"
SET_SECRET = ACTION + "setSecret/action"
UPDATE = ACTION + "update/action"
DELETE = ACTION + "delete"
RECOVER = ACTION + "recover/action"
PURGE = ACTION + "purge/action"
BACKUP = ACTION + "backup/action"
RESTORE = ACTION + "restore/action"

MAX_VALUE_BYTES = 25 * 1024  # Key Vault's limit for a secret value
MAX_BODY = 64 * 1024
MAX_TAGS = 15


def _bad(message: str) -> VaultError:
    return VaultError(400, "BadParameter", message)


def _secret_name(name: str) -> str:
    if not _SECRET_NAME.match(name):
        raise _bad(
            f"the secret name {name[:60]!r} is not valid: use 1-127 letters, digits and hyphens"
        )
    return name


# ------------------------------------------------------------------------------ operations

_NO_QUERY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Operation:
    action: str
    secret: str | None  # the secret's name, when the operation is on one
    version: str | None
    run: Callable[[Context], Any]
    writes: bool
    # The request's query parameters (api-version, paging).
    query: Mapping[str, str] = field(default_factory=lambda: _NO_QUERY)
    max_body: int = MAX_BODY  # the largest request body the operation reads


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


def _properties(
    ctx: Context, secret: VaultSecret, version: VaultSecretVersion, item_id: str
) -> Any:
    return secret_properties(item_id, version, ctx.vault.retention_days)


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
    refuse_unservable(secret.name, row.enabled, row.expires, row.not_before, time.time())
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


def _listing(ctx: Context, path: str) -> str:
    """What a skiptoken is bound to: the vault and the list's path (names compared lower-case)."""
    return f"{ctx.vault.name}{path.lower()}"


def _page(ctx: Context, path: str) -> paging.Page:
    try:
        return paging.page_of(ctx.op.query, ctx.keys.master, _listing(ctx, path))
    except paging.PagingError as exc:
        raise _bad(str(exc)) from None


def _paged(
    ctx: Context, path: str, page: paging.Page, items: list[Any], last: paging.SortKey | None
) -> Any:
    """A list answer: the page's items, and the next page's link when there is more."""
    link = None
    if last is not None:
        master, listing = ctx.keys.master, _listing(ctx, path)
        link = paging.next_link(ctx.base + path, ctx.op.query, master, listing, page, last)
    return {"value": items, "nextLink": link}


def _latest_versions(ctx: Context, deleted: bool, page: paging.Page) -> Any:
    """Secrets (live or deleted) with their latest versions, by name, one page and one more."""
    query = (
        select(VaultSecret, VaultSecretVersion)
        .join(
            VaultSecretVersion,
            and_(
                VaultSecretVersion.vault_name == VaultSecret.vault_name,
                VaultSecretVersion.name_key == VaultSecret.name_key,
                VaultSecretVersion.version == VaultSecret.latest_version,
            ),
        )
        .where(VaultSecret.vault_name == ctx.vault.name)
    )
    if deleted:  # past its purge date a deleted secret is gone, as the sweep will make it
        query = query.where(VaultSecret.deleted_at.is_not(None), VaultSecret.purge_at > time.time())
    else:
        query = query.where(VaultSecret.deleted_at.is_(None))
    if page.after is not None:
        query = query.where(VaultSecret.name_key > str(page.after[0]))
    query = query.order_by(VaultSecret.name_key).limit(page.size + 1)
    return ctx.session.execute(query).tuples().all()


def list_secrets(ctx: Context) -> Any:
    page = _page(ctx, "/secrets")
    rows = _latest_versions(ctx, False, page)
    items = [
        _properties(ctx, secret, row, f"{ctx.base}/secrets/{secret.name}")
        for secret, row in rows[: page.size]
    ]
    more = len(rows) > page.size
    return _paged(ctx, "/secrets", page, items, [rows[page.size - 1][0].name_key] if more else None)


def list_versions(ctx: Context) -> Any:
    secret = _secret(ctx, ctx.op.secret or "")
    path = f"/secrets/{secret.name}/versions"
    page = _page(ctx, path)
    query = select(VaultSecretVersion).where(
        VaultSecretVersion.vault_name == ctx.vault.name,
        VaultSecretVersion.name_key == secret.name_key,
    )
    if page.after is not None:  # (created, version): versions made in the same instant differ
        created, version = float(page.after[0]), str(page.after[1])
        query = query.where(
            (VaultSecretVersion.created_at > created)
            | ((VaultSecretVersion.created_at == created) & (VaultSecretVersion.version > version))
        )
    query = query.order_by(VaultSecretVersion.created_at, VaultSecretVersion.version)
    rows = ctx.session.scalars(query.limit(page.size + 1)).all()
    items = [_bundle(ctx, secret, r) for r in rows[: page.size]]
    last = rows[page.size - 1] if len(rows) > page.size else None
    return _paged(ctx, path, page, items, [last.created_at, last.version] if last else None)


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
    page = _page(ctx, "/deletedsecrets")
    rows = _latest_versions(ctx, True, page)
    items = []
    for secret, row in rows[: page.size]:
        item = _deleted(ctx, secret, row)
        item["id"] = f"{ctx.base}/secrets/{secret.name}"
        items.append(item)
    more = len(rows) > page.size
    last = [rows[page.size - 1][0].name_key] if more else None
    return _paged(ctx, "/deletedsecrets", page, items, last)


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
