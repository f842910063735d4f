"""The Key Vault-shaped error every vault module raises."""

from __future__ import annotations


class VaultError(Exception):
    """A Key Vault-shaped error: `{"error": {"code", "message", "innererror"?}}`."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
