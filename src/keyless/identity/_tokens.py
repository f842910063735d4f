"""Token types shaped like azure-core's, so Azure SDK clients accept Keyless credentials.

`AccessToken` and `AccessTokenInfo` match `azure.core.credentials` field for field (duck-typed;
azure-core is not a dependency). Their `repr` never shows the token itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypedDict


class AccessToken(NamedTuple):
    """An access token and its expiry (epoch seconds), as `azure.core.credentials.AccessToken`."""

    token: str
    expires_on: int

    def __repr__(self) -> str:
        return f"AccessToken(token='****', expires_on={self.expires_on})"


@dataclass(frozen=True, slots=True)
class AccessTokenInfo:
    """A token with its type and when to refresh it, as `azure.core.credentials.AccessTokenInfo`.

    `refresh_on` (epoch seconds) is when a cache should ask for a new token; the old one stays
    valid until `expires_on`.
    """

    token: str
    expires_on: int
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    refresh_on: int | None = None

    def __repr__(self) -> str:
        return (
            f"AccessTokenInfo(token='****', expires_on={self.expires_on}, "
            f"token_type='{self.token_type}', refresh_on={self.refresh_on})"
        )


class TokenRequestOptions(TypedDict, total=False):
    """The options `get_token_info` takes, as `azure.core.credentials.TokenRequestOptions`."""

    claims: str
    tenant_id: str
    enable_cae: bool


class AccessTokenLike(Protocol):
    """azure-core's AccessToken or AccessTokenInfo, or ours."""

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


class TokenCredentialLike(Protocol):
    """Anything with azure-core's `get_token` (Keyless or azure-identity credentials)."""

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessTokenLike: ...


class AsyncTokenCredentialLike(Protocol):
    """Anything with azure-core's async `get_token` (`keyless.identity.aio` or azure-identity's
    `aio` credentials)."""

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessTokenLike: ...


def as_access_token(token: AccessTokenLike) -> AccessToken:
    """Ours as is (no copy on the warm path); another library's converted."""
    if type(token) is AccessToken:
        return token
    return AccessToken(token.token, token.expires_on)


def as_token_info(info: Any) -> AccessTokenInfo:
    if type(info) is AccessTokenInfo:
        return info
    return AccessTokenInfo(
        info.token,
        info.expires_on,
        getattr(info, "token_type", "Bearer") or "Bearer",
        getattr(info, "refresh_on", None),
    )
