"""The Key Vault-shaped error every vault module raises."""

from __future__ import annotations

from keyless.base.errors import KeylessError


class VaultError(KeylessError):
    """A Key Vault-shaped error: `{"error": {"code", "message", "innererror"?}}`."""

    code: str

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
