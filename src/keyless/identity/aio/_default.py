"""Async DefaultCredential: environment -> workload identity -> managed identity -> developer."""

from __future__ import annotations

from .._config import AZURE_CLIENT_ID, env
from .._developer import DEFAULT_TIMEOUT_S
from .._http import AsyncRequestHook
from .._workload_identity import workload_identity_settings
from ._chained import AsyncTokenCredentialLike, ChainedCredential
from ._developer import DeveloperCredential
from ._environment import EnvironmentCredential, NotUsableCredential
from ._managed_identity import ManagedIdentityCredential
from ._workload_identity import WorkloadIdentityCredential


class DefaultCredential(ChainedCredential):
    """The async twin of `keyless.identity.DefaultCredential`, with the same keywords."""

    def __init__(
        self,
        *,
        authority: str | None = None,
        managed_identity_client_id: str | None = None,
        workload_identity_client_id: str | None = None,
        workload_identity_tenant_id: str | None = None,
        exclude_environment_credential: bool = False,
        exclude_workload_identity_credential: bool = False,
        exclude_managed_identity_credential: bool = False,
        exclude_developer_credential: bool = False,
        process_timeout: float = DEFAULT_TIMEOUT_S,
        request_hook: AsyncRequestHook | None = None,
    ) -> None:
        steps: list[AsyncTokenCredentialLike] = []
        if not exclude_environment_credential:
            steps.append(EnvironmentCredential(authority=authority, request_hook=request_hook))
        if not exclude_workload_identity_credential:
            steps.append(
                _workload_identity(
                    workload_identity_tenant_id,
                    workload_identity_client_id,
                    authority,
                    request_hook,
                )
            )
        if not exclude_managed_identity_credential:
            steps.append(
                ManagedIdentityCredential(
                    managed_identity_client_id or env(AZURE_CLIENT_ID), request_hook=request_hook
                )
            )
        if not exclude_developer_credential:
            steps.append(DeveloperCredential(process_timeout=process_timeout))
        if not steps:
            raise ValueError(
                "DefaultCredential: every credential is excluded; include at least one"
            )
        super().__init__(*steps)


def _workload_identity(
    tenant_id: str | None,
    client_id: str | None,
    authority: str | None,
    request_hook: AsyncRequestHook | None,
) -> AsyncTokenCredentialLike:
    name = "WorkloadIdentityCredential"
    try:
        workload_identity_settings(tenant_id, client_id, None)
    except ValueError as exc:
        return NotUsableCredential(name, str(exc), unavailable=True)
    try:
        return WorkloadIdentityCredential(
            tenant_id, client_id, authority=authority, request_hook=request_hook
        )
    except ValueError as exc:
        return NotUsableCredential(name, str(exc), unavailable=False)
