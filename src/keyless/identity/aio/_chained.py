"""Async ChainedCredential (the rules are in `.._delegating`, shared with the sync one)."""

from __future__ import annotations

from typing import Any

from .._delegating import Chain, Delegating
from .._tokens import (
    AccessToken,
    AccessTokenInfo,
    AsyncTokenCredentialLike,
    TokenRequestOptions,
    as_access_token,
    as_token_info,
)
from ._base import AsyncCredential, run


class AsyncDelegatingCredential(Delegating[AsyncTokenCredentialLike], AsyncCredential):
    """Awaits the chosen member directly; choosing, and a member without `get_token_info`, go
    through the shared steps."""

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        chosen = self._chosen
        if chosen is not None:
            return as_access_token(
                await chosen.get_token(
                    *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
                )
            )
        arguments = {"claims": claims, "tenant_id": tenant_id, "enable_cae": enable_cae, **kwargs}
        return await run(self._token_steps(scopes, arguments), self._perform)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        get_token_info = getattr(self._chosen, "get_token_info", None)
        if callable(get_token_info):
            return as_token_info(await get_token_info(*scopes, options=options))
        return await run(self._token_info_steps(scopes, options), self._perform)

    async def close(self) -> None:
        await run(self._close_steps(), self._perform)


class ChainedCredential(Chain[AsyncTokenCredentialLike], AsyncDelegatingCredential):
    """A sequence of async credentials that is itself an async credential."""
