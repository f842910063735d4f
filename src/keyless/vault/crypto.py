"""Per-vault data keys and secret values at rest.

Each vault has its own AES-256 key, sealed by the master key with `vault-key:{name}` as
associated data and made on the vault's first secret write. A value is sealed with AES-256-GCM
under the vault's key, with `{vault}/{secret}/{version}` as associated data, so a sealed value
cannot be moved to another secret, version or vault without failing to open.
"""

from __future__ import annotations

import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyless.authority.masterkey import MasterKey
from keyless.base.errors import KeylessError
from keyless.store.models import Vault

_FORMAT = b"\x01"
_NONCE_BYTES = 12


class VaultKeyError(KeylessError, RuntimeError):
    """A sealed value does not open with its vault's key."""


def _purpose(vault_name: str) -> str:
    return f"vault-key:{vault_name}"


def _aad(vault_name: str, name_key: str, version: str) -> bytes:
    return f"{vault_name}/{name_key}/{version}".encode()


class VaultKeys:
    """Opened data keys, cached per process by the sealed bytes (a new vault of the same name
    has a new key, so a stale entry is never used)."""

    def __init__(self, master: MasterKey) -> None:
        self._master = master
        self._lock = threading.Lock()
        self._opened: dict[tuple[str, bytes], AESGCM] = {}

    @property
    def master(self) -> MasterKey:
        """The master key, for what the vault seals that is no vault's (backups, skiptokens)."""
        return self._master

    def _open(self, vault_name: str, sealed: bytes) -> AESGCM:
        cache_key = (vault_name, sealed)
        aead = self._opened.get(cache_key)
        if aead is None:
            aead = AESGCM(self._master.open(sealed, _purpose(vault_name)))
            with self._lock:
                if len(self._opened) > 10_000:
                    self._opened.clear()
                self._opened[cache_key] = aead
        return aead

    def for_write(self, session: Session, vault: Vault) -> AESGCM:
        """The vault's key, made now if the vault has none (two writers race safely: the
        conditional update lets one key win and both use it)."""
        if vault.sealed_key is None:
            sealed = self._master.seal(AESGCM.generate_key(bit_length=256), _purpose(vault.name))
            session.execute(
                update(Vault)
                .where(Vault.name == vault.name, Vault.sealed_key.is_(None))
                .values(sealed_key=sealed)
            )
            stored = session.scalars(
                select(Vault.sealed_key)
                .where(Vault.name == vault.name)
                .execution_options(populate_existing=True)
            ).one()
            assert stored is not None
            session.expire(vault)
            return self._open(vault.name, stored)
        return self._open(vault.name, vault.sealed_key)

    def for_read(self, vault: Vault) -> AESGCM | None:
        return None if vault.sealed_key is None else self._open(vault.name, vault.sealed_key)

    def for_sealed(self, vault_name: str, sealed_key: bytes | None) -> AESGCM | None:
        """`for_read` from the vault's name and sealed key, as a store lookup returns them."""
        return None if sealed_key is None else self._open(vault_name, sealed_key)


def seal_value(aead: AESGCM, value: str, vault_name: str, name_key: str, version: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return (
        _FORMAT + nonce + aead.encrypt(nonce, value.encode(), _aad(vault_name, name_key, version))
    )


def open_value(aead: AESGCM, sealed: bytes, vault_name: str, name_key: str, version: str) -> str:
    if not sealed.startswith(_FORMAT) or len(sealed) < 1 + _NONCE_BYTES + 16:
        raise VaultKeyError("a stored secret value is not in a format this Keyless reads")
    nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
    try:
        return aead.decrypt(nonce, body, _aad(vault_name, name_key, version)).decode()
    except InvalidTag:
        raise VaultKeyError(
            f"a stored value of secret {name_key} in vault {vault_name} does not open with the "
            "vault's key (the store was altered or restored without its master key)"
        ) from None
