"""Async ManagedIdentityCredential."""

from __future__ import annotations

from .._http import AsyncRequestHook
from .._managed_identity import ManagedIdentityFlow
from ._base import AsyncHttpCredential


class ManagedIdentityCredential(AsyncHttpCredential):
    """The managed identity of the app or machine this code runs on (see the sync class)."""

    def __init__(
        self,
        client_id: str | None = None,
        *,
        object_id: str | None = None,
        resource_id: str | None = None,
        request_hook: AsyncRequestHook | None = None,
    ) -> None:
        super().__init__(
            ManagedIdentityFlow(client_id, object_id, resource_id), request_hook=request_hook
        )

    @property
    def available(self) -> bool:
        """Whether the environment names a managed identity endpoint (no request is made)."""
        flow = self._flow
        assert isinstance(flow, ManagedIdentityFlow)
        return flow.mode is not None
