"""OAuth 2.0 errors in the shape Entra ID answers with.

`error` is the RFC 6749 name that clients branch on; `error_codes` are Keyless's own numbers
(listed in docs/errors.md) so a support conversation can name one exact cause; the description
says what to fix and never repeats a credential the caller sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from keyless.base.errors import KeylessError

# Keyless error codes; docs/errors.md lists each with what to do about it.
TENANT_NOT_FOUND = 90002
MALFORMED_REQUEST = 90014
BODY_TOO_LARGE = 90015
UNSUPPORTED_GRANT = 70003
UNKNOWN_CLIENT = 700016
APPLICATION_DISABLED = 7000112
USER_DISABLED = 50057
INVALID_SECRET = 7000215
EXPIRED_SECRET = 7000222
NO_CREDENTIAL = 7000218
BAD_ASSERTION = 50027
ASSERTION_SIGNATURE = 700027
ASSERTION_AUDIENCE = 700212
ASSERTION_EXPIRED = 700024
ASSERTION_NOT_YET_VALID = 700025
ASSERTION_REPLAYED = 700030
UNKNOWN_CERTIFICATE = 700028
# An assertion whose iat is further ahead than the clock-skew allowance (no Entra number).
ISSUED_IN_FUTURE = 810008
FEDERATION_NO_MATCH = 70021
FEDERATION_ISSUER = 700211
FEDERATION_UNREACHABLE = 700213
INVALID_SCOPE = 70011
RESOURCE_NOT_FOUND = 500011
# Developer sign-in: the device code and refresh token grants (docs/developer-signin.md).
AUTHORIZATION_PENDING = 70016
SLOW_DOWN = 810001
DEVICE_CODE_EXPIRED = 70019
DEVICE_CODE_DENIED = 65004
UNKNOWN_GRANT = 70000
DEVICE_CODE_REDEEMED = 810002
REFRESH_TOKEN_REPLAYED = 810003
SESSION_REVOKED = 50173
REFRESH_TOKEN_EXPIRED = 700082
PUBLIC_CLIENT_ONLY = 810004
USER_GONE = 810005
TOO_MANY_PENDING = 810006
UNSUPPORTED_TOKEN_TYPE = 810007


@dataclass
class OAuthError(KeylessError):
    error: str
    description: str
    code: int
    status: int = 400

    def body(self, trace_id: str, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": (
                f"KEYLESS{self.code}: {self.description}\r\n"
                f"Trace ID: {trace_id}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": trace_id,
        }


def invalid_request(description: str, code: int = MALFORMED_REQUEST) -> OAuthError:
    return OAuthError("invalid_request", description, code)


def invalid_client(description: str, code: int) -> OAuthError:
    return OAuthError("invalid_client", description, code, status=401)
