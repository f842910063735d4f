"""Token types shaped like azure-core's, so Azure SDK clients accept Keyless credentials.

`AccessToken` and `AccessTokenInfo` match `azure.core.credentials` field for field (duck-typed;
azure-core is not a dependency). Their `repr` never shows the token itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypedDict


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
