"""Secret backup and restore: Key Vault's `POST /secrets/{name}/backup` and `/secrets/restore`.

A backup holds every version of a secret (value, content type, tags, enabled, nbf, exp, times)
and is opaque outside Keyless, as Key Vault's is. Its contents are encrypted and authenticated
with AES-256-GCM under a data key made for that one backup; the data key is sealed by the master
key with the vault's tenant as associated data. So a backup restores only on a server with the
same master key, into a vault of the tenant it came from (Azure's rule is the same subscription
and geography), and an altered, truncated or foreign blob is refused with 400, changing nothing.

Layout: `KLVB`, format 1, the tenant's fingerprint (so a blob from another tenant can be named
as such), the sealed data key, a nonce, and the ciphertext; everything before the nonce is the
ciphertext's associated data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from keyless.authority.masterkey import MasterKey, MasterKeyError
from keyless.base.errors import KeylessError
from keyless.base.vault_domain import SECRET_NAME as _SECRET_NAME
from keyless.base.vault_domain import VERSION as _VERSION
from keyless.store import audit
from keyless.store.models import VaultSecret, VaultSecretVersion
from keyless.vault.crypto import open_value, seal_value
from keyless.vault.errors import VaultError
from keyless.vault.operations import (
    MAX_TAGS,
    MAX_VALUE_BYTES,
    RESTORE,
    Context,
    _bad,
    _bundle,
    _secret,
)

MAGIC = b"KLVB"
FORMAT = 1
MAX_VERSIONS = 500  # as Key Vault: a secret with more versions cannot be backed up
MAX_BACKUP_BYTES = 4 * 1024 * 1024
# The restore request: the blob in base64url, in a small JSON object.
MAX_RESTORE_BODY = MAX_BACKUP_BYTES * 4 // 3 + 4096
_NONCE_BYTES = 12
_FINGERPRINT_BYTES = 16
_HEADER = struct.Struct(">4sB16sH")  # magic, format, tenant fingerprint, sealed key length
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


class BackupError(KeylessError, ValueError):
    """A blob that is no backup this vault can restore; the message says why."""


def _purpose(tenant_id: str) -> str:
    return f"vault-backup:{tenant_id}"


def _fingerprint(tenant_id: str) -> bytes:
    return hashlib.sha256(f"keyless-vault-backup:{tenant_id}".encode()).digest()[:16]


def seal_backup(master: MasterKey, tenant_id: str, plaintext: bytes) -> bytes:
    """The blob for `plaintext`, restorable only with `master` into `tenant_id`."""
    key = AESGCM.generate_key(bit_length=256)
    sealed_key = master.seal(key, _purpose(tenant_id))
    header = _HEADER.pack(MAGIC, FORMAT, _fingerprint(tenant_id), len(sealed_key)) + sealed_key
    nonce = os.urandom(_NONCE_BYTES)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header)


def open_backup(master: MasterKey, tenant_id: str, blob: bytes) -> bytes:
    """The plaintext of a blob made by `seal_backup` for this tenant; BackupError otherwise."""
    damaged = BackupError(
        "the backup is damaged (altered or truncated) or was made by another Keyless server; "
        "restore the blob exactly as `backup` returned it, on the server that made it"
    )
    if len(blob) < _HEADER.size or not blob.startswith(MAGIC):
        raise BackupError(
            "the value is not a Keyless secret backup; give the blob that a secret backup "
            "(POST /secrets/NAME/backup, `keyless vault secret backup`) returned"
        )
    _, fmt, fingerprint, key_length = _HEADER.unpack_from(blob)
    if fmt != FORMAT:
        raise BackupError(
            f"the backup is in format {fmt}, which this Keyless does not read (it reads "
            f"{FORMAT}); restore it with the Keyless version that made it"
        )
    if fingerprint != _fingerprint(tenant_id):
        raise BackupError(
            "the backup was made in another tenant; a backup restores only into a vault of "
            "the tenant it came from"
        )
    nonce_at = _HEADER.size + key_length
    if len(blob) < nonce_at + _NONCE_BYTES + 16:
        raise damaged
    header, nonce = blob[:nonce_at], blob[nonce_at : nonce_at + _NONCE_BYTES]
    body = blob[nonce_at + _NONCE_BYTES :]
    try:
        key = master.open(header[_HEADER.size :], _purpose(tenant_id))
        return AESGCM(key).decrypt(nonce, body, header)
    except (MasterKeyError, InvalidTag, ValueError):
        raise damaged from None


# --------------------------------------------------------------------------- the contents


@dataclass(frozen=True)
class _Version:
    version: str
    value: str
    content_type: str | None
    enabled: bool
    not_before: int | None
    expires: int | None
    tags: dict[str, str]
    created: float
    updated: float


def _row_json(ctx: Context, secret: VaultSecret, row: VaultSecretVersion) -> dict[str, Any]:
    aead = ctx.keys.for_read(ctx.vault)
    assert aead is not None  # a vault with versions has its key
    value = open_value(aead, row.sealed_value, ctx.vault.name, secret.name_key, row.version)
    return {
        "version": row.version,
        "value": value,
        "contentType": row.content_type,
        "enabled": row.enabled,
        "nbf": row.not_before,
        "exp": row.expires,
        "tags": row.tags or {},
        "created": row.created_at,
        "updated": row.updated_at,
    }


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BackupError("a version's nbf or exp is not a time")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BackupError("a version's created or updated is not a time")
    return float(value)


def _parse_version(item: object) -> _Version:
    if not isinstance(item, dict):
        raise BackupError("a version is not an object")
    version, value = item.get("version"), item.get("value")
    ct, tags = item.get("contentType"), item.get("tags")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise BackupError("a version id is not valid")
    if not isinstance(value, str) or len(value.encode()) > MAX_VALUE_BYTES:
        raise BackupError(f"version {version} has no valid value")
    if ct is not None and (not isinstance(ct, str) or len(ct) > 255):
        raise BackupError(f"version {version} has an invalid content type")
    if (
        not isinstance(tags, dict)
        or len(tags) > MAX_TAGS
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    ):
        raise BackupError(f"version {version} has invalid tags")
    if not isinstance(item.get("enabled"), bool):
        raise BackupError(f"version {version} has no enabled flag")
    return _Version(
        version=version.lower(),
        value=value,
        content_type=ct,
        enabled=bool(item["enabled"]),
        not_before=_optional_int(item.get("nbf")),
        expires=_optional_int(item.get("exp")),
        tags=dict(tags),
        created=_number(item.get("created")),
        updated=_number(item.get("updated")),
    )


def _parse(plaintext: bytes) -> tuple[str, str, list[_Version]]:
    """(name, latest version, versions) of an opened backup. It was made by Keyless (it opened),
    so a failure here means a Keyless that wrote what this one does not read."""
    try:
        data = json.loads(plaintext)
        if not isinstance(data, dict) or data.get("kind") != "secret":
            raise BackupError("it holds no secret")
        name, latest, items = data.get("name"), data.get("latest"), data.get("versions")
        if not isinstance(name, str) or not _SECRET_NAME.match(name):
            raise BackupError("the secret name is not valid")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_VERSIONS:
            raise BackupError(f"it must hold 1 to {MAX_VERSIONS} versions")
        versions = [_parse_version(item) for item in items]
        ids = {v.version for v in versions}
        if len(ids) != len(versions) or not isinstance(latest, str) or latest not in ids:
            raise BackupError("its versions do not agree")
    except ValueError as exc:  # BackupError is one, as is bad JSON
        raise BackupError(
            f"the backup opened but cannot be read ({exc}); restore it with the Keyless "
            "version that made it"
        ) from None
    return name, latest, versions


# ----------------------------------------------------------------------------- operations


def backup_secret(ctx: Context) -> Any:
    """`POST /secrets/{name}/backup`: every version, sealed for this tenant."""
    secret = _secret(ctx, ctx.op.secret or "")
    rows = ctx.session.scalars(
        select(VaultSecretVersion)
        .where(
            VaultSecretVersion.vault_name == ctx.vault.name,
            VaultSecretVersion.name_key == secret.name_key,
        )
        .order_by(VaultSecretVersion.created_at, VaultSecretVersion.version)
        .limit(MAX_VERSIONS + 1)
    ).all()
    if len(rows) > MAX_VERSIONS:
        raise VaultError(
            400,
            "BadParameter",
            f"secret {secret.name} has more than {MAX_VERSIONS} versions, the most a backup "
            "holds (as in Key Vault)",
            "BackupTooLarge",
        )
    contents = {
        "kind": "secret",
        "name": secret.name,
        "latest": secret.latest_version,
        "versions": [_row_json(ctx, secret, row) for row in rows],
    }
    blob = seal_backup(ctx.keys.master, ctx.vault.tenant_id, json.dumps(contents).encode())
    if len(blob) > MAX_BACKUP_BYTES:
        raise VaultError(
            400,
            "BadParameter",
            f"the backup of secret {secret.name} would be larger than "
            f"{MAX_BACKUP_BYTES // (1024 * 1024)} MiB; purge old versions you no longer need "
            "(delete, purge and set again) or keep fewer large versions",
            "BackupTooLarge",
        )
    return {"value": base64.urlsafe_b64encode(blob).rstrip(b"=").decode()}


def _blob(body: dict[str, Any]) -> bytes:
    value = body.get("value")
    if not isinstance(value, str) or not value:
        raise _bad(
            "the request needs a 'value' string: the backup blob (base64url) that a secret "
            "backup returned"
        )
    not_base64url = _bad("the backup blob is not base64url; give it exactly as backup returned it")
    if not _BASE64URL.match(value):
        raise not_base64url
    unpadded = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        raise not_base64url from None


def restore_secret(ctx: Context) -> Any:
    """`POST /secrets/restore`: the secret and all its versions, as they were backed up, sealed
    with this vault's key; its name must be free here (neither live nor soft-deleted)."""
    try:
        plaintext = open_backup(ctx.keys.master, ctx.vault.tenant_id, _blob(ctx.body))
        name, latest, versions = _parse(plaintext)
    except BackupError as exc:
        raise VaultError(400, "BadParameter", f"the backup cannot be restored: {exc}") from None
    name_key = name.lower()
    existing = ctx.session.get(VaultSecret, (ctx.vault.name, name_key))
    if existing is not None and existing.purge_at is not None and existing.purge_at <= time.time():
        ctx.session.delete(existing)  # past its retention: purged now, as the sweep would have
        ctx.session.flush()
        existing = None
    if existing is not None and existing.deleted_at is not None:
        raise VaultError(
            409,
            "Conflict",
            f"secret {name} is currently in a deleted but recoverable state in this vault; "
            "recover it, or purge it before restoring the backup",
            "ObjectIsDeletedButRecoverable",
        )
    if existing is not None:
        raise VaultError(
            409,
            "Conflict",
            f"a secret named {name} already exists in this vault; restore into another vault "
            "of the tenant, or delete and purge it first",
        )
    secret = VaultSecret(
        vault_name=ctx.vault.name, name_key=name_key, name=name, latest_version=latest
    )
    ctx.session.add(secret)
    ctx.session.flush()
    aead = ctx.keys.for_write(ctx.session, ctx.vault)
    rows = {}
    for v in versions:
        rows[v.version] = VaultSecretVersion(
            vault_name=ctx.vault.name,
            name_key=name_key,
            version=v.version,
            sealed_value=seal_value(aead, v.value, ctx.vault.name, name_key, v.version),
            content_type=v.content_type,
            enabled=v.enabled,
            not_before=v.not_before,
            expires=v.expires,
            tags=v.tags,
            created_at=v.created,
            updated_at=v.updated,
        )
    ctx.session.add_all(rows.values())
    ctx.session.flush()
    # The call is audited at the vault's scope; this record names the secret it made.
    audit.write(
        ctx.session.connection(),
        audit.AuditRecord(
            actor=ctx.claims.object_id,
            action=RESTORE,
            target=f"{ctx.vault.resource_id}/secrets/{name}",
            result="succeeded",
            trace_id=str(uuid.uuid4()),
            tenant_id=ctx.vault.tenant_id,
            details={"appId": ctx.claims.app_id, "versions": len(rows), "latest": latest},
        ),
    )
    return _bundle(ctx, secret, rows[latest])
