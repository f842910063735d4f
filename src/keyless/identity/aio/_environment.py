"""Async EnvironmentCredential (see the sync module for the variables it reads)."""

from __future__ import annotations

from typing import Any, NoReturn

from .._environment import WHO, read_environment
from .._errors import ClientAuthenticationError, CredentialUnavailableError
from .._http import AsyncRequestHook
from .._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions
from ._base import AsyncCredential
from ._certificate import CertificateCredential
from ._client_secret import ClientSecretCredential


class NotUsableCredential(AsyncCredential):
    """Stands in for a credential that could not be built (see the sync class)."""

    def __init__(self, name: str, message: str, *, unavailable: bool) -> None:
        self.chain_name = name
        self._message = message if message.startswith(f"{name}: ") else f"{name}: {message}"
        self._unavailable = unavailable

    def _raise(self) -> NoReturn:
        if self._unavailable:
            raise CredentialUnavailableError(self._message)
        raise ClientAuthenticationError(self._message)

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self._raise()

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        self._raise()


class EnvironmentCredential(AsyncCredential):
    """A service principal from AZURE_* environment variables."""

    def __init__(
        self, *, authority: str | None = None, request_hook: AsyncRequestHook | None = None
    ) -> None:
        settings = read_environment()
        self._credential: AsyncCredential
        if settings.kind is None:
            self._credential = NotUsableCredential(WHO, settings.unavailable, unavailable=True)
            return
        try:
            if settings.kind == "certificate":
                self._credential = CertificateCredential(
                    **settings.arguments, authority=authority, request_hook=request_hook
                )
            else:
                self._credential = ClientSecretCredential(
                    **settings.arguments, authority=authority, request_hook=request_hook
                )
        except ValueError as exc:
            self._credential = NotUsableCredential(WHO, str(exc), unavailable=False)

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return await self._credential.get_token(
            *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
        )

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return await self._credential.get_token_info(*scopes, options=options)

    async def close(self) -> None:
        await self._credential.close()
