"""Async ChainedCredential (see the sync module for the rules)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from .._chained import (
    AccessTokenLike,
    as_access_token,
    as_token_info,
    chain_error,
    credential_name,
)
from .._config import single_scope
from .._errors import CredentialUnavailableError
from .._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions
from ._base import AsyncCredential

_LOG = logging.getLogger("keyless.identity")
T = TypeVar("T")


class AsyncTokenCredentialLike(Protocol):
    """Anything with azure-core's async `get_token`."""

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessTokenLike: ...


class ChainedCredential(AsyncCredential):
    """A sequence of async credentials that is itself an async credential."""

    def __init__(self, *credentials: AsyncTokenCredentialLike) -> None:
        if not credentials:
            raise ValueError("ChainedCredential needs at least one credential")
        self.credentials: tuple[AsyncTokenCredentialLike, ...] = credentials
        self._successful: AsyncTokenCredentialLike | None = None

    @property
    def selected(self) -> AsyncTokenCredentialLike | None:
        return self._successful

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        chosen = self._successful
        if chosen is not None:
            return as_access_token(
                await chosen.get_token(
                    *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
                )
            )

        async def ask(credential: AsyncTokenCredentialLike) -> AccessToken:
            return as_access_token(
                await credential.get_token(
                    *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
                )
            )

        return await self._first(scopes, ask)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        chosen = self._successful
        if chosen is not None:
            return await _token_info(chosen, scopes, options)
        return await self._first(scopes, lambda c: _token_info(c, scopes, options))

    async def _first(
        self,
        scopes: tuple[str, ...],
        ask: Callable[[AsyncTokenCredentialLike], Awaitable[T]],
    ) -> T:
        single_scope(scopes)
        history: list[tuple[AsyncTokenCredentialLike, Exception]] = []
        for credential in self.credentials:
            try:
                result = await ask(credential)
            except CredentialUnavailableError as exc:
                history.append((credential, exc))
                continue
            except Exception as exc:
                history.append((credential, exc))
                break
            self._successful = credential
            _LOG.info("%s: using %s", type(self).__name__, credential_name(credential))
            return result
        error = chain_error(type(self).__name__, scopes, self.credentials, history)
        _LOG.warning("%s", error.message)
        raise error

    async def close(self) -> None:
        for credential in self.credentials:
            close = getattr(credential, "close", None)
            if callable(close):
                await close()


async def _token_info(
    credential: AsyncTokenCredentialLike,
    scopes: tuple[str, ...],
    options: TokenRequestOptions | None,
) -> AccessTokenInfo:
    get_token_info = getattr(credential, "get_token_info", None)
    if callable(get_token_info):
        return as_token_info(await get_token_info(*scopes, options=options))
    options = options or {}
    token = await credential.get_token(
        *scopes,
        claims=options.get("claims"),
        tenant_id=options.get("tenant_id"),
        enable_cae=bool(options.get("enable_cae", False)),
    )
    return AccessTokenInfo(token.token, token.expires_on)
