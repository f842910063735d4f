"""Errors, named as azure-identity names them so `except` clauses read the same.

Messages say what is wrong and what to set; they never contain a secret, an assertion or a token.
"""

from __future__ import annotations


class ClientAuthenticationError(Exception):
    """Authentication failed: the credential applies here but could not get a token.

    `error` and `error_description` are the token service's OAuth error fields when it sent them;
    `status_code` is the HTTP status when there was an HTTP answer.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        error_description: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.error_description = error_description
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message

    def copy(self) -> ClientAuthenticationError:
        """A new exception with the same fields (to raise in another thread or task)."""
        return type(self)(
            self.message,
            error=self.error,
            error_description=self.error_description,
            status_code=self.status_code,
        )


class CredentialUnavailableError(ClientAuthenticationError):
    """The credential does not apply here (not configured); a chain moves on to the next one."""
