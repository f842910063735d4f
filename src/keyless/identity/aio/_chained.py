"""Async ChainedCredential (the rules are in `.._delegating`, shared with the sync one)."""

from __future__ import annotations

from .._delegating import Chain, Delegating
from .._steps import Kwargs, Scopes
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

    async def _token(
        self, scopes: Scopes, claims: str | None, tenant_id: str | None, cae: bool, extra: Kwargs
    ) -> AccessToken:
        chosen = self._chosen
        if chosen is None:
            arguments = {"claims": claims, "tenant_id": tenant_id, "enable_cae": cae, **extra}
            return await run(self._token_steps(scopes, arguments), self._perform)
        return as_access_token(
            await chosen.get_token(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=cae, **extra
            )
        )

    async def _token_info(
        self, scopes: Scopes, options: TokenRequestOptions | None
    ) -> AccessTokenInfo:
        get_token_info = getattr(self._chosen, "get_token_info", None)
        if callable(get_token_info):
            return as_token_info(await get_token_info(*scopes, options=options))
        return await run(self._token_info_steps(scopes, options), self._perform)

    async def close(self) -> None:
        await run(self._close_steps(), self._perform)


class ChainedCredential(Chain[AsyncTokenCredentialLike], AsyncDelegatingCredential):
    """A sequence of async credentials that is itself an async credential."""
