"""Async WorkloadIdentityCredential."""

from __future__ import annotations

from .._http import AsyncRequestHook
from .._workload_identity import WorkloadIdentityFlow
from ._base import AsyncHttpCredential


class WorkloadIdentityCredential(AsyncHttpCredential):
    """Workload identity federation (see the sync class); arguments default to AZURE_TENANT_ID,
    AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE and AZURE_AUTHORITY_HOST."""

    def __init__(
        self,
        tenant_id: str | None = None,
        client_id: str | None = None,
        token_file_path: str | None = None,
        *,
        authority: str | None = None,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
        request_hook: AsyncRequestHook | None = None,
    ) -> None:
        flow = WorkloadIdentityFlow(
            tenant_id, client_id, token_file_path, authority, additionally_allowed_tenants
        )
        super().__init__(flow, request_hook=request_hook)
