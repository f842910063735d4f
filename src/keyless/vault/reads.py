"""What a vault request reads from the store, in one round trip, and the answer to a secret read.

Every vault request starts with a lookup: one statement for the two generation counters that
the token and access caches are kept at (`keyless.store.generation`), the vault's row and, for
`GET /secrets/{name}[/{version}]`, the secret and the version asked for. Nothing here is cached
across requests: a disabled, expired, deleted or rotated secret, or a deleted vault, is seen by
the next request in every process. The statement is SQLAlchemy Core, compiled once and run on
the driver's cursor (`PreparedSelect`), and the rows become small frozen records.

`secret_bundle` is the Key Vault answer to a read, built from those records; the value is
opened with the vault's key for this answer only and kept nowhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, and_, bindparam, func, select

from keyless.base.vault_domain import VERSION
from keyless.store.generation import ACCESS_GENERATION, GENERATION
from keyless.store.models import StoreState, Vault, VaultSecret, VaultSecretVersion
from keyless.store.prepared import PreparedSelect
from keyless.vault.crypto import VaultKeys, open_value
from keyless.vault.errors import VaultError

RECOVERY_LEVEL = "Recoverable+Purgeable"

_V = Vault.__table__.c
_S = VaultSecret.__table__.c
_R = VaultSecretVersion.__table__.c
# The vault, left-joined with its secret of that name and the version asked for (the latest
# when :version is NULL); without a secret name both joins come back empty.


def _generation(name: str) -> Any:
    value = select(StoreState.value).where(StoreState.name == name).scalar_subquery()
    return func.coalesce(value, 0)


_VAULT_COLUMNS = (
    *(_generation(GENERATION), _generation(ACCESS_GENERATION)),
    *(_V.tenant_id, _V.resource_id, _V.retention_days, _V.sealed_key),
)
_VERSION_COLUMNS = (
    *(_S.name, _S.name_key, _S.deleted_at, _S.purge_at),
    *(_R.version, _R.sealed_value, _R.content_type, _R.enabled, _R.not_before, _R.expires),
    *(_R.tags, _R.created_at, _R.updated_at),
)
_LOOKUP = (
    select(*_VAULT_COLUMNS, *_VERSION_COLUMNS)
    .select_from(
        Vault.__table__.outerjoin(
            VaultSecret.__table__,
            and_(_S.vault_name == _V.name, _S.name_key == bindparam("name_key")),
        ).outerjoin(
            VaultSecretVersion.__table__,
            and_(
                _R.vault_name == _V.name,
                _R.name_key == _S.name_key,
                _R.version == func.coalesce(bindparam("version"), _S.latest_version),
            ),
        )
    )
    .where(_V.name == bindparam("vault"))
)


@dataclass(frozen=True, slots=True)
class VaultRecord:
    """What a request needs of the vault's row."""

    name: str
    tenant_id: str
    resource_id: str
    retention_days: int
    sealed_key: bytes | None


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A secret and one of its versions, as a read sees them."""

    name: str
    name_key: str
    deleted_at: float | None
    purge_at: float | None
    version: str
    sealed_value: bytes
    content_type: str | None
    enabled: bool
    not_before: int | None
    expires: int | None
    tags: dict[str, Any] | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Lookup:
    generations: tuple[int, int]  # (directory, access), read on the same connection
    vault: VaultRecord
    secret: VersionRecord | None  # None: no such secret or version (or none was asked for)


class Lookups:
    """Runs the lookup. `on_loop` is for the event loop thread only, on the embedded SQLite
    store: it keeps one connection for itself (each statement is its own read, so it never
    holds a snapshot), which saves the pool's check-out and reset on every request."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._select = PreparedSelect(_LOOKUP, engine.dialect)
        self._held: Any = None

    def on_thread(
        self, vault: str, secret: str | None = None, version: str | None = None
    ) -> Lookup | None:
        with self._engine.connect() as connection:
            # The pool's reset on return ends the transaction psycopg opens for the read.
            return self._run(connection.connection.dbapi_connection, vault, secret, version)

    def on_loop(
        self, vault: str, secret: str | None = None, version: str | None = None
    ) -> Lookup | None:
        if self._held is None:
            self._held = self._engine.raw_connection()
        try:
            return self._run(self._held.dbapi_connection, vault, secret, version)
        except Exception:
            held, self._held = self._held, None
            held.invalidate()
            raise

    def _run(
        self, dbapi_connection: Any, vault: str, secret: str | None, version: str | None
    ) -> Lookup | None:
        if version is not None and not VERSION.match(version):
            secret = None  # not a version this store can hold: answered as not found
        params = {
            "vault": vault,
            "name_key": secret.lower() if secret else None,
            "version": version.lower() if version else None,
        }
        row = self._select.first(dbapi_connection, params)
        if row is None:
            return None
        directory, access, tenant_id, resource_id, retention_days, sealed_key = row[:6]
        record = VaultRecord(vault, tenant_id, resource_id, retention_days, sealed_key)
        found = None
        if row[6] is not None and row[10] is not None:  # the secret, and the version asked for
            found = VersionRecord(*row[6:])
        return Lookup((int(directory), int(access)), record, found)


def not_found(name: str, version: str | None = None) -> VaultError:
    what = f"{name}/{version}" if version else name
    return VaultError(
        404, "SecretNotFound", f"a secret with (name/id) {what} was not found in this key vault"
    )


def refuse_unservable(
    name: str, enabled: bool, expires: float | None, not_before: float | None, now: float
) -> None:
    """Raises the Key Vault error for a version that may not be served: disabled, expired, or
    not valid yet."""
    if not enabled:
        raise VaultError(
            403,
            "Forbidden",
            f"operation get is not allowed on a disabled secret ({name}); enable it "
            "with an update of attributes.enabled",
            "SecretDisabled",
        )
    if expires is not None and expires <= now:
        raise VaultError(
            403,
            "Forbidden",
            f"secret {name} expired; set a new version or extend attributes.exp",
            "SecretExpired",
        )
    if not_before is not None and not_before > now:
        raise VaultError(
            403,
            "Forbidden",
            f"secret {name} is not valid yet (attributes.nbf is in the future)",
            "SecretNotYetValid",
        )


class VersionAttributes(Protocol):
    """What a version's answer is made of: a store row or a read's `VersionRecord`."""

    @property
    def content_type(self) -> str | None: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def not_before(self) -> int | None: ...
    @property
    def expires(self) -> int | None: ...
    @property
    def tags(self) -> dict[str, Any] | None: ...
    @property
    def created_at(self) -> float: ...
    @property
    def updated_at(self) -> float: ...


def secret_properties(item_id: str, row: VersionAttributes, retention_days: int) -> dict[str, Any]:
    """A version's `id`, `attributes`, `tags` and `contentType`, as Key Vault answers them."""
    attributes: dict[str, Any] = {
        "enabled": row.enabled,
        "created": int(row.created_at),
        "updated": int(row.updated_at),
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": retention_days,
    }
    if row.not_before is not None:
        attributes["nbf"] = row.not_before
    if row.expires is not None:
        attributes["exp"] = row.expires
    out: dict[str, Any] = {"id": item_id, "attributes": attributes, "tags": row.tags or None}
    if row.content_type is not None:
        out["contentType"] = row.content_type
    return out


def secret_bundle(
    base: str, found: Lookup, name: str, version: str | None, keys: VaultKeys
) -> dict[str, Any]:
    """The answer to `GET /secrets/{name}[/{version}]` with the value, or VaultError."""
    row = found.secret
    now = time.time()
    if (
        row is None
        or row.deleted_at is not None
        or (row.purge_at is not None and row.purge_at <= now)
    ):
        raise not_found(name, version)
    refuse_unservable(row.name, row.enabled, row.expires, row.not_before, now)
    vault = found.vault
    aead = keys.for_sealed(vault.name, vault.sealed_key)
    if aead is None:
        raise not_found(row.name, version)
    out = secret_properties(f"{base}/secrets/{row.name}/{row.version}", row, vault.retention_days)
    out["value"] = open_value(aead, row.sealed_value, vault.name, row.name_key, row.version)
    return out
