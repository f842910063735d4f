"""One exception hierarchy for everything Keyless refuses on purpose, and the ARM error shape.

Every error Keyless raises to say "no, and here is why" derives from `KeylessError`, so a
boundary (an API route, the CLI's `main`) can catch the whole family in one clause and knows
each carries an HTTP `status` and the `code` a client branches on: an ARM or Key Vault code
name (`ResourceNotFound`), or for OAuth errors the KEYLESS error number listed in
docs/errors.md. Subclasses set both as class defaults or per instance; the message is the
exception's text, written to say what to do and never repeating a secret.

Unexpected failures (bugs, a store that went away) are not KeylessErrors: they reach the error
boundary in keyless.server.errors and become a logged 500 with a correlation id.
"""

from __future__ import annotations

from starlette.responses import JSONResponse


class KeylessError(Exception):
    """Base of every deliberate Keyless error: `status` (HTTP) and `code` (what clients match)."""

    status: int = 400
    code: str | int = "BadRequest"


class ResourceError(KeylessError):
    """An ARM-style error: `code` as Azure names it, a message that says what to do."""

    code: str

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message: str, code: str = "InvalidRequestContent") -> ResourceError:
    return ResourceError(400, code, message)


def arm_error(status: int, code: str, message: str) -> JSONResponse:
    """The body ARM answers errors with: `{"error": {"code", "message"}}`."""
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)
