"""The master key: the one secret on disk, which encrypts every private key Keyless keeps.

It is 256 random bits in a 0600 file in the data directory. Private keys are sealed with
AES-256-GCM under it, with the key's purpose as associated data, so a sealed blob cannot be
moved to another purpose (a CA key passed off as a signing key) without failing to open.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyless.base.errors import KeylessError

_FORMAT = b"\x01"
_NONCE_BYTES = 12


class MasterKeyError(KeylessError, RuntimeError):
    """The master key is missing, unreadable or does not open what it should."""


class MasterKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise MasterKeyError("the master key must be 32 bytes")
        self._key = key
        self._aead = AESGCM(key)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise MasterKeyError(
                f"no master key at {path}; run `keyless init` for this data directory"
            ) from None
        try:
            return cls(base64.b64decode(text, validate=True))
        except (ValueError, MasterKeyError):
            raise MasterKeyError(
                f"the master key at {path} is damaged; restore it from your backup"
            ) from None

    def save(self, path: Path) -> None:
        """Write the key 0600, refusing to overwrite: losing the old key loses every secret."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(self._key).decode() + "\n")

    def derive_password(self, purpose: str) -> bytes:
        """A password for a PEM file that must stay encrypted yet be opened by tools such as
        `ssl.load_cert_chain`; one per purpose, so no two files share a password."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        return base64.urlsafe_b64encode(hkdf.derive(self._key))

    def seal(self, plaintext: bytes, purpose: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode())

    def open(self, sealed: bytes, purpose: str) -> bytes:
        if not sealed.startswith(_FORMAT) or len(sealed) < 1 + _NONCE_BYTES + 16:
            raise MasterKeyError(f"sealed {purpose} is not in a format this Keyless reads")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, purpose.encode())
        except InvalidTag:
            raise MasterKeyError(
                f"the master key does not open this {purpose}: the data directory's "
                "master.key does not belong to this store"
            ) from None
