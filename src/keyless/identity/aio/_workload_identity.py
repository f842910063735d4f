"""Async WorkloadIdentityCredential."""

from __future__ import annotations

from .._http import AsyncRequestHook
from .._workload_identity import WorkloadIdentityArguments
from ._base import AsyncHttpCredential


class WorkloadIdentityCredential(WorkloadIdentityArguments[AsyncRequestHook], AsyncHttpCredential):
    """Workload identity federation (see the sync class); arguments default to AZURE_TENANT_ID,
    AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE and AZURE_AUTHORITY_HOST."""
