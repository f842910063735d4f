"""DefaultCredential: the chain an app uses unchanged everywhere it runs.

1. EnvironmentCredential - a service principal from AZURE_* variables;
2. WorkloadIdentityCredential - AZURE_FEDERATED_TOKEN_FILE (Kubernetes, CI);
3. ManagedIdentityCredential - the app's identity under `keyless app run` (or IMDS);
4. DeveloperCredential - the developer's `keyless login`.

Each step decides from the environment alone whether it applies; one that does not is skipped
at once, without any network request, so a chain with nothing configured fails in microseconds
instead of waiting on a metadata address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic

from ._caching import HookT
from ._chained import ChainedCredential
from ._config import AZURE_CLIENT_ID, env
from ._delegating import Chain, M
from ._developer import DEFAULT_TIMEOUT_S, DeveloperCredential
from ._environment import EnvironmentCredential, NotUsableCredential
from ._http import RequestHook
from ._managed_identity import ManagedIdentityCredential
from ._tokens import TokenCredentialLike
from ._workload_identity import WorkloadIdentityCredential, workload_identity_settings


class DefaultChain(Chain[M], Generic[M, HookT]):
    """DefaultCredential's arguments and steps, the same for sync and async; the shells name
    their credential classes for each step."""

    _environment: Callable[..., M]
    _workload_identity: Callable[..., M]
    _managed_identity: Callable[..., M]
    _developer: Callable[..., M]
    _not_usable: Callable[..., M]

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
        request_hook: HookT | None = None,
    ) -> None:
        steps: list[M] = []
        if not exclude_environment_credential:
            steps.append(self._environment(authority=authority, request_hook=request_hook))
        if not exclude_workload_identity_credential:
            steps.append(
                self._workload(
                    workload_identity_tenant_id,
                    workload_identity_client_id,
                    authority,
                    request_hook,
                )
            )
        if not exclude_managed_identity_credential:
            steps.append(
                self._managed_identity(
                    managed_identity_client_id or env(AZURE_CLIENT_ID), request_hook=request_hook
                )
            )
        if not exclude_developer_credential:
            steps.append(self._developer(process_timeout=process_timeout))
        if not steps:
            raise ValueError(
                "DefaultCredential: every credential is excluded; include at least one"
            )
        super().__init__(*steps)

    def _workload(
        self,
        tenant_id: str | None,
        client_id: str | None,
        authority: str | None,
        request_hook: HookT | None,
    ) -> M:
        name = "WorkloadIdentityCredential"
        try:
            workload_identity_settings(tenant_id, client_id, None)
        except ValueError as exc:
            return self._not_usable(name, str(exc), unavailable=True)
        try:
            return self._workload_identity(
                tenant_id, client_id, authority=authority, request_hook=request_hook
            )
        except ValueError as exc:  # configured, but wrongly (e.g. no authority)
            return self._not_usable(name, str(exc), unavailable=False)


class DefaultCredential(DefaultChain[TokenCredentialLike, RequestHook], ChainedCredential):
    """Environment -> workload identity -> managed identity -> developer sign-in.

    :keyword authority: the Keyless server for the environment and workload identity steps;
        default ``AZURE_AUTHORITY_HOST``.
    :keyword managed_identity_client_id: a user-assigned identity for the managed identity
        step; default ``AZURE_CLIENT_ID`` (as azure-identity does).
    :keyword workload_identity_client_id, workload_identity_tenant_id: override
        ``AZURE_CLIENT_ID`` / ``AZURE_TENANT_ID`` for the workload identity step.
    :keyword exclude_environment_credential, exclude_workload_identity_credential,
        exclude_managed_identity_credential, exclude_developer_credential: leave a step out.
    :keyword request_hook: called with each outgoing ``httpx.Request``.
    """

    _environment = EnvironmentCredential
    _workload_identity = WorkloadIdentityCredential
    _managed_identity = ManagedIdentityCredential
    _developer = DeveloperCredential
    _not_usable = NotUsableCredential
