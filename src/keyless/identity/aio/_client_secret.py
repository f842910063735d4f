"""Async ClientSecretCredential."""

from __future__ import annotations

from .._client_secret import ClientSecretFlow
from .._http import AsyncRequestHook
from ._base import AsyncHttpCredential


class ClientSecretCredential(AsyncHttpCredential):
    """Authenticates a service principal with its client secret (see the sync class)."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        authority: str | None = None,
        *,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
        request_hook: AsyncRequestHook | None = None,
    ) -> None:
        flow = ClientSecretFlow(
            tenant_id, client_id, client_secret, authority, additionally_allowed_tenants
        )
        super().__init__(flow, request_hook=request_hook)
